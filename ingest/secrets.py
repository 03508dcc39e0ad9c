"""Account secrets: from a command, an environment variable or the system keyring.

A secret must never reach a log, an exception message, the argv of a child process or the
database. So it lives in a ``Secret`` whose repr is masked, commands get nothing secret on
their command line (the user's own argv from the config is all they see), and no error message
quotes what a command printed: a failing one may echo the secret, so it is named with its exit
status only.

The command contract is mbsync's ``PassCmd``: run without a shell, print exactly one line, the
trailing newline optional (R-IMAP-18). Keyring is an optional extra: a headless session often
has no Secret Service, and then the user needs a clear way out, not a traceback (R-IMAP-19).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from netaudit.config import Source
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 120.0  # long enough to type a passphrase into pinentry
MAX_OUTPUT = 64 * 1024  # a password or an access token is far shorter
EXIT_GRACE = 2.0  # after the command exits, how long what it started may hold its output
_POLL = 0.1  # seconds between checks whether the command has exited
KEYRING_SERVICE = "netaudit"
_MASK = "********"


class Secret:
    """A password or token; prints as a mask so it cannot leak through a repr or a log."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for the one call that sends it to the server."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the secret masked."""
        return text.replace(self._value, _MASK) if self._value else text

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:  # never pickled, e.g. into a crash report
        raise TypeError("a Secret cannot be pickled")


def _one_line(output: bytes, what: str) -> str:
    """The single line a secret command must print (trailing newline optional)."""
    text = output.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if not text:
        raise SourceError(f"{what} printed nothing; it must print the secret on one line")
    lines = text.count("\n") + 1
    if lines > 1 or "\r" in text:
        raise SourceError(f"{what} printed {max(lines, 2)} lines; it must print exactly one "
                          "(the secret), with an optional trailing newline")
    return text


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def command_timeout(env: Mapping[str, str] = os.environ) -> float:
    """Seconds a secret command may take: $NETAUDIT_COMMAND_TIMEOUT, default 120."""
    return _env_seconds(env, "NETAUDIT_COMMAND_TIMEOUT", COMMAND_TIMEOUT)


def describe_exit(returncode: int) -> str:
    """'exited with status 3' or 'was killed by signal SIGSEGV', from Popen's returncode."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"{-returncode}"
    return f"was killed by signal {name}"


class _Stopped(Exception):
    """The command was stopped (with every process it started); the text says why."""


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it: while it is unreaped its process
    group cannot be reused, so killing the group cannot hit a stranger."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group (its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_stdout(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything the command prints, up to MAX_OUTPUT bytes, within ``timeout`` seconds.

    Reading stops at end of file, which comes only when every process holding the pipe has
    closed it: a background child of the command may hold it forever, so once the command
    itself has exited the others get EXIT_GRACE seconds.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    out = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            exited = _exited(proc.pid)
            if exited:
                deadline = min(deadline, now + EXIT_GRACE)
            if now >= deadline:
                raise _Stopped("exited, but a process it started kept its output open; that "
                               "process was stopped" if exited else
                               f"did not finish within {timeout:.0f} s; it was stopped, with "
                               "every process it started")
            if not sel.select(min(deadline - now, _POLL)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if len(out) > MAX_OUTPUT:
                raise _Stopped(f"printed more than {MAX_OUTPUT // 1024} KiB; a secret is one "
                               "line")
    while not _exited(proc.pid):  # it closed its output but goes on running
        if time.monotonic() >= deadline:
            raise _Stopped(f"did not finish within {timeout:.0f} s; it was stopped, with every "
                           "process it started")
        time.sleep(_POLL / 10)
    return bytes(out)


def run_command(argv: Sequence[str], what: str, *, timeout: float | None = None) -> Secret:
    """Run ``argv`` without a shell and return its one line of output as a Secret.

    ``what`` names the setting in error messages, e.g. "password_command of work". What the
    command prints is never shown: a failing one may echo the secret, on stdout or stderr
    (stderr goes to /dev/null). It runs in a session of its own, so that a timeout, an
    interrupt or too much output stops every process it started, not only the first.
    """
    if not argv:
        raise SourceError(f"{what} is empty")
    if timeout is None:
        timeout = command_timeout()
    program = argv[0]
    log.debug("running %s: %s", what, program)
    try:
        proc = subprocess.Popen(list(argv), shell=False, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    except FileNotFoundError:
        raise SourceError(f"{what}: program {program!r} not found") from None
    except PermissionError:
        raise SourceError(f"{what}: program {program!r} is not executable") from None
    except OSError as exc:
        raise SourceError(f"{what}: cannot run {program!r}: {exc.strerror or exc}") from None
    try:
        with proc.stdout or contextlib.nullcontext():
            output = _read_stdout(proc, timeout)
    except _Stopped as stopped:
        _kill_group(proc)
        raise SourceError(f"{what}: {program!r} {stopped}") from None
    except BaseException:  # an interrupt: leave nothing running behind
        _kill_group(proc)
        raise
    returncode = proc.wait()
    if returncode != 0:
        raise SourceError(f"{what}: {program!r} {describe_exit(returncode)}; its output is "
                          "not shown, as it may hold the secret (run the command yourself to "
                          "see it)")
    return Secret(_one_line(output, what))


def from_env(variable: str, what: str, env: Mapping[str, str] = os.environ) -> Secret:
    value = env.get(variable)
    if value is None:
        raise SourceError(f"{what}: the environment variable {variable} is not set")
    if not value:
        raise SourceError(f"{what}: the environment variable {variable} is empty")
    return Secret(value)


def from_keyring(service: str, user: str, what: str) -> Secret:
    """The password stored with ``keyring set SERVICE USER``; clear errors when unavailable."""
    try:
        import keyring  # type: ignore[import-not-found]
    except ImportError:
        raise SourceError(
            f"{what}: keyring = true needs the optional 'keyring' package "
            "(pip install 'netaudit[keyring]'); or use password_command or password_env"
        ) from None
    try:
        value = keyring.get_password(service, user)
    except Exception as exc:  # backends raise many kinds: NoKeyringError, KeyringLocked, dbus
        kind = type(exc).__name__
        if kind == "NoKeyringError":
            raise SourceError(
                f"{what}: no keyring backend is available (no Secret Service in this "
                "session?); use password_command or password_env instead") from None
        raise SourceError(f"{what}: the keyring failed ({kind}); use password_command or "
                          "password_env instead") from None
    if not value:
        raise SourceError(f"{what}: no password in the keyring for service {service!r}, user "
                          f"{user!r}; store one with: keyring set {service} {user}")
    return Secret(value)


def password(source: Source, env: Mapping[str, str] = os.environ) -> Secret:
    """The password of an [[imap]] source, from whichever of the three ways it configures."""
    if source["password_command"]:
        return run_command(source["password_command"], f"password_command of {source.name}")
    if source["password_env"]:
        return from_env(source["password_env"], f"password_env of {source.name}", env)
    if source["keyring"]:
        return from_keyring(KEYRING_SERVICE, source.name, f"keyring for {source.name}")
    raise SourceError(f"{source.name}: no password_command, password_env or keyring configured")


def oauth2_token(source: Source) -> Secret:
    """A fresh access token for auth = xoauth2 (the command refreshes it as needed)."""
    command = source["oauth2_token_command"]
    if not command:
        raise SourceError(f"{source.name}: auth = xoauth2 needs oauth2_token_command")
    return run_command(command, f"oauth2_token_command of {source.name}")
