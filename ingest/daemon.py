"""`netaudit daemon`: keep the database current until stopped (a systemd Type=notify service).

Start: load the config, migrate the database, tell the service manager READY=1 (R-SYS-1:
after migrations, not after the first sync, which can take minutes on a new mailbox and
would trip the start timeout), then every source syncs once and stays current:

* IMAP: an IDLE connection per account (ingest/idle.py) wakes an INBOX sync on new mail;
  every folder is checked on a timer (``Timing.folders``).
* Maildir, mbox, .ics files and vdirs: watched with inotify (ingest/watch.py), debounced,
  and rescanned on a timer in case an event was missed or watching is impossible.
* Calendar feeds: fetched every max(poll_minutes, 15) minutes.
* People are regrouped shortly after new data (``_refresh_people`` of the CLI).

Writes: every one goes through ``netaudit.db.writer``, which the daemon routes through its
WriteGate (ingest/writegate.py): one writer at a time in this process, waiting visibly for
readers in other processes, never crashing on a busy file.

Lifecycle: the main thread only waits for signals and keeps the watchdog fed, and feeds it
only while every worker is alive and making progress, so a hung worker is restarted by
systemd rather than hidden (R-SYS-1). SIGTERM/SIGINT: stop taking work, let a batch being
committed finish (the next one is refused and rolled back), send DONE and LOGOUT, exit 0
within SHUTDOWN_GRACE. SIGHUP: load the config again; a bad one is logged in one line and
the running config is kept.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable

from ingest import local
from ingest.idle import IdleWatcher
from ingest.watch import Watcher
from ingest.workers import (
    Context,
    ImapWorker,
    PeopleWorker,
    SourceWorker,
    Timing,
    Worker,
    worker_for,
)
from ingest.writegate import Stopping, WriteGate
from netaudit import db
from netaudit.config import Config
from netaudit.errors import DatabaseBusy, NetauditError
from netaudit.sdnotify import Notifier

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 8.0  # seconds to finish up after SIGTERM (TimeoutStopSec=15 in the unit)
RELOAD_GRACE = 30.0  # a reload may wait longer for the old workers: nothing is stopping
STALL_LIMIT = 900.0  # a job with no database write for this long counts as hung
IDLE_STALL_LIMIT = 300.0  # an IDLE thread wakes every second; minutes of silence is a hang
TICK = 30.0  # the main loop's longest sleep without a watchdog
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Fleet:
    """The threads serving one configuration; replaced as a whole on reload."""

    def __init__(self, cfg: Config, timing: Timing, me: frozenset[str],
                 refresh: Callable[[Config], None], on_activity: Callable[[], None]) -> None:
        self.cfg = cfg
        self.ctx = Context(cfg, timing, me, on_activity=on_activity,
                           on_change=lambda: self.people.mark())
        self.people = PeopleWorker(self.ctx, refresh)
        self.sources: list[SourceWorker] = [worker_for(self.ctx, s) for s in cfg.sources]
        self.idlers: list[IdleWatcher] = []
        self.watcher = Watcher()
        self.watched: list[str] = []
        self.no_idle: set[str] = set()

    @property
    def workers(self) -> list[Worker]:
        return [*self.sources, self.people]

    def start(self) -> None:
        if self._has_paths():
            self.watcher.start()
        for worker in self.sources:
            if worker.start_watching(self.watcher.add):
                self.watched.append(worker.name)
            worker.request("full")
            worker.start()
            if isinstance(worker, ImapWorker):
                self._start_idle(worker)
        # People are regrouped once per start too: a stop may have dropped a pending regroup.
        self.people.request("refresh", 10.0)
        self.people.start()

    def _has_paths(self) -> bool:
        return any(s.kind in ("maildir", "mbox") or (s.kind == "calendar" and s["path"])
                   for s in self.cfg.sources)

    def _start_idle(self, worker: ImapWorker) -> None:
        def no_idle(name: str = worker.name) -> None:
            self.no_idle.add(name)

        idler = IdleWatcher(worker.source, self.ctx.stop, on_new_mail=worker.new_mail,
                            on_reconnect=worker.new_mail, on_no_idle=no_idle,
                            on_state=self.ctx.on_activity)
        self.idlers.append(idler)
        idler.start()

    def stop(self, deadline: float) -> list[str]:
        """Stop every thread; returns the names of those still running at ``deadline``."""
        self.ctx.stop.set()
        for worker in self.workers:
            worker.wake()
        self.watcher.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        threads: list[threading.Thread] = [*self.idlers, *self.workers]
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    def problem(self) -> str | None:
        """Why the watchdog should not be fed: a hung worker or IDLE thread (None when all
        are well). A stall limit far above any socket timeout keeps slow work from counting."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.busy_since is not None and \
                    now - max(worker.busy_since, worker.last_progress) > STALL_LIMIT:
                return (f"{worker.name} has made no progress for "
                        f"{now - worker.last_progress:.0f} s")
        for idler in self.idlers:
            if idler.is_alive() and now - idler.last_beat > IDLE_STALL_LIMIT:
                return f"the IDLE connection of {idler.source.name} is stuck"
        return None

    def dead_worker(self) -> str | None:
        for worker in self.workers:
            if not worker.is_alive():
                return worker.name
        return None

    def activities(self) -> list[str]:
        return [w.activity for w in self.workers if w.activity]

    def summary(self) -> str:
        parts = [f"{len(self.sources)} source{'' if len(self.sources) == 1 else 's'}"]
        idle = [i.source.name for i in self.idlers if i.connected]
        if idle:
            parts.append(f"IDLE on {', '.join(idle)}")
        if self.no_idle:
            parts.append(f"polling {', '.join(sorted(self.no_idle))} (no IDLE)")
        if self.watched:
            parts.append(f"watching {', '.join(self.watched)}")
        return "; ".join(parts)


class Daemon:
    """Signals, readiness, the watchdog, reloads; the work itself is the Fleet's."""

    def __init__(self, load: Callable[[], Config], refresh: Callable[[Config], None],
                 timing: Timing | None = None, notifier: Notifier | None = None) -> None:
        self.load = load
        self.refresh = refresh
        self.timing = timing or Timing()
        self.notifier = notifier or Notifier.from_env()
        self.stop = threading.Event()
        self._signals: tuple[socket.socket, socket.socket] | None = None  # receive, send
        self._previous_wakeup = -1
        self._reload = False
        self._db_wait: str | None = None
        self._problem: str | None = None
        self.fleet: Fleet | None = None

    # -- signals -----------------------------------------------------------------------------

    # Signals arrive as bytes on a socket (signal.set_wakeup_fd), which the main thread waits
    # on; the Python-level handlers do nothing. A handler that sets a threading.Event can
    # hang the main thread for good: it runs between two bytecodes of that thread, which may
    # be holding the very lock Event.set takes (it is not reentrant). And a signal the kernel
    # hands to another thread does not interrupt the main thread's wait on a lock, so it
    # was seen only when that wait ran out (up to TICK).

    def _install_signals(self) -> None:
        receive, send = socket.socketpair()
        receive.setblocking(False)
        send.setblocking(False)
        self._signals = receive, send
        self._previous_wakeup = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        for signum in SIGNALS:
            signal.signal(signum, lambda signum, frame: None)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum in SIGNALS:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                          else signal.SIG_DFL)
        if self._signals is not None:
            for end in self._signals:
                end.close()
            self._signals = None

    def _wait(self, seconds: float) -> None:
        """Sleep until a signal or ``seconds``; SIGTERM/SIGINT set ``stop``, SIGHUP asks for a
        reload."""
        assert self._signals is not None
        receive = self._signals[0]
        ready, _, _ = select.select([receive], [], [], seconds)
        if not ready:
            return
        try:
            received = receive.recv(256)
        except BlockingIOError:
            return
        for signum in received:
            if signum == signal.SIGHUP:
                self._reload = True
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.stop.set()

    def _stopping(self) -> bool:
        """For the write gate: unwind when the daemon stops, or when the calling thread
        belongs to workers being replaced."""
        if self.stop.is_set():
            return True
        event = getattr(threading.current_thread(), "stop_event", None)
        return isinstance(event, threading.Event) and event.is_set()

    # -- status ------------------------------------------------------------------------------

    def _on_db_wait(self, text: str | None) -> None:
        self._db_wait = text
        self.update_status()

    def _on_write(self) -> None:
        thread = threading.current_thread()
        if isinstance(thread, Worker):
            thread.last_progress = time.monotonic()

    def update_status(self) -> None:
        """STATUS= for `systemctl --user status netaudit`: what the daemon is doing now."""
        if self.stop.is_set():
            return
        if self._db_wait:
            text = f"waiting for reader: {self._db_wait}"
        elif self.fleet is None:
            text = "starting"
        else:
            busy = self.fleet.activities()
            text = ", ".join(busy) if busy else f"idle: {self.fleet.summary()}"
        self.notifier.status(text)

    # -- the main loop -----------------------------------------------------------------------

    def run(self, cfg: Config) -> int:
        self._install_signals()
        try:
            # imapclient logs every LOGOUT at INFO: noise in a daemon's journal
            logging.getLogger("imapclient").setLevel(logging.WARNING)
            with WriteGate(self._stopping, on_wait=self._on_db_wait, on_write=self._on_write):
                me = self._prepare(cfg)
                if me is None:
                    return self._exit(0)
                self.notifier.ready("starting the sources")
                self._start(cfg, me)
                assert self.fleet is not None
                log.info("netaudit daemon started (%s; folders every %.0f s, files rescanned "
                         "every %.0f s)", self.fleet.summary(), self.timing.folders,
                         self.timing.rescan)
                code = self._loop()
                return self._exit(code)
        finally:
            self._restore_signals()

    def _prepare(self, cfg: Config) -> frozenset[str] | None:
        """Create or migrate the database and remember my addresses; waits out readers.
        None when asked to stop meanwhile."""
        self.notifier.status(f"opening {cfg.database}")
        while True:
            self._wait(0)  # a SIGTERM during a reload is seen here, not after it
            if self.stop.is_set():
                return None
            try:
                with db.writer(cfg.database):
                    pass
                return local.prepare_me(cfg.database, cfg.me, ())
            except Stopping:
                return None
            except DatabaseBusy as exc:
                log.warning("%s; trying again", exc)
                self._wait(5.0)

    def _start(self, cfg: Config, me: frozenset[str]) -> None:
        self.fleet = Fleet(cfg, self.timing, me, self.refresh, self.update_status)
        if not cfg.sources:
            log.warning("no sources configured; add [[imap]], [[maildir]], [[mbox]] or "
                        "[[calendar]] tables to %s and reload (SIGHUP)",
                        cfg.path or "the config")
        self.fleet.start()

    def _loop(self) -> int:
        interval = min(self.notifier.watchdog / 2, TICK) if self.notifier.watchdog else TICK
        while True:
            if not self._reload:  # one that came during the last reload is not kept waiting
                self._wait(interval)
            if self.stop.is_set():
                return 0
            if self._reload:
                self._reload = False
                self._reload_config()
            if self.stop.is_set() or self.fleet is None:
                return 0
            dead = self.fleet.dead_worker()
            if dead is not None:
                log.error("worker %s stopped unexpectedly; exiting so that the service "
                          "manager restarts netaudit", dead)
                self.stop.set()
                return 1
            problem = self.fleet.problem()
            if problem is None:
                self.notifier.ping()
                if self._problem is not None:
                    log.info("healthy again")
            elif problem != self._problem:
                log.error("%s; no longer feeding the watchdog, so that systemd restarts "
                          "netaudit", problem)
            self._problem = problem
            self.update_status()

    def _reload_config(self) -> None:
        self.notifier.reloading()
        self.notifier.status("reloading config")
        try:
            cfg = self.load()
        except NetauditError as exc:
            log.error("config reload failed, keeping the running config: %s",
                      " ".join(str(exc).split()))
            self.notifier.ready()
            self.update_status()
            return
        assert self.fleet is not None
        log.info("reloading: %d sources", len(cfg.sources))
        left = self.fleet.stop(time.monotonic() + RELOAD_GRACE)
        if left:
            log.warning("still finishing after %.0f s: %s (they stop at their next write)",
                        RELOAD_GRACE, ", ".join(left))
        self.fleet = None
        me = self._prepare(cfg)
        if me is None:
            return
        self._start(cfg, me)
        self.notifier.ready()
        self.update_status()

    def _exit(self, code: int) -> int:
        """Stop everything within SHUTDOWN_GRACE; exit 0 unless a worker died."""
        self.stop.set()
        self.notifier.stopping()
        self.notifier.status("stopping")
        if self.fleet is None:
            return code
        left = self.fleet.stop(time.monotonic() + SHUTDOWN_GRACE)
        if left:
            # A thread stuck in a network read: its uncommitted batch is rolled back by
            # leaving (DuckDB never saw a COMMIT), and the source still has the data.
            log.warning("exiting without waiting for %s", ", ".join(left))
            logging.shutdown()
            os._exit(code)
        log.info("stopped")
        return code


def run(cfg: Config, load: Callable[[], Config], refresh: Callable[[Config], None], *,
        folders_seconds: float = Timing.folders,
        rescan_seconds: float = Timing.rescan) -> int:
    """The `netaudit daemon` command: runs until SIGTERM; the exit code."""
    timing = Timing(folders=folders_seconds, rescan=rescan_seconds)
    return Daemon(load, refresh, timing).run(cfg)

