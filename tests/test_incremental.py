"""Local mail read again only where it changed, through the real CLI and daemon.

An mbox is read from where the last read ended (sync_state: the offset, the start of the last
message, a hash of samples before the offset), and read whole again when it was rewritten or
shortened; a Maildir source lists only folders changed since its last complete scan; both
after a restart too. A kill -9 in the middle loses and doubles nothing, and an import of a
large mbox stays within its memory budget.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import format_datetime
from pathlib import Path

import duckdb

from ingest.local import CTIME_SLACK_NS
from ingest.mailfiles import SAMPLE_BYTES
from tests.conftest import REPO, Run, write_config
from tests.test_daemon import DaemonProcess, daemons, no_traceback, wait_until

__all__ = ["daemons"]  # the fixture, used here as a parameter

ME = "robin@example.org"
HANG = 120  # seconds: only to notice a hang
RELAYS = "".join(f"Received: from relay{i}.example.net (relay{i}.example.net [192.0.2.{i}])\n"
                 f"\tby mx.example.org with ESMTPS id ABC{i}DEF; "
                 "Mon, 1 Jan 2024 00:00:00 +0000\n" for i in range(6))


def message(n: int, tag: str = "m", body: bytes = b"hello\n", relays: bool = False) -> bytes:
    """One mbox message with a From_ line and a real header block; ``relays`` makes the
    header as long as a delivered message's (1.3 KB)."""
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n)
    sender = f"sender{n % 7}@example.net"
    return (f"From {sender} {when:%a %b %d %H:%M:%S %Y}\n"
            + (RELAYS if relays else "")
            + f"From: Sender {n % 7} <{sender}>\nTo: Robin <{ME}>\nSubject: {tag} {n}\n"
            f"Date: {format_datetime(when)}\nMessage-ID: <{tag}.{n}@example.net>\n\n"
            ).encode() + body + b"\n"


def mbox(count: int, tag: str = "m", start: int = 0, **kwargs: object) -> bytes:
    return b"".join(message(n, tag, **kwargs) for n in range(start, start + count))  # type: ignore[arg-type]


def config(tmp_path: Path, kind: str, path: Path, name: str = "archive") -> Path:
    return write_config(tmp_path / "config.toml",
                        f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\nme = ["{ME}"]\n\n'
                        f'[[{kind}]]\nname = "{name}"\npath = "{path}"\n')


def rows(database: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def exact(database: Path) -> int:
    """The number of messages stored, after checking that none is there twice (a location,
    path#offset, may be: a rewritten mbox puts other messages at the same offsets)."""
    [(total, keys)] = rows(database, "SELECT count(*), count(DISTINCT message_key) "
                                     "FROM messages")
    assert total == keys
    return int(total)


def sync(run: Run, cfg: Path) -> tuple[str, str]:
    """`netaudit -v sync`: (its first line, its log)."""
    proc = run("--config", str(cfg), "-v", "sync", timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[0], proc.stderr


# ---------------------------------------------------------------------------------------------
# mbox


def test_a_sync_reads_only_the_messages_appended_since_the_last(run: Run,
                                                                tmp_path: Path) -> None:
    """The old part of the file is not read again: a message changed in place there (same
    length, outside the hashed samples) is not seen by the sync, which reads the 10 appended
    messages from the byte where the last read ended; an import, which never read the file,
    reads it whole and finds the changed message."""
    path = tmp_path / "mail.mbox"
    path.write_bytes(mbox(2000))
    cfg = config(tmp_path, "mbox", path)
    first, _ = sync(run, cfg)
    assert first == "archive: 2,000 messages: 2,000 new, 0 already stored, 0 quarantined"

    data = path.read_bytes()
    at = data.index(b"<m.1000@example.net>")
    assert SAMPLE_BYTES < at < len(data) - SAMPLE_BYTES  # outside both samples
    path.write_bytes(data.replace(b"<m.1000@example.net>", b"<x.1000@example.net>"))
    with path.open("ab") as fh:
        fh.write(mbox(10, "new"))
    second, log = sync(run, cfg)
    assert second == ("archive: 10 messages: 10 new, 0 already stored, 0 quarantined; 1 mbox "
                      "file read from where the last sync ended (2,000 messages read before "
                      "were not read again)")
    assert f"{path}: read 10 messages from byte {len(data):,} (read from where the last read " \
           "ended)" in log
    database = tmp_path / "n.duckdb"
    assert exact(database) == 2010
    assert rows(database, "SELECT count(*) FROM messages WHERE message_id = "
                          "'x.1000@example.net'") == [(0,)]
    assert rows(database, "SELECT last_uid, split_part(content_hash, ' ', 3) FROM sync_state "
                          "WHERE source = 'archive'") == [(path.stat().st_size, "2010")]

    imported = run("--config", str(cfg), "import", str(path), check=True, timeout=HANG)
    assert imported.stdout.splitlines()[0] == ("Imported 2,010 messages: 1 new, 2,009 already "
                                               "stored, 0 quarantined.")


def test_an_unchanged_mbox_is_not_read_again_by_sync_or_import(run: Run,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "mail.mbox"
    path.write_bytes(mbox(300))
    cfg = config(tmp_path, "mbox", path)
    sync(run, cfg)
    again, log = sync(run, cfg)
    assert again == ("archive: 0 messages: 0 new, 0 already stored, 0 quarantined; 1 mbox file "
                     "unchanged since the last sync (300 messages read before were not read "
                     "again)")
    assert f"{path}: unchanged since the last read ({path.stat().st_size:,} bytes); nothing " \
           "read" in log
    first = run("--config", str(cfg), "import", str(path), check=True, timeout=HANG)
    assert first.stdout.splitlines()[0] == ("Imported 300 messages: 0 new, 300 already stored, "
                                            "0 quarantined.")
    second = run("--config", str(cfg), "import", str(path), check=True, timeout=HANG)
    assert second.stdout.splitlines() == [
        "Imported 0 messages: 0 new, 0 already stored, 0 quarantined.",
        "1 mbox file unchanged since the last import (300 messages read before were not read "
        "again)."]
    assert exact(tmp_path / "n.duckdb") == 300


def test_a_compacted_mbox_is_read_whole_again_and_nothing_doubles(run: Run,
                                                                  tmp_path: Path) -> None:
    """A mail client deleted a message in the middle (writing a new file over the old one),
    then mail was appended: everything after the deleted message moved, so the whole file is
    read; the deleted message stays stored (it still happened)."""
    path = tmp_path / "mail.mbox"
    path.write_bytes(mbox(2000))
    cfg = config(tmp_path, "mbox", path)
    sync(run, cfg)
    compacted = tmp_path / "mail.mbox.new"
    compacted.write_bytes(mbox(1000) + mbox(999, start=1001) + mbox(5, "new"))
    os.replace(compacted, path)
    line, log = sync(run, cfg)
    assert line == ("archive: 2,004 messages: 5 new, 1,999 already stored, 0 quarantined; "
                    "1 mbox file changed and read whole again")
    assert f"{path}: changed before where the last read ended; read whole again; read 2,004 " \
           "messages" in log
    assert exact(tmp_path / "n.duckdb") == 2005


def test_a_shortened_mbox_is_read_whole_and_then_from_its_new_end(run: Run,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "mail.mbox"
    full = mbox(2000)
    path.write_bytes(full)
    cfg = config(tmp_path, "mbox", path)
    sync(run, cfg)
    half = full.index(b"From sender", len(mbox(1000)) - 1)
    assert half == len(mbox(1000))
    path.write_bytes(full[:half])
    line, log = sync(run, cfg)
    assert line == ("archive: 1,000 messages: 0 new, 1,000 already stored, 0 quarantined; "
                    "1 mbox file changed and read whole again")
    assert "shorter than when it was last read; read whole again" in log
    with path.open("ab") as fh:  # the rest back, and three more
        fh.write(full[half:] + mbox(3, "new"))
    line, log = sync(run, cfg)
    assert line.startswith("archive: 1,003 messages: 3 new, 1,000 already stored, "
                           "0 quarantined; 1 mbox file read from where the last sync ended")
    assert f"read 1,003 messages from byte {half:,}" in log
    assert exact(tmp_path / "n.duckdb") == 2003


def test_a_message_still_being_written_is_read_again_from_its_start(run: Run,
                                                                    tmp_path: Path) -> None:
    """The sync came while a delivery was half written: the next one reads that message
    again (its end moved), with what follows; nothing doubles."""
    path = tmp_path / "mail.mbox"
    last = message(100, body=b"the first half of a long body,\n" * 20)
    cut = len(last) - 200
    path.write_bytes(mbox(100) + last[:cut])
    cfg = config(tmp_path, "mbox", path)
    line, _ = sync(run, cfg)
    assert line == "archive: 101 messages: 101 new, 0 already stored, 0 quarantined"
    with path.open("ab") as fh:
        fh.write(last[cut:] + mbox(2, "new"))
    line, log = sync(run, cfg)
    assert line.startswith("archive: 3 messages: 2 new, 1 already stored, 0 quarantined")
    start = len(mbox(100))
    assert f"read 3 messages from byte {start:,} (the last message read grew; read from its " \
           "start)" in log
    assert exact(tmp_path / "n.duckdb") == 103


def test_kill_9_during_an_incremental_sync_loses_and_doubles_nothing(tmp_path: Path,
                                                                     run: Run) -> None:
    """Kill -9 at random moments while a sync reads a large appended part (parsed with the
    helper process too: more than 32 MB); the next sync ends with every message once, the
    position at the end of the file, and a sync after it reads nothing."""
    path = tmp_path / "mail.mbox"
    path.write_bytes(mbox(5000, relays=True))
    cfg = config(tmp_path, "mbox", path)
    sync(run, cfg)
    with path.open("ab") as fh:
        for start in range(0, 80_000, 10_000):
            fh.write(mbox(10_000, "new", start, relays=True))
    assert path.stat().st_size - len(mbox(5000, relays=True)) > 32 << 20
    database = tmp_path / "n.duckdb"
    rng = random.Random(11)
    stored = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "netaudit", "--config", str(cfg), "sync"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        time.sleep(rng.uniform(0.8, 2.5))
        proc.kill()
        proc.wait(timeout=HANG)
        stored.append(exact(database))
    assert stored[0] < 85_000, "the sync finished before it was killed: nothing was tested"
    line, _ = sync(run, cfg)
    assert line.startswith("archive: ")
    assert exact(database) == 85_000
    assert rows(database, "SELECT last_uid FROM sync_state WHERE source = 'archive'") == \
        [(path.stat().st_size,)]
    again, _ = sync(run, cfg)
    assert again.startswith("archive: 0 messages: 0 new")


# ---------------------------------------------------------------------------------------------
# Maildir


def deliver(maildir: Path, n: int, tag: str = "m") -> None:
    """As a delivery agent does: write into tmp/, rename into new/."""
    name = f"{1_700_000_000 + n}.M{n}P1.host"
    (maildir / "tmp" / name).write_bytes(message(n, tag).split(b"\n", 1)[1])
    os.replace(maildir / "tmp" / name, maildir / "new" / name)


def make_maildir(root: Path, count: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for n in range(count):
        deliver(root, n)
    # Files as old as the scan mark's slack are read again by design (clocks of file systems
    # and of this process differ); these tests want them older than that.
    time.sleep(CTIME_SLACK_NS / 1e9 + 0.2)


def test_a_maildir_sync_reads_only_files_new_since_the_last_scan(run: Run,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    make_maildir(root, 50)
    cfg = config(tmp_path, "maildir", root, name="mail")
    line, log = sync(run, cfg)
    assert line == "mail: 50 messages: 50 new, 0 already stored, 0 quarantined"
    assert f"{root}: read every folder (50 messages)" in log
    deliver(root, 50, "new")
    time.sleep(CTIME_SLACK_NS / 1e9 + 0.2)  # so that the next sync's mark is past its slack
    line, log = sync(run, cfg)
    assert line == "mail: 1 messages: 1 new, 0 already stored, 0 quarantined"
    assert f"{root}: read 1 message created or renamed since the last scan" in log
    line, log = sync(run, cfg)
    assert line == "mail: 0 messages: 0 new, 0 already stored, 0 quarantined"
    assert f"{root}: read 0 messages created or renamed since the last scan" in log
    assert exact(tmp_path / "n.duckdb") == 51


# ---------------------------------------------------------------------------------------------
# The daemon


def test_a_restarted_daemon_reads_only_what_changed_while_it_was_stopped(
        tmp_path: Path, daemons: Callable[..., DaemonProcess]) -> None:
    root = tmp_path / "Maildir"
    make_maildir(root, 40)
    path = tmp_path / "mail.mbox"
    path.write_bytes(mbox(300, "box"))
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\nme = ["{ME}"]\n\n'
                       f'[[maildir]]\nname = "mail"\npath = "{root}"\n\n'
                       f'[[mbox]]\nname = "archive"\npath = "{path}"\n')
    database = tmp_path / "n.duckdb"

    def run_until(*lines: str) -> str:
        d = daemons(cfg, verbose=True)
        wait_until(lambda: all(line in d.log_text() for line in lines), 60, " and ".join(lines))
        assert d.terminate()[0] == 0
        no_traceback(d)
        return d.log_text()

    run_until(f"{root}: read every folder (40 messages)",
              f"{path}: read 300 messages from byte 0 (first read)")
    assert exact(database) == 340
    log = run_until(f"{root}: read 0 messages created or renamed since the last scan",
                    f"{path}: unchanged since the last read")
    assert not re.search(r"read \d+ messages? from byte", log)

    deliver(root, 40, "new")
    size = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(mbox(3, "late"))
    run_until(f"{root}: read 1 message created or renamed since the last scan",
              f"{path}: read 3 messages from byte {size:,} (read from where the last read "
              "ended)")
    assert exact(database) == 344


# ---------------------------------------------------------------------------------------------
# Memory


def test_importing_a_large_mbox_stays_within_its_memory_budget(tmp_path: Path,
                                                              home: Path) -> None:
    """100,000 messages with delivered-size headers (156 MB): the import's processes together
    (it and its parsing helper) stay under 200 MiB. Before, the whole file was mapped and
    every page of it counted: more than the file's size."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from measure import timed_run

    path = tmp_path / "big.mbox"
    body = b"A line of a body, as in the mail people write to each other.\n" * 8
    with path.open("wb") as fh:
        for start in range(0, 100_000, 10_000):
            fh.write(mbox(10_000, start=start, relays=True, body=body))
    assert path.stat().st_size > 150_000_000
    cfg = config(tmp_path, "mbox", path)
    _, peak_kib, code, out, err = timed_run(
        [sys.executable, "-m", "netaudit", "--config", str(cfg), "import", str(path)], home)
    assert code == 0, err
    assert out.splitlines()[0] == ("Imported 100,000 messages: 100,000 new, 0 already stored, "
                                   "0 quarantined.")
    assert peak_kib < 200 * 1024, f"peak {peak_kib // 1024} MiB"
