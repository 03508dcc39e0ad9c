"""Pure IMAP helpers: what to FETCH, and how to read the answers.

No sockets here, so every decision that depends on a server's quirks (a FETCH item, a
BODYSTRUCTURE) is tested with plain data, including the Gmail behaviour that cannot be run
against a local server. Which folders to read is ingest/imap_folders.py, what a throttling
reply says ingest/imap_throttle.py.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import quopri
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ingest.headers import MessageRecord, Rejected, parse_headers
from ingest.imap_folders import Folder
from ingest.store import Quarantined

# The header fields the parser reads (R-IMAP-9), plus X-From, X-To, X-cc and X-bcc for
# Enron-style display names and Return-Path for the out-of-office rule, so that IMAP and a
# local import of the same mail store the same names and reasons.
HEADER_FIELDS = (
    "FROM", "SENDER", "REPLY-TO", "TO", "CC", "BCC", "DATE", "MESSAGE-ID", "IN-REPLY-TO",
    "REFERENCES", "SUBJECT", "LIST-ID", "LIST-UNSUBSCRIBE", "LIST-POST", "PRECEDENCE",
    "AUTO-SUBMITTED", "X-AUTOREPLY", "X-AUTORESPOND", "CONTENT-TYPE", "FEEDBACK-ID",
    "X-SES-OUTGOING", "MAILING-LIST", "X-FROM", "X-TO", "X-CC", "X-BCC", "RETURN-PATH",
)
HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
FETCH_ITEMS = ("INTERNALDATE", "RFC822.SIZE", HEADER_ITEM)
GMAIL_ITEMS = ("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS")
DSN_PART_LIMIT = 64 * 1024  # a partial fetch: no delivery report needs more

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
_SIMPLE_TAIL = re.compile(rb'[^\]]*\] \{\d{1,18}\}$')
# Numbers of up to 18 digits only: int() of thousands of digits raises (and is slow).
_ATOM = re.compile(
    rb'(?<![\w.-])(?:(UID|RFC822\.SIZE) (\d{1,18})(?!\d)|(INTERNALDATE) "([^"]*)"|(X-GM-))',
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
                        rb' \{(\d{1,18})\}\r\n')


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
