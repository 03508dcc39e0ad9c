"""Secrets stay secret: a password, an OAuth token and a feed token, through a good sync, a
failing login, a refused OAuth login, a failing feed and a daemon start-up, never reach
stdout, stderr, the log, the process arguments or any byte of the database."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.dovecot import ImapAccount, sample_messages

FEED_TOKEN = "feedT0ken-s3cret-7Qx"
OAUTH_TOKEN = "oauthT0ken-s3cret-Zk2"
WRONG_PASSWORD = "Wr0ng-s3cret-Pw-9"


@pytest.fixture
def failing_feed() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{FEED_TOKEN}/basic.ics"
    server.shutdown()
    server.server_close()


def secret_file(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def run_watching_argv(args: list[str], env: dict[str, str] | None = None,
                      stop_after: float | None = None
                      ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI, reading /proc/PID/cmdline of it and its children while it runs; a
    long-running command is sent SIGTERM after ``stop_after`` seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "netaudit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    seen: set[str] = set()
    started = time.monotonic()
    while proc.poll() is None:
        if stop_after is not None and time.monotonic() - started > stop_after:
            proc.terminate()
            stop_after = None
        for pid in [proc.pid, *_children(proc.pid)]:
            with contextlib.suppress(OSError):
                seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                         .decode(errors="replace"))
        time.sleep(0.005)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_no_secret_leaks_anywhere(imap_account: ImapAccount, failing_feed: str,
                                  tmp_path: Path) -> None:
    for raw in sample_messages(3):
        imap_account.append("INBOX", raw)
    db_path = tmp_path / "n.duckdb"
    good = secret_file(tmp_path / "good", imap_account.password)
    wrong = secret_file(tmp_path / "wrong", WRONG_PASSWORD)
    token = secret_file(tmp_path / "token", OAUTH_TOKEN)
    common = (f'username = "{imap_account.user}"\nhost = "127.0.0.1"\n'
              f'port = {imap_account.port}\nsecurity = "plain"\ntimeout = 10\n')
    cfg = write_config(tmp_path / "config.toml", f"""
[netaudit]
database = "{db_path}"
me = ["robin@example.org"]

[[imap]]
name = "good"
{common}password_command = ["cat", "{good}"]

[[imap]]
name = "wrong"
{common}password_command = ["cat", "{wrong}"]

[[imap]]
name = "oauth"
{common}auth = "xoauth2"
oauth2_token_command = ["cat", "{token}"]

[[calendar]]
name = "feed"
url = "{failing_feed}"
""")
    proc, argv = run_watching_argv(["-vv", "--config", str(cfg), "sync"])
    assert proc.returncode == 1  # three sources fail, the good one syncs
    assert "good: " in proc.stdout and "good: failed" not in proc.stdout
    for name in ("wrong", "oauth", "feed"):
        assert f"{name}: failed" in proc.stdout
    daemon, daemon_argv = run_watching_argv(["-vv", "--config", str(cfg), "daemon"],
                                            stop_after=8)
    assert daemon.returncode == 0, daemon.stderr[-2000:]
    assert "wrong" in daemon.stderr  # it did try (and fail) to log in
    secrets = [imap_account.password, WRONG_PASSWORD, OAUTH_TOKEN, FEED_TOKEN]
    haystacks = {"stdout": proc.stdout, "stderr (the log, at -vv)": proc.stderr,
                 "argv": "\n".join(argv | daemon_argv), "daemon stdout": daemon.stdout,
                 "daemon log": daemon.stderr}
    for path in tmp_path.glob("n.duckdb*"):
        haystacks[path.name] = path.read_bytes().decode("latin-1")
    assert len(argv) >= 1
    for secret in secrets:
        for where, text in haystacks.items():
            assert secret not in text, f"a secret is in {where}"
