"""`netaudit people forget`: the whole person goes, and nothing of them stays on the disk.

The check is the one a user (or an attacker with the disk) would make: the raw bytes of the
database file, its WAL and every file beside it (backups), searched for the person's
addresses, their name and the subject of mail that was with them alone. Deleted rows stay
readable in DuckDB's free blocks, and backups are whole copies, so a row-level check is not
enough. Every search is first shown to find what it looks for, so that a pass is never the
result of compression hiding a string.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
from email.utils import format_datetime
from pathlib import Path

import duckdb
import pytest

from netaudit import db
from netaudit.migrations import MIGRATIONS
from netaudit.privacy import forget_hash
from tests import scenario
from tests.conftest import REPO, Run, write_config

UTC = dt.UTC
ME = (scenario.ME, scenario.ME_NAME)
SAM = scenario.STEADY
NAME = "Zelda Quux"
OLD = ("zelda.quux@oldplace.example", NAME)  # until December
NEW = ("zelda.quux@newplace.example", NAME)  # from January: joined by the "moved" rule
HOME = ("zq@home.example", "ZQ")  # joined by `people merge`
ADDRESSES = [NEW[0], OLD[0], HOME[0]]  # sorted
ALONE = "Marmalade Quokka Plans"  # mail with her alone
GROUP = "Xylophone Picnic Rota"  # mail with her and Sam
HER_ID = "<20250310.zelda.quux@oldplace.example>"  # her client builds ids from her address
REPLY = "Re: Quokka Ledger Draft"
ONE_TO_ONE = "Quokka Review With Zelda"  # a meeting with her alone
TEAM = "Garden Committee"  # a meeting with her and Sam
SECRETS = [*ADDRESSES, NAME, ALONE, "Quokka Ledger", ONE_TO_ONE]


def raw_message(box: scenario.Mailbox, *, mid: str, sender: tuple[str, str],
                to: list[tuple[str, str]], when: dt.datetime, subject: str,
                reply_to: str | None = None) -> None:
    """A message with a Message-ID of my choosing (Mailbox.write numbers its own)."""
    lines = [f'From: "{sender[1]}" <{sender[0]}>',
             "To: " + ", ".join(f'"{n}" <{a}>' for a, n in to),
             f"Date: {format_datetime(when)}", f"Message-ID: {mid}", f"Subject: {subject}"]
    if reply_to:
        lines += [f"In-Reply-To: {reply_to}", f"References: {reply_to}"]
    name = f"{int(when.timestamp())}.M{next(box.counter)}P1.forget:2,S"
    (box.root / "cur" / name).write_bytes(("\r\n".join(lines) + "\r\n\r\nHi.\r\n").encode())


def plant(root: Path) -> tuple[Path, Path]:
    """The scenario, plus Zelda (``plant_zelda``)."""
    maildir, _ = scenario.build(root)
    return maildir, plant_zelda(maildir, root)


def plant_zelda(maildir: Path, root: Path) -> Path:
    """Zelda in a Maildir, and a calendar file: two addresses that netaudit joins as one
    person who moved, a third the user merges, mail with her alone and with Sam, a bounce,
    a thread whose ids spell her address, and meetings with her alone and with Sam."""
    box = scenario.Mailbox(maildir, itertools.count(10_000))  # ids apart from the scenario's
    for i, when in enumerate(scenario.days(dt.date(2024, 7, 5), dt.date(2025, 12, 12), 14)):
        first, second = (ME, OLD) if i % 2 == 0 else (OLD, ME)
        mid = box.write(sender=first, to=[second], when=when, subject=ALONE)
        box.write(sender=second, to=[first], when=when + dt.timedelta(hours=2),
                  subject=f"Re: {ALONE}", reply_to=mid)
    for i, when in enumerate(scenario.days(dt.date(2026, 1, 16), dt.date(2026, 6, 26), 14)):
        first, second = (ME, NEW) if i % 2 == 0 else (NEW, ME)
        mid = box.write(sender=first, to=[second], when=when, subject=ALONE)
        box.write(sender=second, to=[first], when=when + dt.timedelta(hours=2),
                  subject=f"Re: {ALONE}", reply_to=mid)
    box.write(sender=HOME, to=[ME], when=dt.datetime(2026, 2, 1, 9, tzinfo=UTC),
              subject="From home")
    # With Sam too: mine keeps its subject for Sam, hers goes with her.
    box.write(sender=ME, to=[NEW, SAM], when=dt.datetime(2026, 3, 2, 9, tzinfo=UTC),
              subject=GROUP)
    box.write(sender=NEW, to=[ME, SAM], when=dt.datetime(2026, 3, 3, 9, tzinfo=UTC),
              subject=f"Re: {GROUP}")
    # Her message's id spells her address; my answer refers to it.
    raw_message(box, mid=HER_ID, sender=OLD, to=[ME],
                when=dt.datetime(2025, 3, 10, 9, tzinfo=UTC), subject="Quokka Ledger Draft")
    raw_message(box, mid="<answer-1@example.org>", sender=ME, to=[OLD],
                when=dt.datetime(2025, 3, 10, 15, tzinfo=UTC), subject=REPLY,
                reply_to=HER_ID)
    lost = dt.datetime(2025, 12, 20, 9, tzinfo=UTC)
    box.write(sender=ME, to=[OLD], when=lost, subject=ALONE)
    box.bounce(OLD[0], lost + dt.timedelta(minutes=5))
    meetings = root / "meetings.ics"
    meetings.write_text("\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//netaudit forget test//EN",
        "BEGIN:VEVENT", f"UID:review-{NEW[0]}", "DTSTAMP:20260101T000000Z",
        "DTSTART:20260305T090000Z", "DTEND:20260305T100000Z", f"SUMMARY:{ONE_TO_ONE}",
        f"ORGANIZER;CN={NAME}:mailto:{NEW[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={scenario.ME_NAME}:mailto:{scenario.ME}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={NAME}:mailto:{NEW[0]}", "END:VEVENT",
        "BEGIN:VEVENT", "UID:garden-committee-1", "DTSTAMP:20260101T000000Z",
        "DTSTART:20260310T090000Z", "DTEND:20260310T100000Z", f"SUMMARY:{TEAM}",
        f"ORGANIZER;CN={SAM[1]}:mailto:{SAM[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={scenario.ME_NAME}:mailto:{scenario.ME}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={NAME}:mailto:{NEW[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={SAM[1]}:mailto:{SAM[0]}", "END:VEVENT",
        "END:VCALENDAR", ""]))
    return meetings


def old_schema_file(path: Path) -> None:
    """A database at schema 3 holding one message from her, as an older netaudit left it:
    the next command migrates it and keeps it as ``.bak-3``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        db.migrate(con, path, MIGRATIONS[:3])
        con.execute("INSERT INTO messages (message_key, message_id, source, location, sent_at, "
                    "date_source, from_addr, from_name, direction, recipient_count, subject, "
                    "is_dsn) VALUES ('<old-1@x>', '<old-1@x>', 'mail', 'cur/1', "
                    "TIMESTAMPTZ '2024-05-01 10:00:00+00', 'header', ?, ?, 'received', 1, ?, "
                    "false)", [OLD[0], NAME, ALONE])
        con.execute("INSERT INTO participants VALUES ('<old-1@x>', 'from', 0, ?, ?)",
                    [OLD[0], NAME])
    finally:
        con.close()
    os.chmod(path, 0o600)


def found_in(path: Path, needles: list[str]) -> list[str]:
    data = path.read_bytes().lower()
    return [n for n in needles if n.lower().encode() in data]


def leaks(directory: Path) -> dict[str, list[str]]:
    """Every file in the database's directory (the file, its WAL, backups) that holds one of
    the secrets in its raw bytes, with the secrets it holds."""
    out = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            hits = found_in(path, SECRETS)
            if hits:
                out[path.name] = hits
    return out


def sql(run: Run, cfg: Path, query: str) -> list[dict]:
    return json.loads(run("--config", str(cfg), "sql", "--format", "json", query,
                          check=True).stdout)


@pytest.fixture
def setup(tmp_path: Path, run: Run) -> tuple[Path, Path, Path]:
    """Mail and calendar as configured sources, a migration backup and a rebuild backup
    that both hold her, and the person joined from three addresses."""
    maildir, meetings = plant(tmp_path / "src")
    db_dir = tmp_path / "db"
    old_schema_file(db_dir / "n.duckdb")
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{db_dir / "n.duckdb"}"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\nhistory_start = 2024-01-01\n'
                       "store_subjects = true\n"
                       f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n'
                       f'[[calendar]]\nname = "cal"\npath = "{meetings}"\n')
    run("--config", str(cfg), "sync", check=True)
    assert (db_dir / "n.duckdb.bak-3").exists()
    run("--config", str(cfg), "people", "merge", HOME[0], NEW[0], check=True)
    run("--config", str(cfg), "rebuild", check=True)
    people = sql(run, cfg, "SELECT addresses FROM people WHERE name = 'Zelda Quux'")
    assert people == [{"addresses": ADDRESSES}]  # one person, three addresses
    return cfg, db_dir, maildir


def test_forget_removes_the_person_from_the_file_and_its_backups(
        setup: tuple[Path, Path, Path], run: Run) -> None:
    cfg, db_dir, maildir = setup
    backups = sorted(p.name for p in db_dir.iterdir() if ".bak-" in p.name)
    assert backups[0] == "n.duckdb.bak-3" and backups[1].startswith("n.duckdb.bak-rebuild-")
    before = leaks(db_dir)
    # Every secret is readable in the raw bytes of the file and of both backups.
    assert before["n.duckdb"] == SECRETS
    assert set(before["n.duckdb.bak-3"]) == {OLD[0], NAME, ALONE}
    assert before[backups[1]] == SECRETS
    sam_before = sql(run, cfg, f"SELECT count(*) AS n FROM participants WHERE address = "
                               f"'{SAM[0]}'")

    proc = run("--config", str(cfg), "people", "forget", OLD[0], "--yes", check=True)

    assert leaks(db_dir) == {}
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Forgot 3 addresses: {', '.join(ADDRESSES)}."
    assert lines[1].startswith("Deleted ") and f"rewrote {db_dir / 'n.duckdb'}" in lines[1]
    assert lines[2] == ("Removed 2 backup files that held them: "
                        + ", ".join(str(db_dir / b) for b in backups) + ".")
    assert sorted(p.name for p in db_dir.iterdir()) == ["n.duckdb"]  # no WAL, no backup
    assert (db_dir / "n.duckdb").stat().st_mode & 0o777 == 0o600
    assert sql(run, cfg, "SELECT max(version) AS v, count(*) AS n FROM schema_meta") == \
        [{"v": MIGRATIONS[-1].version, "n": MIGRATIONS[-1].version}]
    hashes = sql(run, cfg, "SELECT address FROM person_decisions WHERE kind = 'forget' "
                           "ORDER BY 1")
    assert hashes == [{"address": h} for h in sorted(forget_hash(a) for a in ADDRESSES)]
    # What others shared with her stays for them: my group message (its subject too, since
    # Sam was on it), Sam's place on it, and the committee meeting with Sam.
    assert sql(run, cfg, f"SELECT subject, list(p.address ORDER BY p.address) AS who "
                         f"FROM messages JOIN participants p USING (message_key) "
                         f"WHERE subject = '{GROUP}' GROUP BY 1") == \
        [{"subject": GROUP, "who": [scenario.ME, SAM[0]]}]
    assert sql(run, cfg, f"SELECT count(*) AS n FROM participants WHERE address = "
                         f"'{SAM[0]}'") == [{"n": sam_before[0]["n"] - 1}]  # her group mail
    team = sql(run, cfg, f"SELECT list(a.address) AS who FROM meetings m JOIN attendees a "
                         f"USING (calendar, occurrence_key) WHERE summary = '{TEAM}'")
    assert team == [{"who": [SAM[0]]}]
    # The meeting with her alone keeps its time (under a hashed UID) but not its summary.
    alone = sql(run, cfg, "SELECT summary, starts_at::VARCHAR AS at, uid LIKE 'sha256:%' AS "
                          "hashed FROM meetings WHERE calendar = 'cal' AND starts_at = "
                          "TIMESTAMPTZ '2026-03-05 09:00:00+00'")
    assert alone == [{"summary": None, "at": "2026-03-05 09:00:00+00", "hashed": True}]
    # My answer to her message whose id spelled her address: kept, without the reference.
    assert sql(run, cfg, "SELECT subject, in_reply_to, refs FROM messages WHERE "
                         "message_key = 'answer-1@example.org'") == \
        [{"subject": None, "in_reply_to": None, "refs": []}]
    assert sql(run, cfg, "SELECT count(*) AS n FROM bounces") == [{"n": 1}]  # Bob's only

    # Reading the sources again brings nothing back, nor does new mail from her.
    box = scenario.Mailbox(maildir, itertools.count(20_000))
    box.write(sender=NEW, to=[ME], when=dt.datetime(2026, 6, 29, 9, tzinfo=UTC),
              subject=f"Fwd: {ALONE}")
    run("--config", str(cfg), "sync", check=True)
    run("--config", str(cfg), "import", str(maildir), check=True)
    assert leaks(db_dir) == {}
    proc = run("--config", str(cfg), "rebuild", check=True)
    assert leaks(db_dir) == {}
    assert sql(run, cfg, "SELECT count(*) AS n FROM person_decisions WHERE kind = 'forget'"
               ) == [{"n": 3}]


def test_forget_refuses_my_own_address(setup: tuple[Path, Path, Path], run: Run) -> None:
    cfg, db_dir, _ = setup
    before = {p.name: p.stat().st_mtime_ns for p in db_dir.iterdir()}
    proc = run("--config", str(cfg), "people", "forget", scenario.ME, "--yes")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"Error: {scenario.ME} is one of your own addresses; "
                                   "netaudit forgets other people, not you")
    assert {p.name: p.stat().st_mtime_ns for p in db_dir.iterdir()} == before


def test_the_question_names_every_address_and_no_changes_nothing(
        setup: tuple[Path, Path, Path], home: Path) -> None:
    cfg, db_dir, _ = setup
    before = {p.name: p.stat().st_mtime_ns for p in db_dir.iterdir()}
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "people",
                           "forget", NEW[0]], input="n\n", capture_output=True, text=True,
                          timeout=60, cwd=home, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert (f"Forget {NEW[0]} and the addresses joined to it ({OLD[0]}, {HOME[0]}): "
            "delete everything stored about them? [y/N]") in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in db_dir.iterdir()} == before


def test_backups_that_never_held_her_stay_and_unreadable_ones_go(tmp_path: Path,
                                                                  run: Run) -> None:
    """Through a symlinked database: the file it points to is rewritten and the link kept;
    a backup from before she wrote is kept; a damaged backup and a WAL without its file,
    which cannot be checked, are removed."""
    maildir, _ = scenario.build(tmp_path / "src")
    real, place = tmp_path / "real", tmp_path / "db"
    real.mkdir()
    place.mkdir()
    link = place / "n.duckdb"
    link.symlink_to(real / "n.duckdb")
    meetings = tmp_path / "src" / "meetings.ics"
    meetings.write_text(scenario.weekly_meetings(SAM, dt.date(2026, 1, 5), 4, location="x"))
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{link}"\nme = ["{scenario.ME}"]\n'
                       'timezone = "UTC"\nhistory_start = 2024-01-01\nstore_subjects = true\n'
                       f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n'
                       f'[[calendar]]\nname = "cal"\npath = "{meetings}"\n')
    run("--config", str(cfg), "sync", check=True)
    run("--config", str(cfg), "rebuild", check=True)  # a backup from before Zelda
    [clean] = real.glob("n.duckdb.bak-rebuild-*")
    damaged = real / "n.duckdb.bak-rebuild-20200101T000000"
    damaged.write_bytes(b"\0" * 4096 + f"{OLD[0]} {NAME} {ALONE}".encode())
    orphan = place / "n.duckdb.bak-2.wal"
    orphan.write_bytes(f"{NEW[0]} {NAME}".encode())
    plant_zelda(maildir, tmp_path / "src")  # she arrives: new mail, meetings with her
    run("--config", str(cfg), "sync", check=True)
    run("--config", str(cfg), "people", "merge", HOME[0], NEW[0], check=True)
    assert found_in(real / "n.duckdb", SECRETS) == SECRETS
    assert found_in(clean, SECRETS) == []

    proc = run("--config", str(cfg), "people", "forget", NEW[0], "--yes", check=True)

    assert leaks(real) == {} and leaks(place) == {}
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Forgot 3 addresses: {', '.join(ADDRESSES)}."
    assert f"rewrote {real / 'n.duckdb'} " in lines[1]
    assert lines[2] == ("Removed 2 backup files that could not be read, so nothing showed "
                        f"that they did not hold them: {damaged}, {orphan}.")
    assert lines[3] == f"Kept 1 backup file that never held them: {clean}."
    assert link.is_symlink() and link.readlink() == real / "n.duckdb"
    assert sorted(p.name for p in real.iterdir()) == ["n.duckdb", clean.name]
    assert sorted(p.name for p in place.iterdir()) == ["n.duckdb"]
    assert sql(run, cfg, "SELECT count(*) AS n FROM people WHERE name = 'Sam Steady'") == \
        [{"n": 1}]
