"""Account secrets: from a command, an environment variable or the system keyring.

A secret must never reach a log, an exception message, the argv of a child process or the
database. So it lives in a ``Secret`` whose repr is masked, commands get nothing secret on
their command line (the user's own argv from the config is all they see), and every error
message that quotes a command's output is passed through ``Secret.redact`` first.

The command contract is mbsync's ``PassCmd``: run without a shell, print exactly one line, the
trailing newline optional (R-IMAP-18). Keyring is an optional extra: a headless session often
has no Secret Service, and then the user needs a clear way out, not a traceback (R-IMAP-19).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence

from netaudit.config import Source
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 120.0  # long enough to type a passphrase into pinentry
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


def run_command(argv: Sequence[str], what: str, *, timeout: float = COMMAND_TIMEOUT) -> Secret:
    """Run ``argv`` without a shell and return its one line of output as a Secret.

    ``what`` names the setting in error messages, e.g. "password_command of work".
    """
    if not argv:
        raise SourceError(f"{what} is empty")
    log.debug("running %s: %s", what, argv[0])
    try:
        proc = subprocess.run(list(argv), shell=False, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SourceError(f"{what}: program {argv[0]!r} not found") from None
    except PermissionError:
        raise SourceError(f"{what}: program {argv[0]!r} is not executable") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: {argv[0]!r} did not finish within {timeout:.0f} s") \
            from None
    except OSError as exc:
        raise SourceError(f"{what}: cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        # stderr helps ("not in the password store"), but could echo the secret: mask stdout.
        stdout = proc.stdout.decode("utf-8", "replace").strip()
        err_lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = err_lines[0][:200] if err_lines else ""
        for line in stdout.splitlines():
            detail = Secret(line.strip()).redact(detail) if line.strip() else detail
        raise SourceError(f"{what}: {argv[0]!r} exited with status {proc.returncode}"
                          + (f": {detail}" if detail else ""))
    return Secret(_one_line(proc.stdout, what))


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
