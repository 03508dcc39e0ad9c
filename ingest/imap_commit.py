"""Committing IMAP batches: messages, my addresses, bounces and the folder's new position in
one transaction, either here or in a child process while this one goes on fetching.

Measured on a 45,000-message first sync, reading and parsing took about as long as DuckDB's
share (staging rows through the appender, the anti-join, the insert, the checkpoint on
close). A thread does not help: the appender holds the GIL while it converts rows. A child
process does, on a second core. A job is plain data (rows from ``store.message_rows``, not
records, which cost five times as much to pickle), and the same ``commit_job`` runs in both
places, so positions, forgotten addresses and "mine" move exactly alike.

The child is used only for large syncs (starting one costs about a quarter of a second of
CPU) and never when the process has a write gate (the daemon): the gate serializes the
threads of one process and cannot see another process's writes. Closing the file costs a
checkpoint (0.04-0.17 s per 10,000 messages written, with netaudit's row groups), so the
child keeps the file open from one job to the next, but never longer than HOLD_SECONDS:
then, or when no job has come by that time, it closes the file, and a reader (which retries
for 10 s) gets its turn. What DuckDB holds in memory for an open file grows with what was
written since it was opened, so the child also closes it after HOLD_MESSAGES, however fast
they come. Jobs run in the order they were submitted, at most ``max_pending`` ahead of the
parent, so memory stays bounded. When the
parent dies the kernel kills the child (PR_SET_PDEATHSIG); a commit cut short is rolled back
by DuckDB and its position never moved, so the next sync fetches that batch again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import queue
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.child import FRAME, HOLD_MESSAGES, HOLD_SECONDS, die_with_parent, read_exactly
from ingest.headers import MessageRecord
from ingest.imap_folders import Folder
from ingest.imap_parse import location, mine_from_sent, parse_message
from ingest.imap_positions import Position, save_position
from ingest.store import (
    BatchResult,
    Bounce,
    Quarantined,
    Rows,
    message_rows,
    remember_me,
    write_rows,
)
from netaudit import db
from netaudit.errors import DatabaseError

log = logging.getLogger(__name__)

MAX_PENDING = 2  # jobs submitted and not yet committed, besides the one being written


UnparsedItem = tuple[int, int, bytes, Any, int | None]  # (seq, uid, header, INTERNALDATE, size)


@dataclass(frozen=True, slots=True)
class Unparsed:
    """Messages of a batch handed over with their headers unread.

    Parsing is most of the fetching process's time; the child writer, on the other core,
    parses some of the messages itself, with ``parse_message`` exactly as the fetching
    process would. Only messages that cannot be bounces come here (``headers.might_be_dsn``):
    a bounce's report is fetched over the connection, before its batch commits.
    """

    folder: Folder
    uidvalidity: int
    me: frozenset[str]
    keep_subject: bool
    items: tuple[UnparsedItem, ...]

    def parse(self) -> tuple[Rows, list[Quarantined], frozenset[str]]:
        """(rows, quarantined, the From addresses that a sent folder makes mine)."""
        records: list[tuple[str, MessageRecord]] = []
        seqs: list[int] = []
        quarantined: list[Quarantined] = []
        mine: set[str] = set()
        folder, uidvalidity, me = self.folder, self.uidvalidity, self.me
        for seq, uid, header, internal, size in self.items:
            parsed = parse_message(uid, header, internal, size, folder=folder,
                                   uidvalidity=uidvalidity, me=me,
                                   keep_subject=self.keep_subject)
            if isinstance(parsed, Quarantined):
                quarantined.append(parsed)
                continue
            if parsed.is_dsn:  # might_be_dsn and the rule disagree: a bug, not the input's
                log.warning("%s UID %d: a bounce was handed over unparsed; its report is not "
                            "stored", folder.name, uid)
            records.append((location(folder.name, uidvalidity, uid), parsed))
            seqs.append(seq)
            address = mine_from_sent(parsed, folder, False, me)  # never Gmail's (ingest/imap.py)
            if address is not None:
                mine.add(address)
        return message_rows(records, seqs), quarantined, frozenset(mine)


@dataclass(frozen=True, slots=True)
class CommitJob:
    """One batch of one folder, ready for its transaction."""

    source: str
    folder: str
    position: Position
    rows: Rows
    quarantined: tuple[Quarantined, ...] = ()
    bounces: tuple[Bounce, ...] = ()
    sent_from: frozenset[str] = frozenset()
    unparsed: Unparsed | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    result: BatchResult
    bounces: int  # bounce rows the batch added
    sent_from: frozenset[str] = frozenset()  # found in the messages parsed by the writer


def _count_bounces(con: db.Connection) -> int:
    row = con.execute("SELECT count(*) FROM bounces").fetchone()
    return int(row[0]) if row else 0


def commit_job(database: Path, job: CommitJob) -> Committed:
    """The batch's transaction: its messages, its sent-folder addresses, its bounces and the
    folder's position all commit together, or none of them does."""
    prepared = _prepare(job)  # parsed before the file is opened: the window stays short
    with db.writer(database) as con:
        return _commit_on(con, job, *prepared)


_Prepared = tuple[Rows, list[Quarantined], frozenset[str]]


def _prepare(job: CommitJob) -> _Prepared:
    """The job's rows and quarantine entries, with those of its unparsed messages."""
    rows, quarantined, found_mine = job.rows, list(job.quarantined), frozenset[str]()
    if job.unparsed is not None:
        more, more_quarantined, found_mine = job.unparsed.parse()
        rows = Rows(rows.messages + more.messages, rows.participants + more.participants)
        quarantined += more_quarantined
    return rows, quarantined, found_mine


def _commit_on(con: db.Connection, job: CommitJob, rows: Rows, quarantined: list[Quarantined],
               found_mine: frozenset[str]) -> Committed:
    sent_from = job.sent_from | found_mine
    con.execute("BEGIN TRANSACTION")
    try:
        before = _count_bounces(con) if job.bounces else 0
        result = write_rows(con, job.source, rows, quarantined, job.bounces)
        bounces = _count_bounces(con) - before if job.bounces else 0
        if sent_from:
            remember_me(con, sent_from, "sent folder")
        save_position(con, job.source, job.folder, job.position)
        con.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a full disk) has already ended the transaction; its own
        # error is the one to report, not the ROLLBACK's "no transaction is active".
        with contextlib.suppress(db.Error):
            con.execute("ROLLBACK")
        raise
    return Committed(result, bounces, found_mine)


# ---------------------------------------------------------------------------------------------
# The child process: ``child_main(DATABASE, HOLD, HOLD_MESSAGES)`` in a new interpreter, jobs
# in on stdin (each a pickle after its length, so the child can tell whether the next one has
# arrived), results out on stdout, one pickle each. A plain subprocess rather than multiprocessing,
# whose "spawn" imports the parent's __main__ again and so depends on how netaudit was
# started.



def _reportable(exc: BaseException, path: Path) -> Exception:
    """The error as the parent gets it: DuckDB's exceptions do not survive pickling, so a
    DuckDB error becomes the message the CLI would have printed for it in its own process."""
    if isinstance(exc, DatabaseError):
        return exc
    explained = db.explain(exc, path)
    if explained is not None:
        return explained
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class _HeldFile:
    """The child's connection: opened for a job, kept for the next ones until ``hold``
    seconds have passed or ``hold_messages`` are written."""

    def __init__(self, path: Path, hold: float, hold_messages: int = HOLD_MESSAGES) -> None:
        self.path = path
        self.hold = hold
        self.hold_messages = hold_messages
        self._stack: contextlib.ExitStack | None = None
        self._con: db.Connection | None = None
        self._opened = 0.0
        self._written = 0  # messages committed since the file was opened
        self.failed: str | None = None  # why an earlier job failed

    def connection(self) -> db.Connection:
        if self._con is None:
            self._stack = contextlib.ExitStack()
            self._con = self._stack.enter_context(db.writer(self.path))
            self._opened = time.monotonic()
            self._written = 0
        return self._con

    def remaining(self) -> float:
        """Seconds the file may stay open yet (0 when it is closed or has had its share)."""
        if self._con is None or self._written >= self.hold_messages:
            return 0.0
        return max(0.0, self._opened + self.hold - time.monotonic())

    def close(self) -> None:
        """DuckDB checkpoints the batches into the file here; when it cannot (a full disk),
        it keeps them in its WAL and says nothing. Any other failure here fails every
        later job, with the reason."""
        stack, self._stack, self._con = self._stack, None, None
        if stack is None:
            return
        try:
            stack.close()
        except Exception as exc:
            error = _reportable(exc, self.path)
            self.failed = _first_line(error)
            raise error from None

    def commit(self, job: CommitJob) -> Committed:
        # Jobs queued behind a failed one may already be in the pipe; committing them would
        # move the folder's position past the batch that was not stored.
        if self.failed is not None:
            raise DatabaseError(f"not written after an earlier failure: {self.failed}")
        try:
            prepared = _prepare(job)
            committed = _commit_on(self.connection(), job, *prepared)
            self._written += len(prepared[0].messages)
            return committed
        except BaseException as exc:
            self.failed = _first_line(exc)
            with contextlib.suppress(Exception):
                self.close()
            if not isinstance(exc, db.Error):
                raise
            raise _reportable(exc, self.path) from None


def child_main(database: str, hold: str = str(HOLD_SECONDS),
               hold_messages: str = str(HOLD_MESSAGES)) -> int:
    # Ctrl-C is the parent's: it waits for the jobs already handed over (complete batches)
    if not die_with_parent():
        return 1
    held = _HeldFile(Path(database), float(hold), int(hold_messages))
    jobs = io.FileIO(sys.stdin.fileno(), "rb", closefd=False)  # unbuffered: select tells all
    results = sys.stdout.buffer
    try:
        while True:
            wait = held.remaining()
            if wait and not select.select([jobs], [], [], wait)[0]:
                with contextlib.suppress(Exception):  # the next job reports a failure
                    held.close()  # no job in time: let readers in
            head = read_exactly(jobs, FRAME.size)
            data = read_exactly(jobs, FRAME.unpack(head)[0]) if head else None
            if data is None:
                return 0  # the parent is done
            reply: tuple[str, Any]
            try:
                job = pickle.loads(data)
                del data  # not kept through the commit and the checkpoint: a batch's size
                reply = ("ok", held.commit(job))
                del job
            except Exception as exc:
                reply = ("error", _reportable(exc, held.path))
            if not held.remaining():
                try:
                    held.close()
                except Exception as exc:  # committed, but in the WAL only: say why
                    reply = ("error", exc)
            pickle.dump(reply, results, protocol=pickle.HIGHEST_PROTOCOL)
            results.flush()
    finally:
        try:
            held.close()
        except Exception as exc:  # after the last answer; the parent's output shows this line
            log.error("netaudit: %s", exc)


Done = Callable[[CommitJob, Committed], None]
_DIED = object()


class ChildWriter:
    """Commits jobs in one child process, in order; ``on_done`` runs here, in the parent,
    as each commit is known to be durable.

    Two threads move bytes so that neither side waits for the other: the feeder writes each
    pickled job into the pipe (blocking while the child is busy with the previous one, with
    the GIL released), the reader turns the child's answers into a queue.
    """

    def __init__(self, database: Path, max_pending: int = MAX_PENDING,
                 hold: float = HOLD_SECONDS, hold_messages: int = HOLD_MESSAGES) -> None:
        self.max_pending = max_pending
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, str(database), str(hold), str(hold_messages)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env())
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._pending: deque[tuple[CommitJob, Done]] = deque()
        self._threads = [threading.Thread(target=self._feed, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        for thread in self._threads:
            thread.start()

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, job: CommitJob, on_done: Done) -> None:
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.put(FRAME.pack(len(data)) + data)
        self._pending.append((job, on_done))
        self.poll()
        while len(self._pending) > self.max_pending:
            self._finish_oldest(block=True)

    def poll(self) -> None:
        """Report the commits finished so far, without waiting."""
        while self._pending and self._finish_oldest(block=False):
            pass

    def flush(self) -> None:
        """Wait for every job handed over; raises the first one's error."""
        while self._pending:
            self._finish_oldest(block=True)

    def close(self) -> None:
        """Flush, then stop the child. Jobs already handed over are complete batches, so they
        are committed even when the parent is stopping because of an error."""
        try:
            self.flush()
        finally:
            self._pending.clear()
            self._outbox.put(None)  # EOF: the child exits
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            for thread in self._threads:
                thread.join(timeout=5)

    def _finish_oldest(self, block: bool) -> bool:
        try:
            reply = self._inbox.get(block=block)
        except queue.Empty:
            return False
        job, on_done = self._pending.popleft()
        if reply is _DIED:
            self._pending.clear()
            raise DatabaseError("the process writing the database stopped unexpectedly "
                                f"(exit code {self._proc.wait()}); what it had not committed "
                                "is fetched again by the next sync")
        kind, value = reply
        if kind == "error":
            self._pending.clear()  # the child refuses the jobs after a failed one
            raise value
        on_done(job, value)
        return True

    def _feed(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (data := self._outbox.get()) is not None:
                stdin.write(data)
                stdin.flush()
        except (OSError, ValueError):
            pass  # the child is gone; the reader reports it
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                self._inbox.put(pickle.load(stdout))
        except Exception:  # EOF, or anything else that is not an answer: the child is lost
            log.debug("writer child: no more answers", exc_info=True)
            self._inbox.put(_DIED)


def _child_env() -> dict[str, str]:
    """This process's environment, with the directory this package was imported from first
    on the child's path, so that it runs this very code however netaudit was installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# Imported, not run with -m: the jobs' classes must be this module's, not __main__'s. The
# child ends with os._exit: the parent waits for it, and the interpreter's teardown (every
# object, DuckDB's module) costs 60 ms the child does not need; child_main closes the file
# before it returns, and each answer is flushed as it is written.
_CHILD_CODE = ("import os, sys; from ingest.imap_commit import child_main; "
               "os._exit(child_main(*sys.argv[1:]))")
