"""Mail folders that are not ours: names that are not UTF-8, FIFOs, sockets and devices where
files should be, folders netaudit may not read, and files of several messages without From_
lines. Each must be quarantined with a one-line reason while the rest is read: through the
real CLI (`import`, `sync`) and the real daemon, on real messages from the shared corpus.

Hangs are detected with subprocess timeouts (a FIFO blocks ``open()`` for ever), never with
timed assertions. Permission errors need a user the file modes apply to, so those tests run
netaudit as ``nobody`` (``setpriv``), as root ignores modes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import local, mailfiles
from ingest.safe_files import NotRegularFile
from tests.conftest import REPO, Run, data_path, write_config

ME = "robin@example.org"
HANG = 60  # seconds: only ever reached when something hangs
NOBODY = 65534


# ---------------------------------------------------------------------------------------------
# Helpers


def enron(n: int) -> list[bytes]:
    """The first ``n`` Enron messages (every one has its own Message-ID, a From and a Date)."""
    files = sorted(data_path("enron", "palimpzest-enron-eval").iterdir())[:n]
    return [f.read_bytes() for f in files]


def lkml(n: int) -> list[bytes]:
    """The first ``n`` linux-kernel list messages of notmuch's Maildir (each ends in a line
    feed, as a saved .eml does)."""
    files = sorted(data_path("email-fixtures", "notmuch-corpora", "lkml", "cur").iterdir())
    return [f.read_bytes() for f in files[:n]]


def make_maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def put(directory: Path, name: bytes, raw: bytes) -> Path:
    """A file whose name is given as bytes (it need not be UTF-8)."""
    path = os.path.join(os.fsencode(directory), name)
    with open(path, "wb") as fh:
        fh.write(raw)
    return Path(os.fsdecode(path))


def escaped(directory: Path, name: bytes) -> str:
    """The location netaudit stores for a file: its bytes as text, others as \\xNN."""
    return (os.fsencode(directory) + b"/" + name).decode("utf-8", "backslashreplace")


def config(directory: Path, sources: str = "") -> Path:
    return write_config(directory / "config.toml",
                        f'[netaudit]\ndatabase = "{directory / "n.duckdb"}"\nme = ["{ME}"]\n'
                        + sources)


def rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


class Hung(Exception):  # not an OSError: a reader's "except OSError" must not swallow it
    pass


@contextlib.contextmanager
def no_hang(seconds: int = 10) -> Iterator[None]:
    """In-process guard: a call blocked in open() is interrupted and fails the test."""
    def hung(signum: int, frame: object) -> None:
        raise Hung(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Bind listening sockets at given paths (a socket file in a mail folder)."""
    opened: list[socket.socket] = []

    def bind(path: Path) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.fsencode(path))
        opened.append(sock)

    yield bind
    for sock in opened:
        sock.close()


# ---------------------------------------------------------------------------------------------
# File names that are not UTF-8


NAMES = [b"1700000000.M0P1.h\xffst:2,S", b"1700000001.M1P1.caf\xe9:2,S",
         b"1700000002.M2P1.\xc3(:2,S", b"1700000003.M3P1.host:2,S"]


def hostile_names_maildir(root: Path, messages: list[bytes]) -> list[str]:
    """A Maildir of ``messages``: the first four under NAMES in cur/, one in a Maildir++
    folder whose own name is Latin-1, the rest under plain names. Returns the locations."""
    make_maildir(root)
    folder = Path(os.fsdecode(os.fsencode(root) + b"/.Arch\xefve"))
    make_maildir(folder)
    locations = []
    for i, raw in enumerate(messages):
        if i < len(NAMES):
            directory, name = root / "cur", NAMES[i]
        elif i == len(NAMES):
            directory, name = folder / "new", b"1700000100.M9P1.h\xfe"
        else:
            directory, name = root / "new", b"17000002%02d.M%dP1.host" % (i, i)
        put(directory, name, raw)
        locations.append(escaped(directory, name))
    return locations


def test_non_utf8_names_are_stored_escaped_and_a_rerun_adds_nothing(run: Run,
                                                                     tmp_path: Path) -> None:
    """Before: one such name made DuckDB's appender refuse the batch: 0 stored, a traceback."""
    locations = hostile_names_maildir(tmp_path / "Maildir", enron(40))
    cfg = config(tmp_path)
    first = run("--config", str(cfg), "import", str(tmp_path / "Maildir"), timeout=HANG)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == ("Imported 40 messages: 40 new, 0 already stored, "
                                            "0 quarantined.")
    assert first.stderr == ""
    database = tmp_path / "n.duckdb"
    stored = sorted(r[0] for r in rows(database, "SELECT location FROM messages"))
    assert stored == sorted(locations)
    assert escaped(tmp_path / "Maildir" / "cur", NAMES[0]).endswith("/1700000000.M0P1.h\\xffst:2,S")
    assert escaped(tmp_path / "Maildir" / "cur", NAMES[0]) in stored
    assert any("/.Arch\\xefve/new/1700000100.M9P1.h\\xfe" in s for s in stored)

    again = run("--config", str(cfg), "import", str(tmp_path / "Maildir"), check=True,
                timeout=HANG)
    assert again.stdout.splitlines()[0] == ("Imported 40 messages: 0 new, 40 already stored, "
                                            "0 quarantined.")
    assert rows(database, "SELECT count(*), count(DISTINCT message_key), count(DISTINCT "
                          "location) FROM messages") == [(40, 40, 40)]


def test_a_non_utf8_path_on_the_command_line_is_recorded_and_rebuilt(run: Run,
                                                                     tmp_path: Path) -> None:
    """Before: the messages were stored, then recording the path for `rebuild` failed with a
    traceback (the name reached DuckDB with surrogates)."""
    top = Path(os.fsdecode(os.fsencode(tmp_path) + b"/Mail-\xe9t\xe9"))
    hostile_names_maildir(top, enron(12))
    cfg = config(tmp_path)
    first = run("--config", str(cfg), "import", str(top), timeout=HANG)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == ("Imported 12 messages: 12 new, 0 already stored, "
                                            "0 quarantined.")
    database = tmp_path / "n.duckdb"
    assert rows(database, "SELECT path FROM imported_paths") == [
        (os.fsencode(top.resolve()).decode("utf-8", "backslashreplace"),)]
    rebuilt = run("--config", str(cfg), "rebuild", timeout=HANG)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert rows(database, "SELECT count(*) FROM messages") == [(12,)]


def test_sync_of_a_maildir_source_with_non_utf8_names_and_a_fifo(run: Run,
                                                                  tmp_path: Path) -> None:
    """`netaudit sync` of a [[maildir]]: every message stored, the FIFO quarantined under its
    escaped name, nothing doubled by a second sync, and the source's status clean."""
    root = tmp_path / "Maildir"
    locations = hostile_names_maildir(root, enron(30))
    fifo = os.fsencode(root / "cur") + b"/1700000500.M5P1.p\xffpe:2,S"
    os.mkfifo(fifo)
    cfg = config(tmp_path, f'[[maildir]]\nname = "mail"\npath = "{root}"\n')
    first = run("--config", str(cfg), "sync", timeout=HANG)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == ("mail: 31 messages: 30 new, 0 already stored, "
                                            "1 quarantined")
    second = run("--config", str(cfg), "sync", check=True, timeout=HANG)
    assert second.stdout.splitlines()[0] == ("mail: 31 messages: 0 new, 30 already stored, "
                                             "1 quarantined")
    database = tmp_path / "n.duckdb"
    assert sorted(r[0] for r in rows(database, "SELECT location FROM messages")) == \
        sorted(locations)
    assert rows(database, "SELECT location, reason FROM quarantine") == [
        (fifo.decode("utf-8", "backslashreplace"), "a FIFO, not a file")]
    doc = json.loads(run("--config", str(cfg), "status", "--json", check=True).stdout)
    [mail] = doc["sources"]
    assert (mail["name"], mail["last_error"], mail["messages"]) == ("mail", "", 30)


# ---------------------------------------------------------------------------------------------
# FIFOs, sockets and devices


def test_fifos_sockets_and_devices_are_quarantined_and_the_import_finishes(
        run: Run, tmp_path: Path, unix_socket: Callable[[Path], None]) -> None:
    """Before: the first FIFO blocked open() and the import never ended (the timeout fires).

    In a Maildir, every entry is a message file, so each of these is quarantined with what it
    is. In a plain folder they are too (they cannot be looked at to tell). A FIFO named on the
    command line is one warning line, and the other paths are still imported.
    """
    maildir = make_maildir(tmp_path / "Maildir")
    for i, raw in enumerate(enron(10)):
        put(maildir / "cur", b"17000000%02d.M%dP1.host:2,S" % (i, i), raw)
    os.mkfifo(maildir / "cur" / "1700000100.fifo:2,S")
    unix_socket(maildir / "new" / "1700000101.socket")
    os.mknod(maildir / "cur" / "1700000102.device:2,S", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    plain = tmp_path / "saved"
    plain.mkdir()
    fixtures = data_path("email-fixtures", "ponymail-foal")
    for name in ("dev.activemq.apache.org-51149.eml", "dev.activemq.apache.org-52937.eml",
                 "jetspeed-user.portals.apache.org-27090.eml"):
        shutil.copy(fixtures / name, plain / name)
    os.mkfifo(plain / "pipe")
    os.mkfifo(plain / "pipe.eml")
    named = tmp_path / "named.eml"
    os.mkfifo(named)
    one = tmp_path / "one.eml"
    shutil.copy(fixtures / "rfc2822-A5.eml", one)

    cfg = config(tmp_path)
    proc = run("--config", str(cfg), "import", str(maildir), str(plain), str(named), str(one),
               timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    # The two activemq files hold one message (one Message-ID): 13 new and 1 already stored.
    assert proc.stdout.splitlines()[0] == ("Imported 20 messages: 13 new, 1 already stored, "
                                           "6 quarantined.")
    assert warnings(proc.stderr) == [f"WARNING {named}: a FIFO, not a file"]
    assert sorted(rows(tmp_path / "n.duckdb", "SELECT location, reason FROM quarantine")) == [
        (str(maildir / "cur" / "1700000100.fifo:2,S"), "a FIFO, not a file"),
        (str(maildir / "cur" / "1700000102.device:2,S"), "a device, not a file"),
        (str(maildir / "new" / "1700000101.socket"), "a socket, not a file"),
        (str(named), "a FIFO, not a file"),
        (str(plain / "pipe"), "a FIFO, not a file"),
        (str(plain / "pipe.eml"), "a FIFO, not a file"),
    ]


def test_no_reader_blocks_on_a_fifo(tmp_path: Path) -> None:
    """Each way a file is opened: sniffing in a walk, a Maildir file, an mbox, a mail file."""
    fifo = tmp_path / "inbox"
    os.mkfifo(fifo)
    with no_hang():
        for explicit in (False, True):
            assert local.classify(fifo, explicit) == local.Input(
                "unusable", fifo, "a FIFO, not a file", loud=explicit)
        for read in (mailfiles.read_maildir_file, lambda p: list(mailfiles.iter_mbox(p)),
                     lambda p: list(mailfiles.read_mail_file(p)), mailfiles.read_header_block):
            with pytest.raises(NotRegularFile, match="a FIFO, not a file"):
                read(fifo)


# ---------------------------------------------------------------------------------------------
# The daemon


class Daemon:
    """`netaudit daemon` as a process (optionally as another user), its log in a file."""

    def __init__(self, cfg: Path, log: Path, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "netaudit", "--config", str(cfg), "daemon",
             "--rescan-seconds", "10"],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out, cwd=REPO,
            env=env or dict(os.environ))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(HANG)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


def wait_for(check: Callable[[], Any], what: str, daemon: Daemon, timeout: float = HANG) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(duckdb.Error):
            last = check()
            if last:
                return last
        assert daemon.proc.poll() is None, daemon.text()
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last {last!r})\n{daemon.text()}")


def last_success(database: Path) -> Any:
    """When the source's last run ended (each rescan sets it); None before the first."""
    found = rows(database, "SELECT last_success FROM sources WHERE name = 'mail'")
    return found[0][0] if found else None


def counts(database: Path) -> tuple[int, int]:
    if not database.exists():
        return (0, 0)
    [row] = rows(database, "SELECT (SELECT count(*) FROM messages), "
                           "(SELECT count(*) FROM quarantine)")
    return row


def test_daemon_reads_a_watched_maildir_with_fifos_and_non_utf8_names(tmp_path: Path) -> None:
    """Before: the FIFO blocked the initial import for ever (the source silently stopped);
    without it, the names made every run fail with "unexpected error"."""
    root = tmp_path / "Maildir"
    locations = hostile_names_maildir(root, enron(20))
    os.mkfifo(root / "cur" / "1700000600.fifo:2,S")
    cfg = config(tmp_path, f'[[maildir]]\nname = "mail"\npath = "{root}"\n')
    database = tmp_path / "n.duckdb"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: counts(database) == (20, 1), "the initial import", daemon)
        # A delivery under a name that is not UTF-8, and a FIFO appearing in new/.
        extra = enron(21)[20]
        put(root / "tmp", b"1700000700.M7P1.h\xff", extra)
        os.rename(os.fsencode(root / "tmp") + b"/1700000700.M7P1.h\xff",
                  os.fsencode(root / "new") + b"/1700000700.M7P1.h\xff")
        os.mkfifo(root / "new" / "1700000701.fifo")
        wait_for(lambda: counts(database) == (21, 2), "the delivery and the FIFO", daemon)
    finally:
        code = daemon.stop()
    log = daemon.text()
    assert code == 0, log
    assert "Traceback" not in log and "unexpected error" not in log, log
    stored = {r[0] for r in rows(database, "SELECT location FROM messages")}
    assert stored == {*locations, escaped(root / "new", b"1700000700.M7P1.h\xff")}
    assert sorted(rows(database, "SELECT location, reason FROM quarantine")) == [
        (str(root / "cur" / "1700000600.fifo:2,S"), "a FIFO, not a file"),
        (str(root / "new" / "1700000701.fifo"), "a FIFO, not a file")]


# ---------------------------------------------------------------------------------------------
# Folders netaudit may not read (run as nobody: root reads everything)


def _nobody_can_run_netaudit(directory: Path) -> bool:
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", "import duckdb, netaudit.cli"],
        capture_output=True, cwd=directory, env=nobody_env(directory), timeout=HANG)
    return probe.returncode == 0


def nobody_env(directory: Path) -> dict[str, str]:
    env = {"PATH": os.defpath, "HOME": str(directory), "LANG": "C.UTF-8",
           "XDG_CONFIG_HOME": str(directory / ".config"),
           "XDG_DATA_HOME": str(directory / ".local" / "share")}
    if "PYTHONPATH" in os.environ:  # the code under test, wherever the tests run it from
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@pytest.fixture
def as_nobody() -> Iterator[tuple[Path, Callable[..., subprocess.CompletedProcess[str]]]]:
    """A folder user nobody owns, and a runner of netaudit as nobody inside it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to run netaudit as a user file modes apply to")
    directory = Path(tempfile.mkdtemp(prefix="netaudit-nobody-", dir="/tmp"))
    try:
        os.chown(directory, NOBODY, NOBODY)
        if not _nobody_can_run_netaudit(directory):
            pytest.skip("user nobody cannot run this python")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 sys.executable, "-m", "netaudit", *args],
                capture_output=True, text=True, cwd=directory, env=nobody_env(directory),
                timeout=HANG)

        yield directory, run
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # root: modes do not stop it


def give_to_nobody(top: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


def hostile_folders(root: Path) -> None:
    """10 messages in cur/; a Maildir++ folder that cannot be opened (3 messages); one whose
    cur/ cannot be listed (2) but whose new/ can (1); a plain subfolder that cannot be opened
    (1); a message file that cannot be read."""
    messages = iter(enron(18))
    make_maildir(root)
    for i in range(10):
        put(root / "cur", b"17000000%02d.M%dP1.host:2,S" % (i, i), next(messages))
    for folder, sub, count in ((".Archive", "cur", 3), (".Locked", "cur", 2),
                               (".Locked", "new", 1), ("Old", "cur", 1)):
        make_maildir(root / folder)
        for i in range(count):
            put(root / folder / sub, b"17000001%02d.M%dP1.%s" % (i, i, sub.encode()),
                next(messages))
    put(root / "cur", b"1700000200.M1P1.secret:2,S", next(messages))
    give_to_nobody(root)
    for path in (root / ".Archive", root / ".Locked" / "cur", root / "Old",
                 root / "cur" / "1700000200.M1P1.secret:2,S"):
        path.chmod(0)


def test_unreadable_folders_are_quarantined_and_the_rest_is_read(
        as_nobody: tuple[Path, Callable[..., subprocess.CompletedProcess[str]]]) -> None:
    """Before: the first folder that could not be opened ended import and sync with a
    PermissionError traceback, and nothing of the source was stored."""
    home, run = as_nobody
    root = home / "Maildir"
    hostile_folders(root)
    cfg = config(home, f'[[maildir]]\nname = "mail"\npath = "{root}"\n')
    os.chown(cfg, NOBODY, NOBODY)

    imported = run("--config", str(cfg), "import", str(root))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[0] == ("Imported 15 messages: 11 new, 0 already stored, "
                                               "4 quarantined.")
    folder_lines = [f"WARNING {root / '.Archive'}: cannot read folder: Permission denied",
                    f"WARNING {root / '.Locked' / 'cur'}: cannot read folder: Permission denied",
                    f"WARNING {root / 'Old'}: cannot read folder: Permission denied"]
    assert sorted(warnings(imported.stderr)) == folder_lines

    synced = run("--config", str(cfg), "sync")
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.splitlines()[0] == ("mail: 15 messages: 0 new, 11 already stored, "
                                             "4 quarantined")
    assert sorted(warnings(synced.stderr)) == folder_lines
    expected = sorted([
        (str(root / ".Archive"), "cannot read folder: Permission denied"),
        (str(root / ".Locked" / "cur"), "cannot read folder: Permission denied"),
        (str(root / "Old"), "cannot read folder: Permission denied"),
        (str(root / "cur" / "1700000200.M1P1.secret:2,S"), "cannot read: Permission denied")])
    for source in ("import", "mail"):
        assert sorted(rows(home / "n.duckdb", "SELECT location, reason FROM quarantine WHERE "
                                              f"source = '{source}'")) == expected


def test_an_unreadable_path_of_its_own(
        as_nobody: tuple[Path, Callable[..., subprocess.CompletedProcess[str]]]) -> None:
    """A source whose own folder cannot be read fails with one line (and `status` says why);
    named on the command line, such a folder is refused by the argument check in one line."""
    home, run = as_nobody
    locked = make_maildir(home / "Locked")
    give_to_nobody(home)
    locked.chmod(0)
    cfg = config(home, f'[[maildir]]\nname = "locked"\npath = "{locked}"\n')
    os.chown(cfg, NOBODY, NOBODY)
    synced = run("--config", str(cfg), "sync")
    assert synced.returncode == 1
    assert synced.stdout.splitlines() == [
        f"locked: failed: cannot read {locked}: Permission denied"]
    assert synced.stderr == "Error: 1 of 1 sources failed: locked\n"
    doc = json.loads(run("--config", str(cfg), "status", "--json").stdout)
    assert doc["sources"][0]["last_error"] == f"cannot read {locked}: Permission denied"
    imported = run("--config", str(cfg), "import", str(locked))
    assert imported.returncode == 2 and "Traceback" not in imported.stderr
    assert warnings(imported.stderr)[-1] == (f"Error: Invalid value for 'PATHS...': Path "
                                            f"'{locked}' is not readable.")


def test_daemon_quarantines_an_unreadable_folder_and_reads_it_once_it_can(
        as_nobody: tuple[Path, Callable[..., subprocess.CompletedProcess[str]]]) -> None:
    """The daemon's first scan quarantines the folders it cannot read and stores the rest; its
    rescans do not report them again; and a folder made readable is read whole, though its
    files are older than the last scan (a delta scan alone would never list them)."""
    home, _ = as_nobody
    root = home / "Maildir"
    hostile_folders(root)
    cfg = config(home, f'[[maildir]]\nname = "mail"\npath = "{root}"\n')
    os.chown(cfg, NOBODY, NOBODY)
    database = home / "n.duckdb"
    daemon = Daemon(cfg, home / "daemon.log",
                    ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
                    nobody_env(home))
    try:
        wait_for(lambda: counts(database) == (11, 4), "the initial import", daemon)
        first = wait_for(lambda: last_success(database), "the first run recorded", daemon)
        wait_for(lambda: last_success(database) not in (None, first), "a rescan", daemon)
        assert counts(database) == (11, 4)
        (root / ".Archive").chmod(0o755)
        (root / ".Locked" / "cur").chmod(0o755)
        wait_for(lambda: counts(database) == (16, 4), "the folders made readable", daemon)
    finally:
        code = daemon.stop()
    log = daemon.text()
    assert code == 0, log
    assert "Traceback" not in log and "failed" not in log, log
    assert log.count("cannot read folder") == 3, log  # once each, from the first scan


# ---------------------------------------------------------------------------------------------
# Several messages in one file without From_ lines


def test_messages_joined_without_from_lines_are_reported(run: Run, tmp_path: Path) -> None:
    """Before: `cat`-ed messages were stored as one, the other 49 dropped without a word."""
    joined = tmp_path / "all.mbox"
    joined.write_bytes(b"".join(lkml(50)))
    reason = "looks like 50 messages joined without From_ lines; only the first was read"
    cfg = config(tmp_path, f'[[mbox]]\nname = "joined"\npath = "{joined}"\n')
    imported = run("--config", str(cfg), "import", str(joined), check=True, timeout=HANG)
    assert imported.stdout.splitlines()[0] == ("Imported 2 messages: 1 new, 0 already stored, "
                                               "1 quarantined.")
    assert warnings(imported.stderr) == [f"WARNING {joined}: {reason}"]
    synced = run("--config", str(cfg), "sync", check=True, timeout=HANG)
    assert synced.stdout.splitlines()[0] == ("joined: 2 messages: 0 new, 1 already stored, "
                                             "1 quarantined")
    assert sorted(rows(tmp_path / "n.duckdb", "SELECT source, location, reason FROM "
                                              "quarantine")) == [
        ("import", str(joined), reason), ("joined", str(joined), reason)]


def test_an_mbox_missing_its_first_from_line_is_read_whole(run: Run, tmp_path: Path) -> None:
    """Before: a header on the first line made the file one message (1 of 66 stored).

    Also a message saved in front of an mbox: a header first, From_ lines after."""
    inbox = data_path("enron-mbox", "allen-p", "inbox.mbox")
    raw = inbox.read_bytes()
    cut = tmp_path / "cut.mbox"
    cut.write_bytes(raw[raw.index(b"\n") + 1:])
    front = tmp_path / "front"
    front.write_bytes(lkml(1)[0] + raw)

    (tmp_path / "whole").mkdir()
    run("--config", str(config(tmp_path / "whole")), "import", str(inbox), check=True)
    keys = {r[0] for r in rows(tmp_path / "whole" / "n.duckdb",
                               "SELECT message_key FROM messages")}
    assert len(keys) == 66

    cfg = config(tmp_path)
    proc = run("--config", str(cfg), "import", str(cut), check=True, timeout=HANG)
    assert proc.stdout.splitlines()[0] == ("Imported 66 messages: 66 new, 0 already stored, "
                                           "0 quarantined.")
    assert {r[0] for r in rows(tmp_path / "n.duckdb", "SELECT message_key FROM messages")} \
        == keys
    proc = run("--config", str(cfg), "import", str(front), check=True, timeout=HANG)
    assert proc.stdout.splitlines()[0] == ("Imported 67 messages: 1 new, 66 already stored, "
                                           "0 quarantined.")
    assert rows(tmp_path / "n.duckdb", "SELECT location FROM messages WHERE location LIKE "
                                       "'%front%' ORDER BY location") == [(f"{front}#0",)]


def _corpus_messages() -> Iterator[tuple[str, bytes]]:
    """Every real single message of the shared data, mbox messages taken out of their mbox."""
    root = data_path()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".json", ".ics", ".md"):
            continue
        data = path.read_bytes()
        if path.suffix == ".eml" or not mailfiles.looks_like_mbox(data[:4096]):
            yield str(path.relative_to(root)), data  # a .eml is one file, From_ line or not
            continue
        for m in mailfiles.iter_mbox(path):
            assert m.offset is not None and m.size is not None
            chunk = data[m.offset:m.offset + m.size]
            yield f"{path.relative_to(root)}#{m.offset}", chunk[chunk.index(b"\n") + 1:]


def test_no_real_message_looks_like_several() -> None:
    """Every real message, bounces and inline forwards among them, is one message (four Enron
    messages forward another with its whole header: see GLUED_MIN), and notmuch's message
    with an mbox attached (unescaped From_ lines in a MIME part) is not an mbox."""
    checked = 0
    for name, data in _corpus_messages():
        start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        assert mailfiles.file_layout(data, start) == ("one", 1), name
        checked += 1
    assert checked == 4786
    attached = data_path("email-fixtures", "notmuch-corpora", "insert", "mbox-attachment.eml")
    assert len(list(mailfiles.iter_mbox(attached))) == 2  # split if it were read as an mbox
    [message] = mailfiles.read_mail_file(attached)
    assert message.size == attached.stat().st_size


@pytest.mark.parametrize(("joiner", "count"), [(b"", 50), (b"\n", 50), (b"\n\n", 50)])
def test_joined_real_messages_are_counted(joiner: bytes, count: int) -> None:
    assert mailfiles.file_layout(joiner.join(lkml(50))) == ("glued", count)
    assert mailfiles.file_layout(joiner.join(m.rstrip(b"\n") + b"\n" for m in enron(50))) \
        == ("glued", count)


@pytest.mark.parametrize(("shape", "first_line"), [
    # One message, then 16 MiB of Message-ID lines: each is a possible start of a message.
    (b"From: a@x.example\nDate: Mon, 1 Jan 2001 00:00:00 +0000\n\nbody\n"
     + b"Message-ID: <x@x.example>\n" * 600_000,
     "Imported 1 messages: 1 new, 0 already stored, 0 quarantined."),
    # 100,001 tiny messages joined.
    (b"From: a@x.example\nDate: Mon, 1 Jan 2001 00:00:00 +0000\nMessage-ID: <0@x>\n\nb\n"
     + b"".join(b"Message-ID: <%d@x>\nFrom: b@x.example\nDate: Mon, 1 Jan 2001 00:00:00 +0000"
                b"\n\nb\n" % i for i in range(1, 100_001)),
     "Imported 2 messages: 1 new, 0 already stored, 1 quarantined."),
], ids=["message-id lines", "joined tiny messages"])
def test_looking_for_joined_messages_is_linear(run: Run, tmp_path: Path, shape: bytes,
                                               first_line: str) -> None:
    """Before the look-back stopped at the last run of header lines, the first shape took
    5.6 s for 256 KB (quadratic: hours for this one); the timeout only detects a hang."""
    path = tmp_path / "big.txt"
    path.write_bytes(shape)
    proc = run("--config", str(config(tmp_path)), "import", str(path), timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == first_line


# Pieces of real files and of the shapes the layout looks for, in any order.
PIECES = [
    b"From sender@example.org Mon Jan  1 00:00:00 2001\n", b"From here on\n", b"\n", b"\r\n",
    b"Message-ID: <a@x>\n", b"From: b@x.example\n", b"Date: Mon, 1 Jan 2001 00:00:00 +0000\n",
    b"Content-Type: multipart/mixed; boundary=b\n", b"--b\n", b"--b--\n",
    b"Content-Type: message/rfc822\n", b"Subject: failure notice\n", b" folded\n",
    b"body text\n", b"\xef\xbb\xbf", b"\xff\x00",
]


@st.composite
def mail_file(draw: st.DrawFn) -> bytes:
    real = draw(st.sampled_from(lkml(3) + enron(3)))
    pieces = draw(st.lists(st.sampled_from([*PIECES, real]), max_size=30))
    return draw(st.sampled_from([real, b"", b"Message-ID: <0@x>\n"])) + b"".join(pieces)


@settings(deadline=None, max_examples=200,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=mail_file())
def test_a_mail_file_is_read_whole_and_in_order(tmp_path: Path, data: bytes) -> None:
    """Whatever the layout says, reading the file gives one message (and maybe Glued), or
    mbox messages that cover the file back to back from its first byte."""
    path = tmp_path / "mail"
    path.write_bytes(data)
    kind, count = mailfiles.file_layout(data, 3 if data.startswith(b"\xef\xbb\xbf") else 0)
    assert (kind, count) in {("one", 1), ("mbox", 0)} or (kind == "glued" and count >= 3)
    messages = []
    with contextlib.suppress(mailfiles.Glued):
        messages.extend(mailfiles.read_mail_file(path))
    assert messages
    if kind != "mbox":
        assert len(messages) == 1 and messages[0].offset is None
        assert messages[0].size == len(data)
        return
    offsets = [m.offset for m in messages]
    assert offsets[0] == (3 if data.startswith(b"\xef\xbb\xbf") else 0)
    for m, following in itertools.pairwise(messages):
        assert m.offset is not None and m.size is not None
        assert m.offset + m.size == following.offset
    last = messages[-1]
    assert last.offset is not None and last.size is not None
    assert last.offset + last.size == len(data)
