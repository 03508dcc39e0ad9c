"""IMAP sync: headers of new messages, folder by folder, crash-safe and incremental.

The position of each folder is the last UID stored, under the folder's UIDVALIDITY, in
``sync_state`` (scope = folder name). A run asks each folder's STATUS; when UIDNEXT-1 is not
beyond the position it moves on: one round trip per folder. Otherwise it EXAMINEs the
folder (read-only, so nothing is marked \\Seen) and FETCHes ``last+1:UIDNEXT-1`` in windows of
about 500 UIDs, only ``BODY.PEEK`` of the needed header fields, INTERNALDATE and RFC822.SIZE,
and stores the messages together with the new position in one short transaction. A crash or
a dropped connection therefore loses at most the batches not yet committed, and the
message-key anti-join in the store makes any re-fetch add nothing.

The windows are pipelined (ingest/imap_fetch.py): PIPELINE_DEPTH commands in flight, so the
server reads its index for the next window while this process parses the last one. A write
batch gathers several windows (up to BATCH_MESSAGES, or BATCH_SECONDS worth): opening,
committing and closing the database costs 50-100 ms whatever the batch size. A large sync
hands its batches to a child process (ingest/imap_commit.py), so that DuckDB's work runs on a
second core; the position still moves only with the messages it covers.

A changed UIDVALIDITY rescans the folder from UID 1; the same anti-join matches what is stored,
so nothing is deleted and nothing doubled. Expunged messages stay: they still happened.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import imapclient

from ingest import imap_connect, secrets
from ingest.imap_connect import Account, Backoff, Transient
from ingest.imap_folders import (
    DEFAULT_FOLDERS,
    GMAIL_CAPABILITY,
    Folder,
    FolderNotFound,
    choose_folders,
)
from ingest.imap_positions import Position, load_positions
from ingest.store import BatchResult, Bounce, Quarantined, remember_me
from netaudit import db, progress
from netaudit.config import Config, Source
from netaudit.errors import SourceError

# What fetching needs (parsing, the child writer, the pipelined FETCH, bounce reports) is
# imported by the methods that fetch: a sync with nothing new never loads it, 20-25 ms of a
# no-op `netaudit sync`.
if TYPE_CHECKING:
    from ingest.headers import MessageRecord
    from ingest.imap_commit import ChildWriter, Committed, UnparsedItem
    from ingest.imap_fetch import FetchPipeline, Window

log = logging.getLogger(__name__)

# UIDs per FETCH (R-IMAP-7: at most about 200-500, short command lines). The upper end: each
# command costs the server and this side a fixed amount, about 5 % of a first sync at 250.
CHUNK_UIDS = 500
MAX_WINDOW = CHUNK_UIDS * 16  # widest UID window over sparse ranges
BATCH_MESSAGES = 10000  # messages per write transaction (several FETCH windows)
# With the child writer, which keeps the file open across batches (so a batch no longer costs
# a checkpoint), batches are smaller: half as much in flight in both processes. A 45,000-message
# first sync peaked at 158-169 MiB instead of 184-189, in the same time.
CHILD_BATCH_MESSAGES = 5000
# The daemon's batches: smaller, so that a SIGTERM, or a reader waiting for the file, waits
# for at most a quarter of a second of writing; its syncs are mostly small anyway.
DAEMON_BATCH_MESSAGES = 2500
BATCH_SECONDS = 2.0  # ... or whatever arrived in this long, so progress is saved often
# Windows in flight: the server prepares the next while the current one is parsed. Two keep
# a loopback Dovecot busy; more help over a slow link, where each round trip is long.
PIPELINE_DEPTH = 3
# Below this many UIDs to fetch a sync commits in its own process: starting the child writer
# costs about 0.25 s of CPU, a 10,000-message batch about 0.3 s of DuckDB's work.
CHILD_WRITER_UIDS = 20_000
# The share of messages the child writer parses itself (Unparsed in ingest/imap_commit.py):
# parsing is over half of the fetching process's time and the writer was idle most of it.
# Measured on 45,000 messages (docs/benchmarks.md).
WRITER_PARSE_SHARE = 0.5
# With the child writer, the last folder's final batch is what is left once the fetching ends,
# and a transaction costs more the larger it is (DuckDB's checkpoint included): the last
# BATCH_MESSAGES of that folder are committed in batches this many times smaller.
TAIL_SPLIT = 4
STATUS_ITEMS = (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES")
Status = tuple[int, int, int] | None  # a folder's (UIDVALIDITY, UIDNEXT-1, MESSAGES)
INBOX = "INBOX"  # in any case, the same folder (RFC 3501 5.1)
MAX_RECONNECTS = 20  # per sync, however much progress is made in between
# A server that cannot be reached at the start of a run is most likely down or misconfigured:
# one quick retry, then the account fails and the next run (or the daemon's timer) tries again.
# Reconnecting pays off after a drop in the middle of a sync, where the full backoff applies.
FIRST_CONNECT_RETRIES = 1
# A message the server cannot read can kill the connection on every FETCH that includes it
# (Dovecot answers "BYE Internal error"). Windows that start where a FETCH failed shrink
# (careful_span) until the culprit is alone; a single UID that fails this often is quarantined,
# so one broken message cannot stop an account for good.
POISON_FAILURES = 3
# Delivery reports are looked up this many at a time: a command's answer is bounded
# (imap_connect.MAX_COMMAND_BYTES, 64 MiB) and 100 report parts of 64 KiB stay far below it.
BOUNCE_UIDS = 100


def chunks(uids: list[int], size: int) -> Iterator[list[int]]:
    """``uids`` in consecutive lists of at most ``size``."""
    for start in range(0, len(uids), size):
        yield uids[start:start + size]


def careful_span(span: int, failures: int) -> int:
    """The UID window after ``failures`` lost connections at the same place: 500, 31, 1."""
    return max(1, span >> (4 * failures))

@dataclass(slots=True)
class FolderResult:
    result: BatchResult = field(default_factory=BatchResult)
    bounces: int = 0
    rescanned: bool = False


@dataclass(slots=True)
class Batch:
    """Parsed messages waiting for their transaction, and the position they bring us to."""

    records: list[tuple[str, MessageRecord]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # each record's place among the messages
    unparsed: list[UnparsedItem] = field(default_factory=list)  # left to the child writer
    quarantined: list[Quarantined] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)
    sent_from: set[str] = field(default_factory=set)
    last_uid: int = 0
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.records) + len(self.unparsed) + len(self.quarantined)

    def add(self, loc: str, record: MessageRecord) -> None:
        self.seqs.append(len(self.records) + len(self.unparsed))
        self.records.append((loc, record))

    def leave(self, uid: int, header: bytes, item: Mapping[bytes, Any]) -> None:
        size = item.get(b"RFC822.SIZE")
        self.unparsed.append((len(self.records) + len(self.unparsed), uid, header,
                              item.get(b"INTERNALDATE"), size if isinstance(size, int) else None))


@dataclass
class Options:
    """Knobs that tests and the benchmark turn; the defaults are what users get."""

    chunk_uids: int = CHUNK_UIDS
    batch_messages: int = BATCH_MESSAGES
    batch_seconds: float = BATCH_SECONDS
    backoff: Backoff = field(default_factory=Backoff)
    # Called after each committed batch with (folder, last_uid): lets a test break the
    # connection at a known point.
    on_commit: Callable[[str, int], None] | None = None
    sleep: Callable[[float], None] = time.sleep  # the backoff's waits
    # UID FETCH commands in flight at once (1: wait for each answer before the next).
    pipeline_depth: int = PIPELINE_DEPTH
    # A folder with at least this many UIDs to fetch starts the child writer.
    child_writer_uids: int = CHILD_WRITER_UIDS
    # With the child writer a batch is at most this large (and at most batch_messages).
    child_batch_messages: int = CHILD_BATCH_MESSAGES
    # The share of messages the child writer parses (0: the fetching process parses all).
    writer_parse_share: float = WRITER_PARSE_SHARE


# ---------------------------------------------------------------------------------------------
# One account


class Session:
    """The account's connection, rebuilt after a drop; the secret is asked for once per run."""

    def __init__(self, source: Source, account: Account) -> None:
        self.source = source
        self.account = account
        self.client: imapclient.IMAPClient | None = None
        self.ever_connected = False
        self._secret: secrets.Secret | None = None
        self._ahead: threading.Thread | None = None
        self._ahead_error: BaseException | None = None

    def open_ahead(self) -> Session:
        """Start logging in on a thread; ``open`` takes the result, or raises its error.

        A login is mostly waiting for the server, so part of it goes on while the caller
        reads the database; `netaudit sync` does this for its first account (against a local
        Dovecot the whole login, about 30 ms, falls within the opening of the database).
        """
        def log_in() -> None:
            try:
                self._connect()  # not open(): that joins this very thread
            except BaseException as exc:  # handed to open(), in the thread that syncs
                self._ahead_error = exc
        self._ahead = threading.Thread(target=log_in, name=f"login {self.source.name}",
                                       daemon=True)
        self._ahead.start()
        return self

    def _join_ahead(self) -> None:
        thread, self._ahead = self._ahead, None
        if thread is not None:
            thread.join()
            error, self._ahead_error = self._ahead_error, None
            if error is not None:
                raise error

    def credential(self, refresh: bool) -> secrets.Secret:
        if self._secret is None or refresh:
            self._secret = secrets.oauth2_token(self.source) \
                if self.account.auth == "xoauth2" else secrets.password(self.source)
        return self._secret

    def open(self) -> imapclient.IMAPClient:
        self._join_ahead()
        return self._connect()

    def _connect(self) -> imapclient.IMAPClient:
        if self.client is None:
            self.client = imap_connect.connect(self.account, self.credential)
            self.ever_connected = True
        return self.client

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self._join_ahead()  # its error, if any, no longer matters
        client, self.client = self.client, None
        if client is not None:
            imap_connect._close_quietly(client)

    def close(self) -> None:
        client, self.client = self.client, None
        imap_connect.close(client)

    def describe(self, exc: BaseException) -> SourceError:
        return imap_connect.describe_error(exc, self.account, self._secret)


class AccountSync:
    """Everything one run of one account needs; ``run`` returns the summary line."""

    def __init__(self, cfg: Config, source: Source, me: frozenset[str], options: Options,
                 session: Session | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.options = options
        self.account = Account.from_source(source)
        self.session = session or Session(source, self.account)
        self.me = set(me)
        self.folders: list[Folder] | None = None
        self.gmail = False
        self.results: dict[str, FolderResult] = {}  # kept across reconnects
        self.finished: set[str] = set()
        self.positions: dict[str, Position] = {}
        # (folder, first UID of a window) -> how often a FETCH from there lost the connection
        self.failures: dict[tuple[str, int], int] = {}
        self.careful_until: dict[str, int] = {}  # folder -> last UID of a window that failed
        self.writer: ChildWriter | None = None
        self._share = 0.0  # how many messages are owed to the child writer's parsing

    # -- the run ---------------------------------------------------------------------------

    def run(self, positions: dict[str, Position] | None = None) -> str:
        if positions is None:
            with db.writer(self.cfg.database) as con:
                positions = load_positions(con, self.source.name)
        self.positions = dict(positions)
        backoff = self.options.backoff
        reconnects = 0
        try:
            while True:
                try:
                    self._run_once(backoff)
                    break
                except (OSError, imapclient.exceptions.IMAPClientError, Transient) as exc:
                    error = exc if isinstance(exc, SourceError) else self.session.describe(exc)
                    self.session.drop()
                    if not isinstance(error, Transient):
                        raise error from None
                    reconnects += 1
                    limit = MAX_RECONNECTS if self.session.ever_connected else \
                        FIRST_CONNECT_RETRIES
                    delay = backoff.next_delay(error.wait) if reconnects <= limit else None
                    if delay is None:
                        raise self._gave_up(error, reconnects) from None
                    log.warning("%s: %s; reconnecting in %.1f s", self.source.name, error,
                                delay)
                    self.options.sleep(delay)
            self.session.close()
        finally:
            self.session.drop()  # after a failure: never leave a socket behind
            writer, self.writer = self.writer, None
            if writer is not None:
                writer.close()  # what was handed over is committed, even after a failure
        return self.summary()

    def _gave_up(self, error: Transient, reconnects: int) -> SourceError:
        if error.wait is not None and error.wait > self.options.backoff.budget:
            return SourceError(f"{error} (the server asks to wait {error.wait:.0f} s; "
                               "try again later)")
        tried = reconnects - 1
        return SourceError(f"{error} (gave up after {tried} reconnect attempt"
                           f"{'' if tried == 1 else 's'})")

    def _run_once(self, backoff: Backoff) -> None:
        self._flush()  # after a reconnect the positions must be the committed ones
        client = self.session.open()
        self._remember_login()
        inbox_status: Status = None  # asked before the LIST, see below
        if self.folders is None:
            self.gmail = client.has_capability(GMAIL_CAPABILITY.decode())
            if self.gmail:
                client.id_({"name": "netaudit"})  # Google asks clients to identify (R-IMAP-16)
            # INBOX first: on Dovecot (2.3, maildir) the first STATUS or EXAMINE of INBOX in a
            # session takes 2 ms for 40,000 messages, but 30 ms once a LIST (or a look at any
            # other folder) came before it; that was most of a sync with nothing new.
            if self._wants_inbox():
                try:
                    inbox_status = self._status(client, INBOX)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    pass  # asked again below, where the error names the folder
            try:
                self.folders = choose_folders(client.list_folders(), self.source["folders"],
                                              self.gmail)
            except FolderNotFound as exc:
                raise SourceError(f"{self.account.where}: {exc}") from None
        for folder in self.folders:
            if folder.name in self.finished:
                continue
            out = self.results.setdefault(folder.name, FolderResult())
            status = inbox_status if folder.name.upper() == INBOX else None
            try:
                self._sync_folder(client, folder, out, backoff, status)
            except imaplib.IMAP4.error as exc:
                error = self.session.describe(exc)
                if isinstance(exc, imaplib.IMAP4.abort) or isinstance(error, Transient):
                    raise
                raise SourceError(f"folder {folder.name!r}: {error}") from None
            self.finished.add(folder.name)

    def _remember_login(self) -> None:
        login = self.account.username.strip().lower()
        if "@" in login and login not in self.me:
            with db.writer(self.cfg.database) as con:
                con.execute("BEGIN TRANSACTION")
                remember_me(con, [login], "login")
                con.execute("COMMIT")
            self.me.add(login)

    def summary(self) -> str:
        parts = []
        total = BatchResult()
        bounces = 0
        for name, fr in self.results.items():
            total.add(fr.result)
            bounces += fr.bounces
            extra = []
            if fr.result.duplicates:
                extra.append(f"{fr.result.duplicates:,} already stored")
            if fr.rescanned:
                extra.append("rescanned after a UIDVALIDITY change")
            parts.append(f"{name} {fr.result.new:,} new" +
                         (f" ({', '.join(extra)})" if extra else ""))
        tail = f"{total.new:,} messages, {total.quarantined:,} quarantined"
        if bounces:
            tail += f", {bounces:,} bounces"
        return f"{', '.join(parts) or 'no folders'} ({tail})"

    # -- one folder --------------------------------------------------------------------------

    def _wants_inbox(self) -> bool:
        """Whether INBOX is among the folders ``choose_folders`` will pick."""
        configured = self.source["folders"]
        if configured is None:
            if self.gmail:
                return False  # Gmail's default is its \All folder alone
            configured = DEFAULT_FOLDERS
        return any(name.upper() == INBOX for name in configured)

    @staticmethod
    def _status(client: imapclient.IMAPClient, name: str) -> Status:
        """(UIDVALIDITY, UIDNEXT-1, MESSAGES), or None when the server left one out."""
        status = client.folder_status(name, list(STATUS_ITEMS))
        if not all(key in status for key in STATUS_ITEMS):
            return None
        return (int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"]) - 1,
                int(status[b"MESSAGES"]))

    def _sync_folder(self, client: imapclient.IMAPClient, folder: Folder, out: FolderResult,
                     backoff: Backoff, status: Status = None) -> None:
        # STATUS first (``status`` when it was asked already): the server answers it from
        # its index, while EXAMINE also counts \Recent and finds the first unseen message.
        # Only a folder with something to fetch is then examined, and the fetch goes by what
        # EXAMINE says.
        if status is None:
            status = self._status(client, folder.name)
        if status is not None:
            uidvalidity, top, exists = status
            if self._settled(folder, uidvalidity, top, exists, out, examined=False):
                return
        info = client.select_folder(folder.name, readonly=True)
        if b"UIDVALIDITY" not in info:  # RFC 3501 requires it; without it no position is safe
            raise SourceError(f"folder {folder.name!r}: the server sent no UIDVALIDITY")
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = info.get(b"UIDNEXT")
        if uidnext is None:  # RFC 3501 requires it in SELECT; be lenient anyway
            uidnext = client.folder_status(folder.name, [b"UIDNEXT"])[b"UIDNEXT"]
        top = int(uidnext) - 1
        exists = int(info.get(b"EXISTS", 1))
        if self._settled(folder, uidvalidity, top, exists, out, examined=True):
            return
        self._fetch_range(client, folder, uidvalidity, self._start(folder, uidvalidity), top,
                          out, backoff)

    def _start(self, folder: Folder, uidvalidity: int) -> int:
        """The last UID stored under this UIDVALIDITY: 0 for a new or re-validated folder."""
        stored = self.positions.get(folder.name)
        return stored.last_uid if stored is not None and stored.uidvalidity == uidvalidity else 0

    def _settled(self, folder: Folder, uidvalidity: int, top: int, exists: int,
                 out: FolderResult, *, examined: bool) -> bool:
        """True when there is nothing to fetch; then the position is brought up to date.

        An empty folder still moves the position up to UIDNEXT-1, and a new or re-validated
        folder gets its row; otherwise nothing is written. A changed UIDVALIDITY is reported
        once: here when nothing is fetched, else after the EXAMINE that the fetch goes by.
        """
        stored = self.positions.get(folder.name)
        last = self._start(folder, uidvalidity)
        nothing = top <= last or exists == 0
        if stored is not None and stored.uidvalidity != uidvalidity and (nothing or examined):
            log.warning("%s/%s: UIDVALIDITY changed (%d -> %d): rescanning; stored messages "
                        "are kept and matched by message key", self.source.name, folder.name,
                        stored.uidvalidity, uidvalidity)
            out.rescanned = True
        if not nothing:
            return False
        settled = Position(uidvalidity, max(last, top) if exists == 0 else last)
        if stored != settled:
            self._commit(folder, uidvalidity, Batch(last_uid=settled.last_uid), out)
        return True

    def _fetch_range(self, client: imapclient.IMAPClient, folder: Folder, uidvalidity: int,
                     last: int, top: int, out: FolderResult, backoff: Backoff) -> None:
        from ingest.imap_fetch import FetchPipeline
        from ingest.imap_parse import FETCH_ITEMS, GMAIL_ITEMS, location, next_span, uid_window

        opts = self.options
        items = [*FETCH_ITEMS, *(GMAIL_ITEMS if self.gmail else ())]
        pipeline = FetchPipeline.on(client, items)
        self._start_writer(top - last)
        # Windows planned in order: (lo, hi, the command in flight, or None for a UID skipped
        # as poison). The next ones are sent before the current one is read.
        planned: deque[tuple[int, int, Window | None]] = deque()
        span = opts.chunk_uids
        batch = Batch(last_uid=last)
        label = f"{self.source.name}/{folder.name}"
        next_lo = last + 1
        batch_messages = opts.batch_messages if self.writer is None else \
            min(opts.batch_messages, opts.child_batch_messages)
        tail_after = top - batch_messages if self.writer is not None and \
            self.folders and folder == self.folders[-1] else top
        with progress.track(label, top - last, unit="UIDs") as advance:
            while planned or next_lo <= top:
                # After a lost connection, one window at a time until past the place it
                # failed, so the narrowing below finds the culprit as it did unpipelined.
                careful_until = self.careful_until.get(folder.name, 0)
                depth = 1 if next_lo <= careful_until else max(1, opts.pipeline_depth)
                while len(planned) < depth and next_lo <= top:
                    failures = self.failures.get((folder.name, next_lo), 0)
                    if failures >= POISON_FAILURES:
                        planned.append((next_lo, next_lo, None))
                        next_lo += 1
                        continue
                    lo, hi = uid_window(next_lo, top, careful_span(span, failures))
                    planned.append((lo, hi, pipeline.send(lo, hi)))
                    next_lo = hi + 1
                lo, hi, window = planned.popleft()
                if window is None:
                    # The same single UID broke the connection every time: skip it, loudly.
                    batch.quarantined.append(Quarantined(
                        location(folder.name, uidvalidity, lo),
                        "the server fails every time it reads this message (connection lost); "
                        "skipped"))
                    found = 1
                else:
                    try:
                        response = pipeline.read().response()
                        found = self._take_window(client, pipeline, folder, uidvalidity, lo, hi,
                                                  last, response, batch, top - hi)
                    except (OSError, imaplib.IMAP4.abort, Transient):
                        failures = self.failures.get((folder.name, lo), 0)
                        self.failures[(folder.name, lo)] = failures + 1
                        self.careful_until[folder.name] = max(
                            hi, self.careful_until.get(folder.name, 0))
                        raise
                batch.last_uid = hi
                advance(hi - lo + 1, found)
                # Until past a window that failed, every window is committed on its own, so
                # the narrowing above keeps what it has already fetched.
                careful = hi <= self.careful_until.get(folder.name, 0)
                limit = batch_messages if hi <= tail_after else \
                    max(1, batch_messages // TAIL_SPLIT)
                if careful or len(batch) >= limit or hi == top or \
                        time.monotonic() - batch.started >= opts.batch_seconds:
                    self._commit(folder, uidvalidity, batch, out)
                    backoff.reset()
                    batch = Batch(last_uid=hi)
                span = next_span(hi - lo + 1, found, opts.chunk_uids,
                                 max(MAX_WINDOW, opts.chunk_uids))

    def _take_window(self, client: imapclient.IMAPClient, pipeline: FetchPipeline,
                     folder: Folder, uidvalidity: int, lo: int, hi: int, last: int,
                     response: dict[int, dict[bytes, Any]], batch: Batch, left: int) -> int:
        """Parse one window's FETCH answer into ``batch``; returns how many messages it held.

        Some messages are left to the child writer to parse, except in a folder's last batch
        (``left``: UIDs after this window): what the writer still has to do once the fetching
        is over is time nothing else overlaps.
        """
        from ingest.headers import might_be_dsn
        from ingest.imap_parse import header_literal, location, mine_from_sent, parse_item

        me = frozenset(self.me)
        found = 0
        dsn_uids: dict[int, MessageRecord] = {}
        share = self.options.writer_parse_share if self.writer is not None and \
            not self.gmail and left >= self.options.batch_messages else 0.0
        for uid in sorted(response):
            if not isinstance(uid, int) or uid <= last or uid < lo or uid > hi:
                continue  # "n:*" returns the last message even below n (R-IMAP-2)
            item = response[uid]
            if share:
                self._share += share
                if self._share >= 1.0:
                    header = header_literal(item)
                    if header is not None and not might_be_dsn(header):
                        self._share -= 1.0
                        batch.leave(uid, header, item)
                        found += 1
                        continue
            parsed = parse_item(uid, item, folder=folder, uidvalidity=uidvalidity,
                                me=me, keep_subject=self.cfg.store_subjects, gmail=self.gmail)
            if parsed is None:
                continue
            found += 1
            if isinstance(parsed, Quarantined):
                batch.quarantined.append(parsed)
                continue
            batch.add(location(folder.name, uidvalidity, uid), parsed)
            address = mine_from_sent(parsed, folder, self.gmail, self.me)
            if address is not None:
                batch.sent_from.add(address)
            if parsed.is_dsn:
                dsn_uids[uid] = parsed
        if dsn_uids:
            pipeline.drain()  # the connection must be free for the bounce lookups
            batch.bounces.extend(self._bounces(client, dsn_uids))
        return found

    def _bounces(self, client: imapclient.IMAPClient,
                 records: Mapping[int, MessageRecord]) -> Iterator[Bounce]:
        """For delivery status notifications only: BODYSTRUCTURE, then just the report part."""
        from ingest import dsn
        from ingest.imap_parse import DSN_PART_LIMIT, decode_part, find_dsn_part, part_key

        by_section: dict[tuple[str, str], list[int]] = {}
        for some in chunks(sorted(records), BOUNCE_UIDS):
            for uid, item in client.fetch(some, ["BODYSTRUCTURE"]).items():
                bs = item.get(b"BODYSTRUCTURE")
                found = find_dsn_part(bs) if bs is not None and uid in records else None
                if found is not None:
                    by_section.setdefault(found, []).append(uid)
        for (section, encoding), uids in by_section.items():
            for some in chunks(uids, BOUNCE_UIDS):
                parts = client.fetch(some, [f"BODY.PEEK[{section}]<0.{DSN_PART_LIMIT}>"])
                for uid, item in parts.items():
                    data = part_key(item, section)
                    if uid not in records or data is None:
                        continue
                    rec = records[uid]
                    for r in dsn.parse_delivery_status(decode_part(data, encoding)):
                        yield Bounce(rec.message_key, r.recipient, r.action, r.status,
                                     r.reported_at or rec.date, r.arrival_at)

    def _commit(self, folder: Folder, uidvalidity: int, batch: Batch, out: FolderResult) -> None:
        """Messages, my sent-folder addresses, bounces and the new position: one transaction,
        here or in the child writer; the bookkeeping below runs once it is durable."""
        from ingest.imap_commit import CommitJob, Unparsed, commit_job
        from ingest.store import message_rows

        unparsed = Unparsed(folder, uidvalidity, frozenset(self.me), self.cfg.store_subjects,
                            tuple(batch.unparsed)) if batch.unparsed else None
        job = CommitJob(self.source.name, folder.name, Position(uidvalidity, batch.last_uid),
                        message_rows(batch.records, batch.seqs), tuple(batch.quarantined),
                        tuple(batch.bounces), frozenset(batch.sent_from), unparsed)

        def done(job: CommitJob, committed: Committed) -> None:
            self.positions[job.folder] = job.position
            self.me |= job.sent_from | committed.sent_from
            out.result.add(committed.result)
            out.bounces += committed.bounces
            log.debug("%s/%s: stored up to UID %d (%d new, %d parsed by the writer)",
                      job.source, job.folder, job.position.last_uid, committed.result.new,
                      len(job.unparsed.items) if job.unparsed else 0)
            if self.options.on_commit is not None:
                self.options.on_commit(job.folder, job.position.last_uid)

        if self.writer is not None:
            self.writer.submit(job, done)
        else:
            done(job, commit_job(self.cfg.database, job))

    def _start_writer(self, to_fetch: int) -> None:
        """A child writer for a large sync (see ingest/imap_commit.py); never in the daemon."""
        if self.writer is None and to_fetch >= self.options.child_writer_uids and \
                not db.has_write_gate():
            from ingest.imap_commit import ChildWriter

            self.writer = ChildWriter(self.cfg.database)

    def _flush(self) -> None:
        """Before anything reads positions or opens the file here: every job committed."""
        if self.writer is not None:
            self.writer.flush()


def log_in_ahead(source: Source) -> Session:
    """The account's session, already logging in (``Session.open_ahead``)."""
    return Session(source, Account.from_source(source)).open_ahead()


def sync_imap(cfg: Config, source: Source, me: frozenset[str],
              options: Options | None = None, *,
              positions: dict[str, Position] | None = None,
              session: Session | None = None) -> str:
    """Sync one [[imap]] account; returns the one-line summary, raises SourceError on failure.

    ``me`` are the addresses known as mine; the account login (when it is an address) and the
    From of messages in the \\Sent folder are added to them and to the database. ``positions``
    are the account's stored ones when the caller read them in its own opening of the file;
    ``session`` one from ``log_in_ahead``.
    """
    return AccountSync(cfg, source, me, options or Options(), session).run(positions)
