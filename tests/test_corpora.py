"""Real mail nobody here wrote: every message is stored or quarantined, and facts hold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from ingest import local, mailfiles
from netaudit import db
from tests.conftest import data_path

UTC = dt.UTC

# Messages per mbox file, counted by reading each file: its From_ separator lines that head
# a header block ("From Russia with love" in a body is not one; Content-Length bodies with
# unescaped From lines are skipped whole).
MBOX_COUNTS = {
    "mimekit/content-length.mbox.txt": 29,
    "mimekit/simple.mbox.txt": 3,
    "mimekit/issue1189.mbox.txt": 4,
    "mimekit/unmunged.mbox.txt": 2,
    "git-t5100/sample.mbox": 18,
    "git-t5100/rfc2047-samples.mbox": 11,
    "git-t5100/quoted-cr.mbox": 2,
    "git-t5100/sample.mboxrd": 2,
    "golang-nuts-mboxfilterer/golang.mbox": 2,
    "golang-nuts-mboxfilterer/gonuts.mbox": 1,
    "ponymail-foal/dev_ponymail_apache_org_2020-10.mbox": 1,
    "ponymail-foal/n47hcfdt6z70tqxvnhgn3zrdwqgg36yl.mbox": 1,
    "ponymail-foal/users_ponymail_apache_org_2019-09.mbox": 4,
    "ponymail-foal/users_ponymail_apache_org_2022-01.mbox": 6,
}
# Fragments without a leading From_ line: each is one (broken) input.
MBOX_FRAGMENTS = ("git-t5100/0001mboxrd", "git-t5100/0002mboxrd", "git-t5100/t4258-mbox")


def fixture_files() -> list[Path]:
    """Every message file of email-fixtures: not the expected-output JSON, READMEs, the
    address lists, or MimeKit's body.N.txt files (bodies, not messages)."""
    root = data_path("email-fixtures")
    return [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".json"
            and not p.name.startswith("README") and "address-lists" not in p.parts
            and not (p.parent.name == "mimekit-messages" and p.name.startswith("body."))]


@pytest.mark.parametrize(("name", "count"), sorted(MBOX_COUNTS.items()))
def test_mbox_split(name: str, count: int) -> None:
    messages = list(mailfiles.iter_mbox(data_path("mbox", *name.split("/"))))
    assert len(messages) == count
    for m in messages:
        assert mailfiles.looks_like_message(m.header) or m.header == b""


def test_unmunged_from_lines_in_bodies_do_not_split() -> None:
    msgs = list(mailfiles.iter_mbox(data_path("mbox/mimekit/unmunged.mbox.txt")))
    subjects = [line for m in msgs for line in m.header.decode().splitlines()
                if line.startswith("Subject:")]
    assert subjects == [
        "Subject: This is a test message with an unmunged From line",
        "Subject: Another test message with an unmunged From line"]


def test_content_length_skips_unescaped_from_lines() -> None:
    msgs = list(mailfiles.iter_mbox(data_path("mbox/mimekit/content-length.mbox.txt")))
    # Each message ends where the next From_ line starts: sizes cover the file exactly.
    size = data_path("mbox/mimekit/content-length.mbox.txt").stat().st_size
    assert sum(m.size or 0 for m in msgs) == size
    assert msgs[4].fallback_dates[0] == ("from_line", dt.datetime(1997, 8, 18, 21, 13, 21,
                                                                  tzinfo=UTC))


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Everything in email-fixtures, mbox and enron imported into one database."""
    path = tmp_path_factory.mktemp("corpus") / "netaudit.duckdb"
    me = local.prepare_me(path, ["sean.crandall@enron.com"], [])
    results = {}
    inputs = {
        "email-fixtures": [local.Input("message" if local.classify(p, True).kind == "message"
                                       else "mbox", p) for p in fixture_files()],
        "mbox": [local.Input("mbox", data_path("mbox", *n.split("/"))) for n in MBOX_COUNTS]
        + [local.Input("message", data_path("mbox", *n.split("/"))) for n in MBOX_FRAGMENTS],
        "enron": list(local.discover([data_path("enron")])),
    }
    for name, items in inputs.items():
        results[name] = local.import_inputs(path, name, items, me=me, batch_size=300)
    return path, results


@pytest.mark.parametrize(("corpus", "messages"), [
    ("email-fixtures", 651),
    ("mbox", sum(MBOX_COUNTS.values()) + len(MBOX_FRAGMENTS)),
    ("enron", 1000),
])
def test_every_message_is_stored_or_quarantined(corpus_db: tuple[Path, dict], corpus: str,
                                                messages: int) -> None:
    path, results = corpus_db
    result = results[corpus]
    assert result.seen == messages
    assert result.new + result.duplicates + result.quarantined == messages
    con = duckdb.connect(str(path), read_only=True)
    try:
        stored = con.execute("SELECT count(*) FROM messages WHERE source = ?",
                             [corpus]).fetchone()
        quarantined = con.execute("SELECT count(*) FROM quarantine WHERE source = ?",
                                  [corpus]).fetchone()
        unreasoned = con.execute("SELECT count(*) FROM quarantine WHERE reason = ''").fetchone()
    finally:
        con.close()
    assert stored == (result.new,)
    assert quarantined == (result.quarantined,)
    assert unreasoned == (0,)


def test_enron_has_no_quarantine_and_unique_ids(corpus_db: tuple[Path, dict]) -> None:
    _, results = corpus_db
    # All 1,000 Enron Message-IDs are unique and every file has a From and a Date.
    assert (results["enron"].new, results["enron"].quarantined) == (1000, 0)


def query(path: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    with db.reader(path) as con:
        return con.execute(sql, params or []).fetchall()


def test_enron_crlf_message_facts(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    key = "18259890.1075840055516.JavaMail.evans@thyme"  # crandell-s-inbox-109.txt, CRLF
    rows = query(path, "SELECT from_addr, sent_at, date_source, direction, recipient_count, "
                       "location FROM messages WHERE message_key = ?", [key])
    assert len(rows) == 1
    from_addr, sent_at, date_source, direction, recipients, location = rows[0]
    assert from_addr == "alan.comnes@enron.com"
    assert sent_at == dt.datetime(2001, 11, 8, 3, 30, 54, tzinfo=UTC)  # 19:30:54 -0800 (PST)
    assert (date_source, direction, recipients) == ("header", "received", 1)
    assert location.endswith("crandell-s-inbox-109.txt")
    parts = query(path, "SELECT role, address FROM participants WHERE message_key = ? "
                        "ORDER BY role", [key])
    assert parts == [("from", "alan.comnes@enron.com"), ("to", "sean.crandall@enron.com")]


def test_enron_x_to_only_message(corpus_db: tuple[Path, dict]) -> None:
    """allen-p-inbox-63.txt has no To: and an X-To of Lotus Notes names, not addresses:
    it is stored with no recipients, and its sender's name comes from X-From."""
    path, _ = corpus_db
    key = "2467021.1075862165862.JavaMail.evans@thyme"
    rows = query(path, "SELECT from_addr, from_name, recipient_count FROM messages "
                       "WHERE message_key = ?", [key])
    assert rows == [("geninfo@state-bank.com", "Christina M. Kirby", 0)]
    roles = query(path, "SELECT role FROM participants WHERE message_key = ?", [key])
    assert roles == [("from",)]
    x_to_only = query(path, "SELECT count(*) FROM messages WHERE source = 'enron' "
                            "AND recipient_count = 0")[0][0]
    assert 87 <= x_to_only <= 100  # SOURCES.md: 95-100 without To:, 87 with only X-To:


def test_rfc2047_display_names_decoded(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    names = dict(query(path, "SELECT address, name FROM participants WHERE address IN "
                             "('keld@dkuug.dk', 'jorn@prikkprikkprikk.no', "
                             "'anarcat@orangeseeds.org', 'info@formacaofrenetik.info')"))
    assert names["keld@dkuug.dk"] == "Keld Jørn Simonsen"
    assert names["info@formacaofrenetik.info"] == "Formação Frenetikpolis"  # inside quotes
    assert names["anarcat@orangeseeds.org"] == "Antoine Beaupré"


def test_group_addresses_from_real_file(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    rows = query(path, "SELECT p.address FROM participants p JOIN messages m USING "
                       "(message_key) WHERE m.location LIKE '%rfc2822/example04.eml' "
                       "AND p.role = 'to' ORDER BY p.position")
    assert rows == [("c@a.test",), ("joe@where.test",), ("jdoe@one.test",)]


def test_missing_message_id_and_bad_date(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    bad = data_path("email-fixtures/ruby-mail/error_emails/bad_date_header.eml")
    rows = query(path, "SELECT message_id, message_key, date_source, sent_at, from_addr "
                       "FROM messages WHERE location = ?", [str(bad)])
    assert len(rows) == 1
    message_id, key, date_source, sent_at, from_addr = rows[0]
    assert message_id is None and key.startswith("sha256:")  # no Message-ID in the file
    assert date_source == "file_mtime"  # "Date: " is empty
    assert sent_at == dt.datetime.fromtimestamp(bad.stat().st_mtime, UTC)
    assert from_addr == "infoz@reactive-outpost.com"


def test_list_and_bounce_mail_is_flagged(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    lkml = query(path, "SELECT count(*), count(automated_reason) FROM messages "
                       "WHERE location LIKE '%notmuch-corpora/lkml/%'")[0]
    # every LKML message carries List-Id; some share their Message-ID with other folders
    assert lkml[0] > 150 and lkml[0] == lkml[1]
    dsn = query(path, "SELECT is_dsn, automated_reason FROM messages WHERE message_key = "
                      "'96Jul29.022158-0700pdt.148226-12799+708@mm1.sprynet.com'")
    assert dsn == [(True, "bounce (multipart/report)")]  # mimekit delivery-status.txt


def test_duplicate_message_ids_are_stored_once(corpus_db: tuple[Path, dict]) -> None:
    path, results = corpus_db
    dupes = query(path, "SELECT count(*) - count(DISTINCT message_key) FROM messages")[0][0]
    assert dupes == 0
    assert results["email-fixtures"].duplicates > 0  # notmuch duplicate/ shares IDs


def test_quarantine_reasons_are_readable(corpus_db: tuple[Path, dict]) -> None:
    path, _ = corpus_db
    rows = query(path, "SELECT location, reason FROM quarantine WHERE location LIKE "
                       "'%0001mboxrd'")
    assert rows == [(str(data_path("mbox/git-t5100/0001mboxrd")), "no header fields")]
