"""People are regrouped after every change to what they are built from, and only then.

A sync that brings nothing new skips the regrouping (it is most of a no-op sync's time). These
tests plant a sentinel in ``identities`` that only a regrouping would remove, so they can tell
"skipped" from "ran", and then make each kind of change a grouping depends on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import duckdb
import pytest

from analysis import identity
from ingest import local
from netaudit import db
from tests import scenario
from tests.conftest import Run, data_path, write_config

SENTINEL = "Planted By The Test"
NEW_FRIEND = "nova@newfriend.example"


def config_text(db_path: Path, maildir: Path, calendar: Path, extra: str = "") -> str:
    return (f'[netaudit]\ndatabase = "{db_path}"\nme = ["{scenario.ME}"]\n'
            f'timezone = "UTC"\nhistory_start = 2024-01-01\n{extra}\n'
            f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n\n'
            f'[[calendar]]\nname = "cal"\npath = "{calendar}"\n')


def meeting(attendee: str, name: str) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//netaudit tests//EN\r\n"
            "BEGIN:VEVENT\r\nUID:regroup-1@tests.example\r\nDTSTAMP:20261101T090000Z\r\n"
            "DTSTART:20261110T090000Z\r\nDTEND:20261110T100000Z\r\nSUMMARY:Coffee\r\n"
            f"ORGANIZER:mailto:{scenario.ME}\r\n"
            f"ATTENDEE;CN={name};PARTSTAT=ACCEPTED:mailto:{attendee}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


@pytest.fixture
def synced(tmp_path: Path, run: Run) -> dict[str, Path]:
    maildir, _ = scenario.build(tmp_path)
    calendar = tmp_path / "coffee.ics"
    calendar.write_text(meeting("alex@cafe.example", "Alex Attendee"))
    db_path = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "config.toml", config_text(db_path, maildir, calendar))
    run("--config", str(cfg), "sync", check=True)
    return {"cfg": cfg, "db": db_path, "maildir": maildir, "calendar": calendar}


def plant(db_path: Path) -> None:
    """A name no regrouping would write; an UPDATE keeps every row count as it was."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("UPDATE identities SET name = ? WHERE address = ?",
                    [SENTINEL, scenario.STEADY[0]])
    finally:
        con.close()


def query(db_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def regrouped(db_path: Path) -> bool:
    rows = query(db_path, f"SELECT count(*) FROM identities WHERE name = '{SENTINEL}'")
    return rows[0][0] == 0


def test_a_sync_with_nothing_new_skips_the_regrouping(synced: dict[str, Path], run: Run) -> None:
    plant(synced["db"])
    run("--config", str(synced["cfg"]), "sync", check=True)
    assert not regrouped(synced["db"])
    # New mail: regrouped, and the new address is a person.
    scenario.Mailbox(synced["maildir"], counter=iter(range(10_000, 10_010))).write(
        sender=(NEW_FRIEND, "Nova Friend"), to=[(scenario.ME, "")],
        when=dt.datetime(2026, 6, 29, 9, 0, tzinfo=dt.UTC))
    run("--config", str(synced["cfg"]), "sync", check=True)
    assert regrouped(synced["db"])
    assert query(synced["db"], f"SELECT name FROM identities WHERE address = '{NEW_FRIEND}'"
                 ) == [("Nova Friend",)]


def test_a_calendar_edit_that_keeps_every_count_regroups(synced: dict[str, Path],
                                                         run: Run) -> None:
    before = query(synced["db"], "SELECT count(*) FROM meetings UNION ALL "
                                 "SELECT count(*) FROM attendees")
    plant(synced["db"])
    # Same event, one attendee replaced by another: no table changes its number of rows.
    synced["calendar"].write_text(meeting("bea@cafe.example", "Bea Barista"))
    st = synced["calendar"].stat()
    os.utime(synced["calendar"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    run("--config", str(synced["cfg"]), "sync", check=True)
    assert query(synced["db"], "SELECT count(*) FROM meetings UNION ALL "
                               "SELECT count(*) FROM attendees") == before
    assert regrouped(synced["db"])
    addresses = {r[0] for r in query(synced["db"], "SELECT address FROM identities")}
    assert "bea@cafe.example" in addresses and "alex@cafe.example" not in addresses


def test_changed_filters_regroup_without_new_data(synced: dict[str, Path], run: Run) -> None:
    plant(synced["db"])
    text = config_text(synced["db"], synced["maildir"], synced["calendar"],
                       f'[filters]\nignore = ["{scenario.QUIET[0]}"]\nmax_recipients = 7\n')
    write_config(synced["cfg"], text)
    out = run("--config", str(synced["cfg"]), "sync", check=True).stdout
    assert "0 new" in out and "0 changed files" in out  # nothing new came in
    assert regrouped(synced["db"])
    assert query(synced["db"], "SELECT ignored FROM identities WHERE address = "
                               f"'{scenario.QUIET[0]}'") == [(True,)]
    assert query(synced["db"], "SELECT value FROM settings WHERE key = 'max_recipients'"
                 ) == [("7",)]


def test_a_write_whose_regrouping_never_ran_is_regrouped_next_time(
        synced: dict[str, Path], run: Run, tmp_path: Path) -> None:
    """As after a crash between a committed batch and the regrouping: the store's write
    alone (no CLI around it) must leave the people marked as out of date."""
    plant(synced["db"])
    extra = scenario.Mailbox(tmp_path / "extra", counter=iter(range(20_000, 20_010)))
    extra.write(sender=(NEW_FRIEND, "Nova Friend"), to=[(scenario.ME, "")],
                when=dt.datetime(2026, 6, 29, 9, 0, tzinfo=dt.UTC))
    result = local.import_paths(synced["db"], "import", [tmp_path / "extra"],
                                me=frozenset([scenario.ME])).mail
    assert result.new == 1
    assert not regrouped(synced["db"])  # nothing regrouped yet
    run("--config", str(synced["cfg"]), "sync", check=True)  # brings nothing new itself
    assert regrouped(synced["db"])
    assert query(synced["db"], f"SELECT count(*) FROM identities WHERE address = "
                               f"'{NEW_FRIEND}'") == [(1,)]


def test_rows_added_by_hand_in_duckdb_regroup(synced: dict[str, Path], run: Run) -> None:
    con = duckdb.connect(str(synced["db"]))
    try:
        key = con.execute("SELECT message_key FROM messages LIMIT 1").fetchone()
        assert key is not None
        con.execute("INSERT INTO participants (message_key, role, position, address, name) "
                    "VALUES (?, 'cc', 99, 'hand@added.example', 'Hand Added')", [key[0]])
        con.execute("UPDATE identities SET name = ? WHERE address = ?",
                    [SENTINEL, scenario.STEADY[0]])
    finally:
        con.close()
    run("--config", str(synced["cfg"]), "sync", check=True)
    assert regrouped(synced["db"])
    assert query(synced["db"], "SELECT name FROM identities WHERE address = "
                               "'hand@added.example'") == [("Hand Added",)]
    # the stored interactions were computed again: the hand-added Cc is in them
    assert query(synced["db"], "SELECT * FROM interaction_rows ORDER BY ALL") == \
        query(synced["db"], "SELECT * FROM mail_interactions ORDER BY ALL")


def test_people_decisions_regroup(synced: dict[str, Path], run: Run) -> None:
    plant(synced["db"])
    run("--config", str(synced["cfg"]), "people", "ignore", scenario.PUSHY[0], check=True)
    assert regrouped(synced["db"])
    assert query(synced["db"], "SELECT ignored FROM identities WHERE address = "
                               f"'{scenario.PUSHY[0]}'") == [(True,)]


# ---------------------------------------------------------------------------------------------
# Interactions stored with the people


COMPUTED = "SELECT * FROM mail_interactions UNION ALL SELECT * FROM meeting_interactions"


def test_the_regrouping_stores_the_mail_interactions_the_view_then_reads(
        synced: dict[str, Path]) -> None:
    """A read of interactions is a scan of the rows the last regrouping wrote, and they are
    the rows computing them from the raw tables gives, meetings included."""
    views = dict(query(synced["db"], "SELECT view_name, sql FROM duckdb_views() "
                                     "WHERE view_name = 'interactions'"))
    assert "interaction_rows" in views["interactions"]
    stored = query(synced["db"], "SELECT * FROM interactions ORDER BY ALL")
    assert stored == query(synced["db"], f"SELECT * FROM ({COMPUTED}) ORDER BY ALL")
    counts = dict(query(synced["db"], "SELECT channel, count(*) FROM interactions GROUP BY 1"))
    assert query(synced["db"], "SELECT count(*) FROM interaction_rows") == [(counts["email"],)]
    assert counts["email"] > 300 and counts["meeting"] == 1  # Alex at the coffee
    assert query(synced["db"], "SELECT person_id, email FROM interactions "
                               "WHERE channel = 'meeting'") == \
        query(synced["db"], "SELECT person_id, address FROM identities "
                            "WHERE address = 'alex@cafe.example'")


def test_a_report_counts_mail_stored_after_the_last_regrouping(
        synced: dict[str, Path], run: Run, tmp_path: Path) -> None:
    """Mail written without a regrouping (a batch whose regrouping has not run yet, as after a
    crash or before the daemon's) is in the report all the same: it reads the interactions
    computed from the raw tables until the stored ones are current again."""
    def report() -> dict[str, int]:
        out = run("--config", str(synced["cfg"]), "report", "--as-of", "2026-06-30",
                  "--format", "json", check=True).stdout
        return json.loads(out)["summary"]

    before = report()
    extra = scenario.Mailbox(tmp_path / "extra", counter=iter(range(30_000, 30_010)))
    for day in (1, 2):
        extra.write(sender=(NEW_FRIEND, "Nova Friend"), to=[(scenario.ME, "")],
                    when=dt.datetime(2026, 6, day, 9, 0, tzinfo=dt.UTC))
    result = local.import_paths(synced["db"], "import", [tmp_path / "extra"],
                                me=frozenset([scenario.ME])).mail
    assert result.new == 2
    assert report() == {**before, "people": before["people"] + 1,
                        "messages": before["messages"] + 2}
    run("--config", str(synced["cfg"]), "sync", check=True)  # regroups, stores them
    assert query(synced["db"], "SELECT count(*) FROM interaction_rows "
                               f"WHERE email = '{NEW_FRIEND}'") == [(2,)]
    assert report() == {**before, "people": before["people"] + 1,
                        "messages": before["messages"] + 2}


def test_mail_imported_folder_by_folder_is_stored_as_computing_it_all_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phillip Allen's mailbox, one folder after another as syncs bring them: each regrouping
    stores only the threads the new mail joined (with those where a subject link, a copy or a
    person changed), and the stored rows are always what computing them all gives. Ignoring
    someone changes their rows too."""
    mailbox = data_path("enron-mbox", "allen-p")
    path = tmp_path / "n.duckdb"
    me = frozenset(["phillip.allen@enron.com", "k..allen@enron.com", "pallen@enron.com",
                    "phillip.k.allen@enron.com"])
    local.prepare_me(path, sorted(me), [])
    written: list[int] = []
    store = identity.store_interactions
    monkeypatch.setattr(identity, "store_interactions",
                        lambda con: written.append(store(con)) or written[-1])

    def regroup(decide: str | None = None) -> tuple[int, int]:
        with db.writer(path) as con:
            con.execute("BEGIN TRANSACTION")
            if decide:
                con.execute(decide)
                db.people_inputs_changed(con)
            assert identity.refresh_if_stale(con)
            con.execute("COMMIT")
            stored = con.execute("SELECT * FROM interaction_rows ORDER BY ALL").fetchall()
            assert stored == con.execute("SELECT * FROM mail_interactions ORDER BY ALL"
                                         ).fetchall()
        return written[-1], len(stored)

    steps = [["inbox", "sent"], ["all_documents", "discussion_threads"], ["_sent_mail"],
             ["deleted_items"], ["notes_inbox", "sent_items", "straw", "contacts"]]
    counts = []
    for folders in steps:
        local.import_paths(path, "import", [mailbox / f"{f}.mbox" for f in folders], me=me)
        counts.append(regroup())
    assert counts[0] == (667, 667)  # the first stores everything
    assert all(n < total for n, total in counts[1:])  # later ones what changed
    assert counts[-1][1] == 1214  # as one import of the whole mailbox gives
    n, total = regroup("INSERT INTO person_decisions (kind, address) "
                       "VALUES ('ignore', 'keith.holst@enron.com')")
    assert n < total == 1214 - 51  # Keith Holst's 51 rows are gone


def test_the_view_counts_mail_written_before_its_regrouping(
        synced: dict[str, Path], run: Run, tmp_path: Path) -> None:
    """Between a write and its regrouping (the daemon waits a few seconds; a crash may come
    between), `sql` and a user's own queries see the new mail too: the write points the view
    back at the interactions computed from the raw tables, and the regrouping at the stored
    rows again."""
    def view_reads_stored() -> bool:
        sql = query(synced["db"], "SELECT sql FROM duckdb_views() "
                                  "WHERE view_name = 'interactions'")[0][0]
        return "interaction_rows" in sql

    assert view_reads_stored()
    extra = scenario.Mailbox(tmp_path / "extra", counter=iter(range(40_000, 40_010)))
    extra.write(sender=(NEW_FRIEND, "Nova Friend"), to=[(scenario.ME, "")],
                when=dt.datetime(2026, 6, 3, 9, 0, tzinfo=dt.UTC))
    result = local.import_paths(synced["db"], "import", [tmp_path / "extra"],
                                me=frozenset([scenario.ME])).mail
    assert result.new == 1
    assert not view_reads_stored()
    assert query(synced["db"], "SELECT count(*) FROM interactions "
                               f"WHERE email = '{NEW_FRIEND}'") == [(1,)]
    run("--config", str(synced["cfg"]), "sync", check=True)
    assert view_reads_stored()
    assert query(synced["db"], "SELECT count(*) FROM interactions "
                               f"WHERE email = '{NEW_FRIEND}'") == [(1,)]
