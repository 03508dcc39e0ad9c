"""Pure IMAP helpers: which folders to read, what to FETCH, and how to read the answers.

No sockets here, so every decision that depends on a server's quirks (a LIST response, a FETCH
item, a BODYSTRUCTURE, a throttling reply) is tested with plain data, including the Gmail
behaviour that cannot be run against a local server.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import quopri
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ingest.headers import MessageRecord, Rejected, parse_headers
from ingest.store import Quarantined

# The header fields the parser reads (R-IMAP-9), plus X-From for Enron-style display names so
# that IMAP and a local import of the same mail store the same names.
HEADER_FIELDS = (
    "FROM", "SENDER", "REPLY-TO", "TO", "CC", "BCC", "DATE", "MESSAGE-ID", "IN-REPLY-TO",
    "REFERENCES", "SUBJECT", "LIST-ID", "LIST-UNSUBSCRIBE", "LIST-POST", "PRECEDENCE",
    "AUTO-SUBMITTED", "X-AUTOREPLY", "X-AUTORESPOND", "CONTENT-TYPE", "FEEDBACK-ID",
    "X-SES-OUTGOING", "MAILING-LIST", "X-FROM",
)
HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
FETCH_ITEMS = ("INTERNALDATE", "RFC822.SIZE", HEADER_ITEM)
GMAIL_ITEMS = ("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS")
GMAIL_CAPABILITY = b"X-GM-EXT-1"
DSN_PART_LIMIT = 64 * 1024  # a partial fetch: no delivery report needs more

SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail")
SKIPPED_ATTRIBUTES = ("\\junk", "\\trash")
UNSELECTABLE = ("\\noselect", "\\nonexistent")

_BACKOFF = re.compile(r"suggested\s+backoff\s+time\s*:?\s*(\d+)\s*(milliseconds|ms|seconds|s)?",
                      re.IGNORECASE)
_THROTTLED = re.compile(r"throttl|\[UNAVAILABLE\]|\[INUSE\]|\[LIMIT\]|\[OVERQUOTA\]|"
                        r"authenticated but not connected|try again later", re.IGNORECASE)


class FolderNotFound(Exception):
    """A configured folder is not on the server; the message lists what is."""


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder to sync; ``sent`` marks my own mail (its From addresses are mine)."""

    name: str
    sent: bool = False


ListEntry = tuple[Sequence[bytes | str], Any, str]  # (flags, delimiter, name) as imapclient lists


def _flags(entry: ListEntry) -> set[str]:
    return {(f.decode("ascii", "replace") if isinstance(f, bytes) else f).lower()
            for f in entry[0]}


def find_special(listing: Sequence[ListEntry], attribute: str,
                 names: Sequence[str] = ()) -> str | None:
    """A SPECIAL-USE folder (RFC 6154) by its LIST attribute, then by the usual names.

    Names are a fallback for servers without SPECIAL-USE; they are tried as given and below
    INBOX ("INBOX.Sent", Courier style), case-insensitively.
    """
    wanted = attribute.lower()
    for entry in listing:
        if wanted in _flags(entry) and not _flags(entry) & set(UNSELECTABLE):
            return entry[2]
    by_lower = {entry[2].lower(): entry[2] for entry in listing
                if not _flags(entry) & set(UNSELECTABLE)}
    for name in names:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    for entry in listing:
        delim = entry[1].decode() if isinstance(entry[1], bytes) else entry[1]
        if not delim:
            continue
        for name in names:
            if entry[2].lower() == f"inbox{delim}{name}".lower():
                return entry[2]
    return None


DEFAULT_FOLDERS = ("INBOX", "\\Sent")  # without a per-account list, and off Gmail


def choose_folders(listing: Sequence[ListEntry], configured: Sequence[str] | None,
                   gmail: bool = False) -> list[Folder]:
    """The folders to sync, from a LIST response.

    Default: INBOX and the \\Sent folder; on Gmail the \\All folder, found by its attribute
    because its name is localized (falling back to INBOX and \\Sent when it is hidden).
    \\Junk and \\Trash are never chosen by default. ``configured`` overrides the default; a
    value such as "\\Sent" names a special-use folder. A configured folder that does not exist
    raises FolderNotFound; a missing default \\Sent folder is simply not synced.
    """
    if configured is None and gmail:
        all_mail = find_special(listing, "\\All")
        if all_mail is not None:
            return [Folder(all_mail)]
    explicit = configured is not None
    wanted = list(configured) if configured is not None else list(DEFAULT_FOLDERS)
    flags_by_name = {entry[2]: _flags(entry) for entry in listing}
    lower_names = {name.lower(): name for name in flags_by_name}
    out: list[Folder] = []
    for value in wanted:
        if value.startswith("\\"):
            name = find_special(listing, value, SENT_NAMES if value.lower() == "\\sent" else ())
            if name is None:
                if explicit:
                    raise FolderNotFound(f"no folder with the {value} attribute on the server")
                continue
        elif value.upper() == "INBOX":
            name = lower_names.get("inbox", "INBOX")
        elif value in flags_by_name:
            name = value
        else:
            known = ", ".join(sorted(flags_by_name)) or "none"
            raise FolderNotFound(f"folder {value!r} does not exist (folders: {known})")
        flags = flags_by_name.get(name, set())
        if flags & set(UNSELECTABLE):
            raise FolderNotFound(f"folder {name!r} cannot be selected (\\Noselect)")
        if not explicit and flags & set(SKIPPED_ATTRIBUTES):
            continue
        sent = "\\sent" in flags or value.lower() == "\\sent"
        if all(f.name != name for f in out):
            out.append(Folder(name, sent))
    return out


def uid_window(start: int, top: int, span: int) -> tuple[int, int]:
    """The next UID range [start, end] to FETCH, never beyond UIDNEXT-1 (R-IMAP-2)."""
    return start, min(top, start + span - 1)


def next_span(span: int, found: int, target: int, max_span: int) -> int:
    """Adapt the UID window to the folder's density.

    Dense folders (the usual case) keep ``target`` UIDs per FETCH. Sparse ranges (old UIDs
    mostly expunged) grow the window so a gap of a million UIDs costs hundreds of round trips,
    not thousands; growth is at most 4x per step, so a dense stretch after a sparse one still
    returns a bounded number of messages.
    """
    if found <= 0:
        return min(span * 4, max_span)
    scaled = span * target // found
    return max(target, min(scaled, span * 4, max_span))


def suggested_backoff(text: str | bytes) -> float | None:
    """Seconds to wait from "Suggested Backoff Time: N ms" (Microsoft 365), else None.

    A bare number is milliseconds, as Microsoft sends it.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _BACKOFF.search(text)
    if m is None:
        return None
    value = int(m.group(1))
    unit = (m.group(2) or "ms").lower()
    return float(value) if unit in ("s", "seconds") else value / 1000.0


def is_throttled(text: str | bytes) -> bool:
    """Whether a NO/BAD reply means "later", not "never" (R-IMAP-14)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return bool(_THROTTLED.search(text)) or suggested_backoff(text) is not None


def header_literal(item: Mapping[bytes, Any]) -> bytes | None:
    """The header bytes of one FETCH item, found by key prefix (servers quote or re-case the
    field list in the key, R-IMAP-10); None when the item has no header (an unsolicited
    FLAGS update)."""
    for key, value in item.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER.FIELDS"):
            if value is None:
                return b""
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def gmail_labels(item: Mapping[bytes, Any]) -> set[str]:
    return {_as_text(label).lower() for label in item.get(b"X-GM-LABELS") or ()}


def gmail_record(record: MessageRecord, item: Mapping[bytes, Any]) -> MessageRecord:
    """Key a Gmail message by X-GM-MSGID ("gm:<id>", so \\All and labels never double it) and
    thread it by X-GM-THRID (R-IMAP-16)."""
    msgid = item.get(b"X-GM-MSGID")
    thrid = item.get(b"X-GM-THRID")
    return replace(record,
                   message_key=f"gm:{_as_text(msgid)}" if msgid is not None else
                   record.message_key,
                   thread_hint=_as_text(thrid) if thrid is not None else record.thread_hint)


def internal_dates(value: Any) -> Iterator[tuple[str, dt.datetime | None]]:
    """The INTERNALDATE as the fallback of a missing or unusable Date header, read only then.

    Most messages have a good Date, so the fast path keeps the server's bytes and this reads
    them on demand: 2.7 µs a message otherwise. imapclient's parser gives a datetime.
    """
    if isinstance(value, bytes):
        value = _internaldate(value)
    elif isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
    else:
        value = None
    yield "internaldate", value


def location(folder: str, uidvalidity: int, uid: int) -> str:
    """Where a message was seen, in the IMAP URL style of RFC 5092."""
    return f"{folder};UIDVALIDITY={uidvalidity}/;UID={uid}"


def parse_item(uid: int, item: Mapping[bytes, Any], *, folder: Folder, uidvalidity: int,
               me: frozenset[str], keep_subject: bool = False, gmail: bool = False
               ) -> MessageRecord | Quarantined | None:
    """One FETCH item to a record, a quarantine entry, or None (no header in this item)."""
    header = header_literal(item)
    if header is None:
        return None
    size = item.get(b"RFC822.SIZE")
    sent = folder.sent or (gmail and "\\sent" in gmail_labels(item))
    rec = parse_message(uid, header, item.get(b"INTERNALDATE"),
                        size if isinstance(size, int) else None, folder=folder,
                        uidvalidity=uidvalidity, me=me, keep_subject=keep_subject, sent=sent)
    return gmail_record(rec, item) if gmail and isinstance(rec, MessageRecord) else rec


def mine_from_sent(record: MessageRecord, folder: Folder, gmail: bool,
                   me: frozenset[str] | set[str]) -> str | None:
    """The From of a message in the \\Sent folder (or Gmail's \\Sent label) that is not yet
    known as mine: it becomes mine when the message's batch commits."""
    if record.direction == "sent" and record.from_addr and (folder.sent or gmail) and \
            record.from_addr not in me:
        return record.from_addr
    return None


def parse_message(uid: int, header: bytes, internal: Any, size: int | None, *, folder: Folder,
                  uidvalidity: int, me: frozenset[str], keep_subject: bool = False,
                  sent: bool | None = None) -> MessageRecord | Quarantined:
    """``parse_item`` of a message's parts: also what the child writer runs on the messages
    handed to it unparsed (ingest/imap_commit.py). ``sent`` defaults to the folder's."""
    rec = parse_headers(header, me=me, fallback_dates=internal_dates(internal), size=size,
                        keep_subject=keep_subject,
                        from_sent_folder=folder.sent if sent is None else sent)
    if isinstance(rec, Rejected):
        return Quarantined(location(folder.name, uidvalidity, uid), rec.reason)
    return rec


# ---------------------------------------------------------------------------------------------
# FETCH responses, fast


_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
     b"dec"), 1)}
_INTERNALDATE = re.compile(
    rb'\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$')
# The common shape: plain atoms and quoted strings, then one header literal. The atoms are
# matched on their own (the part before the literal's name), each repeat atomic, so a line
# that does not fit fails at once instead of backtracking.
_HEADER_NAME = b" BODY[HEADER.FIELDS"
_SIMPLE_ATOMS = re.compile(rb'\d+ \(((?>[^"{}()\[\]]+|"[^"]*")*)$')
_SIMPLE_TAIL = re.compile(rb'[^\]]*\] \{\d+\}$')
_ATOM = re.compile(rb'(?<![\w.-])(?:(UID|RFC822\.SIZE) (\d+)|(INTERNALDATE) "([^"]*)"|(X-GM-))',
                   re.IGNORECASE)
_ZONES: dict[bytes, dt.timezone] = {}


def _internaldate(value: bytes) -> dt.datetime | None:
    """'02-Mar-2025 14:00:02 +0000' as an aware datetime; None when it is not one."""
    m = _INTERNALDATE.match(value)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    zone_key = sign + oh + om
    zone = _ZONES.get(zone_key)
    if zone is None:
        offset = dt.timedelta(hours=int(oh), minutes=int(om))
        try:
            zone = dt.timezone(-offset if sign == b"-" else offset)
        except ValueError:
            return None
        _ZONES[zone_key] = zone
    try:
        return dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    except ValueError:
        return None


def _units(data: Sequence[Any]) -> Iterable[list[Any]]:
    """imaplib's FETCH data regrouped per message: literal tuples, then the closing line."""
    unit: list[Any] = []
    for element in data:
        if element is None:
            continue
        unit.append(element)
        if not isinstance(element, tuple):
            yield unit
            unit = []
    if unit:
        yield unit


def _fast_item(unit: list[Any]) -> tuple[int, dict[bytes, Any]] | None:
    if len(unit) != 2 or not isinstance(unit[0], tuple) or unit[1] != b")":
        return None
    prefix, literal = unit[0]
    if not isinstance(prefix, bytes):
        return None
    return fast_item(prefix, literal)


def fast_item(prefix: bytes, literal: bytes) -> tuple[int, dict[bytes, Any]] | None:
    """(uid, item) for the common shape, one header literal after plain atoms, read with two
    regexes; None sends the message to imapclient's full parser. ``prefix`` is the response
    line up to the literal, as imaplib keeps it ("12 (UID 5 ... {332}"), and the line after
    the literal must be just ")"."""
    head, found, tail = prefix.partition(_HEADER_NAME)
    if not found:
        return None  # also a server that writes the item name in lower case
    simple = _SIMPLE_ATOMS.match(head)
    if simple is None or _SIMPLE_TAIL.match(tail) is None:
        return None
    return atoms_item(simple.group(1), literal)


# The same shape as a whole answer in the bytes read from the server, literal announced
# ("* 12 FETCH (UID 5 ... BODY[HEADER.FIELDS (...)] {332}\r\n"): group 1 the atoms, group 2
# the literal's size. The closing ")" is checked after the literal. Atoms holding brackets,
# braces or parentheses, even quoted, are left to the line reader.
FETCH_UNIT = re.compile(rb'\* \d+ FETCH \(([^{}()\[\]\r\n]*) BODY\[HEADER\.FIELDS[^\]\r\n]*\]'
                        rb' \{(\d+)\}\r\n')


def atoms_item(atoms: bytes, literal: bytes) -> tuple[int, dict[bytes, Any]] | None:
    """``fast_item`` once the atoms before the header literal are found ("UID 5 ...")."""
    item: dict[bytes, Any] = {b"BODY[HEADER.FIELDS]": literal}
    uid: int | None = None
    for key, number, date_key, date, _gmail in _ATOM.findall(atoms):
        if number:
            if len(key) == 3:
                uid = int(number)
            else:
                item[b"RFC822.SIZE"] = int(number)
        elif date_key:
            item[b"INTERNALDATE"] = date  # bytes, read by internal_dates only when needed
        else:
            return None  # Gmail's items: imapclient reads them
    if uid is None:
        return None
    return uid, item


def parse_fetch(data: Sequence[Any]) -> dict[int, dict[bytes, Any]]:
    """A UID FETCH response as {uid: {item: value}}, like imapclient's parse_fetch_response.

    imapclient's general parser walks every byte of the response in Python and was two thirds
    of a sync's time; the usual answer (UID, RFC822.SIZE, INTERNALDATE and one header literal)
    is read here with regexes instead. Anything else (Gmail labels, unsolicited FLAGS, a server
    with its own layout) still goes through imapclient.
    """
    return merge_fetch({}, data)


def merge_fetch(out: dict[int, dict[bytes, Any]], data: Sequence[Any]
                ) -> dict[int, dict[bytes, Any]]:
    """``parse_fetch`` of ``data`` added to ``out`` (items already read the fast way)."""
    from imapclient.response_parser import parse_fetch_response

    for unit in _units(data):
        fast = _fast_item(unit)
        if fast is not None:
            out.setdefault(fast[0], {}).update(fast[1])
            continue
        for uid, item in parse_fetch_response(unit, normalise_times=False,
                                              uid_is_key=True).items():
            out.setdefault(uid, {}).update(item)
    return out


# ---------------------------------------------------------------------------------------------
# Bounces: find the message/delivery-status part in a BODYSTRUCTURE


def _lower(value: Any) -> str:
    return _as_text(value).lower() if value is not None else ""


def _is_multipart(node: Sequence[Any]) -> bool:
    return bool(node) and isinstance(node[0], list)


def _leaves(node: Sequence[Any], section: str) -> Iterable[tuple[str, Sequence[Any]]]:
    """(section, leaf) pairs in IMAP part numbering; message/rfc822 parts are not entered (a
    bounce quotes the original message, which is not the report)."""
    if _is_multipart(node):
        for i, child in enumerate(node[0], start=1):
            yield from _leaves(child, f"{section}.{i}" if section else str(i))
    else:
        yield section or "1", node


def find_dsn_part(bodystructure: Sequence[Any]) -> tuple[str, str] | None:
    """(section, transfer encoding) of the first message/delivery-status part, if any."""
    for section, leaf in _leaves(bodystructure, ""):
        if len(leaf) < 2:
            continue
        if _lower(leaf[0]) == "message" and _lower(leaf[1]) in ("delivery-status",
                                                                 "global-delivery-status"):
            encoding = _lower(leaf[5]) if len(leaf) > 5 else ""
            return section, encoding or "7bit"
    return None


def part_key(item: Mapping[bytes, Any], section: str) -> bytes | None:
    """The bytes of BODY[section] in a FETCH item, whatever partial suffix the server added."""
    prefix = f"BODY[{section}]".encode()
    for key, value in item.items():
        if isinstance(key, bytes) and key.upper().startswith(prefix):
            return value if isinstance(value, bytes) else b""
    return None


def decode_part(data: bytes, encoding: str) -> bytes:
    """Undo a part's Content-Transfer-Encoding; anything unknown is returned as it is."""
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            return data
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    return data
