"""Local mail on disk: single message files, Maildir (and Maildir++) trees, mbox files.

Readers yield raw header blocks; they never read a message body they can skip. Only mbox
forces a scan of bodies, to find where the next message starts, and that scan runs over an
mmap in C (``bytes.find``), not line by line in Python. A single message file outside a
Maildir is scanned the same way, for the start of another message: such a file may be an mbox
that lost its first From_ line, or messages joined with ``cat``.

Every file is opened through ``ingest.safe_files`` (a FIFO never blocks), and every location
is text from ``safe_files.path_text`` (a file name that is not UTF-8 can still be stored).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import mmap
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from ingest.headers import MAX_HEADER_BYTES
from ingest.safe_files import open_regular, path_text

_CHUNK = 8192
_BOM = b"\xef\xbb\xbf"
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
# Fields that show a header block really starts here (and not a body line like "Year: 1963").
_MAIL_FIELDS = re.compile(
    rb"^(from|to|cc|date|subject|message-id|received|return-path|delivered-to|sender|"
    rb"mime-version|content-type|reply-to|in-reply-to|references)[ \t]*:",
    re.IGNORECASE | re.MULTILINE)
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?$",
                             re.IGNORECASE | re.MULTILINE)
_MAILDIR_SIZE = re.compile(r",S=(\d+)")
_BLANK_LINE = re.compile(rb"\n\r?\n")
# The header lines right after a candidate From_ line: fields and their continuations.
_FIELD_RUN = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)+")
SKIP_NAMES = {"color", "displayname", "description", "order", "dovecot-uidlist",
              "dovecot-keywords", "dovecot.index", "maildirfolder", "subscriptions"}


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message's header block and what the file system knows about it.

    ``location`` is what is stored (escaped text); ``path`` and ``offset`` are where the
    message really is, for the few bounces whose whole message is read again.
    """

    location: str
    header: bytes
    size: int | None
    fallback_dates: tuple[tuple[str, dt.datetime | None], ...]
    path: Path | None = None
    offset: int | None = None  # where the message starts inside an mbox


class Glued(ValueError):
    """A file that holds several messages with no From_ line between them: not an mbox, so
    where each message ends is a guess netaudit does not make; only the first is read."""

    def __init__(self, count: int) -> None:
        super().__init__(f"looks like {count} messages joined without From_ lines; only the "
                         "first was read")
        self.count = count


def _mtime(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)


def _read_header(fh: BinaryIO, limit: int) -> bytes:
    buf = bytearray()
    while len(buf) <= limit:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        start = max(0, len(buf) - 3)
        buf += chunk
        blank = _BLANK_LINE.search(buf, start)  # the first blank line, LF or CRLF
        if blank is not None:
            return bytes(buf[: blank.start() + 1])
    return bytes(buf[: limit + 1])


def read_header_block(path: Path | str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The file's bytes up to the first blank line; at most ``limit + 1`` bytes are read."""
    with open_regular(path) as fh:
        return _read_header(fh, limit)


def read_message_file(path: Path) -> RawMessage:
    """A file that is one message by where it is (a Maildir's cur/ or new/): its header only.

    Size and time come from the open descriptor, so they are the file's that was read.
    """
    with open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        header = _read_header(fh, MAX_HEADER_BYTES)
    if header.startswith(_BOM):
        header = header[len(_BOM):]
    return RawMessage(path_text(path), header, st.st_size, (("file_mtime", _mtime(st)),),
                      path)


# A mail file up to this size is read at once; a larger one is mapped. Reading 8 KiB costs
# less than mapping it (about 8 µs per file, a quarter of reading a message's header).
READ_WHOLE_BYTES = 1 << 20


def read_mail_file(path: Path, limit: int = MAX_HEADER_BYTES) -> Iterator[RawMessage]:
    """A mail file outside a Maildir: normally one message.

    If another message starts after this one ends (``file_layout``), the file is not one
    message: when that start is a From_ line, it is an mbox whose first From_ line is missing,
    and every message is read; when messages start with bare header blocks, they were joined
    without separators: the first is read and ``Glued`` is raised after it, to be reported.
    """
    with open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        if st.st_size <= READ_WHOLE_BYTES:
            # The size stat gave, not the cap: read(n) sets aside n bytes first.
            glued = yield from _mail_file(fh.read(st.st_size), path, st, limit)
        else:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                glued = yield from _mail_file(buf, path, st, limit)
    if glued:
        raise Glued(glued)


def _mail_file(buf: mmap.mmap | bytes, path: Path, st: os.stat_result,
               limit: int) -> Generator[RawMessage, None, int]:
    """The messages of ``read_mail_file``; returns how many were glued (0 if not glued)."""
    start = len(_BOM) if buf[:len(_BOM)] == _BOM else 0
    head_end = _header_end(buf, start, limit)
    kind, count = file_layout(buf, start, limit) if head_end < len(buf) else ("one", 1)
    if kind == "mbox":  # the first message has a From_ line only in a .eml named mbox
        yield from _split(buf, path, start, limit, buf[start:start + 5] == b"From ")
        return 0
    yield RawMessage(path_text(path), bytes(buf[start:head_end]), st.st_size,
                     (("file_mtime", _mtime(st)),), path)
    return count if kind == "glued" else 0


MAX_MESSAGE_BYTES = 1_000_000
# Delivery reports nest two or three levels; the stdlib MIME parser is quadratic in depth.
MAX_MULTIPARTS = 100
_MULTIPART = re.compile(rb"multipart[ \t]*/", re.IGNORECASE)


def read_whole(path: Path, offset: int | None, size: int | None,
               limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """A whole message (for the few bounces whose report part is needed): a file, or the
    one at ``offset`` inside an mbox. At most ``limit`` bytes."""
    with open_regular(path) as fh:
        if offset is not None:
            fh.seek(offset)
            return fh.read(min(size or limit, limit))
        return fh.read(limit)


def delivery_status_part(raw: bytes) -> bytes | None:
    """The ``message/delivery-status`` part of a whole bounce, as bytes; None if absent.

    The stdlib parses that part into one header block per recipient; they are joined back
    with blank lines, which is the part's own layout (RFC 3464 2.1). A message with more
    than ``MAX_MULTIPARTS`` multipart headers is not parsed.
    """
    if len(_MULTIPART.findall(raw)) > MAX_MULTIPARTS:
        return None
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
        for part in msg.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            payload = part.get_payload()
            if isinstance(payload, list):
                return b"\n".join(block.as_bytes() for block in payload
                                   if not isinstance(block, str))
            if isinstance(payload, str):
                return payload.encode("utf-8", "surrogateescape")
    except Exception:  # a hostile bounce: no rows, the message itself is kept
        return None
    return None


def read_maildir_file(path: Path) -> RawMessage:
    msg = read_message_file(path)
    m = _MAILDIR_SIZE.search(path.name)
    if m:
        return RawMessage(msg.location, msg.header, int(m.group(1)), msg.fallback_dates,
                          msg.path)
    return msg


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def looks_like_mbox(head: bytes) -> bool:
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    head = head.lstrip(b" \t\r\n")
    if not head.startswith(b"From ") or _FIELD.match(head):  # "From  :" is a field
        return False
    nl = head.find(b"\n")
    return nl > 0 and _FIELD.match(head, nl + 1) is not None


def looks_like_message(head: bytes) -> bool:
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    return _FIELD.match(head) is not None and _MAIL_FIELDS.search(head[:4096]) is not None


# The From_ line every mail program writes: ctime's date after a sender without spaces. Read
# with a regex and a datetime, 1.5 µs; the email package's parser took 15 µs, as much as the
# rest of splitting a message. Anything else goes to that parser, which accepts more.
_CTIME_FROM_LINE = re.compile(
    rb"From [!-~]+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) "
    rb"(\d\d):(\d\d):(\d\d) ([1-9]\d{3})[ \t\r]*")
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
     b"Dec"), 1)}


def _from_line_date(line: bytes) -> dt.datetime | None:
    """The delivery date on an mbox From_ line ('From sender Mon Jan  1 00:00:00 2001')."""
    m = _CTIME_FROM_LINE.fullmatch(line)
    if m is not None:
        try:
            return dt.datetime(int(m[6]), _MONTHS[m[1]], int(m[2]), int(m[3]), int(m[4]),
                               int(m[5]), tzinfo=dt.UTC)
        except ValueError:  # "Feb 30", "25:00:00": what the email package says too
            return None
    return _from_line_date_slow(line)


def _from_line_date_slow(line: bytes) -> dt.datetime | None:
    """``_from_line_date`` through the email package, for any other shape of From_ line."""
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 3:
        return None
    try:
        parsed = parsedate_to_datetime(parts[2].strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _header_end(buf: mmap.mmap | bytes, start: int, limit: int) -> int:
    """Index just after the header block that starts at ``start`` (before its blank line)."""
    stop = min(len(buf), start + limit + 1)
    # One search for either kind: two finds would each scan the whole window when the file
    # uses only the other line ending, 256 KiB per message.
    blank = _BLANK_LINE.search(buf, start, stop)
    return blank.start() + 1 if blank is not None else stop


def _is_separator(buf: mmap.mmap | bytes, pos: int) -> bool:
    """Is the "From " at ``pos`` a message boundary rather than a body line?

    Unescaped "From " lines in bodies are common in mboxo files, so a boundary must be
    followed by a header block that has at least one field real mail has. Only the run of
    field lines is read (the header parser stops at the first other line too), so each
    "From " line in a body costs what follows it up to the next non-field line.
    """
    nl = buf.find(b"\n", pos)
    if nl < 0:
        return False
    if _MAIL_FIELDS.match(buf, nl + 1):  # the usual case, at a tenth of the cost
        return True
    run = _FIELD_RUN.match(buf, nl + 1, min(len(buf), nl + 1 + 16384))
    return run is not None and _MAIL_FIELDS.search(bytes(buf[nl + 1:run.end()])) is not None


def iter_mbox(path: Path, limit: int = MAX_HEADER_BYTES) -> Iterator[RawMessage]:
    """The messages of an mbox file (mboxo, mboxrd or mboxcl2 with Content-Length).

    Content-Length is trusted only when it lands exactly on the next From_ line or the end of
    the file; otherwise boundaries come from From_ lines that head a real header block.
    """
    for item in read_mbox(path, limit=limit):
        if isinstance(item, RawMessage):
            yield item


# ---------------------------------------------------------------------------------------------
# Reading an mbox again: only what was appended since the last read


@dataclass(frozen=True, slots=True)
class MboxPosition:
    """How far an mbox was read, so that the next read starts there.

    ``end`` is where the last message read ends (the next one starts there, or the file
    ended); ``last`` is where that message starts: it is read again if it grew (a delivery
    still being written). ``count`` is how many messages were read since the file was last
    read whole, for what netaudit tells the user. ``digest`` (``sample_digest``) tells a
    file that grew from one that was rewritten (compacted, a message deleted, replaced).
    """

    end: int
    last: int
    count: int
    digest: str

    def text(self) -> str:
        """As stored in sync_state.content_hash (``end`` is last_uid)."""
        return f"{_POSITION_TAG} {self.last} {self.count} {self.digest}"

    @classmethod
    def parse(cls, end: int | None, text: str | None) -> MboxPosition | None:
        """The stored position, or None for anything that is not one (then the file is read
        whole, which is always correct)."""
        parts = (text or "").split(" ")
        if end is None or len(parts) != 4 or parts[0] != _POSITION_TAG:
            return None
        try:
            last, count = int(parts[1]), int(parts[2])
        except ValueError:
            return None
        if not 0 <= last <= end or count < 0:
            return None
        return cls(end, last, count, parts[3])


_POSITION_TAG = "mbox1"
SAMPLE_BYTES = 64 * 1024


def sample_digest(buf: mmap.mmap | bytes, end: int) -> str:
    """A hash of the first 64 KiB of the file and of the 64 KiB before ``end``, and of ``end``.

    Reading it costs 128 KiB whatever the file's size. A compacted or rewritten mbox changes
    these bytes (deleting a message moves everything after it; a mail client that rewrites
    Status: fields moves them too), and a shorter file is caught by its size. What it misses:
    an edit in place, same length, outside both samples; then the edited message, already
    stored, is simply not read again.
    """
    digest = hashlib.blake2b(end.to_bytes(8, "little"), digest_size=16)
    digest.update(buf[:min(end, SAMPLE_BYTES)])
    digest.update(buf[max(0, end - SAMPLE_BYTES):end])
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a read of an mbox starts, and why: ``start`` 0 is the whole file.

    ``count`` is how many messages were read before ``start`` (0 when read whole).
    """

    start: int
    why: str
    count: int = 0

    @property
    def whole(self) -> bool:
        return self.start == 0


FIRST_READ = "first read"
UNCHANGED = "unchanged since the last read"
APPENDED = "read from where the last read ended"
GREW = "the last message read grew; read from its start"
SHORTER = "shorter than when it was last read; read whole again"
REWRITTEN = "changed before where the last read ended; read whole again"


def resume_point(buf: mmap.mmap | bytes, since: MboxPosition | None,
                 limit: int = MAX_HEADER_BYTES) -> Resume:
    """Where to read ``buf`` (the whole file) from, given the last read's position. Pure.

    The answer gives exactly the messages a whole read would give from there on, because
    where a message ends is decided by the bytes from its start on (``_message_end``): the
    last message read, at ``since.last``, is looked at again in the file as it is now; when
    it still ends at ``since.end``, reading starts there; when it does not (it was still
    being written, or the bytes appended continue it), it is read again from its start,
    and message keys keep it from doubling. The bytes before it are taken to be unchanged
    when their samples are (``sample_digest``).
    """
    size = len(buf)
    if since is None or since.end == 0:
        return Resume(0, FIRST_READ)
    if size < since.end:
        return Resume(0, SHORTER)
    if sample_digest(buf, since.end) != since.digest:
        return Resume(0, REWRITTEN)
    if size == since.end:
        return Resume(size, UNCHANGED, since.count)
    last = since.last
    if buf[last:last + 5] != b"From ":
        return Resume(0, REWRITTEN)
    line_end = buf.find(b"\n", last)
    head_start = size if line_end < 0 else line_end + 1
    head_end = _header_end(buf, head_start, limit)
    if _message_end(buf, head_end, bytes(buf[head_start:head_end])) == since.end:
        return Resume(since.end, APPENDED, since.count)
    return Resume(last, GREW, max(0, since.count - 1))


POSITION_EVERY = 5000  # messages between two positions: a crash re-reads at most that many
_RELEASE_BYTES = 8 << 20  # mapped pages already read are given back every 8 MiB


def read_mbox(path: Path, since: MboxPosition | None = None, limit: int = MAX_HEADER_BYTES,
              every: int = POSITION_EVERY) -> Iterator[RawMessage | MboxPosition | Resume]:
    """An mbox's messages from where ``since`` says the last read ended (``resume_point``).

    Yields the ``Resume`` first, then messages, with an ``MboxPosition`` after every
    ``every`` messages and after the last one: storing a position in the same transaction
    as the messages before it means a crash costs reading them again, never a gap. An
    unchanged file yields only its ``Resume``; a file that is no mbox yields no position.

    The file is mapped, and the pages already read are dropped from the mapping as reading
    goes on (MADV_DONTNEED; the kernel's page cache keeps them): every page touched of a
    mapping counts in the process's memory, 2.2 GB for a million-message mbox.
    """
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            yield Resume(0, FIRST_READ if since is None or since.end == 0 else SHORTER)
            if since is None or since.end != 0:
                yield MboxPosition(0, 0, 0, sample_digest(b"", 0))
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            resume = resume_point(buf, since, limit)
            yield resume
            if resume.start >= size:
                return
            pos = resume.start if resume.start else _first_from_line(buf)
            if pos is None:
                return
            _advise(buf, _SEQUENTIAL, 0, size)
            count = resume.count
            released = 0
            last = end = pos
            for msg in _split(buf, path, pos, limit):
                yield msg
                count += 1
                last = msg.offset or 0
                end = last + (msg.size or 0)
                if count % every == 0:
                    yield MboxPosition(end, last, count, sample_digest(buf, end))
                if end - released >= _RELEASE_BYTES:
                    keep = (end - (1 << 20)) // mmap.PAGESIZE * mmap.PAGESIZE
                    _advise(buf, _DONTNEED, released, keep - released)
                    released = keep
            yield MboxPosition(end, last, count, sample_digest(buf, end))


def _first_from_line(buf: mmap.mmap | bytes) -> int | None:
    """Where an mbox's first From_ line is: after a BOM and blank lines (some exporters
    write them); None when the file does not start with one."""
    size = len(buf)
    pos = len(_BOM) if buf[: len(_BOM)] == _BOM else 0
    while pos < size and buf[pos:pos + 1] in (b" ", b"\t", b"\r", b"\n"):
        pos += 1
    return pos if buf[pos:pos + 5] == b"From " else None


_SEQUENTIAL: int | None = getattr(mmap, "MADV_SEQUENTIAL", None)
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


def _advise(buf: mmap.mmap, advice: int | None, start: int, length: int) -> None:
    """madvise, where the platform has it; only ever a hint here (a page given back is
    read again from the page cache if it is needed again)."""
    if advice is not None and length > 0 and hasattr(buf, "madvise"):
        with contextlib.suppress(OSError, ValueError):
            buf.madvise(advice, start, length)


def _split(buf: mmap.mmap | bytes, path: Path, pos: int, limit: int,
           first_has_from_line: bool = True) -> Iterator[RawMessage]:
    """The messages from ``pos`` on; the first one starts with its header when it has no
    From_ line (an mbox cut at its start, or one message written before an mbox)."""
    size = len(buf)
    where = path_text(path)
    has_from_line = first_has_from_line
    while pos < size:
        if has_from_line:
            line_end = buf.find(b"\n", pos)
            if line_end < 0:
                line_end = size - 1
            from_line = bytes(buf[pos:line_end])
            head_start = line_end + 1
            dates: tuple[tuple[str, dt.datetime | None], ...] = (
                ("from_line", _from_line_date(from_line)),)
        else:
            head_start = pos
            dates = ()
        head_end = _header_end(buf, head_start, limit)
        header = bytes(buf[head_start:head_end])
        nxt = _message_end(buf, head_end, header)
        yield RawMessage(f"{where}#{pos}", header, nxt - pos, dates, path, pos)
        pos = nxt
        has_from_line = True


def _message_end(buf: mmap.mmap | bytes, head_end: int, header: bytes) -> int:
    """Where the message whose header block ends at ``head_end`` ends: where the next From_
    line starts, or the end of the file. Decided by the bytes from the message's start on
    only, which is what lets a later read start at a message (``resume_point``)."""
    size = len(buf)
    body_start = head_end + (2 if buf[head_end:head_end + 2] == b"\r\n" else 1)
    # A search for the field costs 8 µs in a 1.5 KB header; most have none.
    m = _CONTENT_LENGTH.search(header) if b"content-length" in header.lower() else None
    if m:
        cand = body_start + int(m.group(1))
        for skip in (0, 1, 2):
            c = cand + skip
            if c >= size or (buf[c:c + 5] == b"From " and buf[c - 1:c] == b"\n"):
                return min(c, size)
    search = head_end
    while True:
        found = buf.find(b"\nFrom ", search)
        if found < 0:
            return size
        if _is_separator(buf, found + 1):
            return found + 1
        search = found + 1


# A line that may start another message: a From_ line, or a Message-ID field (every message a
# mail server handled has one). Case-insensitive for the field only: "from " in a body is
# common, and From_ lines are written "From ".
_NEXT_START = re.compile(rb"\n(?:From |(?i:message-id)[ \t]*:)")
_FROM_FIELD = re.compile(rb"^from[ \t]*:", re.IGNORECASE | re.MULTILINE)
_DATE_FIELD = re.compile(rb"^date[ \t]*:", re.IGNORECASE | re.MULTILINE)
# A report about other mail may quote that mail's header in its text (qmail and older exim
# bounces do): there the first bare header block is that quote, not another message.
_REPORT = re.compile(rb"^(?:from[ \t]*:[^\n]*\b(?:mailer-daemon|postmaster)\b"
                     rb"|subject[ \t]*:[^\n]*(?:undeliver|failure notice|delivery fail"
                     rb"|returned mail|delivery status))", re.IGNORECASE | re.MULTILINE)
_MAX_RUN_LINES = 200  # how far back a header block is looked for from its Message-ID line
# A message forwarded inline keeps its whole header (AOL's forwards do; Enron holds four):
# one bare header block after a message is that, not a second message. Three messages are
# no forward.
GLUED_MIN = 3


def file_layout(buf: mmap.mmap | bytes, start: int = 0,
                limit: int = MAX_HEADER_BYTES) -> tuple[str, int]:
    """What a file that starts with a header block holds: ("one", 1), ("mbox", 0) when a From_
    line follows the first message (an mbox whose first From_ line is missing), or ("glued",
    count) when further messages start with a bare header block.

    A message ends where its MIME structure says (after the closing boundary of a multipart),
    so an attached message, a bounce's copy of the original or an attached mbox never counts.
    Another message starts at a From_ line with a date that heads a header block (as in an
    mbox) or at a header block with From, Date and Message-ID fields. Fewer than
    ``GLUED_MIN`` messages count as one. Pure; reads ``buf`` only.
    """
    count = 1
    pos = start
    while True:
        head_end = _header_end(buf, pos, limit)
        if _NEXT_START.search(buf, head_end) is None:  # nothing could start a message: done
            break
        body = _body_after_parts(buf, pos, head_end)
        if body is None:
            break
        body_from, quoted = body
        found = _next_start(buf, max(body_from - 1, 0), quoted)
        if found is None:
            break
        nxt, is_from_line = found
        if nxt <= pos:  # cannot happen; never loop
            break
        if is_from_line and count == 1:
            return "mbox", 0
        count += 1
        if is_from_line:
            line_end = buf.find(b"\n", nxt)
            pos = len(buf) if line_end < 0 else line_end + 1
        else:
            pos = nxt
    return ("glued", count) if count >= GLUED_MIN else ("one", 1)


def _body_after_parts(buf: mmap.mmap | bytes, pos: int,
                      head_end: int) -> tuple[int, int] | None:
    """Where the message at ``pos`` can no longer hold parts of its own, and how many bare
    header blocks after that are quotes (1 in a report about other mail); None when that
    cannot be told (a message/* body, a multipart that is never closed)."""
    header = bytes(buf[pos:head_end])
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(header)
        ctype = msg.get_content_type()
        boundary = msg.get_boundary() if msg.get_content_maintype() == "multipart" else None
    except Exception:  # a hostile header: treat the file as one message, as before
        return None
    if ctype.startswith("message/") or ctype == "text/rfc822-headers":
        return None
    if msg.get_content_maintype() == "multipart":
        if not boundary:
            return None
        marker = re.escape(boundary.encode("utf-8", "surrogateescape"))
        close = re.compile(rb"^--" + marker + rb"--(?=[ \t]*\r?$)",
                           re.MULTILINE).search(buf, head_end)
        if close is None:
            return None
        return close.end(), 0
    return head_end, 1 if _REPORT.search(header) else 0


def _next_start(buf: mmap.mmap | bytes, search: int,
                quoted: int) -> tuple[int, bool] | None:
    """The first line from ``search`` on that starts another message: (offset, whether it is
    a From_ line); the first ``quoted`` bare header blocks are passed over.

    Each run of header lines is looked at once, however many Message-ID lines it holds, and
    looking back for its start stops where the last run ended: linear in the file.
    """
    done = search + 1  # lines before this were looked at
    for m in _NEXT_START.finditer(buf, search):
        line = m.start() + 1
        if line < done:
            continue
        if buf[line:line + 5] == b"From ":
            if _is_separator(buf, line) and _from_line_date(_line(buf, line)) is not None:
                return line, True
            continue
        first = _run_start(buf, line, done)
        run = _FIELD_RUN.match(buf, first, min(len(buf), first + 16384))
        if run is None or run.end() <= line:
            continue
        done = run.end()
        fields = bytes(buf[first:run.end()])
        if _FROM_FIELD.search(fields) and _DATE_FIELD.search(fields):
            if quoted == 0:
                return first, False
            quoted -= 1
    return None


def _line(buf: mmap.mmap | bytes, pos: int) -> bytes:
    end = buf.find(b"\n", pos)
    return bytes(buf[pos:end if end >= 0 else len(buf)])


def _run_start(buf: mmap.mmap | bytes, line: int, floor: int) -> int:
    """The first field line (not before ``floor``) of the run of header lines that holds the
    line at ``line``."""
    first = line
    for _ in range(_MAX_RUN_LINES):
        prev = buf.rfind(b"\n", 0, first - 1) + 1 if first > 0 else -1
        if prev < floor:
            break
        text = bytes(buf[prev:first - 1]).rstrip(b"\r")
        if not text or not (_FIELD.match(text) or text[:1] in (b" ", b"\t")):
            break
        first = prev
    while first < line and buf[first:first + 1] in (b" ", b"\t"):  # not a continuation
        first = buf.find(b"\n", first) + 1
    return first
