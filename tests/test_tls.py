"""TLS is verified, and plaintext goes to loopback only (issue 7, item 4), against a real
Dovecot (tests/dovecot.py) and `netaudit sync` run as a process.

Already covered elsewhere, and not repeated here:
- tests/test_imap.py: TLS and STARTTLS succeed with the test CA as ``ca_file``
  (test_tls_with_the_test_ca, test_starttls_with_the_test_ca); ``ca_file`` adds to the system
  store (test_ca_file_adds_to_the_system_store); a *wrong* ``ca_file`` is refused
  (test_wrong_ca_fails_clearly); STARTTLS not offered, and a PREAUTH greeting, are refused.
- tests/test_config.py: ``security = "plain"`` towards imap.example.org fails `status`.

Added here:
- a server whose certificate chains to a CA the client was never told about (no ``ca_file``),
  over implicit TLS and STARTTLS, and a server with a truly self-signed certificate;
- host-name mismatches, by DNS name and by IP address: a certificate issued by the trusted CA
  for another host (the fixture's cert names localhost and 127.0.0.1, so these servers get
  their own certificate, made with the openssl CLI as tests.dovecot.make_tls_files does);
- ``plain`` towards hosts that are not loopback literals (including names that *resolve* to
  loopback), refused at config validation before any secret is read, and the second guard in
  ``ingest.imap_connect`` that refuses it again without opening a socket.

Every refusal is one line on stdout, exit 1 (a source failed) or 2 (config), and the
password is never sent: Dovecot logs the aborted handshake with "no auth attempts".
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import imap_connect
from ingest.secrets import Secret
from netaudit import config
from netaudit.errors import SourceError
from tests.conftest import Run, write_config
from tests.dovecot import DovecotServer, ImapAccount, TLSFiles, require_dovecot
from tests.test_imap import imap_config, no_secret, query, sync

# ---------------------------------------------------------------------------------------------
# Servers with their own certificates


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """What an admin gets from `openssl req -x509`: a self-signed cert for the right names."""
    cert, key = directory / "self-signed.pem", directory / "self-signed.key"
    _openssl("req", "-x509", "-new", "-nodes", "-days", "2",
             "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    key.chmod(0o600)
    return cert, key


def _other_host(directory: Path, tls: TLSFiles) -> tuple[Path, Path]:
    """A leaf from the fixture's own CA, for imap.example.test only."""
    cert, key = directory / "other-host.pem", directory / "other-host.key"
    csr, ext = directory / "other-host.csr", directory / "other-host.ext"
    ext.write_text("basicConstraints = critical,CA:FALSE\n"
                   "keyUsage = critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectAltName = DNS:imap.example.test\n"
                   "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n")
    _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=imap.example.test")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(tls.ca_file),
             "-CAkey", str(tls.ca_file.with_suffix(".key")), "-set_serial",
             str(secrets.randbits(63)), "-days", "2", "-extfile", str(ext), "-out", str(cert))
    key.chmod(0o600)
    return cert, key


class _ReadyByChain(DovecotServer):
    """The fixture waits for a greeting over TLS verified for "localhost"; a server whose
    certificate names another host is still verified against its CA, only not by name."""

    @staticmethod
    def _greets(port: int, context: object = None) -> bool:
        if context is not None:
            context.check_hostname = False  # type: ignore[attr-defined]
        return DovecotServer._greets(port, context)  # type: ignore[arg-type]


def _start(kind: str) -> DovecotServer:
    require_dovecot()
    server = (_ReadyByChain if kind == "other-host" else DovecotServer)()
    try:
        tls = server.tls_files
        if kind == "self-signed":
            cert, key = _self_signed(tls.cert_file.parent)
            server.tls_files = TLSFiles(ca_file=cert, cert_file=cert, key_file=key,
                                        wrong_ca_file=tls.wrong_ca_file)
        else:
            cert, key = _other_host(tls.cert_file.parent, tls)
            server.tls_files = TLSFiles(ca_file=tls.ca_file, cert_file=cert, key_file=key,
                                        wrong_ca_file=tls.wrong_ca_file)
        return server.start()
    except BaseException:
        server.cleanup()
        raise


@pytest.fixture(scope="module")
def self_signed() -> Iterator[DovecotServer]:
    server = _start("self-signed")
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def other_host() -> Iterator[DovecotServer]:
    server = _start("other-host")
    yield server
    server.cleanup()


def handshake_refused(server: DovecotServer, since: int) -> None:
    """Dovecot saw the client abort the TLS handshake, before any login attempt."""
    deadline = time.monotonic() + 5
    while "Disconnected" not in server.log_text()[since:] and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()[since:]
    # Dovecot words "no login attempt" two ways, by whether its auth process was ready yet
    # (it may not be on a loaded machine)
    assert "SSL_accept() failed" in log, log
    assert "no auth attempts" in log or "disconnected before auth was ready" in log, log
    assert "Login: " not in log and "auth failed" not in log, log


def refused(run: Run, cfg: Path, account: ImapAccount, line: str) -> None:
    server = account.server
    since = len(server.log_text())
    proc = sync(run, cfg)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.strip() == line
    assert proc.stderr.strip() == "Error: 1 of 1 sources failed: work"
    handshake_refused(server, since)
    verbose = sync(run, cfg, "-vv")  # the debug log has more to say, but no password
    assert (verbose.returncode, verbose.stdout) == (1, proc.stdout)
    no_secret(verbose, account.password)
    assert account.rawlog_commands() == []  # and no session was ever opened
    assert query(cfg, "SELECT count(*) FROM messages") == [(0,)]
    assert query(cfg, "SELECT count(*) FROM sync_state") == [(0,)]


def _port(server: DovecotServer, security: str) -> int:
    if security == "tls":
        assert server.tls_port is not None
        return server.tls_port
    return server.port


# ---------------------------------------------------------------------------------------------
# (a) a certificate the client has no reason to trust


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_untrusted_ca_without_ca_file_is_refused(dovecot: DovecotServer, tmp_path: Path,
                                                 run: Run, security: str) -> None:
    """The shared server's chain ends in the test's own self-signed CA, which is in no trust
    store; with no ca_file configured the connection is refused, never downgraded."""
    account = dovecot.add_account()
    port = _port(dovecot, security)
    cfg = imap_config(tmp_path, account, security=security, host="localhost", port=port)
    refused(run, cfg, account, f"work: failed: cannot connect to localhost:{port}: certificate "
                               "verify failed: unable to get local issuer certificate")


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_self_signed_server_certificate_is_refused(self_signed: DovecotServer, tmp_path: Path,
                                                   run: Run, security: str) -> None:
    account = self_signed.add_account()
    port = _port(self_signed, security)
    cfg = imap_config(tmp_path, account, security=security, host="localhost", port=port)
    since = len(self_signed.log_text())
    proc = sync(run, cfg)
    assert proc.returncode == 1
    assert re.fullmatch(rf"work: failed: cannot connect to localhost:{port}: certificate verify "
                        r"failed: self[- ]signed certificate", proc.stdout.strip()), proc.stdout
    handshake_refused(self_signed, since)
    no_secret(proc, account.password)
    # The same server, once its certificate is made a trust anchor: so the refusal above was
    # about trust, not a broken server.
    trusted = imap_config(tmp_path, account, security=security, host="localhost", port=port,
                          ca_file=self_signed.ca_file)
    ok = sync(run, trusted)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().startswith("work: INBOX 0 new")


# ---------------------------------------------------------------------------------------------
# (b) the right CA, the wrong host


@pytest.mark.parametrize(("security", "host", "why"), [
    ("tls", "localhost", "Hostname mismatch, certificate is not valid for 'localhost'."),
    ("starttls", "localhost", "Hostname mismatch, certificate is not valid for 'localhost'."),
    ("tls", "127.0.0.1", "IP address mismatch, certificate is not valid for '127.0.0.1'."),
])
def test_host_name_mismatch_is_refused(other_host: DovecotServer, tmp_path: Path, run: Run,
                                       security: str, host: str, why: str) -> None:
    """The certificate is issued by the CA given as ca_file (so the chain verifies), but for
    imap.example.test: connecting to localhost or 127.0.0.1 must fail on the name."""
    account = other_host.add_account()
    port = _port(other_host, security)
    cfg = imap_config(tmp_path, account, security=security, host=host, port=port,
                      ca_file=other_host.ca_file)
    refused(run, cfg, account,
            f"work: failed: cannot connect to {host}:{port}: certificate verify failed: {why}")


# ---------------------------------------------------------------------------------------------
# (c) plaintext only to loopback


@pytest.mark.parametrize("host", [
    "10.0.0.1",  # a private address is still a network
    "192.0.2.10",
    "0.0.0.0",
    "127.0.0.1.nip.io",  # resolves to 127.0.0.1, but only a literal or localhost counts
    "localhost.example.org",
    "imap.example.org",
])
def test_plain_to_a_non_loopback_host_is_refused_by_config(run: Run, tmp_path: Path,
                                                           host: str) -> None:
    marker = tmp_path / "password-was-read"
    cfg = write_config(tmp_path / "config.toml", (
        f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\n\n[[imap]]\nname = "work"\n'
        f'host = "{host}"\nport = 143\nsecurity = "plain"\nusername = "robin"\n'
        f'password_command = ["sh", "-c", "touch {marker}; echo pw"]\n'))
    proc = run("--config", str(cfg), "sync")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: config {cfg}: imap[1].security: plain is allowed only towards "
                     f"loopback hosts, not {host!r}; use tls or starttls"]
    assert proc.stdout == ""
    assert not marker.exists()  # refused before any secret was fetched
    assert not (tmp_path / "n.duckdb").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"])
def test_plain_to_loopback_passes_validation(tmp_path: Path, host: str) -> None:
    """The other side of the rule (a real plaintext sync to 127.0.0.1 is
    tests/test_imap.py::test_plain_sync_stores_inbox_and_sent)."""
    cfg = config.parse(f'[[imap]]\nname = "w"\nhost = "{host}"\nsecurity = "plain"\n'
                       f'username = "u"\npassword_env = "P"\n'.encode(), tmp_path / "c.toml")
    assert cfg.sources[0]["security"] == "plain"


def test_connect_refuses_plain_to_a_remote_host_without_a_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second guard, for any caller that skips config validation: no socket is opened
    and no credential is asked for."""

    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError(f"a socket was opened to {args[0]!r}")

    monkeypatch.setattr(socket, "create_connection", no_socket)
    asked: list[bool] = []

    def credential(refresh: bool) -> Secret:
        asked.append(refresh)
        raise AssertionError("the password was asked for")

    account = imap_connect.Account("work", "192.0.2.10", 143, "plain", "robin", "password",
                                   None, 5.0)
    with pytest.raises(SourceError) as err:
        imap_connect.connect(account, credential)
    assert str(err.value) == \
        "security = plain is allowed only towards loopback hosts, not 192.0.2.10"
    assert asked == []
