"""Opening an IMAP session safely, and saying in one line why it failed.

Security rules (R-IMAP-21): implicit TLS by default; STARTTLS only when configured and then
mandatory (no fallback to plaintext, and a PREAUTH greeting is refused, since it would skip
STARTTLS altogether); plaintext only to loopback. Certificates and host names are always
verified; ``ca_file`` adds a trust anchor to the system store, never replaces it. Every socket
has a timeout (R-IMAP-11).

Errors are split in two: ``Transient`` (the connection dropped, the server is throttling) is
worth a reconnect with backoff; any other SourceError (wrong password, bad certificate, no
STARTTLS, a server that broke a bound below) will not get better by retrying and fails the
account at once.

Everything the server sends is read within bounds (``BoundedIMAP4``): a line, a literal, and
the responses and bytes in answer to one command. imaplib has only the line bound; it
allocates a literal of any announced size before reading it and keeps every untagged response
until the command completes, so a hostile or broken server could make it take 3 GB at once,
or grow without end while never finishing a command.
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
from typing import TYPE_CHECKING

import imapclient
from imapclient.exceptions import CapabilityError, LoginError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from ingest.imap_throttle import is_throttled, suggested_backoff
from ingest.secrets import Secret
from netaudit.config import Source, is_loopback
from netaudit.errors import SourceError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
_RESPONSE_CODE = re.compile(r"^\s*\[[^\]]*\]\s*")
_BYTES_REPR = re.compile(r"""\[?b(['"])(.*?)\1\]?""")

# imaplib's protocol trace would put message headers (and, on some paths, AUTHENTICATE
# exchanges) into the log at -vv; netaudit's own debug lines are enough. Its INFO lines
# ("Connection closed" after a failure) would break the one-line error at the default level.
logging.getLogger("imapclient").setLevel(logging.WARNING)


# What a server may send (see the module's docstring). Legitimate answers stay far below:
# netaudit fetches header fields (stored up to 256 KiB, ingest.headers.MAX_HEADER_BYTES; MTAs
# cap a header at 100-256 KB), a bounce's report part (64 KiB at most) and BODYSTRUCTUREs.
MAX_LITERAL_BYTES = 8 << 20  # one literal: 32 times the largest header netaudit stores
MAX_LINE_BYTES: int = getattr(imaplib, "_MAXLINE", 1_000_000)  # one line: imaplib's bound
MAX_RESPONSES = 100_000  # response lines to one command, beyond those a FETCH asked for
MAX_COMMAND_BYTES = 64 << 20  # bytes in answer to one command, beyond a FETCH's share
# A UID FETCH may also get, per UID asked for, two responses (its data, a FLAGS update) and
# the largest header stored (ingest.headers.MAX_HEADER_BYTES, not imported: a sync with
# nothing new never loads the header parser; tests check they agree).
PER_UID_RESPONSES = 2
PER_UID_BYTES = 256 * 1024
_MAX_SIZE_DIGITS = 18  # a literal size longer than this is not read as a number at all
# No IMAP number is longer than 20 digits (a 64-bit Gmail id); imapclient turns any run of
# digits into an int, and int() of over 4,300 digits raises ValueError, which nothing catches.
MAX_NUMBER_DIGITS = 1000
_LONG_NUMBER = re.compile(rb"\d{%d}" % (MAX_NUMBER_DIGITS + 1))


class Transient(SourceError):
    """A failure a reconnect may cure; ``wait`` is the server's own suggestion, in seconds."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class ServerMisbehaved(SourceError):
    """The server broke one of the bounds above. The connection is unusable (part of an answer
    is unread) and a retry meets the same server, so the account fails at once; neither
    imaplib nor imapclient catches this class, so it reaches the sync unchanged."""


def _size_text(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 and not nbytes % (1 << 20) else \
        f"{nbytes:,} bytes"


def literal_size(line: bytes) -> int | None:
    """The size of the literal a response line announces at its end ("... {123}", without
    CRLF); None when it announces none. A size of more digits than any real one is returned
    as -1, which ``check_literal`` refuses without turning the digits into a number."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    digits = line[start + 1:-1]
    if start < 0 or not digits.isdigit():
        return None
    return int(digits) if len(digits) <= _MAX_SIZE_DIGITS else -1


def check_literal(size: int, where: str) -> None:
    """Refuse a literal over MAX_LITERAL_BYTES before anything is allocated for it."""
    if size < 0:
        raise ServerMisbehaved(f"{where}: the server sent a literal size of more than "
                               f"{_MAX_SIZE_DIGITS} digits; refusing (netaudit reads at most "
                               f"{_size_text(MAX_LITERAL_BYTES)} at once)")
    if size > MAX_LITERAL_BYTES:
        raise ServerMisbehaved(f"{where}: the server sent a literal of {size} bytes; refusing "
                               f"(netaudit reads at most {_size_text(MAX_LITERAL_BYTES)} at "
                               "once)")


def command_name(data: bytes) -> str:
    """"UID FETCH" for b"ABCD12 UID FETCH 1:5 (...)\r\n": the command a tagged line sends."""
    words = data.split(None, 3)
    if len(words) < 2:
        return "a command"
    name = words[1].decode("ascii", "replace").upper()
    if name == "UID" and len(words) > 2:
        name += " " + words[2].decode("ascii", "replace").upper()
    return name


@dataclass(slots=True)
class ResponseBudget:
    """What the answer to one command may hold, counted as it is read: response lines (a
    literal's trailer is a line too) and bytes. Counting lines rather than kept objects bounds
    the time as well as the memory, whatever the reader keeps or skips."""

    where: str
    command: str | None = None  # named by the command's first line (BoundedIMAP4.send)
    max_responses: int = MAX_RESPONSES
    max_bytes: int = MAX_COMMAND_BYTES
    responses: int = 0
    nbytes: int = 0

    @classmethod
    def for_fetch(cls, where: str, uids: int) -> ResponseBudget:
        """A UID FETCH of ``uids`` UIDs (several pipelined ones: their sum)."""
        return cls(where, "UID FETCH", MAX_RESPONSES + PER_UID_RESPONSES * uids,
                   MAX_COMMAND_BYTES + PER_UID_BYTES * uids)

    def charge(self, responses: int, nbytes: int) -> None:
        self.responses += responses
        self.nbytes += nbytes
        if self.responses > self.max_responses:
            raise ServerMisbehaved(
                f"{self.where}: the server sent more than {self.max_responses:,} responses to "
                f"{self.command or 'a command'} without completing it; refusing")
        if self.nbytes > self.max_bytes:
            raise ServerMisbehaved(
                f"{self.where}: the server sent more than {_size_text(self.max_bytes)} in "
                f"answer to {self.command or 'a command'}; refusing")


class BoundedReads(imaplib.IMAP4):
    """imaplib's reading, bounded. ``read`` and ``readline`` are the methods imaplib documents
    for overriding, and every byte it reads goes through them; ``_new_tag`` is where every
    command starts, imaplib's own and imapclient's (which sends some commands itself)."""

    where: str
    budget: ResponseBudget | None

    def _bound(self, host: str, port: int) -> None:
        self.where = f"{host}:{port}"
        self.budget = ResponseBudget(self.where, "the greeting")

    def readline(self) -> bytes:
        try:
            line = super().readline()
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:  # imaplib's own line bound, the one error it raises here
            raise ServerMisbehaved(f"{self.where}: the server sent a line longer than "
                                   f"{MAX_LINE_BYTES:,} bytes; refusing") from None
        budget = self.budget
        if budget is not None:
            budget.charge(1, len(line))
        if len(line) > MAX_NUMBER_DIGITS and _LONG_NUMBER.search(line):
            raise ServerMisbehaved(f"{self.where}: the server sent a number of more than "
                                   f"{MAX_NUMBER_DIGITS:,} digits; refusing")
        if line.endswith(b"}\r\n"):  # a literal follows: refused here if too large
            size = literal_size(line[:-2])
            if size is not None:
                check_literal(size, self.where)
        return line

    def read(self, size: int) -> bytes:
        check_literal(size, self.where)
        if self.budget is not None:
            self.budget.charge(0, size)
        return super().read(size)

    def send(self, data: ReadableBuffer) -> None:
        budget = self.budget
        if budget is not None and budget.command is None:
            budget.command = command_name(bytes(data))
        super().send(data)

    def _new_tag(self) -> bytes:
        self.budget = ResponseBudget(self.where)
        # imaplib keeps unsolicited responses of a kind until a command of that kind reads
        # them; netaudit never asks for most kinds (EXISTS, EXPUNGE, FLAGS updates), so many
        # commands could pile them up. Past the bound they go: stale, as SELECT makes them.
        kept = self.untagged_responses
        if sum(map(len, kept.values())) > MAX_RESPONSES:
            log.debug("%s: dropping %d unsolicited responses", self.where,
                      sum(map(len, kept.values())))
            kept.clear()
        tag: bytes = super()._new_tag()  # type: ignore[misc]
        return tag


class BoundedIMAP4(BoundedReads, IMAP4WithTimeout):
    """A plaintext (or STARTTLS) connection with bounded reads."""

    def __init__(self, host: str, port: int, timeout: float | None) -> None:
        self._bound(host, port)
        IMAP4WithTimeout.__init__(self, host, port, timeout)


class BoundedIMAP4TLS(BoundedReads, IMAP4_TLS):
    """An implicit-TLS connection with bounded reads."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 timeout: float | None) -> None:
        self._bound(host, port)
        IMAP4_TLS.__init__(self, host, port, ssl_context, timeout)


class BoundedClient(imapclient.IMAPClient):
    """imapclient on a bounded imaplib connection (``_create_IMAP4`` is where imapclient
    makes it; its own test double replaces it the same way)."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return BoundedIMAP4TLS(self.host, self.port, self.ssl_context, timeout)
        return BoundedIMAP4(self.host, self.port, timeout)


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
        return BoundedClient(account.host, port=account.port, ssl=True, ssl_context=context,
                             timeout=timeout)
    if account.security == "plain" and not is_loopback(account.host):
        raise SourceError(f"security = plain is allowed only towards loopback hosts, not "
                          f"{account.host}")
    return BoundedClient(account.host, port=account.port, ssl=False, timeout=timeout)


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
