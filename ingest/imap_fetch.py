"""UID FETCH on the session's own connection: pipelined windows, read from its buffer.

imaplib reads every response line through several regexes, files each untagged response in a
dict of lists and hands the caller one command's answer only after the server has finished
it, so the server waits while netaudit parses and netaudit waits while the server reads its
index. Measured on a Dovecot over loopback, that loop delivered about 5,000 messages/s where
the socket itself carries about 50,000. This reader keeps the next windows' UID FETCH commands
in flight while it reads the current one (RFC 3501 5.5 allows several commands at once; FETCH
commands do not depend on each other) and reads with the connection's own ``readline`` and
``read`` (the documented imaplib methods, TLS or not). The usual answer (UID, INTERNALDATE,
RFC822.SIZE, one header literal) is read into its item as it arrives, and every such answer
already whole in the connection's read buffer is taken in one go; anything else is kept in
the shape imaplib gives and read by imapclient's parser (``imap_parse.merge_fetch``).

Dovecot runs pipelined FETCH commands side by side: a command's tagged OK may come after some
of the next command's data. So each answer goes to its window by its UID, never by where it
is in the stream.

Only FETCH data is kept. Other untagged responses the server may send meanwhile (EXISTS,
EXPUNGE, FLAGS, OK) are skipped: the next sync sees their effect. ``* BYE`` and a closed
socket raise ``imaplib.IMAP4.abort``, a tagged NO or BAD raises ``IMAPClientError``, as the
imaplib path did, so the sync's reconnect and error messages are the same.

Nothing else may use the connection while commands are in flight: ``drain`` reads every
outstanding answer into memory first (the bounce lookups need the connection between
windows).

What the server sends is bounded as on the rest of the connection (ingest/imap_connect.py):
a literal over MAX_LITERAL_BYTES is refused before it is read, and each ``read`` or ``drain``
may receive at most the ResponseBudget of the UIDs in flight, whether the reader keeps a
response or skips it. FETCH data for a UID no window asked for is dropped on arrival.
"""

from __future__ import annotations

import imaplib
import io
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import imapclient

from ingest.imap_connect import BoundedReads, ResponseBudget, check_literal, literal_size
from ingest.imap_parse import FETCH_UNIT, atoms_item, fast_item, merge_fetch

__all__ = ["FetchPipeline", "Window", "fetch_message_number", "literal_size"]

FetchData = list[Any]  # imaplib's shape: (prefix, literal) tuples, then the closing line
_UID = re.compile(rb"[ (]UID (\d{1,18})", re.IGNORECASE)
_BUFFERED = 1 << 16  # peek asks for this much; a buffered reader gives what it holds


@dataclass(slots=True)
class Window:
    """One UID FETCH in flight: its tag, its range, and its answer once read."""

    tag: bytes
    lo: int
    hi: int
    data: FetchData | None = None  # answers in imaplib's shape, for imap_parse.merge_fetch
    items: dict[int, dict[bytes, Any]] = field(default_factory=dict)  # read on arrival
    error: BaseException | None = None
    done: bool = False

    def response(self) -> dict[int, dict[bytes, Any]]:
        """{uid: {item: value}}, as imap_parse.parse_fetch gives for the whole answer."""
        return merge_fetch(self.items, self.data) if self.data else self.items


def fetch_message_number(line: bytes) -> int | None:
    """For ``* 12 FETCH (...``: the index of the space before FETCH, so that the line can be
    cut to imaplib's "12 (..."; None for other untagged responses (EXISTS, EXPUNGE, OK).
    """
    space = line.find(b" ", 2)
    if space < 3 or not line[2:space].isdigit():
        return None
    if line[space + 1:space + 7].upper() != b"FETCH ":
        return None
    return space


@dataclass
class FetchPipeline:
    """Pipelined ``UID FETCH lo:hi (items)`` on one imaplib connection."""

    imap: imaplib.IMAP4
    items: str  # "(INTERNALDATE RFC822.SIZE BODY.PEEK[...])"
    pending: deque[Window] = field(default_factory=deque)
    counter: int = 0
    budget: ResponseBudget | None = None  # what the current read may still receive

    @classmethod
    def on(cls, client: imapclient.IMAPClient, items: list[str]) -> FetchPipeline:
        # imapclient exposes the imaplib connection only as _imap; the reader needs its
        # readline/read/send, which imaplib documents.
        return cls(client._imap, f"({' '.join(items)})")

    def __len__(self) -> int:
        return len(self.pending)

    def send(self, lo: int, hi: int) -> Window:
        """Queue ``UID FETCH lo:hi``; its answer is read by ``read`` in the order sent."""
        self.counter += 1
        # Own tags, distinct from imaplib's (tagpre + number), which never sees these.
        tag = f"NA{self.counter}".encode()
        try:
            self.imap.send(tag + f" UID FETCH {lo}:{hi} {self.items}\r\n".encode())
        except (OSError, imaplib.IMAP4.error):
            self.pending.clear()  # the connection is unusable; what was in flight is lost
            raise
        window = Window(tag, lo, hi)
        self.pending.append(window)
        return window

    @property
    def where(self) -> str:
        return f"{self.imap.host}:{self.imap.port}"

    def _new_budget(self) -> None:
        """The bound of one read: what the UIDs in flight may bring, plus the allowance of a
        command. The connection's own count (a bounded one's, ingest/imap_connect.py) pauses
        meanwhile: this reader counts what it reads, on any imaplib connection."""
        uids = sum(w.hi - w.lo + 1 for w in self.pending if not w.done)
        self.budget = ResponseBudget.for_fetch(self.where, uids)
        if isinstance(self.imap, BoundedReads):
            self.imap.budget = None

    def read(self) -> Window:
        """The oldest window with its data; raises what reading it raised."""
        window = self.pending[0]
        self._new_budget()
        try:
            while not window.done:
                self._pump()
        except (OSError, imaplib.IMAP4.error):
            self.pending.clear()  # the connection is unusable; what was in flight is lost
            raise
        self.pending.popleft()
        if window.error is not None:
            raise window.error
        return window

    def drain(self) -> None:
        """Read every outstanding answer now, so the connection is free for other commands."""
        self._new_budget()
        try:
            while not all(w.done for w in self.pending):
                self._pump()
        except (OSError, imaplib.IMAP4.error) as exc:
            for window in self.pending:
                if not window.done:
                    window.error, window.done = exc, True

    def _take_buffered(self) -> bool:
        """Take every usual answer that is whole in the connection's read buffer at once.

        Reading them a line at a time (two readline calls, a read and the prefix's regexes
        per message) was a quarter of the fetching process's time; here one regex finds each
        answer in what the buffer already holds, and one read consumes them all. Anything
        else (a tagged completion, another response, an answer not fully received) is left
        for the line reader. Uses imaplib's buffered reader (``IMAP4.file``), which both its
        plain and TLS connections have; without one it does nothing.
        """
        file = getattr(self.imap, "file", None)
        if not isinstance(file, io.BufferedReader):
            return False
        buf = file.peek(_BUFFERED)
        pos, end, taken = 0, len(buf), 0
        match = FETCH_UNIT.match
        while pos < end:
            m = match(buf, pos)
            if m is None:
                break
            start = m.end()
            stop = start + int(m.group(2))
            if buf[stop:stop + 3] != b")\r\n":
                break  # not all here yet, or not the usual shape
            fast = atoms_item(m.group(1), buf[start:stop])
            if fast is None:
                break
            self._keep(*fast)
            pos = stop + 3
            taken += 1
        if not pos:
            return False
        file.read(pos)  # consumed: what was peeked
        assert self.budget is not None
        self.budget.charge(taken * 2, pos)  # two lines each: the prefix, the closing ")"
        return True

    def _keep(self, uid: int, item: dict[bytes, Any]) -> None:
        """A message's item read the fast way, filed with its window; dropped when no window
        asked for its UID (the sync would skip it: a bound on what a server can make us keep)."""
        owner = self._owner_of(uid)
        if not owner.lo <= uid <= owner.hi:
            return
        if uid in owner.items:
            owner.items[uid].update(item)
        else:
            owner.items[uid] = item

    def _owner(self, unit: FetchData) -> Window | None:
        """The window a FETCH response belongs to, by its UID; None when no window asked for
        its UID.

        Dovecot runs pipelined FETCH commands side by side and sends a command's tagged OK
        only after some of the next one's data, so position in the stream says nothing;
        the UID does, since the windows do not overlap. A response without a UID (an
        unsolicited FLAGS update) goes to the oldest window still open.
        """
        first = unit[0]
        prefix = first[0] if isinstance(first, tuple) else first
        m = _UID.search(prefix)
        if m is None:
            return self._owner_of(None)
        uid = int(m.group(1))
        owner = self._owner_of(uid)
        return owner if owner.lo <= uid <= owner.hi else None

    def _owner_of(self, uid: int | None) -> Window:
        if uid is not None:
            for window in self.pending:
                if window.lo <= uid <= window.hi and not window.done:
                    return window
        for window in self.pending:
            if not window.done:
                return window
        raise imaplib.IMAP4.abort("FETCH data after every command was answered")

    def _pump(self) -> None:
        """Read one response: a message's FETCH data (kept), another untagged response
        (skipped) or one of our tagged completions; or every usual answer already received."""
        if self._take_buffered():
            return
        readline, read = self.imap.readline, self.imap.read
        budget = self.budget
        assert budget is not None
        line = readline()
        if not line:
            raise imaplib.IMAP4.abort("socket error: EOF")
        budget.charge(1, len(line))
        line = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\r\n")
        if line.startswith(b"* "):
            space = fetch_message_number(line)
            if space is None:
                if line[2:5].upper() == b"BYE":
                    raise imaplib.IMAP4.abort(line[6:].decode("utf-8", "replace"))
                current = line
            else:
                current = line[2:space] + line[space + 6:]  # b"12 (UID ...", as imaplib has it
            unit: FetchData = []
            size = literal_size(current)
            while size is not None:
                check_literal(size, self.where)
                budget.charge(0, size)
                literal = read(size)
                if len(literal) < size:
                    raise imaplib.IMAP4.abort("socket error: EOF in a literal")
                unit.append((current, literal))
                current = readline()
                if not current:
                    raise imaplib.IMAP4.abort("socket error: EOF")
                budget.charge(1, len(current))
                current = current[:-2] if current.endswith(b"\r\n") else \
                    current.rstrip(b"\r\n")
                size = literal_size(current)
            unit.append(current)
            if space is None:
                return
            if len(unit) == 2 and current == b")":
                # The usual answer, read now: no second pass over an imaplib-shaped list.
                prefix, literal = unit[0]
                fast = fast_item(prefix, literal)
                if fast is not None:
                    self._keep(*fast)
                    return
            owner = self._owner(unit)
            if owner is None:
                return
            if owner.data is None:
                owner.data = []
            owner.data.extend(unit)
            return
        tag, _, rest = line.partition(b" ")
        window = next((w for w in self.pending if w.tag == tag and not w.done), None)
        if window is None:
            if line.startswith(b"+"):
                raise imaplib.IMAP4.abort("unexpected continuation request during FETCH")
            raise imaplib.IMAP4.abort(f"unexpected response: {line[:80]!r}")
        status, _, text = rest.partition(b" ")
        window.done = True
        if status.upper() != b"OK":
            # The same message the imaplib path gave, so describe_error reads it alike.
            window.error = imapclient.exceptions.IMAPClientError(
                f"UID FETCH failed: {[text]!r}")
