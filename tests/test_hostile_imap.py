"""A hostile IMAP server: `netaudit sync` must fail cleanly, in bounded time and memory.

The server is a real TCP server on 127.0.0.1 (a thread per connection) that speaks enough
IMAP for a sync (greeting, CAPABILITY, LOGIN, STATUS, LIST, EXAMINE, UID FETCH, LOGOUT, IDLE)
and then, at one chosen command, misbehaves:

- ``literal``: announces a literal of 3,000,000,000 bytes and streams bytes for ever (the
  stdlib's imaplib allocated the whole literal before reading it: MemoryError under the limit);
- ``flood``: sends untagged responses for ever and never completes the command (imaplib keeps
  every one of them until the command completes, the pipelined FETCH reader kept the FETCH
  ones: MemoryError after 20-35 s); ``fetch-flood``: well-formed FETCH answers for UIDs never
  asked for (the reader read them for ever);
- ``long-line``, ``long-number`` (5,000 digits: imapclient's int() raised ValueError),
  ``continuations`` (endless "+" to AUTHENTICATE: imaplib answered each, for ever) and
  ``unsolicited`` (60,000 EXISTS before each answer: imaplib kept them across commands).

`netaudit sync` runs as a real process under RLIMIT_AS (1 GiB address space) with a timeout
that only detects a hang; its peak RSS comes from wait4. It must exit 1 with one line naming
the cap, no traceback, the source's ``last_error`` set, and the other sources synced. The
daemon's IDLE watcher meets the same server in a process of its own and must reconnect.
Against a real Dovecot: a header over the stored cap is quarantined and the sync goes on, and
bounce lookups go in commands of a bounded number of UIDs.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest import imap, imap_connect
from ingest.headers import MAX_HEADER_BYTES
from ingest.imap_connect import (
    MAX_COMMAND_BYTES,
    MAX_LITERAL_BYTES,
    MAX_RESPONSES,
    PER_UID_BYTES,
    PER_UID_RESPONSES,
    ResponseBudget,
    ServerMisbehaved,
    check_literal,
    command_name,
    literal_size,
)
from ingest.secrets import Secret
from netaudit import config, db
from tests.conftest import Run, data_path, write_config
from tests.dovecot import DovecotServer, ImapAccount
from tests.test_imap import (
    BOUNCES,
    INBOX_MAIL,
    ME,
    append_all,
    crlf,
    fetch_lines,
    imap_config,
    in_process,
    message,
    query,
    sync,
)

HUGE = 3_000_000_000
ADDRESS_SPACE = 1 << 30  # RLIMIT_AS of the sync process
HANG = 60  # seconds: only a hang takes this long

# One message's header fields, as a FETCH of netaudit's items returns them.
HEADER = (b"From: Alice Example <alice@example.net>\r\nTo: robin@example.org\r\n"
          b"Subject: hello\r\nDate: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
          b"Message-ID: <m{uid}@example.net>\r\n\r\n")


def fetch_answer(uid: int) -> bytes:
    header = HEADER.replace(b"{uid}", str(uid).encode())
    return (b"* %d FETCH (UID %d RFC822.SIZE 900 INTERNALDATE \"03-Mar-2025 10:00:00 +0000\" "
            b"BODY[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)] {%d}\r\n%s)\r\n"
            % (uid, uid, len(header), header))


# What each misbehaving answer looks like, by the command it answers. A literal is announced
# where a real server may send one; the flood is what a server may legitimately send once.
LITERALS = {
    "greeting": b"* OK [ALERT] {%d}\r\n",
    "CAPABILITY": b"* CAPABILITY {%d}\r\n",
    "LOGIN": b"* OK [ALERT] {%d}\r\n",
    "STATUS": b"* STATUS {%d}\r\n",
    "LIST": b'* LIST () "/" {%d}\r\n',
    "EXAMINE": b"* OK [ALERT] {%d}\r\n",
    "UID FETCH": b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM)] {%d}\r\n",
    "IDLE": b"* 1 FETCH (BODY[HEADER] {%d}\r\n",
}
FLOODS = {
    "greeting": b"* OK [ALERT] still here %d\r\n",
    "CAPABILITY": b"* CAPABILITY IMAP4rev1 X-%d\r\n",
    "LOGIN": b"* OK [ALERT] still here %d\r\n",
    "STATUS": b"* STATUS INBOX (MESSAGES %d)\r\n",
    "LIST": b'* LIST () "/" junk-%d\r\n',
    "EXAMINE": b"* %d EXISTS\r\n",
    "UID FETCH": b"* 1 FETCH (FLAGS (\\Seen %d))\r\n",
    "IDLE": b"* %d EXISTS\r\n",
}


@dataclass
class Misbehaviour:
    stage: str  # the command answered badly ("greeting" for the greeting itself)
    # literal, flood, fetch-flood (well-formed FETCH data for UIDs never asked for),
    # long-line (a line that never ends), long-number (an EXISTS of 5,000 digits, then the
    # proper answer), continuations (endless "+" in answer to AUTHENTICATE) or unsolicited
    # (60,000 EXISTS before each proper answer), big-lines (900 KB lines for ever)
    attack: str
    times: int = 1_000_000  # connections to misbehave on; later ones behave


class HostileIMAP:
    """A loopback IMAP server with three messages in INBOX that misbehaves as told."""

    def __init__(self, misbehaviour: Misbehaviour) -> None:
        self.misbehaviour = misbehaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.sent = 0  # bytes streamed by the misbehaving answers
        self.commands: list[str] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            hostile = self.connections <= self.misbehaviour.times
            threading.Thread(target=self._serve, args=(conn, hostile), daemon=True).start()

    def _serve(self, conn: socket.socket, hostile: bool) -> None:
        with contextlib.suppress(OSError), conn:
            if hostile and self.misbehaviour.stage == "greeting":
                self._misbehave(conn)
                return
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] hostile test server ready\r\n")
            reader = conn.makefile("rb")
            idling = b""
            while True:
                line = reader.readline(65536)
                if not line:
                    return
                if line.rstrip(b"\r\n").upper() == b"DONE":
                    conn.sendall(idling + b" OK idle done\r\n")
                    continue
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                words = rest.split(b" ")
                command = words[0].upper().decode()
                if command == "UID":
                    command = "UID " + words[1].upper().decode()
                self.commands.append(command)
                if command == "IDLE":
                    conn.sendall(b"+ idling\r\n")
                    idling = tag
                if hostile and command == self.misbehaviour.stage:
                    if self.misbehaviour.attack == "long-number":  # then a proper answer
                        conn.sendall(b"* " + b"9" * 5000 + b" EXISTS\r\n")
                    elif self.misbehaviour.attack == "unsolicited":  # then a proper answer
                        conn.sendall(b"".join(b"* %d EXISTS\r\n" % i for i in range(60_000)))
                    else:
                        self._misbehave(conn)
                        return
                if command != "IDLE":
                    conn.sendall(self._answer(command, tag.decode(), words))
                if command == "LOGOUT":
                    return

    @staticmethod
    def _answer(command: str, tag: str, words: list[bytes]) -> bytes:
        ok = f"{tag} OK done\r\n".encode()
        if command == "CAPABILITY":
            return b"* CAPABILITY IMAP4rev1 IDLE\r\n" + ok
        if command == "LOGIN":
            return f"{tag} OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n".encode()
        if command == "STATUS":
            return b"* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY 7)\r\n" + ok
        if command == "LIST":
            return b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + ok
        if command in ("EXAMINE", "SELECT"):
            return (b"* 3 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n"
                    b"* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n" +
                    f"{tag} OK [READ-ONLY] examined\r\n".encode())
        if command == "UID FETCH":
            lo, _, hi = words[2].partition(b":")
            uids = range(int(lo), min(int(hi or lo), 3) + 1)
            return b"".join(fetch_answer(uid) for uid in uids) + ok
        if command == "LOGOUT":
            return b"* BYE bye\r\n" + ok
        return ok

    def _misbehave(self, conn: socket.socket) -> None:
        stage, attack = self.misbehaviour.stage, self.misbehaviour.attack
        if attack == "literal":
            conn.sendall(LITERALS[stage] % HUGE)
            block = b"a" * 65536
        elif attack == "long-line":
            conn.sendall(b"* OK [ALERT] ")
            block = b"a" * 65536
        elif attack == "flood":
            block = b"".join(FLOODS[stage] % i for i in range(1, 2000))
        elif attack == "big-lines":  # each line just under the line bound
            block = b'* LIST () "/" ' + b"a" * 900_000 + b"\r\n"
        elif attack == "continuations":  # "+" for ever: the client answers each one
            reader = conn.makefile("rb")
            threading.Thread(target=lambda: all(iter(lambda: reader.read(65536), b"")),
                             daemon=True).start()
            block = b"+ \r\n" * 2000
        else:  # fetch-flood: the usual FETCH answer, for UIDs nobody asked for
            block = b"".join(fetch_answer(uid) for uid in range(1000, 1200))
        while True:
            conn.sendall(block)
            self.sent += len(block)


@pytest.fixture
def hostile() -> Iterator[list[HostileIMAP]]:
    servers: list[HostileIMAP] = []
    yield servers
    for server in servers:
        server.close()


def write_sync_config(tmp_path: Path, port: int, maildir: Path | None = None,
                      xoauth2: bool = False) -> Path:
    secret = tmp_path / "password"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    auth = ['auth = "xoauth2"', f'oauth2_token_command = ["cat", "{secret}"]'] if xoauth2 \
        else [f'password_command = ["cat", "{secret}"]']
    lines = [
        "[netaudit]", f'database = "{tmp_path / "netaudit.duckdb"}"',
        'me = ["robin@example.org"]', "",
        "[[imap]]", 'name = "hostile"', 'host = "127.0.0.1"', f"port = {port}",
        'security = "plain"', 'username = "robin"', *auth,
        "timeout = 20", 'folders = ["INBOX"]', "",
    ]
    if maildir is not None:
        lines += ["[[maildir]]", 'name = "local"', f'path = "{maildir}"', ""]
    return write_config(tmp_path / "config.toml", "\n".join(lines))


def small_maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(1, 3):
        (root / "cur" / f"{i}.host:2,S").write_bytes(
            b"From: Bob <bob@example.com>\nTo: robin@example.org\nSubject: local\n"
            b"Date: Tue, 04 Mar 2025 10:00:00 +0000\nMessage-ID: <local%d@example.com>\n\n"
            b"Hi.\n" % i)
    return root


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    max_rss: int  # bytes, from wait4
    seconds: float


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(home: Path, *args: str, module: bool = True) -> Outcome:
    """`python -m netaudit ARGS` (or `python ARGS`) under RLIMIT_AS; killed, and reported as
    a hang, after HANG s."""
    out, err = home / "stdout", home / "stderr"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share")}
    env.pop("NETAUDIT_CONFIG", None)
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        argv = [sys.executable, *(("-m", "netaudit") if module else ()), *args]
        proc = subprocess.Popen(argv, stdout=stdout,
                                stderr=stderr, env=env, cwd=home, preexec_fn=_limit_memory)
    timer = threading.Timer(HANG, proc.send_signal, [signal.SIGKILL])
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    seconds = time.monotonic() - started
    assert proc.returncode != -signal.SIGKILL, f"no answer after {HANG} s: a hang"
    return Outcome(proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss * 1024,
                   seconds)


def last_error(cfg: Path, name: str) -> str | None:
    with db.reader(config.load(str(cfg)).database) as con:
        row = con.execute("SELECT last_error FROM sources WHERE name = ?", [name]).fetchone()
    return row[0] if row else None



def expected_line(server: HostileIMAP, attack: str, stage: str) -> str:
    """The one line `netaudit sync` prints for the source: every cap names its value."""
    where = f"127.0.0.1:{server.port}"
    # The greeting is one response; what follows it is read as the answer to CAPABILITY,
    # which imaplib sends straight away. The sync asks for one window, UIDs 1 to 3.
    command = "CAPABILITY" if stage == "greeting" else stage
    responses = MAX_RESPONSES + (PER_UID_RESPONSES * 3 if stage == "UID FETCH" else 0)
    if attack == "literal":
        problem = f"the server sent a literal of {HUGE} bytes; refusing (netaudit reads at " \
            "most 8 MiB at once)"
    elif attack in ("flood", "fetch-flood"):
        problem = f"the server sent more than {responses:,} responses to {command} without " \
            "completing it; refusing"
    elif attack == "long-line":
        problem = "the server sent a line longer than 1,000,000 bytes; refusing"
    elif attack == "big-lines":
        problem = f"the server sent more than 64 MiB in answer to {command}; refusing"
    else:
        problem = "the server sent a number of more than 1,000 digits; refusing"
    return f"hostile: failed: {where}: {problem}"


STAGES = ["greeting", "CAPABILITY", "LOGIN", "STATUS", "LIST", "EXAMINE", "UID FETCH"]
CASES = [*((stage, "literal") for stage in STAGES), *((stage, "flood") for stage in STAGES),
         ("UID FETCH", "fetch-flood"), ("LIST", "long-line"), ("EXAMINE", "long-number"),
         ("LIST", "big-lines")]


@pytest.mark.parametrize(("stage", "attack"), CASES)
def test_a_hostile_server_fails_the_account_with_one_line(
        tmp_path: Path, hostile: list[HostileIMAP], stage: str, attack: str) -> None:
    """Whatever the command, a literal of 3 GB is refused before it is read, an endless
    stream of responses is cut off at the cap, in bounded memory and without a traceback."""
    server = HostileIMAP(Misbehaviour(stage, attack))
    hostile.append(server)
    cfg = write_sync_config(tmp_path, server.port)
    home = tmp_path / "home"
    home.mkdir()
    got = run_limited(home, "--config", str(cfg), "sync")
    line = expected_line(server, attack, stage)
    assert (got.returncode, got.stdout.strip(), got.stderr.strip()) == (
        1, line, "Error: 1 of 1 sources failed: hostile"), got
    assert got.max_rss < 200 << 20, got  # a no-op sync peaks at about 85 MB
    assert last_error(cfg, "hostile") == line.removeprefix("hostile: failed: ")
    if attack == "literal":  # nothing of it was read beyond what the sockets buffer
        assert server.sent < 64 << 20, server.sent


def test_endless_continuations_to_authenticate_are_cut_off(
        tmp_path: Path, hostile: list[HostileIMAP]) -> None:
    """XOAUTH2: imaplib answers every "+" with the token again, for as long as the server
    asks; before the bound it never stopped."""
    server = HostileIMAP(Misbehaviour("AUTHENTICATE", "continuations"))
    hostile.append(server)
    cfg = write_sync_config(tmp_path, server.port, xoauth2=True)
    home = tmp_path / "home"
    home.mkdir()
    got = run_limited(home, "--config", str(cfg), "sync")
    line = (f"hostile: failed: 127.0.0.1:{server.port}: the server sent more than "
            f"{MAX_RESPONSES:,} responses to AUTHENTICATE without completing it; refusing")
    assert (got.returncode, got.stdout.strip(), got.stderr.strip()) == (
        1, line, "Error: 1 of 1 sources failed: hostile"), got
    assert "secret" not in got.stdout + got.stderr
    assert last_error(cfg, "hostile") == line.removeprefix("hostile: failed: ")


def test_unsolicited_responses_do_not_pile_up_across_commands(
        tmp_path: Path, hostile: list[HostileIMAP]) -> None:
    """imaplib keeps an untagged response until a command of its kind reads it; netaudit
    never reads EXISTS, so 60,000 before each STATUS piled up (180,000 after three). Past
    MAX_RESPONSES a new command drops them: what is kept after three is the third's."""
    server = HostileIMAP(Misbehaviour("STATUS", "unsolicited"))
    hostile.append(server)
    source = config.load(str(write_sync_config(tmp_path, server.port))).sources[0]
    client = imap_connect.connect(imap_connect.Account.from_source(source),
                                  lambda refresh: Secret("secret"))
    try:
        for _ in range(3):
            assert client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 3
        kept = client._imap.untagged_responses
        assert sum(map(len, kept.values())) == 60_000, {k: len(v) for k, v in kept.items()}
    finally:
        imap_connect.close(client)


def test_the_other_sources_are_synced(tmp_path: Path, hostile: list[HostileIMAP]) -> None:
    server = HostileIMAP(Misbehaviour("UID FETCH", "flood"))
    hostile.append(server)
    cfg = write_sync_config(tmp_path, server.port, small_maildir(tmp_path / "Maildir"))
    home = tmp_path / "home"
    home.mkdir()
    got = run_limited(home, "--config", str(cfg), "sync")
    assert got.returncode == 1, got
    assert got.stdout.splitlines() == [
        expected_line(server, "flood", "UID FETCH"),
        "local: 2 messages: 2 new, 0 already stored, 0 quarantined"], got
    assert got.stderr.strip() == "Error: 1 of 2 sources failed: hostile"
    with db.reader(config.load(str(cfg)).database) as con:
        assert con.execute("SELECT count(*) FROM messages").fetchone() == (2,)
        rows = con.execute("SELECT name, last_error IS NULL, last_success IS NULL "
                           "FROM sources ORDER BY name").fetchall()
    assert rows == [("hostile", False, True), ("local", True, False)]


# ---------------------------------------------------------------------------------------------
# The daemon's IDLE connection

WATCH = """
import logging, sys, threading
from ingest import idle
from netaudit import config

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s",
                    stream=sys.stdout)
source = config.load(sys.argv[1]).sources[0]
stop, reconnected = threading.Event(), threading.Event()
watcher = idle.IdleWatcher(source, stop, on_new_mail=lambda folder: None,
                           on_reconnect=lambda folder: reconnected.set(),
                           on_no_idle=lambda: None)
watcher.start()
print("reconnected" if reconnected.wait(30) else "not reconnected", flush=True)
stop.set()
watcher.join(10)
print("stopped" if not watcher.is_alive() else "still running", flush=True)
"""


@pytest.mark.parametrize("attack", ["literal", "flood"])
def test_the_idle_connection_is_rebuilt_after_a_hostile_answer(
        tmp_path: Path, hostile: list[HostileIMAP], attack: str) -> None:
    """The daemon's watcher (ingest/idle.py) reads IDLE responses through the same bounded
    connection: the first connection misbehaves while idling, the watcher says so in one
    warning and reconnects; the second connection behaves and is left with DONE and LOGOUT."""
    server = HostileIMAP(Misbehaviour("IDLE", attack, times=1))
    hostile.append(server)
    cfg = write_sync_config(tmp_path, server.port)
    script = tmp_path / "watch.py"
    script.write_text(WATCH)
    home = tmp_path / "home"
    home.mkdir()
    got = run_limited(home, str(script), str(cfg), module=False)
    where = f"127.0.0.1:{server.port}"
    problem = (f"the server sent a literal of {HUGE} bytes; refusing (netaudit reads at most "
               "8 MiB at once)" if attack == "literal" else
               f"the server sent more than {MAX_RESPONSES:,} responses to IDLE without "
               "completing it; refusing")
    lines = got.stdout.splitlines()
    assert got.returncode == 0 and len(lines) == 3, got
    assert re.fullmatch(rf"WARNING hostile: IDLE connection: {re.escape(where)}: "
                        rf"{re.escape(problem)}; reconnecting in \d s", lines[0]), got
    assert lines[1:] == ["reconnected", "stopped"]
    assert got.stderr == ""
    assert got.max_rss < 200 << 20, got
    assert server.connections == 2
    assert server.commands[-3:] == ["IDLE", "DONE", "LOGOUT"] or \
        server.commands[-2:] == ["IDLE", "LOGOUT"], server.commands


# ---------------------------------------------------------------------------------------------
# The caps leave real mail alone (a real Dovecot)


def references(nbytes: int) -> bytes:
    ids = b"".join(b"\r\n <ref-%07d@example.org>" % i for i in range(nbytes // 26 + 1))
    return b"References:" + ids + b"\r\n"


def test_a_header_over_the_stored_cap_is_quarantined_and_the_sync_goes_on(
        imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    """A 1 MiB References field: the server sends it whole (a literal of over 1 MB, within
    the 8 MiB literal cap), the message is quarantined as a local import would, and the
    messages around it are stored."""
    big = message("carol@example.org", ME, "Long thread", "Thu, 07 Mar 2024 12:00:00 +0000",
                  "long-3@example.org", extra=references(1 << 20).decode())
    uids = append_all(imap_account, "INBOX", [INBOX_MAIL[0], big, INBOX_MAIL[1]])
    cfg = imap_config(tmp_path, imap_account, folders=["INBOX"])
    proc = sync(run, cfg)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (
        0, "work: INBOX 2 new (2 messages, 1 quarantined)", ""), proc
    [(location, reason)] = query(cfg, "SELECT location, reason FROM quarantine")
    assert location.endswith(f"/;UID={uids[1]}")
    assert reason == f"header block larger than {MAX_HEADER_BYTES // 1024} KiB"


def test_a_header_over_the_literal_cap_fails_the_account_in_one_line(
        imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    """Beyond MAX_LITERAL_BYTES even a real server is refused: 9 MiB of References."""
    big = message("carol@example.org", ME, "Longer thread", "Thu, 07 Mar 2024 12:00:00 +0000",
                  "long-4@example.org", extra=references(9 << 20).decode())
    append_all(imap_account, "INBOX", [big])
    cfg = imap_config(tmp_path, imap_account, folders=["INBOX"])
    proc = sync(run, cfg)
    m = re.fullmatch(r"work: failed: 127\.0\.0\.1:\d+: the server sent a literal of (\d+) "
                     r"bytes; refusing \(netaudit reads at most 8 MiB at once\)",
                     proc.stdout.strip())
    assert proc.returncode == 1 and m is not None, proc
    assert int(m.group(1)) > MAX_LITERAL_BYTES
    assert proc.stderr.strip() == "Error: 1 of 1 sources failed: work"


def test_bounce_lookups_go_a_bounded_number_of_uids_at_a_time(
        dovecot: DovecotServer, imap_account: ImapAccount, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Five bounces looked up two at a time: BODYSTRUCTURE and the report parts in commands
    of at most two UIDs, and the same five bounces as in one command (test_imap.py)."""
    monkeypatch.setattr(imap, "BOUNCE_UIDS", 2)
    files = [data_path("email-fixtures", *parts) for parts in BOUNCES]
    append_all(imap_account, "INBOX", [INBOX_MAIL[0], *(crlf(p.read_bytes()) for p in files)])
    cfg = imap_config(tmp_path, imap_account, folders=["INBOX"])
    assert in_process(cfg).endswith("(6 messages, 0 quarantined, 5 bounces)")
    rows = query(cfg, "SELECT recipient, action, status FROM bounces ORDER BY recipient")
    assert rows == sorted(BOUNCES.values())
    lines = fetch_lines(dovecot, imap_account.user)
    structure = [line.split()[2] for line in lines if "BODYSTRUCTURE" in line]
    parts = [line.split()[2] for line in lines if "BODY.PEEK[" in line and
             "HEADER.FIELDS" not in line]
    assert structure == ["2,3", "4,5", "6"]
    assert parts == ["2,3", "4,5", "6"]  # four reports in part 2, then one in part 1


# ---------------------------------------------------------------------------------------------
# The bounds themselves


def test_literal_sizes_are_read_and_checked_without_big_numbers() -> None:
    assert literal_size(b"* 1 FETCH (BODY[] {42}") == 42
    assert literal_size(b"* 1 FETCH (BODY[] {42+}") is None  # not a server's literal
    assert literal_size(b"* OK done") is None
    assert literal_size(b"* OK {" + b"9" * 19 + b"}") == -1  # refused, never int()'d
    check_literal(MAX_LITERAL_BYTES, "h:1")
    with pytest.raises(ServerMisbehaved, match=r"^h:1: the server sent a literal of 8388609 "
                                               r"bytes; refusing \(netaudit reads at most "
                                               r"8 MiB at once\)$"):
        check_literal(MAX_LITERAL_BYTES + 1, "h:1")
    with pytest.raises(ServerMisbehaved, match="literal size of more than 18 digits"):
        check_literal(-1, "h:1")


def test_a_response_budget_counts_lines_and_bytes() -> None:
    budget = ResponseBudget("h:1", "LIST", max_responses=3, max_bytes=100)
    budget.charge(3, 100)  # exactly the bound is fine
    with pytest.raises(ServerMisbehaved, match=r"^h:1: the server sent more than 3 responses "
                                               r"to LIST without completing it; refusing$"):
        budget.charge(1, 0)
    budget = ResponseBudget("h:1", "STATUS", max_bytes=100)
    with pytest.raises(ServerMisbehaved, match=r"more than 100 bytes in answer to STATUS"):
        budget.charge(1, 101)
    fetch = ResponseBudget.for_fetch("h:1", 500)
    assert (fetch.max_responses, fetch.max_bytes) == (
        MAX_RESPONSES + 1000, MAX_COMMAND_BYTES + 500 * MAX_HEADER_BYTES)
    assert command_name(b"ABCD12 UID FETCH 1:5 (UID)\r\n") == "UID FETCH"
    assert command_name(b"ABCD13 list \"\" *\r\n") == "LIST"


def test_a_uid_fetch_may_bring_the_largest_stored_header_per_uid() -> None:
    # imap_connect keeps its own copy, so a sync with nothing new never loads the parser
    assert PER_UID_BYTES == MAX_HEADER_BYTES
