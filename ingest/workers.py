"""The daemon's workers: one thread per source, plus one that regroups people.

A worker runs its jobs one at a time, so a source never syncs twice at once (its positions
stay consistent), while different sources overlap: an IDLE-triggered INBOX sync does not
wait for a calendar feed being parsed. Their database writes are serialized by the daemon's
WriteGate. Jobs are named ("full", "inbox", "paths", "refresh") and requested with a due
time; a request for a job that is already due sooner changes nothing, which is also how file
events are debounced (due one second after the first event of a burst).

A job that fails is logged and recorded for `netaudit status`; the worker goes on. When the
database stays busy (a reader kept it past the write gate's patience) the same job is asked
for again after a backoff: nothing was written, so nothing is lost, only delayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ingest import calendars, local, mailfiles
from ingest.imap import DAEMON_BATCH_MESSAGES, AccountSync, Options, Session
from ingest.imap_connect import Account, Transient
from ingest.local import changed_maildir_files as changed_maildir_files  # moved there
from ingest.local import read_maildir_files
from ingest.sources import os_error_text
from ingest.store import BatchResult, Quarantined, record_source
from ingest.writegate import Stopping
from netaudit import db
from netaudit.config import Config, Source
from netaudit.errors import DatabaseBusy, NetauditError, SourceError

log = logging.getLogger(__name__)

FEED_POLICY = calendars.FeedPolicy(attempts=2, max_wait=10.0)  # the next poll retries anyway
BUSY_DELAYS = (5.0, 10.0, 20.0, 40.0, 60.0)  # retrying a job after the database stayed busy
MAX_PENDING_PATHS = 20_000  # more changed files than this: one delta scan instead


@dataclass(frozen=True)
class Timing:
    """How often things happen; the CLI exposes the first two."""

    folders: float = 300.0  # every IMAP folder is checked (INBOX also on IDLE)
    rescan: float = 600.0  # local paths are rescanned in full, in case an event was missed
    debounce: float = 1.0  # file events: a burst is handled this long after it starts
    people: float = 30.0  # regrouping people waits this long after new data (it reads all)


class Context:
    """What the workers of one configuration share."""

    def __init__(self, cfg: Config, timing: Timing, me: frozenset[str], *,
                 on_activity: Callable[[], None], on_change: Callable[[], None]) -> None:
        self.cfg = cfg
        self.timing = timing
        self.stop = threading.Event()  # set when these workers are stopped (exit or reload)
        self.on_activity = on_activity
        self.on_change = on_change
        self._me = me
        self._lock = threading.Lock()

    @property
    def me(self) -> frozenset[str]:
        with self._lock:
            return self._me

    def add_me(self, addresses: Iterable[str]) -> None:
        """Logins and \\Sent senders an IMAP sync found, for the other sources' directions."""
        with self._lock:
            self._me = self._me | frozenset(addresses)


class Worker(threading.Thread):
    """Runs requested jobs in order of their due times until its context is stopped."""

    def __init__(self, ctx: Context, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.ctx = ctx
        self.stop_event = ctx.stop  # the write gate looks for this on the current thread
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._busy_failures = 0
        self.busy_since: float | None = None
        self.last_progress = time.monotonic()
        self.activity: str | None = None

    # -- scheduling --------------------------------------------------------------------------

    def request(self, job: str, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            if job not in self._due or due < self._due[job]:
                self._due[job] = due
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _next_job(self) -> str | None:
        with self._cond:
            while not self.ctx.stop.is_set():
                now = time.monotonic()
                ready = [(due, job) for job, due in self._due.items() if due <= now]
                if ready:
                    job = min(ready)[1]
                    del self._due[job]
                    return job
                timeout = min(self._due.values()) - now if self._due else None
                self._cond.wait(timeout)
        return None

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        while (job := self._next_job()) is not None:
            self._run(job)

    def _run(self, job: str) -> None:
        self.busy_since = self.last_progress = time.monotonic()
        self.activity = self.describe(job)
        self.ctx.on_activity()
        try:
            changed, summary = self.do(job)
        except Stopping:
            return
        except DatabaseBusy as exc:
            delay = BUSY_DELAYS[min(self._busy_failures, len(BUSY_DELAYS) - 1)]
            self._busy_failures += 1
            log.warning("%s: %s; trying again in %.0f s (nothing was lost)", self.name, exc,
                        delay)
            self.request(job, delay)
        except (NetauditError, OSError) as exc:
            message = str(exc) if isinstance(exc, NetauditError) else os_error_text(exc)
            log.warning("%s: failed: %s", self.name, message)
            self.record(error=message)
        except Exception as exc:  # a bug: keep the daemon and the other sources going
            log.exception("%s: unexpected error (please report this)", self.name)
            self.record(error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._busy_failures = 0
            if changed:
                log.info("%s: %s", self.name, summary)
                self.ctx.on_change()
            elif summary:
                log.debug("%s: %s", self.name, summary)
            if summary and (changed or job == "full"):
                self.record(summary=summary)
        finally:
            self.busy_since = None
            self.activity = None
            if not self.ctx.stop.is_set():
                self.after(job)
            self.ctx.on_activity()

    def describe(self, job: str) -> str:
        """What the worker is doing, for the STATUS= line."""
        return f"syncing {self.name}"

    def do(self, job: str) -> tuple[bool, str | None]:
        """Run one job; (whether new data was stored, a one-line summary)."""
        raise NotImplementedError

    def after(self, job: str) -> None:
        """Schedule what follows a job (the next periodic run)."""

    def record(self, *, summary: str | None = None, error: str | None = None) -> None:
        """How the source's last run went, for `netaudit status` (best effort)."""

    def sleep(self, seconds: float) -> None:
        """A wait that ends early, by unwinding, when the workers are stopped."""
        if self.ctx.stop.wait(seconds):
            raise Stopping


class SourceWorker(Worker):
    """A worker for one configured source."""

    def __init__(self, ctx: Context, source: Source) -> None:
        super().__init__(ctx, source.name)
        self.source = source

    def record(self, *, summary: str | None = None, error: str | None = None) -> None:
        try:
            with db.writer(self.ctx.cfg.database) as con:
                record_source(con, self.source.name, self.source.kind, summary=summary,
                              error=error)
        except (DatabaseBusy, Stopping):
            pass  # the next run records again

    def start_watching(self, watch: Callable[[str, str, Path, Callable[[list[str], bool], None]],
                                             bool]) -> bool:
        """Register for file events where the source has a path; False when not watched."""
        return False


# ---------------------------------------------------------------------------------------------
# IMAP


class ImapWorker(SourceWorker):
    """Full syncs of every folder on a timer; INBOX syncs when IDLE says there is new mail."""

    def __init__(self, ctx: Context, source: Source) -> None:
        super().__init__(ctx, source)
        self.account = Account.from_source(source)
        self.session = Session(source, self.account)  # kept: the secret is asked for once
        self.idle_folder = "INBOX"

    def new_mail(self, folder: str) -> None:
        """From the IDLE thread: sync that folder now."""
        self.idle_folder = folder
        self.request("inbox")

    def describe(self, job: str) -> str:
        return f"syncing {self.name} ({self.idle_folder})" if job == "inbox" else \
            f"syncing {self.name}"

    def do(self, job: str) -> tuple[bool, str | None]:
        source = self.source
        if job == "inbox":
            source = Source(source.kind, source.name,
                            {**source.settings, "folders": [self.idle_folder]})
        sync = AccountSync(self.ctx.cfg, source, self.ctx.me,
                           Options(on_commit=lambda folder, uid: self._committed(sync),
                                   sleep=self.sleep, batch_messages=DAEMON_BATCH_MESSAGES))
        sync.session = self.session
        try:
            summary = sync.run()
        except SourceError as exc:
            if not isinstance(exc, Transient):
                self.session = Session(self.source, self.account)  # e.g. a changed password
            raise
        self.ctx.add_me(sync.me)
        stored = sum(r.result.new + r.result.quarantined for r in sync.results.values())
        return stored > 0, summary

    def _committed(self, sync: AccountSync) -> None:
        """After each committed batch: progress for the watchdog; on stop, LOGOUT and unwind
        (the batch just committed is kept, the rest is fetched next time)."""
        self.last_progress = time.monotonic()
        if self.ctx.stop.is_set():
            sync.session.close()
            raise Stopping

    def after(self, job: str) -> None:
        if job == "full":
            self.request("full", self.ctx.timing.folders)


# ---------------------------------------------------------------------------------------------
# Maildir and mbox


class LocalWorker(SourceWorker):
    """[[maildir]] and [[mbox]]: only what changed since the last read, which is kept in the
    database (``local.sync_maildir``, ``mailfiles.read_mbox``): after a restart too."""

    def __init__(self, ctx: Context, source: Source) -> None:
        super().__init__(ctx, source)
        self.path = Path(source["path"])
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._scan_mark: int | None = None  # time.time_ns() before the last scan (None:
        # the one stored)
        self._mbox_stamp: tuple[int, int, int] | None = None
        self._unreadable: set[str] = set()  # folders the last scan could not list

    def start_watching(self, watch: Callable[[str, str, Path, Callable[[list[str], bool], None]],
                                             bool]) -> bool:
        return watch(self.name, self.source.kind, self.path, self.on_change)

    def on_change(self, paths: list[str], deleted: bool) -> None:
        """From the watcher thread. Deleted mail stays stored (it still happened)."""
        if self.source.kind == "mbox":
            self.request("full", self.ctx.timing.debounce)
            return
        if deleted:
            return
        with self._pending_lock:
            if len(self._pending) < MAX_PENDING_PATHS:
                self._pending.update(paths)
                job = "paths"
            else:
                job = "full"
        self.request(job, self.ctx.timing.debounce)

    def describe(self, job: str) -> str:
        return f"syncing {self.name} (new files)" if job == "paths" else f"syncing {self.name}"

    def _check_path(self) -> None:
        local.check_source_path(self.source.kind, self.path)

    def do(self, job: str) -> tuple[bool, str | None]:
        self._check_path()
        if self.source.kind == "mbox":
            return self._mbox()
        if job == "paths":
            with self._pending_lock:
                paths, self._pending = sorted(self._pending), set()
            try:
                return self._ingest(Path(p) for p in paths)
            except BaseException:
                with self._pending_lock:  # a retry (or the next rescan) takes them again
                    self._pending.update(paths)
                raise
        scan = local.sync_maildir(self.ctx.cfg.database, self.name, self.path,
                                  me=self.ctx.me, keep_subject=self.ctx.cfg.store_subjects,
                                  since_ns=self._scan_mark, unreadable=self._unreadable)
        self._scan_mark = scan.started_ns
        self._unreadable = scan.unreadable
        mail = scan.mail
        return mail.new + mail.quarantined > 0, _mail_summary(mail)

    def _import_all(self) -> tuple[bool, str]:
        result = local.import_paths(self.ctx.cfg.database, self.name, [self.path],
                                    me=self.ctx.me, keep_subject=self.ctx.cfg.store_subjects)
        mail = result.mail
        said = result.marks.summary() if result.marks is not None else ""
        return mail.new + mail.quarantined > 0, _mail_summary(mail) + (f"; {said}"
                                                                       if said else "")

    def _ingest(self, paths: Iterable[Path]) -> tuple[bool, str]:
        return self._store(read_maildir_files(paths))

    def _store(self, items: Iterable[mailfiles.RawMessage | Quarantined]) -> tuple[bool, str]:
        mail = local.ingest_messages(self.ctx.cfg.database, self.name, items,
                                     me=self.ctx.me, keep_subject=self.ctx.cfg.store_subjects)
        return mail.new + mail.quarantined > 0, _mail_summary(mail)

    def _mbox(self) -> tuple[bool, str | None]:
        """Read what was appended to the mbox when its size, mtime or inode changed (all of
        it when it was rewritten; the anti-join keeps what is stored from doubling)."""
        st = self.path.stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp == self._mbox_stamp:
            return False, None
        changed, summary = self._import_all()
        self._mbox_stamp = stamp
        return changed, summary

    def after(self, job: str) -> None:
        if job == "full":
            self.request("full", self.ctx.timing.rescan)


def _mail_summary(mail: BatchResult) -> str:
    return (f"{mail.seen:,} messages: {mail.new:,} new, {mail.duplicates:,} already stored, "
            f"{mail.quarantined:,} quarantined")


# ---------------------------------------------------------------------------------------------
# Calendars


class CalendarWorker(SourceWorker):
    """A feed polled every max(poll_minutes, 15) minutes, or a .ics file or vdir watched."""

    def __init__(self, ctx: Context, source: Source) -> None:
        super().__init__(ctx, source)
        self.path = Path(source["path"]) if source["path"] else None

    def start_watching(self, watch: Callable[[str, str, Path, Callable[[list[str], bool], None]],
                                             bool]) -> bool:
        if self.path is None:
            return False
        return watch(self.name, "calendar", self.path, self.on_change)

    def on_change(self, paths: list[str], deleted: bool) -> None:
        self.request("full", self.ctx.timing.debounce)

    def do(self, job: str) -> tuple[bool, str | None]:
        cfg = self.ctx.cfg
        if self.path is None:
            result = calendars.sync_feed(cfg.database, cfg, self.name, self.source["url"],
                                         self.ctx.me, FEED_POLICY)
        else:
            if not self.path.exists():
                raise SourceError(f"{self.path} does not exist")
            result = calendars.sync_files(cfg.database, cfg, self.name, self.path, self.ctx.me)
        return result.files + result.removed > 0, result.summary()

    def after(self, job: str) -> None:
        if self.path is None:
            minutes = max(int(self.source["poll_minutes"] or 15), 15)
            self.request("full", minutes * 60.0)
        else:
            self.request("full", self.ctx.timing.rescan)


# ---------------------------------------------------------------------------------------------
# People


class PeopleWorker(Worker):
    """Regroups addresses into people after new data, at most once per burst of changes."""

    def __init__(self, ctx: Context, refresh: Callable[[Config], None]) -> None:
        super().__init__(ctx, "people")
        self._refresh = refresh

    def mark(self) -> None:
        self.request("refresh", self.ctx.timing.people)

    def describe(self, job: str) -> str:
        return "regrouping people"

    def do(self, job: str) -> tuple[bool, str | None]:
        self._refresh(self.ctx.cfg)
        return False, "people regrouped"


def worker_for(ctx: Context, source: Source) -> SourceWorker:
    if source.kind == "imap":
        return ImapWorker(ctx, source)
    if source.kind in ("maildir", "mbox"):
        return LocalWorker(ctx, source)
    if source.kind == "calendar":
        return CalendarWorker(ctx, source)
    raise SourceError(f"{source.kind} sources are not supported by the daemon")
