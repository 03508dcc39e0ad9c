"""Run a real Dovecot IMAP server on 127.0.0.1 for tests.

Why a real server: netaudit talks IMAP to servers it does not control, so the
tests check it against the real thing (see DESIGN.md, "Real parts, not
mocks"). Each `DovecotServer` has its own config, CA, certificates, users and
Maildir storage in a private directory under /tmp, listens only on loopback on
free ports, and is killed at `stop()`.

Works as root (Dovecot's usual privilege separation: logins as `dovenull`,
internals and mail as `dovecot`) and as a normal user (everything runs as that
user, no chroot). Supports the Dovecot 2.3 config syntax (Debian bookworm) and
the rewritten 2.4 syntax.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as dt
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imapclient

MISSING_MESSAGE = "dovecot-imapd is not installed (apt-get install dovecot-imapd)"
START_TIMEOUT = 10.0
HOST = "127.0.0.1"
TLS_HOSTNAME = "localhost"

# Special-use folders every test account gets, created on first login.
SPECIAL_FOLDERS: dict[str, str] = {"Sent": r"\Sent", "Junk": r"\Junk", "Trash": r"\Trash"}

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
_RAWLOG_STAMP = re.compile(rb"^\d+\.\d+ ", re.MULTILINE)


class DovecotError(RuntimeError):
    """Dovecot could not be set up or did not start; the message has its log."""


# --------------------------------------------------------------------------
# Finding Dovecot


def find_dovecot() -> str | None:
    """Path of the `dovecot` binary; also looks in sbin dirs, which a normal
    user's PATH often lacks."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(_SBIN_DIRS)
    return shutil.which("dovecot", path=path)


def dovecot_version(binary: str) -> tuple[int, ...]:
    """Version from `dovecot --version`, e.g. (2, 3, 19, 1); the config syntax
    depends on it."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    if not match:
        raise DovecotError(f"cannot parse `dovecot --version` output: {out!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def require_dovecot() -> str:
    """The dovecot binary, or skip the test (fail it under CI=true, where a
    missing server means a broken CI setup rather than a bare laptop)."""
    import pytest

    binary = find_dovecot()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(MISSING_MESSAGE, pytrace=False)
        pytest.skip(MISSING_MESSAGE)
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start() retries on a
    lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# TLS material, made with the openssl CLI (a dovecot-core dependency), so the
# tests need no extra Python package.


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA that signed the server cert, the server cert and key,
    and an unrelated CA that must not verify the server."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    wrong_ca_file: Path


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DovecotError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _make_ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-new", "-nodes", "-days", "3650",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TLSFiles:
    """A fresh CA, a server cert for localhost/127.0.0.1 signed by it, and a
    second unrelated CA. The leaf carries SKI/AKI/EKU so it also passes
    Python's stricter X.509 checks (VERIFY_X509_STRICT)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca(directory, "ca", "netaudit test CA")
    wrong_ca, _ = _make_ca(directory, "wrong-ca", "netaudit unrelated CA")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = DNS:{TLS_HOSTNAME},IP:{HOST}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={TLS_HOSTNAME}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-set_serial", str(secrets.randbits(63)), "-days", "3650",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    for private in (ca_key, key, directory / "wrong-ca.key"):
        private.chmod(0o600)
    return TLSFiles(ca_file=ca_cert, cert_file=cert, key_file=key, wrong_ca_file=wrong_ca)


# --------------------------------------------------------------------------
# Config rendering


@dataclass(frozen=True)
class _Identity:
    """Who Dovecot's processes and mail files run as."""

    login_user: str
    internal_user: str
    internal_group: str
    mail_uid: int
    mail_gid: int
    as_root: bool


def _identity() -> _Identity:
    if os.geteuid() == 0:
        try:
            dovecot = pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
        except KeyError as exc:
            raise DovecotError(f"system user missing ({exc}); is dovecot-core installed?") from exc
        group = _group_name(dovecot.pw_gid)
        return _Identity("dovenull", "dovecot", group, dovecot.pw_uid, dovecot.pw_gid, True)
    me = pwd.getpwuid(os.geteuid())
    group = _group_name(os.getegid())
    return _Identity(me.pw_name, me.pw_name, group, os.geteuid(), os.getegid(), False)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _namespace_block() -> str:
    mailboxes = "".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
        for name, use in SPECIAL_FOLDERS.items()
    )
    return f"namespace inbox {{\n  inbox = yes\n  separator = /\n{mailboxes}}}\n"


def _listener_block(port: int, tls_port: int | None, *, chroot: bool) -> str:
    imaps = ""
    if tls_port is not None:
        imaps = (
            f"  inet_listener imaps {{\n    address = {HOST}\n    port = {tls_port}\n"
            "    ssl = yes\n  }\n"
        )
    no_chroot = "" if chroot else "  chroot =\n"
    return (
        "service imap-login {\n"
        f"  inet_listener imap {{\n    address = {HOST}\n    port = {port}\n  }}\n"
        f"{imaps}{no_chroot}}}\n"
    )


def render_config(
    *,
    version: tuple[int, ...],
    root: Path,
    port: int,
    tls_port: int | None,
    tls: TLSFiles | None,
    identity: _Identity,
    rawlog_dir: Path | None,
    mail_debug: bool,
) -> str:
    """dovecot.conf text for this server; 2.4 renamed many settings and
    dropped the one-letter %variables, hence the two branches. (Only the 2.3
    branch has run here: Debian bookworm ships 2.3.19.)"""
    v24 = version[:2] >= (2, 4)
    # One passwd-file per user: Dovecot re-checks a passwd-file at most once a
    # second, so a user appended to a shared file right after a login could be
    # "unknown"; a path with the user name in it is opened fresh on first use.
    passwd = root / "users" / ("%{user}" if v24 else "%u")
    lines: list[str] = []
    if v24:
        lines += ["dovecot_config_version = 2.4.0", "dovecot_storage_version = 2.4.0"]
    lines += [
        f"base_dir = {root / 'run'}",
        f"state_dir = {root / 'state'}",
        f"instance_name = netaudit-test-{port}",
        "protocols = imap",
        f"listen = {HOST}",
        f"log_path = {root / 'dovecot.log'}",
        f"default_login_user = {identity.login_user}",
        f"default_internal_user = {identity.internal_user}",
        f"default_internal_group = {identity.internal_group}",
        f"first_valid_uid = {identity.mail_uid}",
        "last_valid_uid = 0",
        "first_valid_gid = 1",
        "auth_mechanisms = plain login",
        "auth_verbose = yes",
        "auth_failure_delay = 0",
        "mail_max_userip_connections = 200",
        "mail_fsync = never",
    ]
    if v24:
        lines += [
            "auth_allow_cleartext = yes",
            "mail_driver = maildir",
            "mail_path = %{home}/Maildir",
            f"passdb passwd-file {{\n  passwd_file_path = {passwd}\n}}",
            f"userdb passwd-file {{\n  passwd_file_path = {passwd}\n}}",
        ]
        if mail_debug:
            lines.append("log_debug = category=mail")
    else:
        lines += [
            "disable_plaintext_auth = no",
            "mail_location = maildir:~/Maildir",
            f"passdb {{\n  driver = passwd-file\n  args = username_format=%u {passwd}\n}}",
            f"userdb {{\n  driver = passwd-file\n  args = username_format=%u {passwd}\n}}",
        ]
        if mail_debug:
            lines.append("mail_debug = yes")
    if rawlog_dir is not None:
        user_var = "%{user}" if v24 else "%u"
        lines.append(f"rawlog_dir = {rawlog_dir}/{user_var}")
    if tls is None:
        lines.append("ssl = no")
    else:
        lines.append("ssl = yes")
        lines.append("ssl_min_protocol = TLSv1.2")
        if v24:
            lines += [
                f"ssl_server_cert_file = {tls.cert_file}",
                f"ssl_server_key_file = {tls.key_file}",
            ]
        else:
            lines += [f"ssl_cert = <{tls.cert_file}", f"ssl_key = <{tls.key_file}"]
    lines.append(_namespace_block().rstrip("\n"))
    lines.append(_listener_block(port, tls_port, chroot=identity.as_root).rstrip("\n"))
    if not identity.as_root:
        # Everything runs as us: no chroot (needs root) and no root-only workers.
        lines += [
            "service anvil {\n  chroot =\n}",
            f"service auth-worker {{\n  user = {identity.internal_user}\n}}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Accounts and the server


def _die_with_parent() -> None:
    """Child pre-exec: have the kernel SIGTERM Dovecot if the test run dies
    hard, so no stray servers are left behind. Best effort, Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _is_traversable(path: Path, uid: int, gid: int) -> bool:
    """Whether user `uid` (primary group `gid`) can reach files below `path`:
    every directory up to / must be searchable by it."""
    for part in (path, *path.parents):
        st = part.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class ImapAccount:
    """One mail user on a DovecotServer, with helpers that act as a mail
    client would (over IMAP, never by writing into Maildir)."""

    def __init__(self, server: DovecotServer, user: str, password: str) -> None:
        self.server = server
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        return f"ImapAccount({self.user!r} on {self.server.host}:{self.server.port})"

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls_port(self) -> int | None:
        return self.server.tls_port

    def client(
        self, *, tls: bool = False, ssl_context: ssl.SSLContext | None = None, login: bool = True
    ) -> imapclient.IMAPClient:
        """A connected (and by default logged-in) client; plain port unless
        tls=True, which uses implicit TLS verified against the test CA for
        host name `localhost`."""
        if tls:
            if self.server.tls_port is None:
                raise DovecotError("this server was started with tls=False")
            context = ssl_context or self.server.ssl_context()
            conn = imapclient.IMAPClient(
                TLS_HOSTNAME, port=self.server.tls_port, ssl=True, ssl_context=context, timeout=10
            )
        else:
            conn = imapclient.IMAPClient(
                self.server.host, port=self.server.port, ssl=False, timeout=10
            )
        if login:
            try:
                conn.login(self.user, self.password)
            except BaseException:
                conn.shutdown()
                raise
        return conn

    def append(
        self,
        folder: str,
        message: bytes,
        flags: Sequence[str | bytes] = (),
        msg_time: dt.datetime | None = None,
    ) -> int:
        """APPEND `message` to `folder`; returns its UID (from UIDPLUS'
        APPENDUID, which Dovecot always sends; else the folder's highest UID)."""
        with self.client() as conn:
            response = conn.append(folder, message, flags=tuple(flags), msg_time=msg_time)
            match = _APPENDUID.search(response or b"")
            if match:
                return int(match.group(1))
            conn.select_folder(folder, readonly=True)
            return int(max(conn.search("ALL")))

    def create_folder(self, folder: str) -> None:
        with self.client() as conn:
            conn.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        with self.client() as conn:
            conn.delete_folder(folder)

    def folder_uids(self, folder: str) -> list[int]:
        """UIDs in `folder`, for assertions."""
        with self.client() as conn:
            conn.select_folder(folder, readonly=True)
            return sorted(conn.search("ALL"))

    def rawlog_commands(self) -> list[str]:
        """IMAP commands this user sent after login, e.g. ["SELECT", "UID FETCH",
        "LOGOUT"], from Dovecot's rawlog (needs rawlog=True on the server).
        Lets a test count FETCHes a sync really made."""
        return self.server.rawlog_commands(self.user)


class DovecotServer:
    """A Dovecot instance on 127.0.0.1 with its own config in `root`.

    `tls=True`: `ssl = yes`, STARTTLS on the plain port plus an implicit-TLS
    port. `tls=False`: `ssl = no`, so no STARTTLS and no TLS port.
    The default account is `user`/`password`; `add_account()` makes more, e.g.
    a fresh one per test on a session-wide server.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        tls: bool = True,
        user: str = "netaudit",
        password: str | None = None,
        rawlog: bool = True,
        mail_debug: bool = False,
        binary: str | None = None,
    ) -> None:
        binary = binary or find_dovecot()
        if binary is None:
            raise DovecotError(MISSING_MESSAGE)
        self.binary = binary
        self.version = dovecot_version(binary)
        self._identity = _identity()
        self._owns_root = root is None
        self._proc: subprocess.Popen[bytes] | None = None
        # Not pytest's tmp_path: it is 0700 under /tmp/pytest-of-*, which the
        # dovecot/dovenull users cannot traverse when we run as root.
        self.root = (
            Path(tempfile.mkdtemp(prefix="netaudit-dovecot-", dir="/tmp")) if root is None else root
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        atexit.register(self.cleanup)  # no stray servers or dirs if a test forgets
        ident = self._identity
        if ident.as_root and not _is_traversable(self.root, ident.mail_uid, ident.mail_gid):
            raise DovecotError(f"{self.root} (or a parent) is not searchable by the dovecot user")
        self.tls = tls
        self.mail_debug = mail_debug
        self.host = HOST
        self.port = 0
        self.tls_port: int | None = None
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.rawlog_dir: Path | None = self.root / "rawlog" if rawlog else None
        self._stdout_path = self.root / "dovecot.stdout"
        self._users_dir = self.root / "users"
        self._home_dir = self.root / "home"
        self._accounts: dict[str, ImapAccount] = {}
        self._counter = itertools.count(1)
        self._make_dirs()
        self.tls_files: TLSFiles = make_tls_files(self.root / "tls")
        self.account = self.add_account(user, password)

    # -- layout and accounts ------------------------------------------------

    def _own(self, path: Path) -> None:
        """Give `path` to the mail user (only matters as root)."""
        if self._identity.as_root:
            os.chown(path, self._identity.mail_uid, self._identity.mail_gid)

    def _make_dirs(self) -> None:
        for directory in (self.root / "state", self._users_dir, self._home_dir, self.rawlog_dir):
            if directory is not None:
                directory.mkdir(mode=0o755, exist_ok=True)
                directory.chmod(0o755)
        self._own(self._home_dir)
        if self.rawlog_dir is not None:
            self._own(self.rawlog_dir)

    def add_account(self, user: str | None = None, password: str | None = None) -> ImapAccount:
        """A new user with empty mailboxes, usable at once (see the passwd-file
        note in render_config)."""
        user = user or f"user{next(self._counter)}-{secrets.token_hex(3)}"
        password = password or secrets.token_urlsafe(12)
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", user) or ":" in password or "\n" in password:
            raise ValueError(f"unsupported user name or password for passwd-file: {user!r}")
        if user in self._accounts:
            raise ValueError(f"user {user!r} already exists")
        home = self._home_dir / user
        home.mkdir(mode=0o700)
        self._own(home)
        if self.rawlog_dir is not None:
            (self.rawlog_dir / user).mkdir(mode=0o755)
            self._own(self.rawlog_dir / user)
        ident = self._identity
        line = f"{user}:{{PLAIN}}{password}:{ident.mail_uid}:{ident.mail_gid}::{home}::\n"
        passwd = self._users_dir / user
        passwd.write_text(line)
        passwd.chmod(0o644)  # read by the auth process (dovecot user as root)
        account = ImapAccount(self, user, password)
        self._accounts[user] = account
        return account

    # -- default account shortcuts ---------------------------------------------

    @property
    def user(self) -> str:
        return self.account.user

    @property
    def password(self) -> str:
        return self.account.password

    @property
    def ca_file(self) -> Path:
        return self.tls_files.ca_file

    @property
    def wrong_ca_file(self) -> Path:
        return self.tls_files.wrong_ca_file

    def ssl_context(self, cafile: Path | None = None) -> ssl.SSLContext:
        """A client context trusting only `cafile` (default: our CA)."""
        return ssl.create_default_context(cafile=str(cafile or self.ca_file))

    def client(self, **kwargs: Any) -> imapclient.IMAPClient:
        return self.account.client(**kwargs)

    def append(
        self,
        folder: str,
        message: bytes,
        flags: Sequence[str | bytes] = (),
        msg_time: dt.datetime | None = None,
    ) -> int:
        return self.account.append(folder, message, flags, msg_time)

    def create_folder(self, folder: str) -> None:
        self.account.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        self.account.delete_folder(folder)

    # -- lifecycle ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> DovecotServer:
        """Start on free ports (kept across restart()) and wait until the
        server greets; raises DovecotError with the log if it does not."""
        if self.running:
            return self
        reuse_ports = self.port != 0
        for attempt in range(3):
            if not reuse_ports or attempt > 0:
                self.port = free_port()
                self.tls_port = free_port() if self.tls else None
            self._write_config()
            try:
                self._launch()
                return self
            except DovecotError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write_config(self) -> None:
        self.config_path.write_text(
            render_config(
                version=self.version,
                root=self.root,
                port=self.port,
                tls_port=self.tls_port,
                tls=self.tls_files if self.tls else None,
                identity=self._identity,
                rawlog_dir=self.rawlog_dir,
                mail_debug=self.mail_debug,
            )
        )

    def _launch(self) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        out_offset = self._stdout_path.stat().st_size if self._stdout_path.exists() else 0
        with self._stdout_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # own process group: see _terminate()
                cwd=self.root,
            )
        deadline = time.monotonic() + START_TIMEOUT
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._greets(self.port) and (
                self.tls_port is None or self._greets(self.tls_port, self.ssl_context())
            ):
                return
            time.sleep(0.05)
        code = self._proc.returncode
        self._terminate()
        what = (
            f"exited with status {code}"
            if code is not None
            else f"did not serve {HOST}:{ports} within {START_TIMEOUT:.0f} s"
        )
        raise DovecotError(
            f"dovecot {'.'.join(map(str, self.version))} {what}.\n"
            f"--- output ---\n{self._read(self._stdout_path, out_offset)}"
            f"\n--- {self.log_path} ---\n{self._read(self.log_path, log_offset)}"
            f"\n--- {self.config_path} ---\n{self._read(self.config_path)}"
        )

    @staticmethod
    def _greets(port: int, context: ssl.SSLContext | None = None) -> bool:
        """Whether the port answers with an IMAP greeting (over verified TLS if
        `context`), i.e. login processes really serve, not just the socket is
        bound. A full exchange also leaves no half-open login process behind,
        which would stall Dovecot's shutdown."""
        try:
            with socket.create_connection((HOST, port), timeout=2) as raw:
                if context is None:
                    return raw.recv(256).startswith(b"* OK")
                with context.wrap_socket(raw, server_hostname=TLS_HOSTNAME) as tls:
                    return tls.recv(256).startswith(b"* OK")
        except (OSError, ssl.SSLError):
            return False

    @staticmethod
    def _read(path: Path, offset: int = 0) -> str:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"({exc})"

    def _terminate(self) -> None:
        """SIGTERM the whole process group (master and children at once is
        much faster than the master's own orderly shutdown), SIGKILL what is
        left after 1 s. The master stays unreaped until then, so its pid, the
        group id, cannot have been reused by an unrelated process."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        pgid = proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # stragglers, or a hung master
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop Dovecot (master and, through it, all its children)."""
        self._terminate()

    def restart(self) -> DovecotServer:
        """Stop and start again on the same ports, keeping all mail."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and remove the directory, if this object created it."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- logs -----------------------------------------------------------------

    def log_text(self) -> str:
        """Dovecot's log so far (log_path)."""
        return self._read(self.log_path)

    def rawlog_commands(self, user: str | None = None) -> list[str]:
        """Command names (tag dropped, "UID FETCH" kept as two words) that
        `user` sent after login, oldest session first."""
        if self.rawlog_dir is None:
            raise DovecotError("server started with rawlog=False")
        directory = self.rawlog_dir / (user or self.user)
        # Named <start second>.<pid>: two sessions in one second do not sort by name, so
        # order by when each was last written (sessions here run one after the other).
        files = sorted(directory.glob("*.in"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        commands: list[str] = []
        for path in files:
            commands += parse_imap_commands(path.read_bytes())
        return commands


def parse_imap_commands(data: bytes) -> list[str]:
    """Command names from raw client input, skipping literal data (APPEND
    bodies) and untagged continuation lines (IDLE's DONE). Dovecot's rawlog
    puts a "<unix time> " before every line; that is removed first, which
    restores the exact byte stream that literal lengths count."""
    data = _RAWLOG_STAMP.sub(b"", data)
    commands: list[str] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        first_line = data[pos:end].rstrip(b"\r\n")
        line = first_line
        pos = end
        while (literal := _LITERAL.search(line)) is not None:
            pos += int(literal.group(1))
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end + 1
            line = data[pos:end].rstrip(b"\r\n")
            pos = end
        words = first_line.split()
        if len(words) < 2:  # "DONE", "*" (AUTHENTICATE cancel), blank
            continue
        name = words[1].upper().decode("ascii", "replace")
        if name == "UID" and len(words) > 2:
            name += " " + words[2].upper().decode("ascii", "replace")
        commands.append(name)
    return commands


def sample_messages(
    count: int, *, subject: str = "Test message", sender: str = "alice@example.org"
) -> list[bytes]:
    """`count` small RFC 5322 messages with distinct subjects and Message-IDs."""
    return [
        (
            f"From: {sender}\r\nTo: bob@example.org\r\nSubject: {subject} {i}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}.{i}@netaudit.test>\r\n"
            f"Date: Mon, 01 Jan 2024 10:{i % 60:02d}:00 +0000\r\n\r\nBody {i}.\r\n"
        ).encode()
        for i in range(1, count + 1)
    ]
