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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest import mailfiles
from ingest.dsn import parse_delivery_status
from ingest.headers import Rejected, parse_headers
from ingest.mailfiles import RawMessage
from ingest.safe_files import NotRegularFile, open_regular, path_text
from ingest.store import (
    BatchResult,
    Bounce,
    Quarantined,
    known_me,
    remember_me,
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


def input_bytes(inputs: Iterable[Input]) -> int:
    total = 0
    for item in inputs:
        if item.kind in ("message", "mbox", "maildir"):
            with contextlib.suppress(OSError):
                total += item.path.stat().st_size
    return total


def raw_messages(item: Input) -> Iterator[RawMessage | Quarantined]:
    """The messages of one input; an unreadable file becomes a quarantine entry."""
    if item.kind in ("unusable", "unusable folder"):
        if item.loud:
            log.warning("%s: %s", path_text(item.path), item.reason)
        yield Quarantined(path_text(item.path), item.reason)
        return
    try:
        if item.kind == "mbox":
            yield from mailfiles.iter_mbox(item.path)
        elif item.kind == "maildir":
            yield mailfiles.read_maildir_file(item.path)
        else:
            yield from mailfiles.read_mail_file(item.path)
    except mailfiles.Glued as exc:
        log.warning("%s: %s", path_text(item.path), exc)
        yield Quarantined(path_text(item.path), str(exc))
    except OSError as exc:
        yield Quarantined(path_text(item.path), unreadable_reason(exc))


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


def ingest_messages(db_path: Path, source: str, items: Iterable[RawMessage | Quarantined], *,
                    me: frozenset[str], keep_subject: bool = False,
                    batch_size: int = BATCH_SIZE, progress: Progress | None = None,
                    from_sent_folder: bool = False) -> BatchResult:
    """Parse and store messages in batches, each in its own short write transaction."""
    total = BatchResult()
    records: list = []
    quarantined: list[Quarantined] = []
    bounces: list[Bounce] = []

    def flush() -> None:
        if not records and not quarantined:
            return
        with db.writer(db_path) as con:
            con.execute("BEGIN TRANSACTION")
            result = write_mail_batch(con, source, records, quarantined, bounces)
            con.execute("COMMIT")
        total.add(result)
        if progress is not None:
            progress(0, len(records) + len(quarantined))
        records.clear()
        quarantined.clear()
        bounces.clear()

    for item in items:
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


def import_paths(db_path: Path, source: str, paths: Sequence[Path], *, me: frozenset[str],
                 keep_subject: bool = False, label: str | None = None) -> ImportResult:
    """Import everything under ``paths``, walking them twice (sizes, then messages) so that
    memory does not grow with the number of files."""
    from netaudit import progress

    result = ImportResult()

    def mail_inputs() -> Iterator[Input]:
        for item in discover(paths, result):
            if item.kind == "calendar":
                result.calendars.append(item.path)
                continue
            if item.kind == "unusable folder":
                result.unread_folders.append(item.path)
            yield item

    with progress.track(label or source, input_bytes(discover(paths))) as advance:
        result.mail = import_inputs(db_path, source, mail_inputs(), me=me,
                                    keep_subject=keep_subject, progress=advance)
    return result


def import_inputs(db_path: Path, source: str, inputs: Iterable[Input], *,
                  me: frozenset[str], keep_subject: bool = False,
                  progress: Progress | None = None, batch_size: int = BATCH_SIZE) -> BatchResult:
    """Mail from every input; calendars are the caller's (they take another pipeline)."""
    def messages() -> Iterator[RawMessage | Quarantined]:
        for item in inputs:
            if item.kind != "calendar":
                yield from raw_messages(item)

    return ingest_messages(db_path, source, messages(), me=me, keep_subject=keep_subject,
                           batch_size=batch_size, progress=progress)
