"""The database file: private, migrated safely, and shared between processes without tracebacks."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO

import duckdb
import pytest

from analysis import identity
from netaudit import db, sample
from netaudit.errors import DatabaseBusy, DatabaseError
from netaudit.migrations import MIGRATIONS, Migration
from tests.conftest import Run, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_is_private_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "data" / "netaudit.duckdb"
    old = os.umask(0o022)
    try:
        with db.writer(path) as con:
            rows = con.execute("SELECT version, duckdb_version FROM schema_meta").fetchall()
    finally:
        os.umask(old)
    assert rows == [(m.version, duckdb.__version__) for m in MIGRATIONS]
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_writers_keep_row_groups_small(tmp_path: Path) -> None:
    """A checkpoint rewrites a table's last row group whole, so netaudit writes short ones
    (db.ROW_GROUP_ROWS): what closing the file costs stays the same as the mail grows."""
    path = tmp_path / "n.duckdb"
    for start in (0, 20_000):  # two writes, the second one filling the first's last group
        with db.writer(path) as con:
            con.execute("INSERT INTO quarantine (source, location, reason) "
                        "SELECT 'mail', 'loc ' || i, 'bad' FROM range(?, ?) t(i)",
                        [start, start + 20_000])
    with db.reader(path) as con:
        groups = con.execute(
            "SELECT row_group_id, sum(count) FROM pragma_storage_info('quarantine') "
            "WHERE column_path = '[0]' GROUP BY 1 ORDER BY 1").fetchall()
        assert con.execute("SELECT current_database()").fetchone() == ("n",)
    with db.writer(path) as con:
        assert con.execute("SELECT current_database(), current_setting('temp_directory')"
                           ).fetchone() == ("n", f"{path}.tmp")
    assert db.ROW_GROUP_ROWS == 16_384
    assert groups == [(0, 16_384), (1, 16_384), (2, 40_000 - 2 * 16_384)]


def test_a_file_named_after_a_duckdb_catalog_is_still_written(tmp_path: Path) -> None:
    path = tmp_path / "memory.duckdb"  # "memory" is DuckDB's own in-memory catalog
    with db.writer(path) as con:
        con.execute("INSERT INTO quarantine (source, location, reason) VALUES ('a', 'b', 'c')")
    with db.reader(path) as con:
        assert con.execute("SELECT source, location, reason FROM quarantine").fetchall() == \
            [("a", "b", "c")]


def _two(statement: str) -> tuple[Migration, ...]:
    return (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "test", (
        "CREATE TABLE extra (x INTEGER)", statement)))


def test_migration_backs_up_first_and_records_itself(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path) as con:
        con.execute("INSERT INTO me_addresses (address, origin) VALUES ('a@x.example', 't')")
    con = duckdb.connect(str(path))
    try:
        applied = db.migrate(con, path, _two("INSERT INTO extra VALUES (1)"))
        version = db.schema_version(con)
    finally:
        con.close()
    assert applied == [MIGRATIONS[-1].version + 1] and version == applied[0]
    backup = db.backup_path(path, MIGRATIONS[-1].version)
    assert mode(backup) == 0o600
    check = duckdb.connect(str(backup), read_only=True)
    try:  # the backup is the file as it was: data kept, new table absent
        assert check.execute("SELECT address FROM me_addresses").fetchall() == [("a@x.example",)]
        assert db.schema_version(check) == MIGRATIONS[-1].version
        assert check.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name='extra'"
                             ).fetchone() == (0,)
    finally:
        check.close()


def test_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    con = duckdb.connect(str(path))
    try:
        with pytest.raises(DatabaseError, match=r"migration \d+ \(test\) failed: .*left at schema"):
            db.migrate(con, path, _two("INSERT INTO no_such_table VALUES (1)"))
        assert db.schema_version(con) == MIGRATIONS[-1].version
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'extra'"
                           ).fetchone() == (0,)
    finally:
        con.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path) as con:
        con.execute("INSERT INTO schema_meta (version, name) VALUES (999, 'future')")
    with pytest.raises(DatabaseError, match="written by a newer netaudit"), db.writer(path):
        pass


def test_a_file_of_schema_4_keeps_its_interactions_and_stores_them_when_regrouped(
        tmp_path: Path) -> None:
    """Schema 5 stores interactions at each regrouping. A file written before it reads the
    same interactions right after the upgrade (computed from the raw tables, as schema 4
    did), and the next regrouping stores those very rows."""
    path = tmp_path / "n.duckdb"
    con = duckdb.connect(str(path))
    try:
        assert db.migrate(con, path, MIGRATIONS[:4]) == [1, 2, 3, 4]
        con.execute("INSERT INTO me_addresses (address, origin) VALUES ('me@x.example', 't')")
        con.execute("""
            INSERT INTO messages (message_key, message_id, source, location, sent_at,
                                  date_source, from_addr, direction, recipient_count,
                                  in_reply_to, refs, is_dsn)
            VALUES ('q@x.example', 'q@x.example', 'import', 'a', '2026-01-05 09:00+00',
                    'header', 'me@x.example', 'sent', 1, NULL, [], false),
                   ('a@ann.example', 'a@ann.example', 'import', 'b', '2026-01-06 09:00+00',
                    'header', 'ann@ann.example', 'received', 1, 'q@x.example',
                    ['q@x.example'], false)""")
        con.execute("""
            INSERT INTO participants (message_key, role, position, address) VALUES
                ('q@x.example', 'from', 0, 'me@x.example'),
                ('q@x.example', 'to', 0, 'ann@ann.example'),
                ('a@ann.example', 'from', 0, 'ann@ann.example'),
                ('a@ann.example', 'to', 0, 'me@x.example')""")
    finally:
        con.close()
    ann = "p" + hashlib.md5(b"ann@ann.example").hexdigest()[:10]
    expected = [(ann, "ann@ann.example", "sent", "q@x.example", True, False, "new"),
                (ann, "ann@ann.example", "received", "q@x.example", False, True, "references")]
    sql = ("SELECT person_id, email, direction, thread_id, starts_thread, is_reply, "
           "thread_method FROM interactions ORDER BY ts")
    with db.writer(path) as con:  # migrates to the latest schema
        assert db.schema_version(con) == MIGRATIONS[-1].version
        assert con.execute(sql).fetchall() == expected
        assert con.execute("SELECT count(*) FROM interaction_rows").fetchone() == (0,)
        con.execute("BEGIN TRANSACTION")
        identity.refresh(con)
        con.execute("COMMIT")
    with db.reader(path) as con:
        assert con.execute(sql).fetchall() == expected
        assert con.execute("SELECT count(*) FROM interaction_rows").fetchone() == (2,)
    assert db.backup_path(path, 4).exists()


HOLD_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from netaudit import db
    with db.writer(Path(sys.argv[1])) as con:
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
""")

HOLD_READER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def hold(script: str, path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_readers_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    other = hold(HOLD_READER, path, 30)
    try:
        with db.reader(path, wait=0) as con:  # a second reader gets in at once
            assert con.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    finally:
        other.kill()
        other.wait()


def test_reader_gets_a_clear_message_while_a_write_is_open(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{path}"\n')
    writer = hold(HOLD_WRITER, path, 60)
    try:
        proc = run("--config", str(cfg), "sql", "SELECT 1", env={"NETAUDIT_LOCK_WAIT": "0.5"})
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"Error: the database {path} is being written by ")
    assert f"(PID {writer.pid}); try again in a moment" in line


def test_reader_retries_until_a_short_write_ends(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    writer = hold(HOLD_WRITER, path, 1.0)
    started = time.monotonic()
    with db.reader(path, wait=20) as con:
        assert con.execute("SELECT 42").fetchone() == (42,)
    assert time.monotonic() - started >= 0.5  # it had to wait for the writer
    writer.wait()


def test_writer_waits_for_a_reader_then_writes(tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    reader = hold(HOLD_READER, path, 1.5)
    waits: list[str] = []
    with db.writer(path, wait=30, on_wait=waits.append) as con:
        con.execute("INSERT INTO me_addresses (address, origin) VALUES ('a@x.example', 't')")
    reader.wait()
    assert len(waits) == 1 and f"PID {reader.pid}" in waits[0]
    with pytest.raises(DatabaseBusy):
        other = hold(HOLD_READER, path, 30)
        try:
            with db.writer(path, wait=0.3):
                pass
        finally:
            other.kill()
            other.wait()


def test_missing_and_damaged_database(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{path}"\n')
    proc = run("--config", str(cfg), "status")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: no database at {path} yet; run `netaudit import "
                                   "PATH` or `netaudit sync` first")
    path.write_bytes(b"this is not a database" * 1000)
    proc = run("--config", str(cfg), "status")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"Error: the database {path} is damaged")
    assert "run `netaudit rebuild` to re-create it from your sources" in proc.stderr


HOLD_UNTIL_TOLD = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "reader")
    print("holding", flush=True)
    sys.stdin.readline()
    con.close()
""")


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of ``stream`` as they come (None at its end), so a test can wait for one
    without blocking on a process that is itself waiting."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize(("holder_kind", "command"), [
    ("reader", "import"),  # a reader: `duckdb -readonly`, a long `netaudit sql`
    ("writer", "import"),  # another program writing
    ("reader", "sync"),
    ("reader", "people"),
])
def test_a_command_that_waits_for_another_process_says_so(
        home: Path, tmp_path: Path, holder_kind: str, command: str) -> None:
    """While another process holds the file, the command prints one line naming it and
    goes on waiting; once the file is released it finishes. Before, it waited up to a
    minute in silence."""
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    maildir = tmp_path / "Maildir"
    sample.write_maildir(maildir, 3)
    cfg = write_config(tmp_path / "c.toml",
                       f'[netaudit]\ndatabase = "{path}"\nme = ["robin@example.org"]\n\n'
                       f'[[maildir]]\nname = "box"\npath = "{maildir}"\n')
    base = [sys.executable, "-m", "netaudit", "--config", str(cfg)]
    if command == "people":  # someone to decide about
        subprocess.run([*base, "sync"], check=True, capture_output=True, cwd=home, timeout=60)
    args = {"import": ["import", str(maildir)], "sync": ["sync"],
            "people": ["people", "ignore", "noreply@bank.example"]}[command]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_TOLD, str(path), holder_kind],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    proc = None
    try:
        assert holder.stdout.readline() == "holding\n"
        proc = subprocess.Popen([*base, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=home)
        assert proc.stderr is not None
        first = lines_of(proc.stderr).get(timeout=30)  # a hang guard: it comes after ~1 s
        assert first is not None, "the command ended without saying it waits"
        assert re.fullmatch(rf"waiting for \S+ \(PID {holder.pid}\) to release "
                            rf"{re.escape(str(path))}\n", first), first
        assert proc.poll() is None  # still waiting: the holder has not let go
        holder.stdin.write("release\n")
        holder.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""  # the waiting line came once
    assert out == {"import": "Imported 3 messages: 3 new, 0 already stored, 0 quarantined.\n",
                   "sync": "box: 3 messages: 3 new, 0 already stored, 0 quarantined\n",
                   "people": "noreply@bank.example is left out of the reports from now on.\n",
                   }[command]
