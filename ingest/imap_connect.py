"""Opening an IMAP session safely, and saying in one line why it failed.

Security rules (R-IMAP-21): implicit TLS by default; STARTTLS only when configured and then
mandatory (no fallback to plaintext, and a PREAUTH greeting is refused, since it would skip
STARTTLS altogether); plaintext only to loopback. Certificates and host names are always
verified; ``ca_file`` adds a trust anchor to the system store, never replaces it. Every socket
has a timeout (R-IMAP-11).

Errors are split in two: ``Transient`` (the connection dropped, the server is throttling) is
worth a reconnect with backoff; any other SourceError (wrong password, bad certificate, no
STARTTLS) will not get better by retrying and fails the account at once.
"""

from __future__ import annotations

import imaplib
import logging
import random
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import imapclient
from imapclient.exceptions import CapabilityError, LoginError

from ingest.imap_throttle import is_throttled, suggested_backoff
from ingest.secrets import Secret
from netaudit.config import Source, is_loopback
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
_RESPONSE_CODE = re.compile(r"^\s*\[[^\]]*\]\s*")
_BYTES_REPR = re.compile(r"""\[?b(['"])(.*?)\1\]?""")

# imaplib's protocol trace would put message headers (and, on some paths, AUTHENTICATE
# exchanges) into the log at -vv; netaudit's own debug lines are enough.
logging.getLogger("imapclient").setLevel(logging.INFO)


class Transient(SourceError):
    """A failure a reconnect may cure; ``wait`` is the server's own suggestion, in seconds."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True)
class Account:
    """The connection settings of one [[imap]] source."""

    name: str
    host: str
    port: int
    security: str  # tls, starttls or plain
    username: str
    auth: str  # password or xoauth2
    ca_file: str | None
    timeout: float

    @classmethod
    def from_source(cls, source: Source) -> Account:
        security = source["security"]
        port = source["port"] or (993 if security == "tls" else 143)
        return cls(source.name, source["host"], int(port), security, source["username"],
                   source["auth"], source["ca_file"], float(source["timeout"]))

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trust store, verified host names, plus ``ca_file`` when given."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except FileNotFoundError:
            raise SourceError(f"ca_file {ca_file} does not exist") from None
        except (ssl.SSLError, OSError) as exc:
            raise SourceError(f"ca_file {ca_file} is not a usable PEM certificate file: "
                              f"{getattr(exc, 'reason', None) or exc}") from None
    return context


def server_text(exc: BaseException) -> str:
    """The server's words from an imaplib/imapclient error, without Python's b'...' wrapping."""
    text = str(exc)
    m = _BYTES_REPR.search(text)
    if m:
        text = m.group(2)
    return " ".join(text.split())


def _reason(text: str) -> str:
    """'[AUTHENTICATIONFAILED] Authentication failed.' -> 'authentication failed'."""
    text = _RESPONSE_CODE.sub("", text).strip().rstrip(".")
    return (text[:1].lower() + text[1:]) if text else "no reason given"


def describe_error(exc: BaseException, account: Account, secret: Secret | None = None,
                   *, connecting: bool = False) -> SourceError:
    """One line naming the cause; Transient when a reconnect may help."""
    where = account.where
    mask = secret.redact if secret is not None else (lambda s: s)
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError(f"cannot connect to {where}: certificate verify failed: "
                           f"{exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        hint = ""
        if "WRONG_VERSION_NUMBER" in str(reason).upper():
            hint = f" (is {account.port} a TLS port? for port 143 use security = \"starttls\")"
        return SourceError(f"cannot connect to {where}: TLS failed: {reason}{hint}")
    if isinstance(exc, LoginError):
        text = mask(server_text(exc))
        if is_throttled(text):
            return Transient(f"login to {where} refused for now: {text}", suggested_backoff(text))
        return SourceError(f"login failed for {account.username}: {_reason(text)}")
    if isinstance(exc, socket.gaierror):
        return Transient(f"cannot connect to {where}: cannot resolve {account.host} "
                         f"({exc.strerror})")
    if isinstance(exc, TimeoutError | socket.timeout):
        limit = CONNECT_TIMEOUT if connecting else account.timeout
        verb = "cannot connect to" if connecting else "no answer from"
        return Transient(f"{verb} {where}: timed out after {limit:.0f} s")
    if isinstance(exc, OSError):
        verb = "cannot connect to" if connecting else "connection to"
        detail = exc.strerror or str(exc) or type(exc).__name__
        return Transient(f"{verb} {where}{'' if connecting else ' lost'}: {detail}")
    if isinstance(exc, imaplib.IMAP4.abort):
        return Transient(f"connection to {where} lost: {mask(server_text(exc))}")
    if isinstance(exc, imaplib.IMAP4.error):
        text = mask(server_text(exc))
        if is_throttled(text):
            return Transient(f"{where} is throttling: {text}", suggested_backoff(text))
        return SourceError(f"{where}: {text}")
    raise exc


def _open_socket(account: Account, context: ssl.SSLContext | None) -> imapclient.IMAPClient:
    timeout = imapclient.SocketTimeout(connect=CONNECT_TIMEOUT, read=account.timeout)
    if account.security == "tls":
        assert context is not None
        return imapclient.IMAPClient(account.host, port=account.port, ssl=True,
                                     ssl_context=context, timeout=timeout)
    if account.security == "plain" and not is_loopback(account.host):
        raise SourceError(f"security = plain is allowed only towards loopback hosts, not "
                          f"{account.host}")
    return imapclient.IMAPClient(account.host, port=account.port, ssl=False, timeout=timeout)


def _starttls(client: imapclient.IMAPClient, account: Account, context: ssl.SSLContext) -> None:
    """Upgrade or refuse: no plaintext fallback, no PREAUTH (nostarttls.secvuln.info)."""
    welcome = client.welcome or b""
    if welcome.upper().startswith(b"* PREAUTH"):
        raise SourceError(f"{account.where} greeted with PREAUTH before STARTTLS; refusing an "
                          "unencrypted pre-authenticated session")
    if not client.has_capability("STARTTLS"):
        raise SourceError(f"STARTTLS is not offered by {account.where}; refusing to log in "
                          "without TLS (security = \"starttls\")")
    try:
        client.starttls(context)
    except CapabilityError:
        raise SourceError(f"STARTTLS is not offered by {account.where}; refusing to log in "
                          "without TLS (security = \"starttls\")") from None


def connect(account: Account, credential: Callable[[bool], Secret]) -> imapclient.IMAPClient:
    """A logged-in client. ``credential(refresh)`` gives the password or token; for XOAUTH2 a
    refused token is fetched once more (it may have just expired, R-IMAP-20)."""
    # Loading the system's trust store takes longer than a no-op sync; plain needs none.
    context = ssl_context(account.ca_file) if account.security != "plain" else None
    try:
        client = _open_socket(account, context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise describe_error(exc, account, connecting=True) from None
    secret: Secret | None = None
    try:
        if account.security == "starttls":
            assert context is not None
            _starttls(client, account, context)
        client.normalise_times = False  # aware INTERNALDATEs
        secret = credential(False)
        try:
            _login(client, account, secret)
        except LoginError:
            if account.auth != "xoauth2":
                raise
            secret = credential(True)
            _login(client, account, secret)
        # imaplib formats a trace line for every response line whether or not anything logs
        # it: a third of its reading time, and message headers in a -vv log.
        client._imap.debug = 0
        log.debug("%s: logged in to %s as %s", account.name, account.where, account.username)
        return client
    except BaseException as exc:
        _close_quietly(client)
        if isinstance(exc, OSError | imaplib.IMAP4.error):
            raise describe_error(exc, account, secret, connecting=True) from None
        raise


def _login(client: imapclient.IMAPClient, account: Account, secret: Secret) -> None:
    try:
        if account.auth == "xoauth2":
            client.oauth2_login(account.username, secret.reveal())
        else:
            client.login(account.username, secret.reveal())
    except UnicodeEncodeError:
        # imaplib sends LOGIN in ASCII; its error would quote a piece of the password
        raise SourceError(f"login failed for {account.username}: the password or user name "
                          "has non-ASCII characters, which IMAP LOGIN cannot send") from None


def _close_quietly(client: imapclient.IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:  # the socket may already be gone; nothing to save
        log.debug("shutdown after a failure failed", exc_info=True)


def close(client: imapclient.IMAPClient | None) -> None:
    """LOGOUT politely; a dead connection is just dropped."""
    if client is None:
        return
    try:
        client.logout()
    except Exception:
        _close_quietly(client)


@dataclass
class Backoff:
    """Exponential backoff with jitter, bounded in attempts and in total sleep (R-IMAP-13)."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    budget: float = 120.0
    rng: random.Random | None = None
    used: int = 0
    slept: float = 0.0

    def next_delay(self, suggested: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when it is time to give up."""
        if self.used >= self.attempts:
            return None
        rng = self.rng or random
        delay = min(self.cap, self.base * 2 ** self.used) * (0.5 + rng.random() / 2)
        if suggested is not None:
            delay = max(delay, suggested)
        if self.slept + delay > self.budget:
            return None
        self.used += 1
        self.slept += delay
        return delay

    def reset(self) -> None:
        """After progress: a later drop starts the count again (total sleep stays bounded)."""
        self.used = 0
