"""What netaudit's helper processes share: the IMAP writer child (ingest/imap_commit.py) and
the header parser of large imports (ingest/local.py). Both are plain subprocesses fed pickles
through pipes, each after its length; both die with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import struct
from typing import IO

FRAME = struct.Struct("<Q")  # the length before each pickle on a pipe

# How long a writer outside the daemon keeps the file from one batch to the next: readers
# wait up to 10 s for it, and DuckDB's memory for an open file grows with what was written.
HOLD_SECONDS = 2.0
HOLD_MESSAGES = 20_000


def read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    """``size`` bytes from an unbuffered stream, or None at its end (the other side is done)."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            return None
        got += n
    return bytes(data)


def die_with_parent() -> bool:
    """Leave Ctrl-C to the parent (it reaches the whole process group) and be killed when the
    parent dies (PR_SET_PDEATHSIG). False when the parent died before that was set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    return os.getppid() != 1
