"""A hostile IMAP server: `netaudit sync` must fail cleanly, in bounded time and memory.

The server is a real TCP server on 127.0.0.1 (a thread per connection) that speaks enough
IMAP for a sync (greeting, CAPABILITY, LOGIN, STATUS, LIST, EXAMINE, UID FETCH, LOGOUT, IDLE)
and then, at one chosen command, misbehaves:

- ``literal``: announces a literal of 3,000,000,000 bytes and streams bytes for ever (the
  stdlib's imaplib would allocate the whole literal before reading it);
- ``flood``: sends untagged responses for ever and never completes the command (imaplib keeps
  every one of them until the command completes, the pipelined FETCH reader kept the FETCH
  ones).

`netaudit sync` runs as a real process under RLIMIT_AS (1 GiB address space) with a timeout
that only detects a hang; its peak RSS comes from wait4. It must exit 1 with one line naming
the cap, no traceback, the source's ``last_error`` set, and the other sources synced.
"""

from __future__ import annotations

import contextlib
import os
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

from ingest.imap_connect import MAX_RESPONSES, PER_UID_RESPONSES
from netaudit import config, db
from tests.conftest import write_config

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
    # long-line (a line that never ends) or long-number (an EXISTS of 5,000 digits, then
    # the proper answer)
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


def write_sync_config(tmp_path: Path, port: int, maildir: Path | None = None) -> Path:
    secret = tmp_path / "password"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    lines = [
        "[netaudit]", f'database = "{tmp_path / "netaudit.duckdb"}"',
        'me = ["robin@example.org"]', "",
        "[[imap]]", 'name = "hostile"', 'host = "127.0.0.1"', f"port = {port}",
        'security = "plain"', 'username = "robin"', f'password_command = ["cat", "{secret}"]',
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


def run_limited(home: Path, *args: str) -> Outcome:
    """`python -m netaudit ARGS` under RLIMIT_AS; killed (and reported as a hang) after HANG s."""
    out, err = home / "stdout", home / "stderr"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share")}
    env.pop("NETAUDIT_CONFIG", None)
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "netaudit", *args], stdout=stdout,
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
    else:
        problem = "the server sent a number of more than 1,000 digits; refusing"
    return f"hostile: failed: {where}: {problem}"


STAGES = ["greeting", "CAPABILITY", "LOGIN", "STATUS", "LIST", "EXAMINE", "UID FETCH"]
CASES = [*((stage, "literal") for stage in STAGES), *((stage, "flood") for stage in STAGES),
         ("UID FETCH", "fetch-flood"), ("LIST", "long-line"), ("EXAMINE", "long-number")]


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
