"""Opening files a user or another program put in a mail or calendar folder.

Those folders are not ours: a name may not be UTF-8, an entry may be a FIFO that blocks
``open()`` for ever, a device, or a symlink to ``/dev/zero`` whose ``stat()`` size says 0.
Every file netaudit reads from a source goes through here.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """A FIFO, socket, device or directory where a file was expected."""


class TooLarge(OSError):
    """More bytes than the caller's cap (the file may have grown, or be a device)."""


def path_text(path: Path | str | bytes) -> str:
    """A path as text that DuckDB can store and that gives the same bytes back.

    A name that is valid UTF-8 is itself. Other bytes become ``\\xNN`` (Python's
    ``backslashreplace``), so the text is valid UTF-8 and two different names never give
    the same text, except a name that already spells ``\\xNN`` in ASCII next to one with
    that byte, which no mail program writes.
    """
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


_ESCAPED = re.compile(rb"\\x([89a-f][0-9a-f])")


def path_from_text(text: str) -> Path:
    """The path that ``path_text`` gave ``text`` for (rebuild imports stored paths again).

    ``backslashreplace`` writes only bytes from 0x80 up, so only those escapes are undone.
    """
    raw = _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8"))
    return Path(os.fsdecode(raw))


def kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _mode(path: Path | str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def open_regular(path: Path | str) -> BinaryIO:
    """Open a regular file for reading without ever blocking.

    ``O_NONBLOCK`` makes ``open()`` of a FIFO return at once; ``fstat`` on the descriptor
    (not ``stat`` on the name, which may change in between) then refuses anything that is
    not a regular file, so a FIFO, socket or device is never read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        if exc.errno == errno.ENXIO and stat.S_ISSOCK(_mode(path)):
            raise NotRegularFile(0, "a socket, not a file", os.fsdecode(path)) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(0, f"{kind(mode)}, not a file", os.fsdecode(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path | str, max_bytes: int) -> bytes:
    """A regular file's bytes; ``TooLarge`` past ``max_bytes``, whatever ``stat`` said."""
    with open_regular(path) as fh:
        if os.fstat(fh.fileno()).st_size > max_bytes:  # no need to read what is refused
            raise TooLarge(0, f"larger than {max_bytes} bytes", os.fsdecode(path))
        data = fh.read(max_bytes + 1)  # and a file that grows is still cut here
    if len(data) > max_bytes:
        raise TooLarge(0, f"larger than {max_bytes} bytes", os.fsdecode(path))
    return data


def is_regular(path: Path | str) -> bool:
    """True for a regular file or a symlink to one; never opens the file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
