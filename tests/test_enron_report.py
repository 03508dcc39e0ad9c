"""The report on a real person's whole mailbox: Phillip Allen's, from the Enron corpus.

Every expectation here was checked by hand against the raw headers in
shared/data/enron-mbox/allen-p (the message each one rests on is named in the test). This
mail has no threading headers, names mostly only in X-From/X-To, one message stored in
several folders under different Message-IDs, and the null date of 1979.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import data_path, write_config

ME = ["phillip.allen@enron.com", "k..allen@enron.com", "pallen@enron.com",
      "phillip.k.allen@enron.com"]
AS_OF = "2002-01-31"


def netaudit(cfg: Path, *args: str, seed: str = "0") -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def enron(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """allen-p imported through the real CLI; returns (config, database)."""
    mailbox = data_path("enron-mbox", "allen-p")
    root = tmp_path_factory.mktemp("enron")
    cfg = write_config(root / "config.toml",
                       f'[netaudit]\ndatabase = "{root / "n.duckdb"}"\n'
                       f'me = {json.dumps(ME)}\ntimezone = "America/Chicago"\n')
    netaudit(cfg, "import", str(mailbox))
    return cfg, root / "n.duckdb"


@pytest.fixture(scope="module")
def doc(enron: tuple[Path, Path]) -> dict[str, Any]:
    return json.loads(netaudit(enron[0], "report", "--as-of", AS_OF, "--format", "json"))


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_one_message_in_several_folders_counts_once(enron: tuple[Path, Path]) -> None:
    """"TRANSPORTATION MODEL" to Keith Holst, 2000-08-09 07:12 PDT, is stored four times
    (all_documents, discussion_threads, sent, _sent_mail), each under its own Message-ID
    (26018267..., 23397876..., ...): one email."""
    _, db = enron
    stored = query(db, "SELECT count(*) FROM messages WHERE from_addr = 'phillip.allen@enron.com'"
                       " AND sent_at = '2000-08-09 14:12:00+00'")
    counted = query(db, "SELECT count(*) FROM interactions WHERE email = 'keith.holst@enron.com'"
                        " AND ts = '2000-08-09 14:12:00+00'")
    assert stored == [(4,)]
    assert counted == [(1,)]


def test_a_copy_with_a_shifted_time_counts_once(enron: tuple[Path, Path]) -> None:
    """Phillip's mail to Jeff Smith of 2001-05-10 00:50 PDT is in _sent_mail, sent,
    all_documents and discussion_threads at 00:50, and in sent_items and _sent_mail again at
    12:50 (Notes' 12-hour clock): six stored messages, one email."""
    _, db = enron
    stored = query(db, "SELECT count(*) FROM messages WHERE from_addr = 'phillip.allen@enron.com'"
                       " AND sent_at IN ('2001-05-10 07:50:00+00', '2001-05-10 19:50:00+00')")
    counted = query(db, "SELECT count(*) FROM interactions WHERE email = 'jsmith@austintx.com'"
                        " AND ts::DATE = '2001-05-10'")
    assert stored == [(6,)]
    assert counted == [(1,)]


def test_addresses_of_one_person_at_one_organisation_are_joined(enron: tuple[Path, Path]) -> None:
    """Jane M Tholt is jane.tholt@ (2000), jane.m.tholt@ and m..tholt@ (2001, the Exchange
    migration); X-To names her "Jane M Tholt" / "Tholt, Jane M." on each."""
    cfg, db = enron
    rows = query(db, "SELECT addresses FROM people WHERE list_contains(addresses, "
                     "'jane.tholt@enron.com')")
    assert rows == [(["jane.m.tholt@enron.com", "jane.tholt@enron.com", "m..tholt@enron.com"],)]
    shown = netaudit(cfg, "person", "jane.tholt@enron.com")
    assert "Why these addresses are one person:" in shown
    assert "same name (jane m tholt) at enron.com" in " ".join(shown.split())


def test_people_of_one_family_name_stay_apart(enron: tuple[Path, Path]) -> None:
    """Jeff Smith (jsmith@austintx.com, a builder) and Matt Smith (matt.smith@enron.com);
    George Richards (cbpres@austin.rr.com) and Andrea Richards (andrea.richards@enron.com)."""
    _, db = enron
    rows = query(db, "SELECT count(DISTINCT person_id) FROM identities WHERE address IN "
                     "('jsmith@austintx.com', 'matt.smith@enron.com', "
                     "'cbpres@austin.rr.com', 'andrea.richards@enron.com')")
    assert rows == [(4,)]


def test_my_other_addresses_are_not_a_person(enron: tuple[Path, Path],
                                             doc: dict[str, Any]) -> None:
    """pallen70@hotmail.com is named "phillip allen" (X-To of mail Phillip sends himself
    from work); pallen@ect.enron.com is his mailbox at Enron's other domain. Before, the
    first was a one-sided tie: "you started 38 of 42 threads; they answered none"."""
    _, db = enron
    assert query(db, "SELECT address, is_me FROM identities WHERE address IN "
                     "('pallen70@hotmail.com', 'pallen@ect.enron.com') ORDER BY address") == [
        ("pallen70@hotmail.com", True), ("pallen@ect.enron.com", True)]
    assert query(db, "SELECT count(*) FROM interactions WHERE email IN "
                     "('pallen70@hotmail.com', 'pallen@ect.enron.com')") == [(0,)]
    assert query(db, "SELECT count(*) FROM people WHERE list_contains(addresses, "
                     "'pallen70@hotmail.com')") == [(0,)]
    listed = {a for section in ("neglected", "one_sided") for e in doc[section]
              for a in e["addresses"]}
    assert "pallen70@hotmail.com" not in listed


def test_one_sided_needs_a_tie(enron: tuple[Path, Path], doc: dict[str, Any]) -> None:
    """Someone who never wrote to me, or whom I never wrote to, is a stranger or bulk mail,
    not a one-sided tie: Lucy Gonzalez (stagecoachmama@hotmail.com) and Reagan Lehmann
    (rlehmann@yahoo.com) never appear as senders in this mailbox (their answers are quoted in
    Phillip's mail, which netaudit does not read), so they are not listed."""
    _, db = enron
    listed = {a for e in doc["one_sided"] for a in e["addresses"]}
    assert not listed & {"stagecoachmama@hotmail.com", "rlehmann@yahoo.com"}
    for entry in doc["one_sided"]:
        both = query(db, "SELECT count(DISTINCT direction) FROM interactions WHERE "
                         "channel = 'email' AND list_contains(?, email)", [entry["addresses"]])
        assert both == [(2,)], entry


def test_a_one_sided_tie_that_is_neglected_is_shown_in_both(doc: dict[str, Any]) -> None:
    one_sided = {e["email"]: e["pattern"] for e in doc["one_sided"]}
    marked = [e for e in doc["neglected"] if "also_one_sided" in e]
    for entry in doc["neglected"]:
        assert entry.get("also_one_sided") == one_sided.get(entry["email"])
    for entry in marked:
        assert "also one-sided" in entry["reason"]
    # Keith Holst: every 10 days until late 2001, and 21 of 25 threads started by Phillip
    assert [(e["email"], e["also_one_sided"]) for e in marked] == [
        ("keith.holst@enron.com", "you_initiate")]


def test_colleague_distributions_and_copies_are_not_introductions(
        enron: tuple[Path, Path]) -> None:
    """July 2000: mail to Grigsby, Holst, Lenhart, Ermis and Reitmeyer, a trading desk that
    works together, each stored four times; March 2001: George Richards in To, Larry Lewter
    and Jacques in Cc for information. Before, seven introductions; now none."""
    cfg, _ = enron
    for month in ("2000-07", "2001-03"):
        report = json.loads(netaudit(cfg, "report", "--month", month, "--format", "json"))
        assert report["connect"]["introductions"] == [], month


def test_the_report_is_the_same_whatever_the_hash_seed(enron: tuple[Path, Path]) -> None:
    cfg, _ = enron
    runs = {netaudit(cfg, "report", "--as-of", AS_OF, "--format", "json", seed=seed)
            for seed in ("1", "2", "3")}
    assert len(runs) == 1
