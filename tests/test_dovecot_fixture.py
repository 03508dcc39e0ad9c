"""The Dovecot fixture itself: a real server, plain and TLS, with the folders,
capabilities and helpers the IMAP tests rely on."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import imapclient
import pytest
from imapclient.imapclient import JUNK, SENT, TRASH

from tests import dovecot as dovecot_module
from tests.dovecot import (
    DovecotError,
    DovecotServer,
    ImapAccount,
    parse_imap_commands,
    sample_messages,
)

# Works whether or not tests/conftest.py already loads these fixtures.


@pytest.fixture
def filled(imap_account: ImapAccount) -> ImapAccount:
    """3 messages in INBOX and 1 in Sent, appended through IMAP."""
    uids = [imap_account.append("INBOX", msg) for msg in sample_messages(3)]
    assert uids == [1, 2, 3]
    assert imap_account.append("Sent", sample_messages(1, subject="Sent")[0]) == 1
    return imap_account


def _subjects(conn: imapclient.IMAPClient, folder: str) -> list[bytes]:
    conn.select_folder(folder, readonly=True)
    uids = conn.search("ALL")
    data = conn.fetch(uids, ["ENVELOPE"])
    return [data[uid][b"ENVELOPE"].subject for uid in sorted(data)]


def test_plain_login_sees_appended_mail(filled: ImapAccount) -> None:
    conn = imapclient.IMAPClient(filled.host, port=filled.port, ssl=False, timeout=10)
    with conn:
        conn.login(filled.user, filled.password)
        assert _subjects(conn, "INBOX") == [b"Test message 1", b"Test message 2", b"Test message 3"]
        assert _subjects(conn, "Sent") == [b"Sent 1"]


def test_implicit_tls_verifies_against_test_ca(filled: ImapAccount, dovecot: DovecotServer) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    assert context.check_hostname
    conn = imapclient.IMAPClient(
        "localhost", port=dovecot.tls_port, ssl=True, ssl_context=context, timeout=10
    )
    with conn:
        conn.login(filled.user, filled.password)
        assert conn.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 3


def test_wrong_ca_is_rejected(dovecot: DovecotServer) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.wrong_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        imapclient.IMAPClient(
            "localhost", port=dovecot.tls_port, ssl=True, ssl_context=context, timeout=10
        )


def test_special_use_folders(imap_account: ImapAccount) -> None:
    with imap_account.client() as conn:
        assert conn.find_special_folder(SENT) == "Sent"
        assert conn.find_special_folder(JUNK) == "Junk"
        assert conn.find_special_folder(TRASH) == "Trash"


def test_capabilities(imap_account: ImapAccount) -> None:
    with imap_account.client() as conn:
        caps = set(conn.capabilities())
    assert {b"IDLE", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"UIDPLUS"} <= caps


def test_starttls_offered_and_works(dovecot: DovecotServer) -> None:
    with dovecot.client(login=False) as conn:
        assert conn.has_capability("STARTTLS")
        conn.starttls(dovecot.ssl_context())
        conn.login(dovecot.user, dovecot.password)
        assert conn.folder_exists("INBOX")


def test_no_starttls_variant(dovecot_no_starttls: DovecotServer) -> None:
    assert dovecot_no_starttls.tls_port is None
    with dovecot_no_starttls.client(login=False) as conn:
        assert not conn.has_capability("STARTTLS")
        conn.login(dovecot_no_starttls.user, dovecot_no_starttls.password)
        assert conn.find_special_folder(SENT) == "Sent"


def test_append_flags_and_date(imap_account: ImapAccount) -> None:
    when = dt.datetime(2023, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    uid = imap_account.append("INBOX", sample_messages(1)[0], flags=[b"\\Seen"], msg_time=when)
    with imap_account.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        data = conn.fetch([uid], ["FLAGS", "INTERNALDATE"])[uid]
    assert b"\\Seen" in data[b"FLAGS"]
    assert data[b"INTERNALDATE"].astimezone(dt.UTC) == when


def test_create_and_delete_folder(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Projects/netaudit")
    assert imap_account.append("Projects/netaudit", sample_messages(1)[0]) == 1
    with imap_account.client() as conn:
        assert conn.folder_exists("Projects/netaudit")
    imap_account.delete_folder("Projects/netaudit")
    with imap_account.client() as conn:
        assert not conn.folder_exists("Projects/netaudit")


def test_rawlog_counts_fetches(filled: ImapAccount) -> None:
    with filled.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        conn.fetch([1, 2], ["ENVELOPE"])
        conn.fetch([3], ["BODY.PEEK[HEADER]"])
    commands = filled.rawlog_commands()
    assert commands.count("UID FETCH") == 2
    assert commands.count("APPEND") == 4  # literals were skipped, not parsed as commands


def test_log_is_readable(filled: ImapAccount, dovecot: DovecotServer) -> None:
    assert f"Login: user=<{filled.user}>" in dovecot.log_text()


def test_restart_keeps_mail_and_ports(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory()
    server.append("INBOX", sample_messages(1)[0])
    ports = (server.port, server.tls_port)
    server.restart()
    assert (server.port, server.tls_port) == ports
    assert server.account.folder_uids("INBOX") == [1]
    server.stop()
    assert not server.running


def test_start_failure_reports_dovecot_output(
    dovecot_factory: Callable[..., DovecotServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = dovecot_factory()
    server.stop()
    monkeypatch.setattr(dovecot_module, "render_config", lambda **_: "no_such_setting = 1\n")
    with pytest.raises(DovecotError, match="no_such_setting"):
        server.start()


def test_untraversable_root_is_refused_as_root(tmp_path: Path) -> None:
    """pytest's tmp_path is under a 0700 dir that dovecot's users cannot enter;
    say so up front instead of failing later with obscure permission errors."""
    dovecot_module.require_dovecot()
    if os.geteuid() != 0:
        pytest.skip("only root drops privileges to the dovecot user")
    with pytest.raises(DovecotError, match="not searchable"):
        DovecotServer(tmp_path / "dovecot")


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_dovecot_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(dovecot_module, "find_dovecot", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install dovecot-imapd"):
        dovecot_module.require_dovecot()


def test_parse_imap_commands_skips_literals_and_timestamps() -> None:
    raw = (
        b"1700000000.000001 a1 SELECT INBOX\r\n"
        b"1700000000.000002 a2 APPEND Sent (\\Seen) {14}\r\n"
        b"1700000000.000003 a3 FETCH 1 X\r\n"
        b"1700000000.000004 \r\n"
        b"1700000000.000005 a4 uid fetch 1:* (FLAGS)\r\n"
        b"1700000000.000006 a5 IDLE\r\n"
        b"1700000000.000007 DONE\r\n"
    )
    assert parse_imap_commands(raw) == ["SELECT", "APPEND", "UID FETCH", "IDLE"]


def _nobody_python() -> tuple[list[str], dict[str, str]] | None:
    """A python that user `nobody` can run with imapclient importable, or None."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    site = str(Path(imapclient.__file__).resolve().parent.parent)
    env = {"PATH": os.defpath, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": site, "HOME": "/tmp"}
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    for python in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        probe = subprocess.run(
            [*drop, python, "-c", "import imapclient"], env=env, capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return [*drop, python], env
    return None


@pytest.mark.slow
def test_runs_as_normal_user() -> None:
    """Root CI never exercises the non-root config branch; run it as nobody."""
    dovecot_module.require_dovecot()
    found = _nobody_python()
    if found is None:
        pytest.skip("needs root, setpriv and a python that user nobody can run")
    command, env = found
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from imapclient.imapclient import SENT
        from tests.dovecot import DovecotServer, sample_messages
        with DovecotServer() as server:
            assert server.append("INBOX", sample_messages(1)[0]) == 1
            with server.client(tls=True) as conn:
                assert conn.find_special_folder(SENT) == "Sent"
            assert server.rawlog_commands()[0] == "APPEND"
            assert "default_internal_user = nobody" in server.config_path.read_text()
        print("ok")
        """
    )
    proc = subprocess.run(
        [*command, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout
