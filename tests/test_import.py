"""`netaudit import`, `sync` of local sources, `status` and `sql`, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from netaudit import progress, sample
from tests.conftest import Run, data_path, write_config


def config_for(tmp_path: Path, extra: str = "", me: str = "robin@example.org") -> Path:
    return write_config(tmp_path / "config.toml",
                        f'[netaudit]\ndatabase = "{tmp_path / "db" / "n.duckdb"}"\n'
                        f'me = ["{me}"]\n{extra}')


def counts(db_path: Path) -> tuple[int, int, int, int]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        row = con.execute("""SELECT (SELECT count(*) FROM messages),
                                    (SELECT count(DISTINCT message_key) FROM messages),
                                    (SELECT count(*) FROM participants),
                                    (SELECT count(*) FROM quarantine)""").fetchone()
    finally:
        con.close()
    assert row is not None
    return row


@pytest.fixture(scope="module")
def sample_maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "Maildir"
    sample.write_maildir(root, 6000, seed=7)
    return root


def test_import_twice_adds_nothing(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    enron = str(data_path("enron"))
    first = run("--config", str(cfg), "import", enron, check=True)
    assert first.stdout.splitlines()[0] == ("Imported 1,000 messages: 1,000 new, 0 already "
                                            "stored, 0 quarantined.")
    before = counts(tmp_path / "db" / "n.duckdb")
    second = run("--config", str(cfg), "import", enron, check=True)
    assert second.stdout.splitlines()[0] == ("Imported 1,000 messages: 0 new, 1,000 already "
                                             "stored, 0 quarantined.")
    assert counts(tmp_path / "db" / "n.duckdb") == before
    assert before[0] == before[1] == 1000


def test_kill_9_during_import_loses_and_doubles_nothing(sample_maildir: Path,
                                                        tmp_path: Path, run: Run) -> None:
    (tmp_path / "clean").mkdir()
    clean_cfg = config_for(tmp_path / "clean")
    run("--config", str(clean_cfg), "import", str(sample_maildir), check=True)
    expected = counts(tmp_path / "clean" / "db" / "n.duckdb")
    assert expected[0] == expected[1] == 6000

    (tmp_path / "crash").mkdir()
    cfg = config_for(tmp_path / "crash")
    db_path = tmp_path / "crash" / "db" / "n.duckdb"
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "netaudit", "--config", str(cfg),
                                 "import", str(sample_maildir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if db_path.exists():
            stored, distinct, _, _ = counts(db_path)
            assert stored == distinct <= 6000  # whatever committed, never doubled
    run("--config", str(cfg), "import", str(sample_maildir), check=True)
    assert counts(db_path) == expected


def test_me_addresses_are_remembered_and_applied(run: Run, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{tmp_path}/n.duckdb"\n')
    enron = str(data_path("enron"))
    run("--config", str(cfg), "import", enron, check=True)
    sent = ["--config", str(cfg), "sql", "--format", "csv",
            "SELECT count(*) AS n FROM messages WHERE direction = 'sent'"]
    assert run(*sent, check=True).stdout == "n\n0\n"
    # Telling netaudit later who I am turns my stored mail into sent mail.
    run("--config", str(cfg), "import", enron, "--me", "David.Delainey@enron.com", check=True)
    # 7 of his sent-folder files plus any of his messages found in other custodians' folders
    n = int(run(*sent, check=True).stdout.split()[1])
    assert n >= 7
    senders = run("--config", str(cfg), "sql", "--format", "csv",
                  "SELECT DISTINCT from_addr FROM messages WHERE direction = 'sent'",
                  check=True).stdout
    assert senders == "from_addr\ndavid.delainey@enron.com\n"
    status = json.loads(run("--config", str(cfg), "status", "--json", check=True).stdout)
    assert status["me"] == ["david.delainey@enron.com"]


def test_status_json_shape(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path, '[[mbox]]\nname = "lists"\npath = "'
                     + str(data_path("mbox/mimekit/content-length.mbox.txt")) + '"\n')
    run("--config", str(cfg), "sync", check=True)
    run("--config", str(cfg), "import", str(data_path("mbox/git-t5100/0001mboxrd")),
        check=True)
    doc = json.loads(run("--config", str(cfg), "status", "--json", check=True).stdout)
    assert doc["messages"] == 29 and doc["meetings"] == 0 and doc["quarantined"] == 1
    by_name = {s["name"]: s for s in doc["sources"]}
    assert set(by_name) == {"lists", "import"}
    lists = by_name["lists"]
    assert lists["kind"] == "mbox" and lists["last_error"] == "" and lists["messages"] == 29
    assert lists["last_success"].startswith("20")
    assert doc["quarantine_reasons"] == [{"reason": "no header fields", "count": 1}]


def test_sync_goes_on_when_one_source_fails(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path,
                     '[[maildir]]\nname = "gone"\npath = "/nonexistent/Maildir"\n'
                     '[[maildir]]\nname = "lkml"\npath = "'
                     + str(data_path("email-fixtures/notmuch-corpora/lkml")) + '"\n')
    proc = run("--config", str(cfg), "sync")
    assert proc.returncode == 1
    assert "gone: failed: /nonexistent/Maildir does not exist" in proc.stdout
    # 210 files, 176 distinct Message-IDs: the corpus holds some messages twice
    assert "lkml: 210 messages: 176 new, 34 already stored, 0 quarantined" in proc.stdout
    assert proc.stderr.strip() == "Error: 1 of 2 sources failed: gone"
    doc = json.loads(run("--config", str(cfg), "status", "--json", check=True).stdout)
    gone = next(s for s in doc["sources"] if s["name"] == "gone")
    assert gone["last_error"] == "/nonexistent/Maildir does not exist"
    assert gone["last_success"] == ""


def test_maildir_plus_plus_folders_and_flags(tmp_path: Path) -> None:
    """stalwart's Maildir++ tree: dot-folders, ';2,' flags and ',S=' sizes in names.

    Its files hold a single letter each, so all six are found and all six quarantined.
    """
    from ingest import local

    root = data_path("email-fixtures/stalwart-mail-parser/maildir")
    inputs = list(local.discover([root]))
    assert {(p.path.parent.parent.name, p.path.parent.name) for p in inputs} == {
        ("maildir", "cur"), ("maildir", "new"), (".My Folder", "cur"), (".My Folder", "new"),
        (".My Folder.Nested Folder", "cur"), (".My Folder.Nested Folder", "new")}
    assert all(p.kind == "maildir" for p in inputs)
    sizes = [m.size for i in inputs for m in local.raw_messages(i)]
    assert sorted(sizes) == [2, 1000, 1000, 1355, 4542, 10956]  # from ',S=', else the file


def test_sql_formats(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    run("--config", str(cfg), "import", str(data_path("enron")), check=True)
    query = ("SELECT from_addr, count(*) AS n, min(sent_at) AS first FROM messages "
             "WHERE from_addr = 'david.delainey@enron.com' GROUP BY 1")
    as_json = json.loads(run("--config", str(cfg), "sql", "--format", "json", query,
                             check=True).stdout)
    assert len(as_json) == 1 and set(as_json[0]) == {"from_addr", "n", "first"}
    assert as_json[0]["n"] > 0 and as_json[0]["first"].startswith("20")
    rows = list(csv.reader(io.StringIO(run("--config", str(cfg), "sql", "--format", "csv",
                                           query, check=True).stdout)))
    assert rows[0] == ["from_addr", "n", "first"]
    assert rows[1][:2] == ["david.delainey@enron.com", str(as_json[0]["n"])]
    table = run("--config", str(cfg), "sql", query, check=True).stdout
    assert "david.delainey@enron.com" in table


def test_sql_is_read_only_and_errors_are_one_line(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    run("--config", str(cfg), "import", str(data_path("enron")), check=True)
    proc = run("--config", str(cfg), "sql", "DELETE FROM messages")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: SQL: ") and "read-only" in proc.stderr
    proc = run("--config", str(cfg), "sql", "SELECT * FROM no_such_table")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("Error: SQL: Catalog Error")
    assert counts(tmp_path / "db" / "n.duckdb")[0] == 1000


def test_usage_errors_exit_2(run: Run, tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    proc = run("--config", str(cfg), "import", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"Error: no such file or directory: {tmp_path / 'missing'}"
    proc = run("--config", str(cfg), "import", str(data_path("enron")), "--me", "nobody")
    assert proc.returncode == 2 and "is not an email address" in proc.stderr
    proc = run("--config", str(cfg), "sql", "--format", "xml", "SELECT 1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run("--config", str(cfg), "sync", "--source", "nope")
    assert proc.returncode == 2 and "no source named 'nope'" in proc.stderr


def test_every_command_has_help(run: Run) -> None:
    from netaudit.cli import cli

    for name, command in cli.commands.items():
        assert command.help and len(command.help) > 20, name
        proc = run(name, "--help", check=True)
        assert "Usage: netaudit " + name in proc.stdout


def test_demo_runs_the_real_pipeline(run: Run, tmp_path: Path) -> None:
    proc = run("demo", "--dir", str(tmp_path / "demo"), "--messages", "300", check=True)
    assert "sample: 300 messages: 300 new, 0 already stored, 0 quarantined" in proc.stdout
    assert "Messages:    300" in proc.stdout
    assert (tmp_path / "demo" / "netaudit.duckdb").exists()


def test_unreadable_file_is_quarantined_and_the_rest_goes_on(tmp_path: Path,
                                                             run: Run) -> None:
    maildir = tmp_path / "Maildir"
    sample.write_maildir(maildir, 5)
    (maildir / "cur" / "1700000000.M1P1.host:2,S").symlink_to(tmp_path / "vanished")
    cfg = config_for(tmp_path)
    proc = run("--config", str(cfg), "import", str(maildir), check=True)
    assert proc.stdout.splitlines()[0] == ("Imported 6 messages: 5 new, 0 already stored, "
                                           "1 quarantined.")
    rows = json.loads(run("--config", str(cfg), "sql", "--format", "json",
                          "SELECT location, reason FROM quarantine", check=True).stdout)
    assert rows == [{"location": str(maildir / "cur" / "1700000000.M1P1.host:2,S"),
                     "reason": "cannot read: No such file or directory"}]


def lying_maildir(root: Path, count: int, factor: int) -> None:
    """A Maildir whose names claim ``factor`` times each file's size (``,S=``), as after a
    copy that changed line endings or a tool that wrote the wrong number."""
    sample.write_maildir(root, count)
    for path in (root / "cur").iterdir():
        real = path.stat().st_size
        path.rename(path.with_name(re.sub(r",S=\d+", f",S={real * factor}", path.name)))


def test_progress_log_never_shows_more_than_100_percent(run: Run, tmp_path: Path) -> None:
    """The total is the files' real sizes, the work done is counted from their names, ten
    times more: the log said "(1000%)" by the end. Now the total grows with the work."""
    maildir = tmp_path / "Maildir"
    lying_maildir(maildir, 40, 10)
    proc = run("--config", str(config_for(tmp_path)), "import", str(maildir),
               env={"NETAUDIT_PROGRESS_SECONDS": "0"})  # a line for every step
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Imported 40 messages: 40 new, 0 already stored, 0 quarantined.\n"
    shares = [int(s) for s in re.findall(r"^import: [\d,]+ messages \((\d+)%\), [\d,]+/s$",
                                          proc.stderr, re.MULTILINE)]
    assert len(shares) == 41  # one per message read, one for the batch written
    assert len(proc.stderr.splitlines()) == 41
    assert shares == sorted(shares) and shares[0] > 0
    assert shares[-1] == 100 and shares.count(100) >= 30  # reached after 4 of 40 messages


def test_progress_bar_on_a_terminal_never_shows_more_than_100_percent(
        home: Path, tmp_path: Path) -> None:
    """The same import on a pseudo-terminal, where rich draws the bar: every frame's share
    is at most 100 %, and the bar was drawn (0 % first, 100 % last)."""
    maildir = tmp_path / "Maildir"
    lying_maildir(maildir, 40, 10)
    cfg = config_for(tmp_path)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netaudit", "--config", str(cfg), "import", str(maildir)],
            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, cwd=home,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"})
        os.close(terminal)
        output = bytearray()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=60) == 0, output.decode(errors="replace")
    finally:
        os.close(controller)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    shares = [int(s) for s in re.findall(r"(\d+)%", text)]
    assert shares and shares[0] == 0 and shares[-1] == 100, text
    assert max(shares) == 100
    assert "Imported 40 messages: 40 new" in text


def test_progress_meter_grows_its_total() -> None:
    meter = progress.Meter(1000)
    meter.advance(999, 1)
    assert (meter.total, meter.percent()) == (1000, 99)  # rounded down: 100 means done
    meter.advance(501, 2)
    assert (meter.total, meter.done, meter.messages, meter.percent()) == (1500, 1500, 3, 100)
    assert progress.log_line("work/INBOX", meter, 2.0) == "work/INBOX: 3 messages (100%), 2/s"
    unknown = progress.Meter(None)
    unknown.advance(10, 1)
    assert unknown.percent() is None and unknown.total is None
    assert progress.log_line("x", unknown, 1.0) == "x: 1 messages, 1/s"
    assert progress.Meter(0).percent() is None
