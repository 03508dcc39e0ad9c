"""`netaudit daemon` as a real process against a real Dovecot, real files and a fake service
manager socket: IDLE latency, readers never see a lock error, a reader holding the file, SIGTERM
and kill -9 in the middle of a sync, file watching, sd_notify, SIGHUP. Then its parts in-process:
the write gate, the watcher's fallback, the Maildir delta scan, sd_notify parsing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ingest import idle, watch, workers
from ingest.writegate import Stopping, WriteGate
from netaudit import db, sdnotify
from netaudit.errors import DatabaseBusy
from tests.conftest import REPO, write_config
from tests.dovecot import ImapAccount, parse_imap_commands, sample_messages
from tests.test_calendars import ONE_OFF, weekly

ME = "robin@example.org"
T = TypeVar("T")

# A process that holds the database read-only, as a user's `duckdb -readonly` shell would.
HOLDER = """
import sys, time, duckdb
deadline = time.monotonic() + 30
while True:
    try:
        con = duckdb.connect(sys.argv[1], read_only=True)
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
con.execute("SELECT count(*) FROM messages").fetchall()
print("open", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("closed", flush=True)
"""


# ---------------------------------------------------------------------------------------------
# Helpers


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def query(database: Path, sql: str) -> list[tuple]:
    """Read-only, retrying while the daemon commits, as every netaudit reader does."""
    with db.reader(database, wait=20) as con:
        return con.execute(sql).fetchall()


def count(database: Path, table: str = "messages") -> int:
    if not database.exists():
        return 0
    return int(query(database, f"SELECT count(*) FROM {table}")[0][0])


class NotifySocket:
    """A fake service manager: the datagram socket sd_notify messages are sent to."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"netaudit-test-{secrets.token_hex(6)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:  # AF_UNIX paths are short: not under pytest's long tmp_path
            self._dir = tempfile.mkdtemp(prefix="na-", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.lines.extend(data.decode().split("\n"))

    def seen(self, predicate: Callable[[str], bool]) -> list[str]:
        with self._lock:
            return [line for line in self.lines if predicate(line)]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        return wait_until(lambda: self.seen(predicate), timeout, what)[0]

    def close(self) -> None:
        self._closed = True
        self._thread.join(1)
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class DaemonProcess:
    """`python -m netaudit --config C daemon ...` with its log in a file."""

    def __init__(self, cfg: Path, log_path: Path, *args: str, verbose: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        argv = [sys.executable, "-m", "netaudit", "--config", str(cfg)]
        if verbose:
            argv.append("-vv")
        self.proc = subprocess.Popen([*argv, "daemon", *args], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, cwd=REPO,
                                     env={**os.environ, **(env or {})})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(cfg: Path, *args: str, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(cfg, tmp_path / f"daemon-{len(started)}.log", *args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def imap_config(tmp_path: Path, account: ImapAccount, extra: str = "") -> Path:
    secret = tmp_path / "password"
    secret.write_text(account.password + "\n")
    secret.chmod(0o600)
    return write_config(tmp_path / "config.toml", f"""\
[netaudit]
database = "{tmp_path / 'netaudit.duckdb'}"
me = ["{ME}"]
timezone = "UTC"

[[imap]]
name = "work"
host = "127.0.0.1"
port = {account.port}
security = "plain"
username = "{account.user}"
password_command = ["cat", "{secret}"]
timeout = 20
{extra}""")


def files_config(tmp_path: Path, *sources: tuple[str, str, Path]) -> Path:
    lines = ["[netaudit]", f'database = "{tmp_path / "netaudit.duckdb"}"', f'me = ["{ME}"]',
             'timezone = "UTC"', ""]
    for kind, name, path in sources:
        lines += [f"[[{kind}]]", f'name = "{name}"', f'path = "{path}"', ""]
    return write_config(tmp_path / "config.toml", "\n".join(lines))


def idle_ready(notify: NotifySocket, account: str = "work") -> str:
    """Wait until STATUS says the initial sync is over and IDLE is up."""
    return notify.wait_for(lambda s: s.startswith("STATUS=idle") and f"IDLE on {account}" in s,
                           30, f"IDLE on {account}")


def multiappend(account: ImapAccount, messages: list[bytes], chunk: int = 1000) -> None:
    with account.client() as conn:
        for i in range(0, len(messages), chunk):
            conn.multiappend("INBOX", messages[i:i + chunk])


def assert_exact(database: Path, expected: int) -> None:
    total, distinct_keys, distinct_locations = query(
        database, "SELECT count(*), count(DISTINCT message_key), count(DISTINCT location) "
                  "FROM messages")[0]
    assert (total, distinct_keys, distinct_locations) == (expected, expected, expected)


def no_traceback(d: DaemonProcess) -> None:
    text = d.log_text()
    assert "Traceback" not in text, text[-3000:]


# ---------------------------------------------------------------------------------------------
# IMAP IDLE


class Stream:
    """Appends one message to INBOX every ``pause`` seconds, as mail keeps arriving, until
    ``stop_event`` is set; ``count`` says how many went in."""

    def __init__(self, account: Any, pause: float) -> None:
        self.account = account
        self.pause = pause
        self.stop_event = threading.Event()
        self.count = 0

    def run(self) -> None:
        with self.account.client() as conn:
            while not self.stop_event.is_set():
                conn.append("INBOX", sample_messages(1, subject="stream")[0])
                self.count += 1
                self.stop_event.wait(self.pause)


def test_new_mail_reaches_the_database_through_idle_within_5_s(
        tmp_path: Path, imap_account: ImapAccount, daemons: Callable[..., DaemonProcess],
        notify: NotifySocket) -> None:
    imap_account.append("INBOX", sample_messages(1, subject="before")[0])
    cfg = imap_config(tmp_path, imap_account)
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, "--poll-seconds", "3600", env={"NOTIFY_SOCKET": notify.address})
    idle_ready(notify)
    wait_until(lambda: count(database) == 1, 10, "the initial sync")
    for i, raw in enumerate(sample_messages(3, subject="live")):
        started = time.monotonic()
        imap_account.append("INBOX", raw)
        wait_until(lambda n=i + 2: count(database) == n, 5, f"live message {i + 1} stored")
        assert time.monotonic() - started < 5
    assert d.alive()
    assert d.terminate()[0] == 0
    no_traceback(d)


def test_the_idle_connection_is_rebuilt_after_the_server_restarts(
        tmp_path: Path, dovecot_factory: Callable[..., Any],
        daemons: Callable[..., DaemonProcess], notify: NotifySocket) -> None:
    server = dovecot_factory()
    account = server.add_account()
    cfg = imap_config(tmp_path, account)
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, "--poll-seconds", "3600", env={"NOTIFY_SOCKET": notify.address})
    idle_ready(notify)
    server.restart()
    account.append("INBOX", sample_messages(1, subject="after restart")[0])
    wait_until(lambda: count(database) == 1, 30, "mail after the server restarted")
    assert "IDLE connection" in d.log_text()  # the drop was noticed and logged
    assert d.terminate()[0] == 0


class FreezingProxy:
    """A TCP relay to the IMAP server that can go silent on its open connections without
    closing them: what a dead NAT mapping or a pulled cable looks like to a client."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[threading.Event] = []  # set: this connection is frozen
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            frozen = threading.Event()
            self.connections.append(frozen)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, frozen), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                while frozen.is_set():
                    time.sleep(0.1)  # hold the bytes: the peer hears nothing, ever
                dst.sendall(data)

    def freeze_existing(self) -> None:
        for frozen in self.connections:
            frozen.set()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def watcher_for(tmp_path: Path, account: ImapAccount, stop: threading.Event, *,
                port: int | None = None, renew: float = idle.IDLE_RENEW,
                timeout: int = 20) -> tuple[idle.IdleWatcher, list[str], list[str]]:
    from netaudit import config

    cfg = config.load(str(imap_config(tmp_path, account)))
    settings = {**cfg.sources[0].settings, "timeout": timeout}
    if port is not None:
        settings["port"] = port
    source = config.Source("imap", "work", settings)
    new_mail: list[str] = []
    reconnects: list[str] = []
    watcher = idle.IdleWatcher(source, stop, on_new_mail=new_mail.append,
                               on_reconnect=reconnects.append, on_no_idle=lambda: None,
                               renew=renew)
    return watcher, new_mail, reconnects


def test_idle_is_reissued_on_time_and_ends_with_logout(
        tmp_path: Path, imap_account: ImapAccount) -> None:
    stop = threading.Event()
    watcher, new_mail, _ = watcher_for(tmp_path, imap_account, stop, renew=0.5)
    watcher.start()
    try:
        wait_until(lambda: watcher.connected, 10, "IDLE started")
        time.sleep(2)
        imap_account.append("INBOX", sample_messages(1)[0])
        wait_until(lambda: new_mail, 5, "EXISTS reported")
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()
    assert imap_account.server.rawlog_dir is not None
    sessions = [parse_imap_commands(p.read_bytes()) for p in sorted(
        (imap_account.server.rawlog_dir / imap_account.user).glob("*.in"))]
    idling = [commands for commands in sessions if "IDLE" in commands]
    assert len(idling) == 1, sessions  # one connection all along
    assert idling[0].count("IDLE") >= 4, idling  # renewed every 0.5 s
    assert idling[0][-1] == "LOGOUT"  # DONE, then a polite goodbye
    assert new_mail[0] == "INBOX"


def test_a_silent_idle_connection_is_detected_and_rebuilt(
        tmp_path: Path, imap_account: ImapAccount, caplog: pytest.LogCaptureFixture) -> None:
    proxy = FreezingProxy(imap_account.port)
    stop = threading.Event()
    watcher, new_mail, reconnects = watcher_for(tmp_path, imap_account, stop, port=proxy.port,
                                                renew=1.0, timeout=2)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING):
            wait_until(lambda: watcher.connected, 10, "IDLE started")
            proxy.freeze_existing()  # no FIN, no RST: just silence
            wait_until(lambda: reconnects, 15, "a new connection after the silence")
        assert "timed out" in caplog.text
        imap_account.append("INBOX", sample_messages(1)[0])
        wait_until(lambda: new_mail, 5, "new mail on the rebuilt connection")
    finally:
        stop.set()
        watcher.join(10)
        proxy.close()
    assert not watcher.is_alive()


# ---------------------------------------------------------------------------------------------
# Readers and the one writer


@pytest.mark.slow
def test_readers_never_see_a_lock_error_while_mail_streams_in(
        tmp_path: Path, imap_account: ImapAccount, daemons: Callable[..., DaemonProcess],
        notify: NotifySocket) -> None:
    cfg = imap_config(tmp_path, imap_account)
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, "--poll-seconds", "3600", env={"NOTIFY_SOCKET": notify.address})
    idle_ready(notify)
    stream = Stream(imap_account, pause=0.2)
    stop = stream.stop_event

    failures: list[str] = []
    runs = {"report": 0, "sql": 0}

    def read_in_a_loop(kind: str, args: list[str]) -> None:
        while not stop.is_set():
            proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), *args],
                                  capture_output=True, text=True, timeout=60, cwd=REPO)
            runs[kind] += 1
            if proc.returncode != 0:
                failures.append(f"{kind} exit {proc.returncode}: {proc.stderr.strip()}")

    threads = [threading.Thread(target=stream.run),
               threading.Thread(target=read_in_a_loop,
                                args=("report", ["report", "--format", "json"])),
               threading.Thread(target=read_in_a_loop,
                                args=("sql", ["sql", "SELECT count(*) FROM messages"]))]
    for t in threads:
        t.start()
    time.sleep(30)
    stop.set()
    for t in threads:
        t.join(90)
    assert not failures, failures[:3]
    assert runs["report"] >= 5 and runs["sql"] >= 5, runs
    assert stream.count >= 50
    wait_until(lambda: count(database) == stream.count, 20,
               f"all {stream.count} streamed messages")
    assert d.alive()
    assert d.terminate()[0] == 0
    no_traceback(d)


@pytest.mark.slow
def test_a_reader_holding_the_file_delays_the_daemon_but_loses_nothing(
        tmp_path: Path, imap_account: ImapAccount, daemons: Callable[..., DaemonProcess],
        notify: NotifySocket) -> None:
    imap_account.append("INBOX", sample_messages(1, subject="before")[0])
    cfg = imap_config(tmp_path, imap_account)
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, "--poll-seconds", "3600", env={"NOTIFY_SOCKET": notify.address})
    idle_ready(notify)
    wait_until(lambda: count(database) == 1, 10, "the initial sync")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(database), "15"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        held_at = time.monotonic()
        for raw in sample_messages(5, subject="while held"):
            imap_account.append("INBOX", raw)
            time.sleep(0.5)
        notify.wait_for(lambda s: s.startswith("STATUS=waiting for reader"), 10,
                        "STATUS=waiting for reader")
        # Readers may share the file with the holder; the daemon may not write meanwhile.
        assert count(database) == 1
        while holder.poll() is None:
            assert d.alive(), d.log_text()
            time.sleep(0.5)
        assert holder.returncode == 0
        assert time.monotonic() - held_at >= 14
    finally:
        if holder.poll() is None:
            holder.kill()
    wait_until(lambda: count(database) == 6, 10, "the five messages after the reader closed")
    assert "database busy" in d.log_text()
    assert d.terminate()[0] == 0
    no_traceback(d)


# ---------------------------------------------------------------------------------------------
# Stopping and crashing in the middle of a sync


@pytest.mark.slow
def test_sigterm_in_a_large_initial_sync_exits_cleanly_and_a_restart_completes(
        tmp_path: Path, imap_account: ImapAccount,
        daemons: Callable[..., DaemonProcess]) -> None:
    total = 10_000  # four write batches, so the signal lands between two of them
    multiappend(imap_account, sample_messages(total, subject="bulk"))
    cfg = imap_config(tmp_path, imap_account)
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, "--poll-seconds", "3600", verbose=True)
    wait_until(lambda: "stored up to UID" in d.log_text(), 60, "the first committed batch")
    code, took = d.terminate(timeout=15)
    assert code == 0, d.log_text()[-2000:]
    assert took < 10
    first = count(database)
    assert 0 < first < total  # it really stopped in the middle
    assert_exact(database, first)
    again = daemons(cfg, "--poll-seconds", "3600")
    wait_until(lambda: count(database) == total, 60, "the restarted sync")
    assert again.terminate()[0] == 0
    assert_exact(database, total)
    no_traceback(d)
    no_traceback(again)


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_doubles_nothing(
        tmp_path: Path, imap_account: ImapAccount,
        daemons: Callable[..., DaemonProcess]) -> None:
    """A backlog, then a steady stream of mail, so that every kill lands while something is
    being fetched or committed: the initial sync, or an IDLE-triggered one."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    multiappend(imap_account, sample_messages(6000, subject="backlog"))
    cfg = imap_config(tmp_path, imap_account)
    database = tmp_path / "netaudit.duckdb"
    stream = Stream(imap_account, pause=0.02)
    appender = threading.Thread(target=stream.run)
    appender.start()
    moments = []
    try:
        for _ in range(3):
            d = daemons(cfg, "--poll-seconds", "3600")
            moments.append(round(rng.uniform(0.5, 3.0), 2))
            time.sleep(moments[-1])
            d.kill()
    finally:
        stream.stop_event.set()
        appender.join(30)
    total = 6000 + stream.count
    final = daemons(cfg, "--poll-seconds", "3600")
    wait_until(lambda: count(database) == total, 60,
               f"all {total} messages after kills at {moments} s (seed {seed})")
    assert final.terminate()[0] == 0
    assert_exact(database, total)
    uid = query(database, "SELECT last_uid FROM sync_state WHERE source = 'work' "
                          "AND scope = 'INBOX'")[0][0]
    assert uid == max(imap_account.folder_uids("INBOX"))


# ---------------------------------------------------------------------------------------------
# Files


def test_watched_vdir_and_maildir_changes_arrive_within_5_s(
        tmp_path: Path, daemons: Callable[..., DaemonProcess], notify: NotifySocket) -> None:
    vdir = tmp_path / "calendar"
    vdir.mkdir()
    (vdir / "displayname").write_text("Work")
    (vdir / "weekly.ics").write_text(weekly())
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    cfg = files_config(tmp_path, ("calendar", "cal", vdir), ("maildir", "mail", maildir))
    database = tmp_path / "netaudit.duckdb"
    d = daemons(cfg, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for(lambda s: s.startswith("STATUS=idle") and "watching mail, cal" in s, 30,
                    "both paths watched")
    wait_until(lambda: count(database, "meetings") == 3, 10, "the vdir's initial sync")

    def starts() -> list[dt.datetime]:
        return [r[0] for r in query(database, "SELECT starts_at FROM meetings ORDER BY 1")]

    # An editor's save: write a temp file, rename it over the original.
    started = time.monotonic()
    tmp = vdir / "weekly.ics.tmp"
    tmp.write_text(weekly(moved=True))
    os.replace(tmp, vdir / "weekly.ics")
    moved = dt.datetime(2026, 2, 3, 15, tzinfo=dt.UTC)
    wait_until(lambda: moved in starts(), 5, "the edited occurrence")
    assert time.monotonic() - started < 5

    started = time.monotonic()
    (vdir / "lunch.ics").write_text(ONE_OFF.replace("{stamp}", "20260101T000000Z"))
    lunch = dt.datetime(2026, 2, 10, 12, tzinfo=dt.UTC)
    wait_until(lambda: lunch in starts(), 5, "the new .ics file")

    # A mail delivery: written to tmp/, renamed into new/.
    raw = sample_messages(1, subject="delivered")[0]
    (maildir / "tmp" / "1.host").write_bytes(raw)
    os.replace(maildir / "tmp" / "1.host", maildir / "new" / "1.host")
    wait_until(lambda: count(database) == 1, 5, "the delivered message")
    # The mail client moves it to cur/ with flags: still one message.
    os.replace(maildir / "new" / "1.host", maildir / "cur" / "1.host:2,S")
    time.sleep(2)
    assert count(database) == 1
    assert d.terminate()[0] == 0
    no_traceback(d)


# ---------------------------------------------------------------------------------------------
# The service manager: sd_notify, signals


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_ready_watchdog_and_stopping(
        tmp_path: Path, daemons: Callable[..., DaemonProcess], abstract: bool) -> None:
    vdir = tmp_path / "calendar"
    vdir.mkdir()
    cfg = files_config(tmp_path, ("calendar", "cal", vdir))
    manager = NotifySocket(abstract=abstract)
    try:
        d = daemons(cfg, env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
        manager.wait_for(lambda s: s == "READY=1", 20, "READY=1")
        wait_until(lambda: len(manager.seen(lambda s: s == "WATCHDOG=1")) >= 3, 5,
                   "three WATCHDOG=1 pings (every 0.5 s)")
        assert manager.seen(lambda s: s.startswith("STATUS="))
        code, took = d.terminate()
        assert (code, took < 10) == (0, True)
        manager.wait_for(lambda s: s == "STOPPING=1", 2, "STOPPING=1")
        ready_at = manager.lines.index("READY=1")
        assert "WATCHDOG=1" not in manager.lines[:ready_at]
    finally:
        manager.close()


def test_under_journald_lines_carry_priorities_and_no_times(
        tmp_path: Path, daemons: Callable[..., DaemonProcess], notify: NotifySocket) -> None:
    vdir = tmp_path / "calendar"
    vdir.mkdir()
    (vdir / "weekly.ics").write_text(weekly())
    cfg = files_config(tmp_path, ("calendar", "cal", vdir), ("calendar", "gone",
                                                             tmp_path / "missing"))
    d = daemons(cfg, env={"NOTIFY_SOCKET": notify.address, "JOURNAL_STREAM": "8:12345"})
    notify.wait_for(lambda s: s == "READY=1", 20, "READY=1")
    wait_until(lambda: "gone: failed" in d.log_text(), 10, "the missing path reported")
    assert d.terminate()[0] == 0
    lines = d.log_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert any(line.startswith("<4>gone: failed") for line in lines)  # a warning
    assert any(line.startswith("<6>netaudit daemon started") for line in lines)
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines)  # journald adds it


def _reloadable(tmp_path: Path, daemons: Callable[..., DaemonProcess],
                notify: NotifySocket) -> tuple[Path, Path, DaemonProcess]:
    """A ready daemon on one calendar vdir, "first" (3 meetings stored), with a second vdir
    (one meeting) for a reload to add; (config, second vdir, daemon)."""
    first, second = tmp_path / "first", tmp_path / "second"
    for vdir in (first, second):
        vdir.mkdir()
    (first / "weekly.ics").write_text(weekly())
    (second / "lunch.ics").write_text(ONE_OFF.replace("{stamp}", "20260101T000000Z"))
    cfg = files_config(tmp_path, ("calendar", "first", first))
    d = daemons(cfg, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for(lambda s: s == "READY=1", 20, "READY=1")
    wait_until(lambda: count(tmp_path / "netaudit.duckdb", "meetings") == 3, 10,
               "the first calendar")
    return cfg, second, d


def test_sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_applies(
        tmp_path: Path, daemons: Callable[..., DaemonProcess], notify: NotifySocket) -> None:
    cfg, second, d = _reloadable(tmp_path, daemons, notify)
    first = tmp_path / "first"
    good = cfg.read_text()
    database = tmp_path / "netaudit.duckdb"

    cfg.write_text(good + "\n[[calendar]\nname = broken\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in d.log_text(), 10, "the reload error")
    time.sleep(0.5)
    lines = [line for line in d.log_text().splitlines() if "reload" in line or "config" in line]
    assert len(lines) == 1, lines
    assert str(cfg) in lines[0]
    assert d.alive()
    # Still running on the old config: the watched vdir still counts.
    (first / "lunch.ics").write_text(ONE_OFF.replace("{stamp}", "20260101T000000Z"))
    wait_until(lambda: count(database, "meetings") == 4, 5, "a change under the old config")

    write_config(cfg, good + f'\n[[calendar]]\nname = "second"\npath = "{second}"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: query(database, "SELECT count(*) FROM meetings WHERE calendar = "
                                       "'second'")[0][0] == 1, 10, "the added calendar")
    assert d.terminate()[0] == 0
    no_traceback(d)


def test_a_storm_of_sighups_neither_hangs_nor_kills_the_daemon(
        tmp_path: Path, daemons: Callable[..., DaemonProcess], notify: NotifySocket) -> None:
    """`systemctl reload` in a loop. A handler that took a lock could be entered while the
    main thread held that lock: the daemon hung for good, or died of a RecursionError as more
    signals nested in the hung handler (it did, 3 times in 4, with 1,500 signals)."""
    cfg, second, d = _reloadable(tmp_path, daemons, notify)
    database = tmp_path / "netaudit.duckdb"
    rng = random.Random(7)
    for _ in range(1500):
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(rng.random() * 0.004)
    assert d.alive()
    write_config(cfg, cfg.read_text() + f'\n[[calendar]]\nname = "second"\npath = "{second}"\n')
    d.proc.send_signal(signal.SIGHUP)  # still answered: the new calendar is read
    wait_until(lambda: query(database, "SELECT count(*) FROM meetings WHERE calendar = "
                                       "'second'")[0][0] == 1, 20, "the added calendar")
    code, seconds = d.terminate()
    assert code == 0 and seconds < 9, (code, seconds)
    no_traceback(d)


# ---------------------------------------------------------------------------------------------
# Parts, in-process


def test_sd_notify_addresses_and_watchdog_period() -> None:
    assert sdnotify.socket_address("@name") == "\0name"
    assert sdnotify.socket_address("/run/user/1000/systemd/notify") == \
        "/run/user/1000/systemd/notify"
    assert sdnotify.socket_address("vsock:2:1234") is None
    pid = os.getpid()
    assert sdnotify.watchdog_seconds({"WATCHDOG_USEC": "120000000"}, pid) == 120.0
    assert sdnotify.watchdog_seconds({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}, pid) is None
    assert sdnotify.watchdog_seconds({}, pid) is None
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid)}
    notifier = sdnotify.Notifier.from_env(env)
    assert (notifier.address, notifier.watchdog, env) == ("\0x", 1.0, {})  # not inherited
    assert not sdnotify.Notifier(None).send("READY=1")  # no manager: a no-op


def test_status_is_sent_once_per_change() -> None:
    manager = NotifySocket(abstract=True)
    try:
        notifier = sdnotify.Notifier(sdnotify.socket_address(manager.address))
        for text in ("syncing work", "syncing work", "idle:  1 source", "idle: 1 source"):
            notifier.status(text)
        notifier.ready()
        manager.wait_for(lambda s: s == "READY=1", 2, "READY=1")
        assert manager.seen(lambda s: s.startswith("STATUS=")) == \
            ["STATUS=syncing work", "STATUS=idle: 1 source"]
    finally:
        manager.close()


def test_the_write_gate_waits_for_a_reader_and_reports_it(tmp_path: Path) -> None:
    database = tmp_path / "gate.duckdb"
    with db.writer(database) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.replace("messages", "t"),
                               str(database), "2"], stdout=subprocess.PIPE, text=True)
    waits: list[str | None] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        gate = WriteGate(lambda: False, patience=20, on_wait=waits.append)
        with gate:
            started = time.monotonic()
            with db.writer(database) as con:  # through the gate: it is installed
                con.execute("INSERT INTO t VALUES (1)")
            assert time.monotonic() - started >= 1
        assert db.writer is not gate.writer  # uninstalled again
        assert len(waits) == 2 and waits[1] is None
        assert waits[0] is not None and "PID" in waits[0]
        assert gate.waits == 1
    finally:
        holder.wait(10)


def test_the_write_gate_unwinds_when_stopping_and_gives_up_after_its_patience(
        tmp_path: Path) -> None:
    database = tmp_path / "gate.duckdb"
    with db.writer(database):
        pass
    stopping = threading.Event()
    gate = WriteGate(stopping.is_set, patience=1.5)
    stopping.set()
    with pytest.raises(Stopping), gate.writer(database):
        pass
    stopping.clear()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.replace(
        "SELECT count(*) FROM messages", "SELECT 1"), str(database), "6"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(DatabaseBusy), gate.writer(database):
            pass
        threading.Timer(0.5, stopping.set).start()
        started = time.monotonic()
        with pytest.raises(Stopping), gate.writer(database):
            pass
        assert time.monotonic() - started < 2.5  # a stop ends the wait within a step
    finally:
        holder.kill()
        holder.wait(10)


def test_the_write_gate_serializes_threads(tmp_path: Path) -> None:
    database = tmp_path / "gate.duckdb"
    with db.writer(database) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    inside = 0
    most = 0
    lock = threading.Lock()

    def write(n: int) -> None:
        nonlocal inside, most
        for _ in range(5):
            with db.writer(database) as con:
                with lock:
                    inside += 1
                    most = max(most, inside)
                con.execute("INSERT INTO t VALUES (?)", [n])
                time.sleep(0.01)
                with lock:
                    inside -= 1

    with WriteGate(lambda: False):
        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert most == 1
    with db.reader(database) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (20,)


class FailingObserver:
    """An observer whose inotify limits are exhausted, as the kernel reports them."""

    def __init__(self, code: int) -> None:
        self.code = code

    def start(self) -> None: ...

    def schedule(self, event_handler: Any, path: str, *, recursive: bool = False) -> Any:
        raise OSError(self.code, os.strerror(self.code))

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool:
        return True


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EMFILE])
def test_inotify_limits_fall_back_to_rescans_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int) -> None:
    watcher = watch.Watcher(FailingObserver(code))
    assert watcher.start()
    with caplog.at_level(logging.WARNING):
        assert not watcher.add("mail", "maildir", tmp_path, lambda paths, deleted: None)
    assert "inotify" in caplog.text and "rescanning on a timer" in caplog.text


def test_the_real_watcher_reports_renames_and_ignores_reads(tmp_path: Path) -> None:
    seen: list[tuple[list[str], bool]] = []
    watcher = watch.Watcher()
    assert watcher.start()
    try:
        assert watcher.add("cal", "calendar", tmp_path, lambda p, d: seen.append((p, d)))
        (tmp_path / "a.ics.tmp").write_text("x")
        os.replace(tmp_path / "a.ics.tmp", tmp_path / "a.ics")
        wait_until(lambda: any(str(tmp_path / "a.ics") in p for p, _ in seen), 5, "the rename")
        time.sleep(0.3)
        seen.clear()
        (tmp_path / "a.ics").read_text()  # netaudit reading a file must not wake it again
        (tmp_path / "color").write_text("#fff")  # vdir metadata is not an item
        time.sleep(0.5)
        assert seen == []
        (tmp_path / "a.ics").unlink()
        wait_until(lambda: (([str(tmp_path / "a.ics")], True) in seen), 5, "the deletion")
    finally:
        watcher.stop()


def test_the_maildir_delta_scan_lists_only_new_and_renamed_files(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp", ".Archive/cur", ".Archive/new", ".Archive/tmp"):
        (root / sub).mkdir(parents=True)
    (root / ".Archive" / "maildirfolder").write_text("")
    for name in ("old1", "old2"):
        (root / "cur" / name).write_text("x")
    (root / ".Archive" / "cur" / "old3").write_text("x")
    time.sleep(0.05)
    mark = time.time_ns()
    time.sleep(0.05)
    (root / "new" / "fresh").write_text("x")
    (root / ".Archive" / "new" / "fresh2").write_text("x")
    os.replace(root / "cur" / "old1", root / "cur" / "old1:2,S")  # a flag change renames
    found = sorted(p.name for p in workers.changed_maildir_files(root, mark))
    assert found == ["fresh", "fresh2", "old1:2,S"]


def test_idle_folder_and_reconnect_backoff() -> None:
    assert idle.idle_folder_spec(None, gmail=False) == "INBOX"
    assert idle.idle_folder_spec(None, gmail=True) == "\\All"
    assert idle.idle_folder_spec(["\\Sent", "inbox"], gmail=False) == "INBOX"
    assert idle.idle_folder_spec(["Archive", "\\Sent"], gmail=False) == "Archive"
    backoff = idle.Backoff(base=1, cap=8, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    assert all(0.5 <= d <= 8 for d in delays) and delays[-1] >= 4  # doubles, then capped
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_worker_requests_coalesce_into_one_due_time() -> None:
    """A burst of file events makes one job, due a debounce after the first event."""
    from netaudit import config

    ctx = workers.Context(config.validate({}, None), workers.Timing(), frozenset(),
                          on_activity=lambda: None, on_change=lambda: None)
    ran: list[str] = []

    class Recorder(workers.Worker):
        def do(self, job: str) -> tuple[bool, str | None]:
            ran.append(job)
            return False, None

    worker = Recorder(ctx, "recorder")
    worker.start()
    try:
        for _ in range(20):
            worker.request("paths", 0.5)
        worker.request("paths", 5.0)  # a later due time does not postpone the earlier one
        time.sleep(1.5)
        assert ran == ["paths"]
    finally:
        ctx.stop.set()
        worker.wake()
        worker.join(2)
    assert not worker.is_alive()

