"""The daemon's one door to the database: one writer at a time, patient with readers.

The ingest code opens ``netaudit.db.writer`` for each batch it commits (DESIGN.md, "Readers
never see a lock error"). In the daemon several threads sync at once (an IDLE-triggered
INBOX sync while a calendar feed is parsed), so those opens must be serialized, and a
reader holding the file must be waited for visibly (log, STATUS=) and without blocking
shutdown. The daemon sets this gate with ``netaudit.db.set_write_gate`` for its lifetime, so
every ``db.writer`` call of the process goes through here, which opens the file with
``db.open_writer``.

While waiting, sync positions stay where they are: they only move inside the transaction
that stores the messages, which has not started. When the reader outlasts ``patience`` the
caller gets DatabaseBusy and retries later; when the daemon is stopping it gets Stopping.
Either way nothing is lost: the data is still on the server or on disk.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from netaudit import db
from netaudit.errors import DatabaseBusy

log = logging.getLogger(__name__)

STEP = 1.0  # seconds per attempt inside db.writer; between attempts the stop flag is checked
PATIENCE = 60.0  # how long one write waits for a reader before the job is retried later
REPORT_AFTER = 0.9  # shorter waits (a `netaudit sql` finishing) are not reported


class Stopping(Exception):
    """The daemon is shutting down: unwind the current job without writing."""


class WriteGate:
    """Serializes the process's database writers and reports waits for readers.

    ``stopping()`` says whether the calling thread should unwind instead of writing (the
    daemon is stopping, or the thread belongs to a set of workers being replaced on reload).
    ``on_wait(text)`` is called when a write has waited about a second for another process
    (``text`` names it) and ``on_wait(None)`` when that wait is over; ``on_write()`` after
    each open, so the daemon can tell a busy worker from a hung one.
    """

    def __init__(self, stopping: Callable[[], bool], *, patience: float = PATIENCE,
                 on_wait: Callable[[str | None], None] | None = None,
                 on_write: Callable[[], None] | None = None) -> None:
        self._stopping = stopping
        self._lock = threading.RLock()
        self._installed = False
        self.patience = patience
        self._on_wait = on_wait
        self._on_write = on_write
        self._waiting_since: float | None = None
        self._reported = False
        self.waits = 0  # how many write waits there were (for tests and the status line)

    # -- the writer ------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, path: Path, *, wait: float | None = None,
               on_wait: Callable[[str], None] | None = None) -> Iterator[db.Connection]:
        """Same contract as ``db.writer``; ``wait``/``on_wait`` of callers are superseded by
        the daemon's patience and reporting."""
        with self._lock:
            if self._stopping():
                raise Stopping
            deadline = time.monotonic() + self.patience
            with contextlib.ExitStack() as stack:
                while True:
                    step = max(0.0, min(STEP, deadline - time.monotonic()))
                    try:
                        con = stack.enter_context(
                            db.open_writer(path, wait=step, on_wait=self._report_wait))
                        break
                    except DatabaseBusy:
                        if self._stopping():
                            self._end_wait()
                            raise Stopping from None
                        if time.monotonic() >= deadline:
                            self._end_wait(gave_up=True)
                            raise
                self._end_wait()
                if self._on_write is not None:
                    self._on_write()
                yield con

    def _report_wait(self, text: str) -> None:
        """Called by db.writer at the first failed attempt of each STEP. A reader that is
        gone within REPORT_AFTER (a `netaudit sql` finishing) is not worth a word; a longer
        wait is reported once, in the log and in STATUS=."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
            return
        if self._reported or now - self._waiting_since < REPORT_AFTER:
            return
        self._reported = True
        self.waits += 1
        log.warning("database busy: %s; new data waits meanwhile (nothing is lost)", text)
        if self._on_wait is not None:
            self._on_wait(text)

    def _end_wait(self, gave_up: bool = False) -> None:
        if self._waiting_since is None:
            return
        waited = time.monotonic() - self._waiting_since
        reported, self._reported = self._reported, False
        self._waiting_since = None
        if gave_up:
            log.warning("database still busy after %.0f s; the job is retried later", waited)
        elif reported:
            log.info("database free again after %.1f s; catching up", waited)
        if reported and self._on_wait is not None:
            self._on_wait(None)

    # -- installation ------------------------------------------------------------------------

    def install(self) -> None:
        """Route every ``db.writer`` call in this process through the gate."""
        if not self._installed:
            db.set_write_gate(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            db.set_write_gate(None)
            self._installed = False

    def __enter__(self) -> WriteGate:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
