"""IMAP IDLE on one folder per account: new mail wakes that account's sync within a second.

One connection per account does nothing but IDLE (R-IMAP-12/14); the sync itself runs on its
own short-lived connection in the account's worker, so a FETCH never has to interrupt IDLE.

* IDLE is re-issued every ``IDLE_RENEW`` seconds (RFC 2177 allows 29 minutes; imapclient
  advises 10; NAT gateways drop idle flows after about 15). The DONE / tagged OK round trip
  doubles as the liveness check: a connection that went silent fails it within the socket
  timeout and is rebuilt.
* The socket is polled with a one-second timeout, so a stop request is seen within a second
  and costs nothing in between (no busy polling). A socket that is readable but yields no
  response, several times in a row, is a connection the server closed (EOF).
* BYE, a socket error or a timeout rebuilds the whole session (connect, login, SELECT) after
  an exponential, jittered and capped backoff (R-IMAP-13), reset once a connection has
  lived a minute. After each rebuild the account's INBOX is synced once, since mail that
  arrived while disconnected sent no EXISTS to anyone.
"""

from __future__ import annotations

import imaplib
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable

import imapclient

from ingest.imap import Session
from ingest.imap_connect import Account
from ingest.imap_folders import GMAIL_CAPABILITY, FolderNotFound, choose_folders
from netaudit.config import Source
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

IDLE_RENEW = 300.0  # seconds between DONE and a new IDLE (at most 10 minutes, R-IMAP-12)
POLL_SECONDS = 1.0  # how often the stop flag is looked at while idling
EMPTY_READS = 3  # readable-but-empty polls in a row that mean the server closed the socket
STABLE_AFTER = 60.0  # a connection that lived this long resets the reconnect backoff


class ConnectionLost(Exception):
    """The IDLE connection is gone (BYE, EOF); rebuild it."""


class Backoff:
    """Reconnect delays: 1, 2, 4 ... seconds with jitter, capped (R-IMAP-13)."""

    def __init__(self, base: float = 1.0, cap: float = 900.0,
                 rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        self.failures = 0


def idle_folder_spec(configured: list[str] | None, gmail: bool) -> str:
    """Which folder to IDLE on: INBOX when it is synced (Gmail by default: \\All, where
    everything arrives); otherwise the first configured folder."""
    if configured is None:
        return "\\All" if gmail else "INBOX"
    if any(f.upper() == "INBOX" for f in configured):
        return "INBOX"
    return configured[0] if configured else "INBOX"


def _events(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(timeout * 1000))


class IdleWatcher(threading.Thread):
    """Keeps one IDLE session open for ``source``; calls ``on_new_mail(folder)`` on EXISTS.

    ``on_reconnect(folder)`` runs after every connection but the first; ``on_no_idle()``
    once if the server does not offer IDLE (its folders are then only polled);
    ``on_state()`` whenever ``connected`` changes (for the daemon's STATUS= line).
    """

    def __init__(self, source: Source, stop: threading.Event, *,
                 on_new_mail: Callable[[str], None],
                 on_reconnect: Callable[[str], None],
                 on_no_idle: Callable[[], None],
                 on_state: Callable[[], None] = lambda: None,
                 renew: float = IDLE_RENEW) -> None:
        super().__init__(name=f"idle-{source.name}", daemon=True)
        self.source = source
        self.account = Account.from_source(source)
        self.stop_event = stop
        self.on_new_mail = on_new_mail
        self.on_reconnect = on_reconnect
        self.on_no_idle = on_no_idle
        self.on_state = on_state
        self.renew = renew
        self.folder: str | None = None
        self._connected = False
        self.last_beat = time.monotonic()  # the daemon's watchdog checks this moves
        self.backoff = Backoff()
        self._session = Session(source, self.account)

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self.on_state()

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        first = True
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                client = self._session.open()
                if not client.has_capability("IDLE"):
                    log.info("%s: the server does not offer IDLE; its mail is polled instead",
                             self.source.name)
                    self.on_no_idle()
                    self._session.close()
                    return
                folder = self._select(client)
                if not first:
                    self.on_reconnect(folder)
                first = False
                log.debug("%s: IDLE on %s", self.source.name, folder)
                self._idle(client, folder)
            except (OSError, imaplib.IMAP4.error, ConnectionLost, SourceError) as exc:
                self.connected = False
                self._session.drop()
                if self.stop_event.is_set():
                    break
                if time.monotonic() - started >= STABLE_AFTER:
                    self.backoff.reset()
                if not isinstance(exc, ConnectionLost | SourceError):
                    exc = self._session.describe(exc)
                elif isinstance(exc, SourceError) and not self._transient(exc):
                    self._session = Session(self.source, self.account)  # ask again next time
                delay = self.backoff.next_delay()
                log.warning("%s: IDLE connection: %s; reconnecting in %.0f s", self.source.name,
                            exc, delay)
                if self._sleep(delay):
                    break
            except Exception:  # a bug: log it, keep the account watched
                self.connected = False
                self._session.drop()
                log.exception("%s: IDLE failed unexpectedly; reconnecting", self.source.name)
                if self._sleep(self.backoff.next_delay()):
                    break
        self._logout()

    @staticmethod
    def _transient(exc: SourceError) -> bool:
        from ingest.imap_connect import Transient

        return isinstance(exc, Transient)

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking for a stop; True when stopping."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            self.last_beat = time.monotonic()
            left = deadline - self.last_beat
            if left <= 0:
                return False
            self.stop_event.wait(min(left, 30.0))
        return True

    def _logout(self) -> None:
        """LOGOUT on the way out (after DONE); a dead connection is just dropped."""
        if self.connected:
            self._session.close()
        else:
            self._session.drop()
        self.connected = False

    # -- one connection ----------------------------------------------------------------------

    def _select(self, client: imapclient.IMAPClient) -> str:
        gmail = client.has_capability(GMAIL_CAPABILITY.decode())
        spec = idle_folder_spec(self.source["folders"], gmail)
        try:
            folder = choose_folders(client.list_folders(), [spec], gmail)[0].name
        except (FolderNotFound, IndexError):
            folder = "INBOX"
        client.select_folder(folder, readonly=True)
        self.folder = folder
        return folder

    def _idle(self, client: imapclient.IMAPClient, folder: str) -> None:
        """IDLE until stopped; raises when the connection is lost."""
        client.idle()
        self.connected = True
        renewed = time.monotonic()
        empty = 0
        sock = client.socket()
        while True:
            now = self.last_beat = time.monotonic()
            if self.stop_event.is_set():
                self._done(client, folder)
                return
            if now - renewed >= self.renew:
                self._done(client, folder)
                client.idle()
                renewed = time.monotonic()
                continue
            if not _events(sock, POLL_SECONDS):
                continue
            responses = client.idle_check(timeout=0)
            if not responses:
                empty += 1
                if empty >= EMPTY_READS:
                    raise ConnectionLost("the server closed the connection")
                continue
            empty = 0
            self._handle(responses, folder)

    def _done(self, client: imapclient.IMAPClient, folder: str) -> None:
        """DONE: the tagged answer proves the connection is alive (or times out)."""
        _, responses = client.idle_done()
        self._handle(responses, folder)

    def _handle(self, responses: list, folder: str) -> None:
        new_mail = False
        for response in responses:
            if not isinstance(response, tuple) or not response:
                continue
            if response[0] == b"BYE":
                if new_mail:
                    self.on_new_mail(folder)
                raise ConnectionLost("the server said BYE: " + " ".join(
                    r.decode("utf-8", "replace") for r in response[1:]
                    if isinstance(r, bytes)))
            if len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
                new_mail = True
        if new_mail:
            self.on_new_mail(folder)
