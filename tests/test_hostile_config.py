"""A config that works against the user: password commands that echo the secret, hang, or
leave processes behind, and history_start dates no calendar can be expanded from. Each ends
in one readable line and an exit code, with nothing leaked and nothing left running.

The CLI runs as a real process, against a real Dovecot server and a real DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import duckdb
import pytest

from netaudit import config
from tests.conftest import Run, data_path, write_config
from tests.dovecot import ImapAccount
from tests.test_secrets import gone_soon

LEAKED = "Leak3d-s3cret-Qw7"


def imap_config(tmp_path: Path, account: ImapAccount, command: list[str]) -> Path:
    db_path = tmp_path / "n.duckdb"
    return write_config(tmp_path / "config.toml", f"""
[netaudit]
database = "{db_path}"
me = ["robin@example.org"]

[[imap]]
name = "work"
username = "{account.user}"
host = "127.0.0.1"
port = {account.port}
security = "plain"
timeout = 10
password_command = {command!r}
""".replace("'", '"'))


def last_error(db_path: Path) -> str:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        row = con.execute("SELECT last_error FROM sources WHERE name = 'work'").fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])


def test_failing_password_command_leaks_nothing(imap_account: ImapAccount, tmp_path: Path,
                                                run: Run) -> None:
    """The command echoes the secret in its complaint on stderr, then fails: the sync names
    it and its exit status, and the secret is in no output, no byte of the database and not
    in sources.last_error."""
    script = tmp_path / "pw.py"
    script.write_text(f"import sys\nprint('gpg: decryption failed for {LEAKED}', "
                      "file=sys.stderr)\nsys.exit(1)\n")
    cfg = imap_config(tmp_path, imap_account, [sys.executable, str(script)])
    proc = run("-vv", "--config", str(cfg), "sync", timeout=60)
    expected = (f"password_command of work: {sys.executable!r} exited with status 1; its "
                "output is not shown, as it may hold the secret (run the command yourself to "
                "see it)")
    assert proc.returncode == 1
    assert f"work: failed: {expected}\n" in proc.stdout
    assert LEAKED not in proc.stdout and LEAKED not in proc.stderr
    assert "decryption failed" not in proc.stdout + proc.stderr
    assert last_error(tmp_path / "n.duckdb") == expected
    files = list(tmp_path.glob("n.duckdb*"))
    assert files
    for path in files:
        assert LEAKED.encode() not in path.read_bytes(), path.name


@pytest.mark.parametrize(("shape", "message"), [
    # The shell waits for a sleep that shares its stdout: only the timeout ends it.
    ("sleep 1000 & echo $! > {pid}; wait",
     "'sh' did not finish within 2 s; it was stopped, with every process it started"),
    # The shell prints and exits, and the sleep it left keeps the output open.
    ("sleep 1000 & echo $! > {pid}; echo pw",
     "'sh' exited, but a process it started kept its output open; that process was stopped"),
])
def test_hanging_password_command_is_stopped_with_its_children(
        imap_account: ImapAccount, tmp_path: Path, run: Run, shape: str, message: str) -> None:
    """Killing only the command would leave the sleep running and holding the pipe, and the
    sync waiting for it. The whole process group is killed, so the sync ends (the process
    timeout only detects a hang) and the sleep is gone."""
    pid_file = tmp_path / "sleep.pid"
    cfg = imap_config(tmp_path, imap_account, ["sh", "-c", shape.format(pid=pid_file)])
    proc = run("--config", str(cfg), "sync", env={"NETAUDIT_COMMAND_TIMEOUT": "2"}, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"work: failed: password_command of work: {message}\n" in proc.stdout
    assert gone_soon(int(pid_file.read_text())), "the password command's child is running"


def calendar_config(tmp_path: Path, history_start: str) -> Path:
    ics = data_path("ics", "recurring-ical-events", "test-calendars", "one_day_event.ics")
    return write_config(tmp_path / "config.toml", f"""
[netaudit]
database = "{tmp_path / 'n.duckdb'}"
me = ["robin@example.org"]
timezone = "Europe/Berlin"
history_start = {history_start}

[[calendar]]
name = "cal"
path = "{ics}"
""")


def _after_today() -> str:
    return (config.latest_today() + dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize("history_start", [
    "0001-01-01",  # time zone arithmetic runs off the calendar; a daily event: 740,000 days
    "1969-12-31",
    "after-today",  # the expansion window would be empty
    "9999-12-31",  # the window's end before its start: a traceback before
])
def test_history_start_out_of_range_is_one_line_exit_2(tmp_path: Path, run: Run,
                                                       history_start: str) -> None:
    value = _after_today() if history_start == "after-today" else history_start
    cfg = calendar_config(tmp_path, value)
    for command in (["sync"], ["import", str(cfg)]):
        proc = run("--config", str(cfg), *command, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == (f"Error: config {cfg}: netaudit.history_start: must be a date "
                               f"from 1970-01-01 to today; got {value}\n")
    assert not (tmp_path / "n.duckdb").exists()


@pytest.mark.parametrize(("history_start", "occurrences"), [
    ("1970-01-01", 1),  # the event, on 2019-03-03, is inside the window
    ("today", 0),  # an empty history, not an error
])
def test_history_start_bounds_are_allowed(tmp_path: Path, run: Run, history_start: str,
                                          occurrences: int) -> None:
    value = dt.date.today().isoformat() if history_start == "today" else history_start
    proc = run("--config", str(calendar_config(tmp_path, value)), "sync", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"cal: {occurrences} occurrences from 1 changed file, 0 quarantined\n"


def test_history_start_check_is_pure() -> None:
    """"Today" is the latest date anywhere, so today in the user's zone always passes."""
    late_evening_utc = dt.datetime(2025, 6, 30, 23, 0, tzinfo=dt.UTC)  # July 1 in Kiritimati
    assert config.check_history_start(dt.date(2025, 7, 1), late_evening_utc) is None
    assert config.check_history_start(dt.date(2025, 7, 2), late_evening_utc) == (
        "must be a date from 1970-01-01 to today; got 2025-07-02")
    assert config.check_history_start(dt.date(1970, 1, 1), late_evening_utc) is None
