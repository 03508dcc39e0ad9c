"""Importing local mail: find the inputs, parse headers, write in batches.

The same pipeline serves ``netaudit import PATH...`` and the ``[[maildir]]`` / ``[[mbox]]``
sources of ``netaudit sync``. Each batch is written in one short transaction, so a crash loses
at most the batch in flight, and the anti-join on the message key makes the re-run add only
what is missing.

A folder is not ours: an entry may be a FIFO, a folder may be unreadable, a name may not be
UTF-8. Whatever cannot be read becomes a quarantine entry with its reason, and the rest is
read; nothing is opened that is not a regular file (``ingest.safe_files``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest import mailfiles
from ingest.dsn import parse_delivery_status
from ingest.headers import Rejected, parse_headers
from ingest.mailfiles import MboxPosition, RawMessage, Resume
from ingest.safe_files import NotRegularFile, open_regular, path_text
from ingest.store import (
    BatchResult,
    Bounce,
    FileMark,
    Quarantined,
    known_me,
    load_marks,
    remember_me,
    save_marks,
    write_mail_batch,
)
from netaudit import db
from netaudit.errors import SourceError

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
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
        elif not resume.whole:
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
        log.info("%s: read %s messages from byte %s (%s)", where, f"{read:,}",
                 f"{resume.start:,}", resume.why)
    else:
        log.info("%s: %s; read %s messages", where, resume.why, f"{read:,}")


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
        log.info("%s: read every folder (%s messages)", path_text(root), f"{result.mail.seen:,}")
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
    log.info("%s: read %s messages created or renamed since the last scan", path_text(root),
             f"{mail.seen:,}")
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


def ingest_messages(db_path: Path, source: str,
                    items: Iterable[RawMessage | Quarantined | FileMark], *,
                    me: frozenset[str], keep_subject: bool = False,
                    batch_size: int = BATCH_SIZE, progress: Progress | None = None,
                    from_sent_folder: bool = False) -> BatchResult:
    """Parse and store messages in batches, each in its own short write transaction.

    A ``FileMark`` among the items (how far a file has been read) is saved in the
    transaction of the batch that holds the messages before it, or a later one: never
    before them, so a crash makes the next run read them again, and never skip them.
    """
    total = BatchResult()
    records: list = []
    quarantined: list[Quarantined] = []
    bounces: list[Bounce] = []
    marks: dict[str, FileMark] = {}

    def flush() -> None:
        if not records and not quarantined and not marks:
            return
        with db.writer(db_path) as con:
            con.execute("BEGIN TRANSACTION")
            result = write_mail_batch(con, source, records, quarantined, bounces) \
                if records or quarantined else BatchResult()
            save_marks(con, source, marks.values())
            con.execute("COMMIT")
        total.add(result)
        if progress is not None:
            progress(0, len(records) + len(quarantined))
        records.clear()
        quarantined.clear()
        bounces.clear()
        marks.clear()

    for item in items:
        if isinstance(item, FileMark):
            marks[item.scope] = item
            continue
        if isinstance(item, Quarantined):
            quarantined.append(item)
        else:
            rec = parse_headers(item.header, me=me, fallback_dates=item.fallback_dates,
                                size=item.size, keep_subject=keep_subject,
                                from_sent_folder=from_sent_folder)
            if isinstance(rec, Rejected):
                quarantined.append(Quarantined(item.location, rec.reason))
            else:
                records.append((item.location, rec))
                if rec.is_dsn:
                    bounces.extend(_bounces(item, rec.message_key, rec.date))
            if progress is not None and item.size:
                progress(item.size, 0)
        if len(records) + len(quarantined) >= batch_size:
            flush()
    flush()
    return total


def _bounces(item: RawMessage, message_key: str, date: dt.datetime | None) -> list[Bounce]:
    """Read the report part of a bounce: the one time a body is read, and only for DSNs."""
    if item.path is None:
        return []
    try:
        raw = mailfiles.read_whole(item.path, item.offset, item.size)
    except OSError:
        return []
    part = mailfiles.delivery_status_part(raw)
    if part is None:
        return []
    return [Bounce(message_key, r.recipient, r.action, r.status, r.reported_at or date,
                   r.arrival_at)
            for r in parse_delivery_status(part)]


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

    with progress.track(label or source, input_bytes(discover(paths), result.marks)) as advance:
        result.mail = ingest_messages(db_path, source, messages(), me=me,
                                      keep_subject=keep_subject, progress=advance)
    return result


def import_inputs(db_path: Path, source: str, inputs: Iterable[Input], *,
                  me: frozenset[str], keep_subject: bool = False,
                  progress: Progress | None = None, batch_size: int = BATCH_SIZE,
                  marks: Marks | None = None) -> BatchResult:
    """Mail from every input; calendars are the caller's (they take another pipeline).
    With ``marks``, mbox files are read from where the source's last read ended."""
    def messages() -> Iterator[RawMessage | Quarantined | FileMark]:
        for item in inputs:
            if item.kind != "calendar":
                yield from raw_messages(item, marks)

    return ingest_messages(db_path, source, messages(), me=me, keep_subject=keep_subject,
                           batch_size=batch_size, progress=progress)
