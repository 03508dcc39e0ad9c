"""Local mail on disk: single message files, Maildir (and Maildir++) trees, mbox files.

Readers yield raw header blocks; they never read a message body they can skip. Only mbox
forces a scan of bodies, to find where the next message starts, and that scan runs over an
mmap in C (``bytes.find``), not line by line in Python.
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path

from ingest.headers import MAX_HEADER_BYTES

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
    """One message's header block and what the file system knows about it."""

    location: str
    header: bytes
    size: int | None
    fallback_dates: tuple[tuple[str, dt.datetime | None], ...]


def _mtime(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)


def read_header_block(path: Path | str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The file's bytes up to the first blank line; at most ``limit + 1`` bytes are read."""
    buf = bytearray()
    with open(path, "rb") as fh:
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


def read_message_file(path: Path) -> RawMessage:
    st = path.stat()
    header = read_header_block(path)
    if header.startswith(_BOM):
        header = header[len(_BOM):]
    return RawMessage(str(path), header, st.st_size, (("file_mtime", _mtime(st)),))


MAX_MESSAGE_BYTES = 1_000_000
# Delivery reports nest two or three levels; the stdlib MIME parser is quadratic in depth.
MAX_MULTIPARTS = 100
_MULTIPART = re.compile(rb"multipart[ \t]*/", re.IGNORECASE)


def read_whole(location: str, size: int | None, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """A whole message (for the few bounces whose report part is needed): a file, or
    ``path#offset`` inside an mbox. At most ``limit`` bytes."""
    path, _, offset = location.rpartition("#") if "#" in location else (location, "", "")
    with open(path, "rb") as fh:
        if offset.isdigit():
            fh.seek(int(offset))
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
        return RawMessage(msg.location, msg.header, int(m.group(1)), msg.fallback_dates)
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


def _from_line_date(line: bytes) -> dt.datetime | None:
    """The delivery date on an mbox From_ line ('From sender Mon Jan  1 00:00:00 2001')."""
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
    run = _FIELD_RUN.match(buf, nl + 1, min(len(buf), nl + 1 + 16384))
    return run is not None and _MAIL_FIELDS.search(bytes(buf[nl + 1:run.end()])) is not None


def iter_mbox(path: Path, limit: int = MAX_HEADER_BYTES) -> Iterator[RawMessage]:
    """The messages of an mbox file (mboxo, mboxrd or mboxcl2 with Content-Length).

    Content-Length is trusted only when it lands exactly on the next From_ line or the end of
    the file; otherwise boundaries come from From_ lines that head a real header block.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = len(_BOM) if buf[: len(_BOM)] == _BOM else 0
            while pos < size and buf[pos:pos + 1] in (b" ", b"\t", b"\r", b"\n"):
                pos += 1  # some exporters put blank lines before the first From_ line
            if buf[pos:pos + 5] != b"From ":
                return
            while pos < size:
                line_end = buf.find(b"\n", pos)
                if line_end < 0:
                    line_end = size - 1
                from_line = bytes(buf[pos:line_end])
                head_start = line_end + 1
                head_end = _header_end(buf, head_start, limit)
                header = bytes(buf[head_start:head_end])
                body_start = head_end + (2 if buf[head_end:head_end + 2] == b"\r\n" else 1)
                nxt = -1
                m = _CONTENT_LENGTH.search(header)
                if m:
                    cand = body_start + int(m.group(1))
                    for skip in (0, 1, 2):
                        c = cand + skip
                        if c >= size or (buf[c:c + 5] == b"From " and buf[c - 1:c] == b"\n"):
                            nxt = min(c, size)
                            break
                if nxt < 0:
                    nxt = size
                    search = head_end
                    while True:
                        found = buf.find(b"\nFrom ", search)
                        if found < 0:
                            break
                        if _is_separator(buf, found + 1):
                            nxt = found + 1
                            break
                        search = found + 1
                yield RawMessage(f"{path}#{pos}", header, nxt - pos,
                                 (("from_line", _from_line_date(from_line)),))
                pos = nxt
