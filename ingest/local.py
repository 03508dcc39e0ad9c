"""Importing local mail: find the inputs, parse headers, write in batches.

The same pipeline serves ``netaudit import PATH...`` and the ``[[maildir]]`` / ``[[mbox]]``
sources of ``netaudit sync`` and the daemon. Each batch is written in one short transaction, so
a crash loses at most the batch in flight, and the anti-join on the message key makes the
re-run add only what is missing.

What was read is remembered per source in ``sync_state`` (``FileMark``): an mbox is read again
from where its last read ended (``mailfiles.read_mbox``), a Maildir source lists only the
folders changed since its last complete scan (``sync_maildir``), so an unchanged mailbox of a
million messages costs a few stats, and ten appended messages cost reading ten messages.

A folder is not ours: an entry may be a FIFO, a folder may be unreadable, a name may not be
UTF-8. Whatever cannot be read becomes a quarantine entry with its reason, and the rest is
read; nothing is opened that is not a regular file (``ingest.safe_files``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest import mailfiles
from ingest.child import FRAME, HOLD_MESSAGES, HOLD_SECONDS, die_with_parent, read_exactly
from ingest.dsn import parse_delivery_status
from ingest.headers import Rejected, parse_headers
from ingest.mailfiles import MboxPosition, RawMessage, Resume
from ingest.safe_files import NotRegularFile, open_regular, path_text
from ingest.store import (
    BatchResult,
    Bounce,
    FileMark,
    Quarantined,
    Rows,
    known_me,
    load_marks,
    message_rows,
    remember_me,
    save_marks,
    write_rows,
)
from netaudit import db
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

# Directory entries that are never mail, so a walk does not quarantine them.
_NOT_MAIL_SUFFIXES = {".json", ".md", ".py", ".png", ".jpg", ".gif", ".pdf", ".wav", ".sh",
                      ".html", ".css", ".js", ".toml", ".yaml", ".yml", ".csv", ".gz", ".zip"}

Progress = Callable[[int, int], None]  # (bytes done since last call, messages since last call)


@dataclass(frozen=True, slots=True)
class Input:
    """One thing to import: kind is message, maildir, mbox or calendar; or "unusable" (a file)
    or "unusable folder" that cannot be read, with the reason. A ``loud`` one is also logged:
    a folder (all its mail is missing) or a path named on the command line."""

    kind: str
    path: Path
    reason: str = ""
    loud: bool = False


@dataclass(slots=True)
class ImportResult:
    mail: BatchResult = field(default_factory=BatchResult)
    calendars: list[Path] = field(default_factory=list)
    skipped: int = 0  # files in walked directories that are not mail
    skipped_example: str | None = None  # as path_text: printable whatever the name's bytes
    unread_folders: list[Path] = field(default_factory=list)
    marks: Marks | None = None  # what was known of the mbox files, and what came of it


def unreadable_reason(exc: OSError) -> str:
    """A quarantine reason for a file that could not be read: "a FIFO, not a file", or
    "cannot read: Permission denied"."""
    if isinstance(exc, NotRegularFile):
        return exc.strerror or "not a regular file"
    return f"cannot read: {exc.strerror or exc}"


def folder_reason(exc: OSError) -> str:
    return f"cannot read folder: {exc.strerror or exc}"


def _sniff(path: Path) -> bytes:
    """The first 4 KiB; never blocks (a FIFO raises ``NotRegularFile``)."""
    with open_regular(path) as fh:
        return fh.read(4096)


def classify(path: Path, explicit: bool) -> Input | None:
    """What a path holds. Files named on the command line are always tried as mail.

    A ``.eml`` file is not taken for an mbox even when it starts with a From_ line: an mbox
    attached inside it must not split it. Reading any message file looks past its MIME
    structure for more messages (``mailfiles.read_mail_file``). A path that cannot be read,
    or that is a FIFO, socket or device, is "unusable"; this never raises and never blocks.
    """
    try:
        if path.is_dir():
            return Input("maildir" if mailfiles.is_maildir(path) else "directory", path)
    except OSError as exc:  # a folder whose cur/ cannot even be looked at
        return Input("unusable folder", path, folder_reason(exc), loud=True)
    if path.suffix.lower() == ".ics":
        return Input("calendar", path)
    try:
        head = _sniff(path)
    except OSError as exc:
        return Input("unusable", path, unreadable_reason(exc), loud=explicit)
    if path.suffix.lower() != ".eml" and mailfiles.looks_like_mbox(head):
        return Input("mbox", path)
    if explicit or (path.suffix.lower() not in _NOT_MAIL_SUFFIXES
                    and mailfiles.looks_like_message(head)):
        return Input("message", path)
    return None


def discover(paths: Sequence[Path], skipped: ImportResult | None = None) -> Iterator[Input]:
    """Expand the given paths into inputs; directories are walked, dotfiles skipped."""
    for top in paths:
        if not top.exists():
            raise FileNotFoundError(str(top))
        item = classify(top, explicit=True)
        if item is None:
            continue
        if item.kind not in ("directory", "maildir"):
            yield item
            continue
        yield from _walk(top, skipped)


_NOT_FOLDERS = frozenset({"tmp", ".git", ".hg", ".svn"})


def _subfolder(directory: Path, name: str, path: Path) -> Input | None:
    """A subfolder to walk (kind "directory"), an unusable one, or None to skip it.

    Maildir tmp/ and version-control folders are skipped, and dot-folders unless they are
    Maildir++ folders; a dot-folder of a Maildir that cannot be looked into is taken for one.
    """
    if name in _NOT_FOLDERS:
        return None
    if not name.startswith("."):
        return Input("directory", path)
    try:
        return Input("directory", path) if mailfiles.is_maildir(path) else None
    except OSError as exc:
        try:
            in_maildir = mailfiles.is_maildir(directory)
        except OSError:
            in_maildir = False
        return Input("unusable folder", path, folder_reason(exc), loud=True) if in_maildir \
            else None


def _walk(top: Path, skipped: ImportResult | None) -> Iterator[Input]:
    """Stream a tree with scandir: a Maildir's cur/ may hold a million names, and listing
    (or sorting) them all at once would make memory grow with the mailbox.

    A folder that cannot be listed (or stops being listable) is one unusable input; its
    siblings and the rest of the tree are still read.
    """
    stack = [top]
    while stack:
        directory = stack.pop()
        in_maildir = directory.name in ("cur", "new")
        subdirs: list[Path] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    item = _entry_input(directory, entry, in_maildir, skipped)
                    if item is None:
                        continue
                    if item.kind == "directory":
                        subdirs.append(item.path)
                    else:
                        yield item
        except OSError as exc:
            yield Input("unusable folder", directory, folder_reason(exc), loud=True)
        stack.extend(sorted(subdirs, reverse=True))


def _entry_input(directory: Path, entry: os.DirEntry[str], in_maildir: bool,
                 skipped: ImportResult | None) -> Input | None:
    """What one directory entry is; never raises (an error is the entry's own)."""
    name = entry.name
    path = Path(entry.path)
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError as exc:
        return Input("unusable", path, unreadable_reason(exc))
    if is_dir:
        return _subfolder(directory, name, path)
    if name.startswith(".") or name in mailfiles.SKIP_NAMES:
        return None
    if in_maildir:  # a message file, whatever it looks like; reading it says if it is one
        return Input("maildir", path)
    item = classify(path, explicit=False)
    if item is not None and item.kind in ("directory", "maildir"):  # a link: a loop, maybe
        return Input("unusable", path, "a link to a folder; not followed")
    if item is None and skipped is not None:
        skipped.skipped += 1
        skipped.skipped_example = skipped.skipped_example or path_text(path)
    return item


def input_bytes(inputs: Iterable[Input], marks: Marks | None = None) -> int:
    """The bytes to read, for the progress meter: an mbox read before counts from where
    that read ended, when it is no shorter now."""
    total = 0
    for item in inputs:
        if item.kind in ("message", "mbox", "maildir"):
            with contextlib.suppress(OSError):
                size = item.path.stat().st_size
                known = marks.known.get(file_scope(item.path)) \
                    if marks is not None and item.kind == "mbox" else None
                total += size - known.last_uid if known and size >= known.last_uid else size
    return total


def raw_messages(item: Input,
                 marks: Marks | None = None) -> Iterator[RawMessage | Quarantined | FileMark]:
    """The messages of one input; an unreadable file becomes a quarantine entry.

    With ``marks``, an mbox is read from where its last read ended, and its new positions
    come as ``FileMark`` items among its messages (``read_mbox``); without, it is read whole.
    """
    if item.kind in ("unusable", "unusable folder"):
        if item.loud:
            log.warning("%s: %s", path_text(item.path), item.reason)
        yield Quarantined(path_text(item.path), item.reason)
        return
    try:
        if item.kind == "mbox":
            if marks is None:
                yield from mailfiles.iter_mbox(item.path)
            else:
                yield from _mbox_items(item.path, marks)
        elif item.kind == "maildir":
            yield mailfiles.read_maildir_file(item.path)
        else:
            yield from mailfiles.read_mail_file(item.path)
    except mailfiles.Glued as exc:
        log.warning("%s: %s", path_text(item.path), exc)
        yield Quarantined(path_text(item.path), str(exc))
    except OSError as exc:
        yield Quarantined(path_text(item.path), unreadable_reason(exc))


# ---------------------------------------------------------------------------------------------
# Reading again only what changed: mbox positions and Maildir scan marks (sync_state)


MBOX_TAG = "mbox1"
MAILDIR_TAG = "maildir1"
CTIME_SLACK_NS = 2_000_000_000  # file time stamps vs the clock read before a scan


def file_scope(path: Path) -> str:
    """How a file or folder is named in sync_state: its absolute path, as ``path_text``."""
    return path_text(os.path.abspath(path))


@dataclass(slots=True)
class Marks:
    """The stored positions of a source's mbox files, and what this run made of them."""

    known: dict[str, FileMark] = field(default_factory=dict)
    unchanged: int = 0  # files not read at all: nothing was appended since the last read
    resumed: int = 0  # files read from where the last read ended (or their last message)
    again: int = 0  # files read before, read whole again: rewritten, shorter
    earlier: int = 0  # messages before where reading started, read by an earlier run

    @classmethod
    def load(cls, db_path: Path, source: str) -> Marks:
        if not db_path.exists():
            return cls()
        with db.writer(db_path) as con:  # a writer: it goes through the daemon's gate
            return cls(load_marks(con, source, MBOX_TAG))

    def position(self, scope: str) -> MboxPosition | None:
        mark = self.known.get(scope)
        return None if mark is None else MboxPosition.parse(mark.last_uid, mark.content_hash)

    def note(self, resume: Resume) -> None:
        if resume.why == mailfiles.UNCHANGED:
            self.unchanged += 1
        elif resume.why in (mailfiles.APPENDED, mailfiles.GREW):
            self.resumed += 1
        elif resume.why != mailfiles.FIRST_READ:
            self.again += 1
        self.earlier += resume.count

    def summary(self, verb: str = "read") -> str:
        """What was not read, for the user: "" when every mbox was read whole."""
        parts = []
        if self.unchanged:
            parts.append(f"{_files(self.unchanged)} unchanged since the last {verb}")
        if self.resumed:
            parts.append(f"{_files(self.resumed)} read from where the last {verb} ended")
        if self.again:
            parts.append(f"{_files(self.again)} changed and read whole again")
        if not parts:
            return ""
        text = "; ".join(parts)
        if self.earlier:
            text += f" ({self.earlier:,} messages read before were not read again)"
        return text


def _messages(n: int) -> str:
    return f"{n:,} message{'' if n == 1 else 's'}"


def _files(n: int) -> str:
    return f"{n:,} mbox file{'' if n == 1 else 's'}"


def _mbox_items(path: Path, marks: Marks) -> Iterator[RawMessage | FileMark]:
    """``read_mbox`` from the stored position, its positions as marks; logs what it did."""
    scope = file_scope(path)
    where = path_text(path)
    read = 0
    resume: Resume | None = None
    for got in mailfiles.read_mbox(path, marks.position(scope)):
        if isinstance(got, RawMessage):
            read += 1
            yield got
        elif isinstance(got, MboxPosition):
            yield FileMark(scope, got.end, got.text())
        else:
            resume = got
            marks.note(got)
    if resume is None:
        return
    if resume.why == mailfiles.UNCHANGED:
        log.info("%s: unchanged since the last read (%s bytes); nothing read", where,
                 f"{resume.start:,}")
    elif resume.why in (mailfiles.FIRST_READ, mailfiles.APPENDED, mailfiles.GREW):
        log.info("%s: read %s from byte %s (%s)", where, _messages(read),
                 f"{resume.start:,}", resume.why)
    else:
        log.info("%s: %s; read %s", where, resume.why, _messages(read))


def changed_maildir_files(root: Path, since_ns: int, unreadable: set[str] | None = None,
                          problems: list[Quarantined] | None = None) -> Iterator[Path]:
    """Message files in cur/ and new/ directories created or renamed since ``since_ns``.

    Delivery and flag changes rename files, which updates both the file's ctime and its
    directory's mtime: so directories untouched since then are not even listed, and a
    rescan of a large unchanged Maildir costs a stat per directory.

    A folder that cannot be listed is added to ``unreadable`` and reported once in
    ``problems``; when it can be listed again, every file under it is listed whatever its
    times, since they were missed meanwhile. Entries that are not folders are all listed,
    FIFOs too: reading them quarantines them, as a full import does.
    """
    seen = unreadable if unreadable is not None else set()
    found = problems if problems is not None else []
    stack = [(root, since_ns)]
    while stack:
        directory, since = stack.pop()
        since = _since(directory, since, seen)
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            _unreadable(directory, exc, seen, found)
            continue
        seen.discard(os.fspath(directory))
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            name = entry.name
            path = Path(entry.path)
            if name in ("cur", "new"):
                yield from _changed_in(path, _since(path, since, seen), seen, found)
            elif name in ("tmp", ".git"):
                continue
            elif not name.startswith("."):
                stack.append((path, since))
            else:
                try:
                    if mailfiles.is_maildir(path):
                        stack.append((path, since))
                except OSError as exc:  # a Maildir++ folder that cannot be looked into
                    _unreadable(path, exc, seen, found)


def _since(directory: Path, since_ns: int, unreadable: set[str]) -> int:
    """0 for a folder that could not be read before: everything in it is new to us."""
    return 0 if os.fspath(directory) in unreadable else since_ns


def _unreadable(directory: Path, exc: OSError, unreadable: set[str],
                problems: list[Quarantined]) -> None:
    """Remember a folder that cannot be listed; report it the first time only."""
    key = os.fspath(directory)
    if key not in unreadable:
        unreadable.add(key)
        problems.append(Quarantined(path_text(directory), folder_reason(exc)))


def _changed_in(directory: Path, since_ns: int, unreadable: set[str],
                problems: list[Quarantined]) -> Iterator[Path]:
    try:
        if since_ns and directory.stat().st_mtime_ns < since_ns:
            return
        with os.scandir(directory) as entries:
            unreadable.discard(os.fspath(directory))
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_ctime_ns >= since_ns:
                        yield Path(entry.path)
                except FileNotFoundError:
                    continue
    except FileNotFoundError:
        return
    except OSError as exc:
        _unreadable(directory, exc, unreadable, problems)


def read_maildir_files(paths: Iterable[Path]) -> Iterator[RawMessage | Quarantined]:
    """Headers of the given files; one moved away meanwhile is skipped (its new name comes as
    its own event), one that cannot be read (or is a FIFO) is quarantined."""
    for path in paths:
        try:
            yield mailfiles.read_maildir_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield Quarantined(path_text(path), unreadable_reason(exc))


def load_scan_mark(db_path: Path, source: str, root: Path) -> int | None:
    """The time taken before the last complete scan of a Maildir source (ns), if any."""
    if not db_path.exists():
        return None
    with db.writer(db_path) as con:
        mark = load_marks(con, source, MAILDIR_TAG).get(file_scope(root))
    return None if mark is None or mark.content_hash != MAILDIR_TAG else mark.last_uid


def scan_mark(root: Path, started_ns: int) -> FileMark:
    return FileMark(file_scope(root), started_ns, MAILDIR_TAG)


@dataclass(slots=True)
class MaildirScan:
    """What a Maildir source's sync did: its mail, whether it listed only the folders
    changed since the last scan, and the folders it could not list."""

    mail: BatchResult
    delta: bool
    unreadable: set[str]
    started_ns: int  # the time before the scan: the next one looks for changes since


def sync_maildir(db_path: Path, source: str, root: Path, *, me: frozenset[str],
                 keep_subject: bool = False, since_ns: int | None = None,
                 unreadable: set[str] | None = None) -> MaildirScan:
    """A Maildir source: after a complete scan, only the files created or renamed since it.

    ``since_ns`` is the last scan's mark (the daemon keeps it); None reads the stored one.
    The new mark, the time before this scan began, is stored with the scan's last batch,
    and only when every folder could be listed: one that could not must be read whole once
    it can be, which after a restart only a full scan does.
    """
    started = time.time_ns()
    if since_ns is None:
        since_ns = load_scan_mark(db_path, source, root)
    if since_ns is None:
        result = import_paths(db_path, source, [root], me=me, keep_subject=keep_subject,
                              tail=lambda done: () if done.unread_folders
                              else (scan_mark(root, started),))
        log.info("%s: read every folder (%s)", path_text(root), _messages(result.mail.seen))
        return MaildirScan(result.mail, False, {os.fspath(p) for p in result.unread_folders},
                           started)
    seen = set(unreadable or ())
    problems: list[Quarantined] = []

    def delta() -> Iterator[RawMessage | Quarantined | FileMark]:
        yield from read_maildir_files(
            changed_maildir_files(root, since_ns - CTIME_SLACK_NS, seen, problems))
        for problem in problems:
            log.warning("%s: %s: %s", source, problem.location, problem.reason)
        yield from problems
        if not seen:
            yield scan_mark(root, started)

    mail = ingest_messages(db_path, source, delta(), me=me, keep_subject=keep_subject)
    log.info("%s: read %s created or renamed since the last scan", path_text(root),
             _messages(mail.seen))
    return MaildirScan(mail, True, seen, started)


def check_source_path(kind: str, path: Path) -> None:
    """A [[maildir]] or [[mbox]] source's own path must exist and be readable: otherwise the
    source fails (and says why), rather than quarantining its whole self."""
    try:
        if not path.exists():
            raise SourceError(f"{path_text(path)} does not exist")
        if kind == "maildir" and not path.is_dir():
            raise SourceError(f"{path_text(path)} is not a directory")
        if kind == "mbox" and not path.is_file():
            raise SourceError(f"{path_text(path)} is not a file")
        if kind == "maildir":
            with os.scandir(path):
                pass
        else:
            open_regular(path).close()
    except OSError as exc:
        raise SourceError(f"cannot read {path_text(path)}: {exc.strerror or exc}") from exc


def prepare_me(db_path: Path, config_me: Iterable[str], extra_me: Iterable[str]) -> frozenset[str]:
    """Remember my addresses in the database and return every one known."""
    with db.writer(db_path) as con:
        con.execute("BEGIN TRANSACTION")
        remember_me(con, config_me, "config")
        remember_me(con, extra_me, "import --me")
        me = known_me(con)
        con.execute("COMMIT")
    return frozenset(me)


# ---------------------------------------------------------------------------------------------
# Parsing and writing batches
#
# Measured on this machine (2 cores), per message: splitting an mbox 11 µs, parsing the header
# 29 µs, writing 25 µs in batches of 5,000 at 1,000,000 stored (DuckDB reads every stored key
# to find the new ones, 0.05 s a batch: 15 µs in batches of 10,000), and opening and closing
# the file around each batch 13-29 µs more (a checkpoint). So messages are written
# WRITE_MESSAGES at a time; outside the daemon the file stays open from one batch to the next
# for up to HOLD_SECONDS (each batch is still its own transaction: a crash loses at most the
# batch in flight); and a large input is parsed by a helper process too, on the second core,
# in chunks it is handed while it has fewer than HELPER_AHEAD; this process parses the others
# itself, and writes every chunk in the order it was read.

WRITE_MESSAGES = 10_000  # messages per transaction
CHUNK = 1_000  # messages parsed at a time (by either process): what is in flight is bounded
HELPER_BYTES = 32 << 20  # less to read than this: a helper costs more than it saves (0.2 s)
HELPER_AHEAD = 2  # chunks handed to the helper and not parsed yet
UNPARSED_AHEAD = 3  # chunks read and not parsed yet: memory stays bounded

# A message as the parser takes it: (location, header, size, fallback dates, path, offset);
# plain data, cheap to hand to another process.
Unparsed = tuple[str, bytes, int | None, tuple[tuple[str, dt.datetime | None], ...],
                 str | None, int | None]


@dataclass(frozen=True, slots=True)
class ParseOptions:
    me: frozenset[str]
    keep_subject: bool = False
    from_sent_folder: bool = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed chunk as the staging tables take it (store.Rows), with what was refused."""

    rows: Rows
    rejected: list[Quarantined]
    bounces: list[Bounce]


def unparsed(msg: RawMessage) -> Unparsed:
    return (msg.location, msg.header, msg.size, tuple(msg.fallback_dates),
            None if msg.path is None else os.fspath(msg.path), msg.offset)


def parse_batch(items: Sequence[Unparsed], options: ParseOptions, first: int = 0) -> Parsed:
    """Parse headers into staging rows, numbered from ``first`` in reading order (the first
    copy of a message key is the one stored); pure but for reading a bounce's report part.
    The same in this process and in the helper."""
    records = []
    seqs = []
    rejected = []
    bounces: list[Bounce] = []
    me, keep_subject, sent = options.me, options.keep_subject, options.from_sent_folder
    for seq, (location, header, size, dates, path, offset) in enumerate(items, first):
        rec = parse_headers(header, me=me, fallback_dates=dates, size=size,
                            keep_subject=keep_subject, from_sent_folder=sent)
        if isinstance(rec, Rejected):
            rejected.append(Quarantined(location, rec.reason))
            continue
        records.append((location, rec))
        seqs.append(seq)
        if rec.is_dsn and path is not None:
            bounces.extend(_bounces(Path(path), offset, size, rec.message_key, rec.date))
    return Parsed(message_rows(records, seqs), rejected, bounces)


def _bounces(path: Path, offset: int | None, size: int | None, message_key: str,
             date: dt.datetime | None) -> list[Bounce]:
    """Read the report part of a bounce: the one time a body is read, and only for DSNs."""
    try:
        raw = mailfiles.read_whole(path, offset, size)
    except OSError:
        return []
    part = mailfiles.delivery_status_part(raw)
    if part is None:
        return []
    return [Bounce(message_key, r.recipient, r.action, r.status, r.reported_at or date,
                   r.arrival_at)
            for r in parse_delivery_status(part)]


@dataclass(slots=True)
class _Chunk:
    """Messages read (numbered from ``first``), inputs that could not be read, and the marks
    that are saved with them; ``parsed`` once parsed (``items`` are then dropped)."""

    first: int
    items: list[Unparsed] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    marks: dict[str, FileMark] = field(default_factory=dict)
    parsed: Parsed | None = None
    in_helper: bool = False

    def __len__(self) -> int:
        return len(self.items) + len(self.quarantined)


class _Helper:
    """A second process that parses chunks (``parse_batch``) and answers in order.

    A plain subprocess, like the IMAP writer child (ingest/imap_commit.py), not
    multiprocessing, whose "spawn" imports the caller's main module again. Jobs go through a
    feeder thread, so this process never blocks on a full pipe while the helper is blocked
    writing an answer; answers are read when they are needed, in order.
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen([sys.executable, "-c", _HELPER_CODE], bufsize=0,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()
        self._waiting = 0  # chunks submitted and not answered yet

    def submit(self, chunk: _Chunk, options: ParseOptions) -> None:
        data = pickle.dumps((chunk.items, options, chunk.first), pickle.HIGHEST_PROTOCOL)
        self._outbox.put(FRAME.pack(len(data)) + data)
        self._waiting += 1

    def answered(self) -> bool:
        """Has the next answer (begun to) come? (stdout is unbuffered: select tells all)"""
        stdout = self._proc.stdout
        assert stdout is not None
        return bool(select.select([stdout], [], [], 0)[0])

    def answer(self) -> Parsed:
        """The next chunk's rows; HelperLost when the helper is gone."""
        stdout = self._proc.stdout
        assert stdout is not None
        head = read_exactly(stdout, FRAME.size)
        data = read_exactly(stdout, FRAME.unpack(head)[0]) if head else None
        if data is None:
            raise HelperLost(f"exit code {self._proc.wait()}")
        self._waiting -= 1
        kind, value = pickle.loads(data)
        if kind != "ok":
            raise HelperLost(value)
        return value

    def _feed(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (data := self._outbox.get()) is not None:
                view = memoryview(data)
                while view:  # unbuffered: a write may take part of it
                    view = view[stdin.write(view) or 0:]
        except (OSError, ValueError):
            pass  # the helper is gone; reading its answer says so
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def close(self) -> None:
        """Done, or stopping early (an error, Ctrl-C): then the chunks it still has are not
        wanted, and it is killed rather than left blocked writing their answers."""
        self._outbox.put(None)
        if self._waiting:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._feeder.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class HelperLost(RuntimeError):
    """The helper process stopped or failed: this process parses its chunks again."""


def helper_main() -> int:
    """The helper: chunks in on stdin, parsed rows out on stdout, each a pickle after its
    length. Ctrl-C is the parent's (it reaches the whole process group); the helper dies
    with its parent (PR_SET_PDEATHSIG)."""
    if not die_with_parent():
        return 1
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    while len(head := jobs.read(FRAME.size)) == FRAME.size:
        items, options, first = pickle.loads(jobs.read(FRAME.unpack(head)[0]))
        try:
            reply: tuple[str, object] = ("ok", parse_batch(items, options, first))
        except Exception as exc:  # a bug; the parent parses the chunk again and raises it
            reply = ("error", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        answers.write(FRAME.pack(len(data)) + data)
        answers.flush()
    return 0


_HELPER_CODE = ("import os, sys; from ingest.local import helper_main; "
                "os._exit(helper_main())")


class _Writer:
    """Writes chunks in transactions of up to ``batch_size`` messages; outside the daemon the
    file stays open between them for up to HOLD_SECONDS or HOLD_MESSAGES. The daemon's threads
    share the file through its write gate, so there each transaction opens it again."""

    def __init__(self, db_path: Path, source: str, hold: bool) -> None:
        self.db_path = db_path
        self.source = source
        self.hold = hold
        self._stack: contextlib.ExitStack | None = None
        self._con: db.Connection | None = None
        self._opened = 0.0
        self._written = 0

    def write(self, chunks: Sequence[_Chunk]) -> BatchResult:
        if not self.hold:
            with db.writer(self.db_path) as con:
                return self._transaction(con, chunks)
        if self._con is None:
            self._stack = contextlib.ExitStack()
            self._con = self._stack.enter_context(db.writer(self.db_path))
            self._opened = time.monotonic()
            self._written = 0
        try:
            result = self._transaction(self._con, chunks)
        except BaseException:
            self.close()
            raise
        self._written += sum(len(c) for c in chunks)
        if self._written >= HOLD_MESSAGES or time.monotonic() - self._opened >= HOLD_SECONDS:
            self.close()
        return result

    def _transaction(self, con: db.Connection, chunks: Sequence[_Chunk]) -> BatchResult:
        parsed = [c.parsed for c in chunks if c.parsed is not None]
        rows = Rows([r for p in parsed for r in p.rows.messages],
                    [r for p in parsed for r in p.rows.participants])
        quarantined = [q for c in chunks for q in c.quarantined] + \
            [q for p in parsed for q in p.rejected]
        bounces = [b for p in parsed for b in p.bounces]
        con.execute("BEGIN TRANSACTION")
        try:
            result = write_rows(con, self.source, rows, quarantined, bounces) \
                if rows.messages or quarantined else BatchResult()
            save_marks(con, self.source, [m for c in chunks for m in c.marks.values()])
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(db.Error):
                con.execute("ROLLBACK")
            raise
        return result

    def close(self) -> None:
        """Let readers in: DuckDB checkpoints what was written here."""
        stack, self._stack, self._con = self._stack, None, None
        if stack is not None:
            stack.close()


class _Pipeline:
    """Chunks parsed (by the helper while it has fewer than HELPER_AHEAD, else here) and
    written in the order they were read: a mark is never saved before the mail it covers."""

    def __init__(self, db_path: Path, source: str, options: ParseOptions,
                 progress: Progress | None, helper: bool, batch_size: int) -> None:
        self.options = options
        self.progress = progress
        self.batch_size = batch_size
        self.total = BatchResult()
        self.writer = _Writer(db_path, source, hold=not db.has_write_gate())
        self.helper: _Helper | None = None
        if helper:
            try:
                self.helper = _Helper()
            except OSError as exc:
                log.debug("no helper process for parsing: %s", exc)
        self.unparsed: deque[_Chunk] = deque()  # in reading order
        self.ready: list[_Chunk] = []  # parsed, in reading order, not written yet
        self.ready_messages = 0

    def add(self, chunk: _Chunk) -> None:
        if self.helper is not None and chunk.items and \
                sum(c.in_helper for c in self.unparsed) < HELPER_AHEAD:
            self.helper.submit(chunk, self.options)
            chunk.in_helper = True
        self.unparsed.append(chunk)
        while self.unparsed and (len(self.unparsed) > UNPARSED_AHEAD
                                 or not self.unparsed[0].in_helper
                                 or self._answered()):
            self._parse_oldest()

    def _answered(self) -> bool:
        return self.helper is not None and self.helper.answered()

    def _parse_oldest(self) -> None:
        """Parse the oldest chunk here, or take the helper's answer for it. While the
        helper works on that one, the next one it does not have is parsed here first."""
        chunk = self.unparsed[0]
        if chunk.in_helper and self.helper is not None and not self.helper.answered():
            for other in self.unparsed:
                if not other.in_helper and other.parsed is None:
                    other.parsed = parse_batch(other.items, self.options, other.first)
                    break
        self.unparsed.popleft()
        if chunk.parsed is None:
            chunk.parsed = self._helper_answer(chunk) if chunk.in_helper else \
                parse_batch(chunk.items, self.options, chunk.first)
        chunk.items = []
        self.ready.append(chunk)
        self.ready_messages += len(chunk.parsed.rows.messages) + len(chunk.quarantined)
        if self.progress is not None:
            self.progress(0, len(chunk.parsed.rows.messages) + len(chunk.parsed.rejected)
                          + len(chunk.quarantined))
        if self.ready_messages >= self.batch_size:
            self._write()

    def _helper_answer(self, chunk: _Chunk) -> Parsed:
        assert self.helper is not None
        try:
            return self.helper.answer()
        except HelperLost as exc:
            log.warning("the helper process stopped (%s); parsing here instead", exc)
            helper, self.helper = self.helper, None
            helper.close()
            for other in self.unparsed:
                other.in_helper = False
            return parse_batch(chunk.items, self.options, chunk.first)

    def _write(self) -> None:
        if not self.ready:
            return
        chunks, self.ready, self.ready_messages = self.ready, [], 0
        self.total.add(self.writer.write(chunks))

    def finish(self) -> BatchResult:
        while self.unparsed:
            self._parse_oldest()
        self._write()
        self.close()
        return self.total

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            if self.helper is not None:
                helper, self.helper = self.helper, None
                helper.close()


def ingest_messages(db_path: Path, source: str,
                    items: Iterable[RawMessage | Quarantined | FileMark], *,
                    me: frozenset[str], keep_subject: bool = False,
                    batch_size: int = WRITE_MESSAGES, progress: Progress | None = None,
                    from_sent_folder: bool = False, helper: bool = False) -> BatchResult:
    """Parse and store messages, ``batch_size`` to a transaction.

    A ``FileMark`` among the items (how far a file has been read) is saved in the
    transaction that holds the messages before it: never before them, so a crash makes the
    next run read them again, and never skip them. ``helper``: parse in a second process
    too (worth it for tens of MB; never in the daemon, whose threads share a write gate).
    """
    options = ParseOptions(me, keep_subject, from_sent_folder)
    pipeline = _Pipeline(db_path, source, options, progress,
                         helper and not db.has_write_gate(), batch_size)
    chunk_size = max(1, min(CHUNK, batch_size))
    read = 0
    chunk = _Chunk(read)
    try:
        for item in items:
            if isinstance(item, FileMark):
                chunk.marks[item.scope] = item
                continue
            if isinstance(item, Quarantined):
                chunk.quarantined.append(item)
            else:
                chunk.items.append(unparsed(item))
                read += 1
                if progress is not None and item.size:
                    progress(item.size, 0)
            if len(chunk) >= chunk_size:
                pipeline.add(chunk)
                chunk = _Chunk(read)
        if len(chunk) or chunk.marks:
            pipeline.add(chunk)
        return pipeline.finish()
    finally:
        pipeline.close()


Tail = Callable[[ImportResult], Iterable[FileMark]]


def import_paths(db_path: Path, source: str, paths: Sequence[Path], *, me: frozenset[str],
                 keep_subject: bool = False, label: str | None = None,
                 tail: Tail | None = None) -> ImportResult:
    """Import everything under ``paths``, walking them twice (sizes, then messages) so that
    memory does not grow with the number of files.

    An mbox file the source read before is read from where that read ended
    (``mailfiles.resume_point``). ``tail`` gives marks to store with the last batch, once
    everything was read (a Maildir's scan mark).
    """
    from netaudit import progress

    result = ImportResult(marks=Marks.load(db_path, source))

    def mail_inputs() -> Iterator[Input]:
        for item in discover(paths, result):
            if item.kind == "calendar":
                result.calendars.append(item.path)
                continue
            if item.kind == "unusable folder":
                result.unread_folders.append(item.path)
            yield item

    def messages() -> Iterator[RawMessage | Quarantined | FileMark]:
        for item in mail_inputs():
            yield from raw_messages(item, result.marks)
        if tail is not None:
            yield from tail(result)

    to_read = input_bytes(discover(paths), result.marks)
    with progress.track(label or source, to_read) as advance:
        result.mail = ingest_messages(db_path, source, messages(), me=me,
                                      keep_subject=keep_subject, progress=advance,
                                      helper=to_read >= HELPER_BYTES)
    return result


def import_inputs(db_path: Path, source: str, inputs: Iterable[Input], *,
                  me: frozenset[str], keep_subject: bool = False,
                  progress: Progress | None = None, batch_size: int = WRITE_MESSAGES,
                  marks: Marks | None = None) -> BatchResult:
    """Mail from every input; calendars are the caller's (they take another pipeline).
    With ``marks``, mbox files are read from where the source's last read ended."""
    def messages() -> Iterator[RawMessage | Quarantined | FileMark]:
        for item in inputs:
            if item.kind != "calendar":
                yield from raw_messages(item, marks)

    return ingest_messages(db_path, source, messages(), me=me, keep_subject=keep_subject,
                           batch_size=batch_size, progress=progress)
