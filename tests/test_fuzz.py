"""Hostile input, proven by property tests: nothing raises out of the ingest layer, nothing
hangs, and the work grows linearly with the input (issue 7, item 1).

Every target is seeded from the real corpora in ../shared/data (tests.conftest.DATA) and
mutated: bytes flipped, cut and inserted, tokens that matter to the parser spliced in (blank
lines, lone CRs, NULs, BOMs, ``From `` lines, encoded words, folds), and amplifiers that the
caps exist for (huge folded lines, thousands of addresses, deep References). Without the
corpus the tests fall back to small inline seeds instead of skipping.

The number of examples comes from the hypothesis profile in tests/conftest.py (300 with
``CI`` set, 100 otherwise); docs/reliability.md lists what CI ran.

Inputs that once broke an invariant are kept below as explicit regression tests, with their
bytes inline, next to the fix they proved necessary.

What test_headers.py, test_corpora.py, test_ics_parse.py and test_dsn.py already fuzz
(random bytes and small mutations of a handful of seeds into the pure parsers) is not repeated:
this file adds the real-corpus seeds, the structure-aware amplifiers, the splitters and
readers that touch files, the store, and the timing bounds.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest import calendars, dsn, mailfiles
from ingest.dsn import DsnRecipient, parse_delivery_status
from ingest.headers import (
    MAX_HEADER_BYTES,
    MAX_RECIPIENTS_PARSED,
    MAX_REFERENCES,
    RECIPIENT_ROLES,
    MessageRecord,
    Rejected,
    header_block,
    parse_headers,
)
from ingest.ics_parse import CalendarParse, parse_calendar
from netaudit import db
from tests.conftest import DATA

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 28, tzinfo=UTC)
# Settings shared by every property here; max_examples comes from the loaded profile.
FUZZ = settings(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


# ---------------------------------------------------------------------------------------------
# Seeds from the shared corpus (inline fallbacks when it is missing)


def _files(pattern: str, *, limit: int = 60, max_bytes: int = 48_000) -> list[Path]:
    if not DATA.exists():
        return []
    found = sorted(p for p in DATA.glob(pattern) if p.is_file())
    small = [p for p in found if p.stat().st_size <= max_bytes]
    step = max(1, len(small) // limit)  # spread over the corpus, not its first directory
    return small[::step][:limit]


def _read(paths: list[Path], cut: int | None = None) -> list[bytes]:
    return [p.read_bytes()[:cut] for p in paths]


_FALLBACK_MAIL = (b"From: Alice Example <alice@example.com>\r\nTo: bob@example.net, "
                  b'"Doe, J" <j@x.example>\r\nCc: =?utf-8?q?J=C3=BCrgen?= <j@y.example>\r\n'
                  b"Date: Tue, 05 Mar 2024 09:15:00 +0100\r\nMessage-ID: <m1@example.com>\r\n"
                  b"References: <r1@x> <r2@x>\r\nSubject: Hello\r\n\r\nBody\r\n")
_FALLBACK_MBOX = (b"From alice@example.com Tue Mar  5 09:15:00 2024\n"
                  + _FALLBACK_MAIL.replace(b"\r\n", b"\n")
                  + b"From bob@example.net Wed Mar  6 10:00:00 2024\nFrom: bob@example.net\n"
                  b"To: alice@example.com\nContent-Length: 6\n\nFrom x\n")
_FALLBACK_DSN = (b"Reporting-MTA: dns; mx.example.org\nArrival-Date: Tue, 5 Mar 2024 09:15:00"
                 b" +0000\n\nFinal-Recipient: rfc822; gone@example.com\nAction: failed\n"
                 b"Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 no such user\n")
_FALLBACK_BOUNCE = (b"From: MAILER-DAEMON@mx.example.org\nTo: robin@example.org\n"
                    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n"
                    b"\n--b\nContent-Type: text/plain\n\nIt failed.\n--b\n"
                    b"Content-Type: message/delivery-status\n\n" + _FALLBACK_DSN + b"\n--b--\n")
_FALLBACK_ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//fuzz//EN\r\nBEGIN:VEVENT\r\n"
                 b"UID:weekly@example.org\r\nDTSTART:20250106T100000Z\r\n"
                 b"DTEND:20250106T110000Z\r\nRRULE:FREQ=WEEKLY;COUNT=10\r\n"
                 b"EXDATE:20250113T100000Z\r\nORGANIZER:mailto:olga@example.com\r\n"
                 b"ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com\r\n"
                 b"LOCATION:Room 1\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:weekly@example.org\r\n"
                 b"RECURRENCE-ID:20250120T100000Z\r\nDTSTART:20250121T100000Z\r\n"
                 b"DTEND:20250121T110000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

MAIL_SEEDS = [header_block(b) for b in _read(
    _files("email-fixtures/*/**/*.eml", limit=40) + _files("email-fixtures/**/*.txt", limit=20)
    + _files("enron/**/*.txt", limit=20), cut=20_000)] or [header_block(_FALLBACK_MAIL)]
MESSAGE_SEEDS = _read(_files("enron/**/*.txt", limit=20) + _files("email-fixtures/**/*.eml",
                                                                  limit=20),
                      cut=12_000) or [_FALLBACK_MAIL]
MBOX_SEEDS = _read(_files("mbox/**/*", limit=20, max_bytes=40_000)) or [_FALLBACK_MBOX]
BOUNCE_SEEDS = _read(
    _files("email-fixtures/mimekit-messages/delivery-status*")
    + _files("email-fixtures/flanker/messages/bounce/*.eml")) or [_FALLBACK_BOUNCE]
DSN_PART_SEEDS = [p for p in map(mailfiles.delivery_status_part, BOUNCE_SEEDS) if p] \
    or [_FALLBACK_DSN]
ICS_SEEDS = _read(_files("ics/**/*.ics", limit=80, max_bytes=12_000)) or [_FALLBACK_ICS]


# ---------------------------------------------------------------------------------------------
# Mutations


TOKENS = [
    b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n", b"\n\r\n", b"\x00", b"\xff\xfe", b"\x80",
    b"\xef\xbb\xbf", b" ", b"\t", b"\n ", b"\r\n\t", b":", b";", b",", b"<", b">", b'"', b"\\",
    b"(", b")", b"@", b"=?", b"?=", b"=?utf-8?q?=C3=BC?=", b"=?utf-8?b?w7w=?=",
    b"=?x-unknown?q?x?=", b"From ", b"\nFrom ", b"\n>From ", b"\nFrom x Mon Jan  1 00:00:00 2001\n",
    b"From: a@x.example\n", b"To: ", b"References: ", b"Content-Length: 0\n",
    b"Content-Length: 99999999999\n", b"Content-Type: multipart/report; "
    b"report-type=delivery-status; boundary=b\n", b"\n--b\n", b"\n--b--\n",
]


def _edit(draw: st.DrawFn, data: bytearray, tokens: list[bytes]) -> None:
    pos = draw(st.integers(0, len(data)))
    op = draw(st.sampled_from(("flip", "delete", "insert", "token", "duplicate", "truncate")))
    if op == "flip" and pos < len(data):
        data[pos] = draw(st.integers(0, 255))
    elif op == "delete":
        del data[pos:pos + draw(st.integers(1, 200))]
    elif op == "insert":
        data[pos:pos] = draw(st.binary(min_size=1, max_size=30))
    elif op == "token":
        data[pos:pos] = draw(st.sampled_from(tokens)) * draw(st.sampled_from((1, 1, 2, 50)))
    elif op == "duplicate":
        data[pos:pos] = data[pos:pos + draw(st.integers(1, 2000))]
    elif op == "truncate":
        del data[pos:]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], tokens: list[bytes] = TOKENS,
            max_edits: int = 8) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_edits))):
        _edit(draw, data, tokens)
    return bytes(data)


_ADDRESS_FORMS = (b"u%d@x.example", b"User %d <u%d@x.example>", b'"Doe, %d" <d%d@y.example>',
                  b"=?utf-8?q?N=C3=BC%d?= <n%d@z.example>", b"g%d: a%d@x.example;",
                  b"u%d@x.example (comment %d)", b"<u%d@x.example>", b"%d@@x..example")


@st.composite
def amplified_header(draw: st.DrawFn) -> bytes:
    """A real header with one field grown to the size the caps are about."""
    base = draw(mutated(MAIL_SEEDS, max_edits=2))
    kind = draw(st.sampled_from(("fold", "addresses", "references", "words")))
    k = draw(st.integers(0, 6000))
    if kind == "fold":
        field = b"X-Long: a" + draw(st.sampled_from((b"\r\n b", b"\n\t", b"\n ,"))) * k
    elif kind == "addresses":
        form = draw(st.sampled_from(_ADDRESS_FORMS))
        sep = draw(st.sampled_from((b", ", b",\r\n ", b",", b",,")))
        role = draw(st.sampled_from((b"To", b"Cc", b"Bcc", b"From")))
        field = role + b": " + sep.join(form.replace(b"%d", str(i).encode())
                                        for i in range(k))
    elif kind == "references":
        sep = draw(st.sampled_from((b" ", b"\r\n ", b"", b",")))
        field = b"References: " + sep.join(b"<r%d.%d@x.example>" % (i % 97, i) for i in range(k))
    else:
        field = b"Subject: " + b"=?utf-8?q?a=C3=BC?= " * k
    lines = base.split(b"\n")
    at = draw(st.integers(0, len(lines)))
    return b"\n".join([*lines[:at], field, *lines[at:]])


# ---------------------------------------------------------------------------------------------
# Invariants


_REJECT_REASONS = {"no header fields", "header block larger than 256 KiB",
                   "no sender, no recipients and no Message-ID: not a mail header"}


def check_record(result: MessageRecord | Rejected) -> None:
    if isinstance(result, Rejected):
        assert result.reason in _REJECT_REASONS, result
        return
    assert isinstance(result, MessageRecord)
    assert result.message_key and result.direction in ("sent", "received")
    assert len(result.references) <= MAX_REFERENCES
    assert len(set(result.references)) == len(result.references)
    roles: dict[str, list[str]] = {}
    for p in result.participants:
        roles.setdefault(p.role, []).append(p.address)
        assert p.address == p.address.lower() and "@" in p.address
        assert p.position == len(roles[p.role]) - 1
    for role, found in roles.items():
        assert len(found) <= MAX_RECIPIENTS_PARSED and len(set(found)) == len(found), role
    assert result.recipient_count == len({a for r in RECIPIENT_ROLES for a in roles.get(r, [])})
    if result.date is not None:
        assert result.date.tzinfo is not None
        assert result.date <= NOW + dt.timedelta(days=2) or result.date_source != "header"
    if result.is_dsn:
        assert result.automated_reason
    assert all("\n" not in problem for problem in result.problems)


def check_dsn(found: list[DsnRecipient]) -> None:
    assert isinstance(found, list) and len(found) <= dsn.MAX_RECIPIENTS
    keys = [(r.recipient, r.action, r.status) for r in found]
    assert len(set(keys)) == len(keys)
    for r in found:
        assert r.recipient == r.recipient.lower() and "@" in r.recipient
        assert r.status is None or re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", r.status)
        assert r.diagnostic is None or len(r.diagnostic) <= 500
        assert r.reported_at is None or r.reported_at.tzinfo is not None


# ---------------------------------------------------------------------------------------------
# The header parser


@FUZZ
@given(st.one_of(mutated(MAIL_SEEDS), amplified_header()),
       st.binary(max_size=200))
def test_header_parser_on_mutated_real_headers(raw: bytes, body: bytes) -> None:
    result = parse_headers(raw, now=NOW, size=len(raw))
    check_record(result)
    assert parse_headers(raw, now=NOW, size=len(raw)) == result  # pure: same bytes, same record
    # What follows the first blank line is body, and the body is never read. (A block with
    # no line break at its end needs two for a blank line: without, the body's first line is
    # one more header line, and its bytes may change how the block decodes.)
    block = header_block(raw)
    framed = block + (b"\n" if block.endswith(b"\n") else b"\n\n")
    assert parse_headers(framed + body, now=NOW, size=len(raw)) == \
        parse_headers(framed, now=NOW, size=len(raw))


def test_amplified_fields_are_capped_not_rejected() -> None:
    many = b"From: a@x.example\nTo: " + b", ".join(b"u%d@x.example" % i for i in range(5000))
    refs = b"\nReferences: " + b" ".join(b"<r%d@x.example>" % i for i in range(5000))
    fold = b"\nX-Long: a" + b"\r\n b" * 20000
    rec = parse_headers(many + refs + fold + b"\n\n")
    assert isinstance(rec, MessageRecord)
    check_record(rec)
    assert rec.recipient_count == MAX_RECIPIENTS_PARSED
    assert len(rec.references) == MAX_REFERENCES


# ---------------------------------------------------------------------------------------------
# The mbox splitter


_WS = b" \t\r\n"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def mbox_bytes(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(mutated(MBOX_SEEDS, max_edits=4), min_size=1, max_size=4))
    joiner = draw(st.sampled_from((b"", b"\n", b"\r\n", b"\n\n")))
    lead = draw(st.sampled_from((b"", b"", b"\xef\xbb\xbf", b"\n\n", b" \r\n", b"\xef\xbb\xbf\n")))
    return lead + joiner.join(parts)


def _offset(location: str) -> int:
    return int(location.rpartition("#")[2])


@FUZZ
@given(data=mbox_bytes(), limit=st.sampled_from((MAX_HEADER_BYTES, 1024, 64)))
@example(data=b"From x\n", limit=MAX_HEADER_BYTES)
@example(data=b"\xef\xbb\xbf \n\r\nFrom a\nFrom: b@x.example\nTo: c@x.example", limit=64)
@example(data=b"From a\nContent-Length: 999999999999\n\n", limit=64)
@example(data=b"\n\n\n", limit=64)
def test_mbox_splitter_covers_the_file_in_order(scratch: Path, data: bytes, limit: int) -> None:
    path = scratch / "fuzz.mbox"
    path.write_bytes(data)
    messages = list(mailfiles.iter_mbox(path, limit=limit))
    start = len(b"\xef\xbb\xbf") if data.startswith(b"\xef\xbb\xbf") else 0
    while start < len(data) and data[start] in _WS:
        start += 1
    if not data[start:].startswith(b"From "):
        assert messages == []
        return
    assert messages, "a file that starts with a From_ line holds at least one message"
    # in order, back to back, and together exactly the file after its leading BOM/whitespace
    assert _offset(messages[0].location) == start
    for m, following in itertools.pairwise(messages):
        assert _offset(m.location) + (m.size or 0) == _offset(following.location)
    assert sum(m.size or 0 for m in messages) == len(data) - start
    for m in messages:
        pos = _offset(m.location)
        assert (m.size or 0) > 0 and data[pos:pos + 5] == b"From "
        assert len(m.header) <= limit + 1
        head_at = data.find(b"\n", pos) + 1 or len(data)
        assert data[head_at:head_at + len(m.header)] == m.header
        check_record(parse_headers(m.header, fallback_dates=m.fallback_dates, now=NOW))


def _read(path: Path, since: mailfiles.MboxPosition | None, limit: int) -> tuple[
        mailfiles.Resume, list[mailfiles.RawMessage], mailfiles.MboxPosition | None]:
    resume = None
    messages = []
    position = since
    for item in mailfiles.read_mbox(path, since, limit=limit, every=2):
        if isinstance(item, mailfiles.Resume):
            resume = item
        elif isinstance(item, mailfiles.MboxPosition):
            position = item
        else:
            messages.append(item)
    assert resume is not None
    return resume, messages, position


def _shape(messages: list[mailfiles.RawMessage]) -> list[tuple[object, ...]]:
    return [(m.offset, m.size, m.header, m.fallback_dates) for m in messages]


@FUZZ
@given(data=mbox_bytes(), cut=st.floats(0, 1), limit=st.sampled_from((MAX_HEADER_BYTES, 64)))
@example(data=b"From a\nFrom: b@x.example\n\nbody\nFrom c\nFrom: d@x.example\n\nx\n", cut=0.5,
         limit=MAX_HEADER_BYTES)
@example(data=b"From a\nContent-Length: 40\n\nbody\nFrom c\nFrom: d@x.example\n\nx\n" * 2,
         cut=0.3, limit=MAX_HEADER_BYTES)
# Content-Length past the end of the file read first; the whole file makes it land on the
# third From_ line, so the second message is part of the first one's body.
@example(data=b"From a\nFrom: b@x.example\nContent-Length: 33\n\nbody\nFrom c\nFrom: d@x.example"
         b"\n\nx\nFrom e\nFrom: f@x.example\n\ny\n", cut=0.4764, limit=MAX_HEADER_BYTES)
def test_reading_what_was_appended_gives_what_a_whole_read_gives(
        scratch: Path, data: bytes, cut: float, limit: int) -> None:
    """An mbox read up to a point, then read again after more bytes were appended, from the
    position the first read left: the messages kept from the first read and those of the
    second are exactly those of one read of the whole file (offsets, sizes, headers, dates)."""
    path = scratch / "grow.mbox"
    k = int(len(data) * cut)
    path.write_bytes(data[:k])
    _, before, position = _read(path, None, limit)
    path.write_bytes(data)
    resume, after, end = _read(path, position, limit)
    whole = list(mailfiles.iter_mbox(path, limit=limit))
    kept = [m for m in before if (m.offset or 0) < resume.start] if resume.start else []
    assert _shape(kept + after) == _shape(whole)
    if position is not None and 0 < position.end == len(data):
        assert resume.why == mailfiles.UNCHANGED and after == []
    if whole:
        assert end is not None and end.end == len(data) and end.count == len(whole)
        assert end.last == whole[-1].offset


@FUZZ
@given(data=mbox_bytes(), start=st.integers(0, 400), length=st.integers(1, 200))
def test_a_rewritten_mbox_is_read_whole_again(scratch: Path, data: bytes, start: int,
                                              length: int) -> None:
    """Bytes removed before where the last read ended (a compaction): the file is read
    whole, so nothing after them is skipped."""
    path = scratch / "compact.mbox"
    path.write_bytes(data)
    _, _, position = _read(path, None, MAX_HEADER_BYTES)
    shorter = data[:start] + data[start + length:]
    if position is None or start >= len(data) or position.end == 0:
        return
    path.write_bytes(shorter + data[-length:] * 2)  # as long as before, or longer
    resume, after, _ = _read(path, position, MAX_HEADER_BYTES)
    if resume.whole:
        assert _shape(after) == _shape(list(mailfiles.iter_mbox(path)))
    else:  # only when the removed bytes were put back as they were
        assert path.read_bytes()[:position.end] == data[:position.end]


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@FUZZ
@given(sender=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                      max_size=12),
       day=st.sampled_from(_DAYS), month=st.sampled_from(_MONTHS), date=st.integers(0, 35),
       pad=st.sampled_from((" ", "  ")), hour=st.integers(0, 25), minute=st.integers(0, 61),
       second=st.integers(0, 61), year=st.integers(900, 9999),
       tail=st.sampled_from(("", " ", "\r", " \t", " +0200", " remote from x")))
def test_the_quick_from_line_date_is_the_email_packages(
        sender: str, day: str, month: str, date: int, pad: str, hour: int, minute: int,
        second: int, year: int, tail: str) -> None:
    line = (f"From {sender}{pad}{day} {month} {date:>2} {hour:02}:{minute:02}:{second:02} "
            f"{year}{tail}").encode()
    assert mailfiles._from_line_date(line) == mailfiles._from_line_date_slow(line)


# ---------------------------------------------------------------------------------------------
# The Maildir reader


_SHAPES = (
    b"", b"\n", b"\r\n\r\n", b"\r" * 5000, b"\x00" * 9000, b"From: a@x.example" + b"\r" * 100,
    b"From: a@x.example\nTo: b@x.example" * 1000,  # no blank line, more than one chunk
    b"X-A: b\n" * 40_000,  # no blank line, more than the cap
    b"From: a@x.example\n" + b"X-Pad: " + b"p" * 8180 + b"\n\r\nbody",  # blank line across chunks
    b"\xef\xbb\xbfFrom: a@x.example\n\nbody",
)


@st.composite
def maildir_bytes(draw: st.DrawFn) -> bytes:
    return draw(st.one_of(
        mutated(MESSAGE_SEEDS),
        st.sampled_from(_SHAPES),
        st.binary(max_size=3000),
        st.lists(st.sampled_from((b"\r", b"\n", b"\x00", b"a", b":", b" ", b"From: a@b.c")),
                 max_size=400).map(b"".join),
    ))


_NAMES = ("1700000000.M1P2.host,S={size}:2,S", "1700000000.M1P2.host:2,", "msg.eml",
          "1700000000.M1P2.host,S=notanumber:2,RS", "1700000000.M1P2.host,W=1,S={size}")


@FUZZ
@given(data=maildir_bytes(), name=st.sampled_from(_NAMES))
@example(data=b"A: 1\n\r\nbody\n\nmore", name="msg.eml")
def test_maildir_reader_reads_only_the_header_block(scratch: Path, data: bytes,
                                                    name: str) -> None:
    path = scratch / name.format(size=len(data) + 7)
    path.write_bytes(data)
    try:
        block = mailfiles.read_header_block(path)
        msg = mailfiles.read_maildir_file(path)
    finally:
        path.unlink()
    expected = header_block(data)
    if expected == data:  # no blank line: the whole file, up to one byte past the cap
        assert block == data[:MAX_HEADER_BYTES + 1]
    elif len(expected) <= MAX_HEADER_BYTES:  # exactly the bytes before the first blank line
        assert block == expected
    else:  # too long: enough to know it is too long, and no more than a chunk past the cap
        assert data.startswith(block) and MAX_HEADER_BYTES < len(block) <= \
            MAX_HEADER_BYTES + 8192
    bom = b"\xef\xbb\xbf"
    assert msg.header == (block[len(bom):] if block.startswith(bom) else block)
    assert msg.size == (len(data) + 7 if ",S={size}" in name else len(data))
    check_record(parse_headers(msg.header, fallback_dates=msg.fallback_dates, now=NOW))


# ---------------------------------------------------------------------------------------------
# The DSN reader


DSN_TOKENS = [*TOKENS, b"Final-Recipient: rfc822; x@y.example\n", b"Original-Recipient: ",
              b"Action: failed\n", b"Status: 5.1.1\n", b"Diagnostic-Code: smtp; 550 5.7.1\n",
              b"Last-Attempt-Date: Tue, 5 Mar 2024 09:15:00 +0000\n", b"Reporting-MTA: dns; m\n",
              b"Content-Type: message/delivery-status\n"]


@FUZZ
@given(mutated(DSN_PART_SEEDS, DSN_TOKENS, max_edits=10))
def test_dsn_part_parser_on_mutated_real_reports(part: bytes) -> None:
    found = parse_delivery_status(part)
    check_dsn(found)
    try:
        text = part.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert parse_delivery_status(text) == found  # bytes and text read the same


@FUZZ
@given(mutated(BOUNCE_SEEDS, DSN_TOKENS, max_edits=10))
def test_delivery_status_part_on_mutated_real_bounces(raw: bytes) -> None:
    part = mailfiles.delivery_status_part(raw)
    assert part is None or isinstance(part, bytes)
    if part is not None:
        check_dsn(parse_delivery_status(part))
    check_record(parse_headers(raw, now=NOW))


# ---------------------------------------------------------------------------------------------
# Calendars: the parser, then the store


ICS_TOKENS = [
    b"\r\n", b"\n", b"\r\n ", b":", b";", b"=", b'"', b",", b"\x00", b"\xff", b"Z", b"T",
    b"\r\nRRULE:FREQ=DAILY\r\n", b"\r\nRRULE:FREQ=HOURLY;INTERVAL=1\r\n",
    b"\r\nRRULE:FREQ=YEARLY;BYMONTHDAY=31;BYMONTH=2\r\n", b"\r\nEXDATE:20250113T100000Z\r\n",
    b"\r\nRECURRENCE-ID:20250120T100000Z\r\n", b"\r\nSTATUS:CANCELLED\r\n",
    b"\r\nMETHOD:CANCEL\r\n", b"\r\nDTSTART:20250101T000000Z\r\n", b"\r\nDTSTART;VALUE=DATE:2025",
    b"\r\nEND:VEVENT\r\n", b"\r\nBEGIN:VEVENT\r\n", b"\r\nEND:VCALENDAR\r\n",
    b"\r\nATTENDEE;PARTSTAT=DECLINED:mailto:ME@example.org\r\n",
    b"\r\nBEGIN:VALARM\r\n", b"\r\nX-WR-TIMEZONE:Mars/Olympus\r\n", b"TZID=Nowhere/Else:",
]
ICS_WINDOW = {"window_start": dt.datetime(2015, 1, 1, tzinfo=UTC),
              "window_end": dt.datetime(2027, 1, 1, tzinfo=UTC)}
ICS_ME = frozenset({"me@example.org"})
_VEVENT = re.compile(rb"BEGIN:VEVENT.*?END:VEVENT\r?\n", re.DOTALL)


@st.composite
def ics_bytes(draw: st.DrawFn) -> bytes:
    data = draw(mutated(ICS_SEEDS, ICS_TOKENS, max_edits=6))
    events = _VEVENT.findall(data)
    if events and draw(st.booleans()):  # the same event twice, or a copy with a new start
        event = draw(st.sampled_from(events))
        if draw(st.booleans()):
            event = re.sub(rb"DTSTART([^:\r\n]*):\d{8}", rb"DTSTART\1:20250317", event, count=1)
        at = data.rfind(b"END:VCALENDAR")
        data = data[:at] + event + data[at:] if at >= 0 else data + event
    return data


def check_calendar(parse: CalendarParse, cap: int) -> None:
    assert isinstance(parse, CalendarParse)
    keys = [o.occurrence_key for o in parse.occurrences]
    assert len(set(keys)) == len(keys)
    per_uid: dict[str, int] = {}
    for o in parse.occurrences:
        assert o.uid in parse.uids and o.occurrence_key.startswith(o.uid + "|")
        per_uid[o.uid] = per_uid.get(o.uid, 0) + 1
        if o.all_day:
            assert o.start is None and o.start_date is not None
        else:
            assert o.start is not None and o.start.utcoffset() == dt.timedelta(0)
        assert all(c.address == c.address.lower() for c in o.counterparts)
    assert all(n <= cap for n in per_uid.values())
    assert all(p.reason and "\n" not in p.reason for p in parse.problems)


def _parse_ics(data: bytes, cap: int = 200) -> CalendarParse:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_calendar(data, me=ICS_ME, max_occurrences_per_series=cap, max_seconds=5,
                              **ICS_WINDOW)


@FUZZ
@given(ics_bytes())
def test_calendar_parser_on_mutated_real_calendars(data: bytes) -> None:
    check_calendar(_parse_ics(data), 200)


@pytest.fixture(scope="module")
def calendar_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[db.Connection]:
    """One real database for every example; each example writes its own calendar name."""
    with db.writer(tmp_path_factory.mktemp("fuzzdb") / "n.duckdb") as con:
        yield con


_calendar_names = itertools.count()
_seed_parses: dict[int, CalendarParse] = {}


def _store(con: db.Connection, calendar: str, parse: CalendarParse) -> None:
    con.execute("BEGIN TRANSACTION")
    calendars.store_calendars(con, calendar, [("fuzz.ics", parse)])
    con.execute("COMMIT")


def _stored(con: db.Connection, calendar: str) -> tuple[dict[str, str], list[tuple], int]:
    keys = dict(con.execute("SELECT occurrence_key, uid FROM meetings WHERE calendar = ?",
                            [calendar]).fetchall())
    rows = con.execute("SELECT * EXCLUDE (ingested_at) FROM meetings WHERE calendar = ? "
                       "ORDER BY ALL", [calendar]).fetchall()
    people = con.execute("SELECT count(*) FROM attendees WHERE calendar = ?",
                         [calendar]).fetchone()
    assert len(keys) == len(rows), "an occurrence is stored twice"
    return keys, rows, people[0] if people else 0


@FUZZ
@given(seed=st.integers(0, len(ICS_SEEDS) - 1), data=st.data())
def test_store_calendars_keeps_what_failed_and_doubles_nothing(
        calendar_db: db.Connection, seed: int, data: st.DataObject) -> None:
    con = calendar_db
    calendar = f"fuzz-{next(_calendar_names)}"
    if seed not in _seed_parses:
        _seed_parses[seed] = _parse_ics(ICS_SEEDS[seed])
    before = _seed_parses[seed]
    _store(con, calendar, before)
    stored_before, _, _ = _stored(con, calendar)

    after = _parse_ics(data.draw(ics_bytes()))
    _store(con, calendar, after)
    first = _stored(con, calendar)
    _store(con, calendar, after)  # the same copy again: nothing changes, nothing doubles
    assert _stored(con, calendar) == first

    usable = bool(after.uids or after.cancelled_keys or not after.problems)
    # a failed UID keeps what was stored for it, or gets what could be read if nothing was
    held = set(stored_before.values())
    fresh = {o.occurrence_key for o in after.occurrences
             if o.uid not in after.failed_uids or o.uid not in held}
    if not usable:  # only a broken copy: everything stored stays
        expected = set(stored_before)
    else:
        kept = {k for k, uid in stored_before.items()
                if not after.uids or uid in after.failed_uids}
        expected = (kept - after.cancelled_keys) | fresh
    assert set(first[0]) == expected


# ---------------------------------------------------------------------------------------------
# Regression inputs: found by the properties and timings above, kept as plain tests


BAD_BASE64_WORD = (b"From nobody Mon Sep 17 00:00:00 2001\n"
                   b"From: =?utf-8?b?A===?= <a@x.example>\n"
                   b"To: b@x.example\n"
                   b"Subject: =?ISO8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\n"
                   b" =?ISO8859-2?B?SB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n\nbody\n"
                   b"From nobody Mon Sep 17 00:00:00 2001\n"
                   b"From: c@x.example\nTo: b@x.example\nMessage-ID: <ok@x.example>\n\nbody\n")


def test_regression_bad_base64_in_an_encoded_word(tmp_path: Path) -> None:
    """Found by test_mbox_splitter_covers_the_file_in_order (a mutation of git's
    rfc2047-samples.mbox): a B-encoded word with broken padding made ``decode_header`` raise
    ``HeaderParseError``, which escaped parse_headers and stopped the whole import. The word
    is now kept as it is, like any other undecodable word."""
    rec = parse_headers(BAD_BASE64_WORD, keep_subject=True)
    assert isinstance(rec, MessageRecord)
    assert rec.from_addr == "a@x.example" and rec.from_name == "=?utf-8?b?A===?="
    assert rec.subject is not None and rec.subject.startswith("If you can read this yo")
    # and through the real pipeline: both messages stored, nothing quarantined
    from ingest import local
    mbox = tmp_path / "bad.mbox"
    mbox.write_bytes(BAD_BASE64_WORD)
    result = local.import_inputs(tmp_path / "n.duckdb", "import", [local.Input("mbox", mbox)],
                                 me=frozenset())
    assert (result.new, result.quarantined) == (2, 0)


def test_regression_crlf_blank_line_before_lf_blank_line_in_one_chunk(tmp_path: Path) -> None:
    """read_header_block returned at the first separator *kind* it looked for (\\n\\n), not at
    the first blank line, so a CRLF blank line earlier in the same 8 KiB chunk let body bytes
    into the header block."""
    path = tmp_path / "m"
    path.write_bytes(b"A: 1\n\r\nbody\n\nmore")
    assert mailfiles.read_header_block(path) == b"A: 1\n"


def test_regression_field_run_decides_an_mbox_boundary(tmp_path: Path) -> None:
    """A body "From " line followed by field-like lines used to be judged on the next 16 KiB
    whatever they held; the boundary test now reads only the run of header lines after it, as
    the header parser does. Here the Subject: line comes after a body line, so it does not
    make the first "From " line a boundary."""
    path = tmp_path / "m.mbox"
    path.write_bytes(b"From a Mon Jan  1 00:00:00 2001\nFrom: a@x.example\n\nbody\n"
                     b"From here on\nX-Note: 1\nnot a header line\nSubject: s\n\nmore\n")
    [message] = mailfiles.iter_mbox(path)
    assert message.size == path.stat().st_size


def test_regression_deeply_nested_bounce_is_not_parsed() -> None:
    """The stdlib MIME parser is quadratic in nesting depth (~0.5 s for one 50 KB bounce of
    950 levels); a bounce nested deeper than delivery reports ever are is not opened."""
    began = time.perf_counter()
    assert mailfiles.delivery_status_part(_nested(900)) is None
    assert time.perf_counter() - began < 0.1


# ---------------------------------------------------------------------------------------------
# Linear time: the same adversarial shape at n and 8n


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def _mbox(body: bytes) -> bytes:
    return (b"From a@x.example Mon Jan  1 00:00:00 2001\nFrom: a@x.example\n"
            b"To: b@x.example\nSubject: s\n\n" + body)


def _bounce(report: bytes) -> bytes:
    return (b"From: mailer-daemon@x.example\nContent-Type: multipart/report; "
            b"report-type=delivery-status; boundary=b\n\n--b\n"
            b"Content-Type: message/delivery-status\n\n" + report + b"\n--b--\n")


def _nested(n: int) -> bytes:
    return (b"From: mailer-daemon@x.example\nContent-Type: multipart/report; "
            b"report-type=delivery-status; boundary=b0\n\n"
            + b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
                       for i in range(n)))


def _recipients(n: int) -> bytes:
    return b"".join(b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\n"
                    b"Status: 5.1.1\n\n" % i for i in range(n))


def _ics(body: str) -> bytes:
    return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n{body}END:VCALENDAR\r\n"
            .encode())


def _headers(data: bytes) -> object:
    return parse_headers(data, now=NOW)


def _split(path: Path) -> object:
    return list(mailfiles.iter_mbox(path))


def _maildir(path: Path) -> object:
    return parse_headers(mailfiles.read_maildir_file(path).header, now=NOW)


def _calendar(data: bytes) -> object:
    return _parse_ics(data, cap=5000)


# name: (reader, build(n) -> bytes, n, whether the reader takes a file path)
SHAPES: dict[str, tuple[Callable[[object], object], Callable[[int], bytes], int, bool]] = {
    "header: commas in To": (
        _headers, lambda n: b"From: a@x.example\nTo: b@x.example" + b"," * n + b"\n\n",
        10_000, False),
    "header: addresses in To": (
        _headers, lambda n: b"From: a@x.example\nTo: " + b",".join(
            b"u%d@x.example" % i for i in range(n)) + b"\n\n", 1_000, False),
    "header: named addresses in Cc": (
        _headers, lambda n: b"From: a@x.example\nCc: " + b",".join(
            b'"N, %d" <u%d@x.example>' % (i, i) for i in range(n)) + b"\n\n", 500, False),
    "header: '=?' fragments": (
        _headers, lambda n: b"From: a@x.example\nSubject: " + b"=?" * n + b"\n\n",
        12_500, False),
    "header: valid encoded words": (
        _headers, lambda n: b"From: a@x.example\nSubject: " + b"=?utf-8?q?a?=" * n + b"\n\n",
        1_000, False),
    "header: encoded-word names": (
        _headers, lambda n: b"From: a@x.example\nTo: " + b",".join(
            b"=?utf-8?q?N=C3=BC%d?= <u%d@x.example>" % (i, i) for i in range(n)) + b"\n\n",
        500, False),
    "header: nested References": (
        _headers, lambda n: b"From: a@x.example\nReferences: " + b"\r\n ".join(
            b"<r%d@x.example>" % i for i in range(n)) + b"\n\n", 1_000, False),
    "header: folded line": (
        _headers, lambda n: b"From: a@x.example\nX-Long: a" + b"\n b" * n + b"\n\n",
        4_000, False),
    "header: unbalanced quotes and angles": (
        _headers, lambda n: b"From: a@x.example\nTo: " + b'"<' * n + b"\n\n", 5_000, False),
    "mbox: 'From ' lines in a body": (
        _split, lambda n: _mbox(b"From here\n" * n), 400, True),
    "mbox: 'From ' lines followed by fields": (
        _split, lambda n: _mbox(b"From here\nX-Foo: bar\n" * n), 400, True),
    "mbox: 'From ' lines with blank lines": (
        _split, lambda n: _mbox(b"From here\n\n" * n), 400, True),
    "mbox: small messages": (
        _split, lambda n: _mbox(b"body\n") * n, 1_000, True),
    "mbox: CRLF messages": (
        _split, lambda n: _mbox(b"body\n").replace(b"\n", b"\r\n") * n, 1_000, True),
    "maildir: no blank line": (
        _maildir, lambda n: b"From: a@x.example\n" + b"X-A: b\n" * n, 2_000, True),
    "maildir: only CRs": (
        _maildir, lambda n: b"From: a@x.example" + b"\r" * n, 20_000, True),
    "dsn: recipients": (
        parse_delivery_status, _recipients, 300, False),
    "dsn: folded diagnostic": (
        parse_delivery_status, lambda n: b"Final-Recipient: rfc822; a@b.example\n"
        b"Diagnostic-Code: x\n" + b" y\n" * n, 2_000, False),
    "dsn part: recipients in a bounce": (
        mailfiles.delivery_status_part, lambda n: _bounce(_recipients(n)), 300, False),
    "dsn part: flat MIME parts": (
        mailfiles.delivery_status_part, lambda n: _bounce(
            b"x\n" + b"--b\nContent-Type: text/plain\n\nx\n" * n), 500, False),
    "dsn part: nested MIME parts": (
        mailfiles.delivery_status_part, _nested, 40, False),
    "calendar: events": (
        _calendar, lambda n: _ics("".join(
            f"BEGIN:VEVENT\r\nUID:e{i}\r\nDTSTART:20250101T100000Z\r\n"
            f"DTEND:20250101T110000Z\r\nATTENDEE:mailto:a{i}@x.example\r\nEND:VEVENT\r\n"
            for i in range(n))), 100, False),
    "calendar: folded description": (
        _calendar, lambda n: _ics("BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20250101T100000Z\r\n"
                                  "DESCRIPTION:x" + "\r\n y" * n + "\r\nEND:VEVENT\r\n"),
        2_000, False),
    "calendar: attendees of a series": (
        _calendar, lambda n: _ics("BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20250101T100000Z\r\n"
                                  "RRULE:FREQ=WEEKLY;COUNT=10\r\n" + "".join(
                                      f"ATTENDEE;CN=A{i}:mailto:a{i}@x.example\r\n"
                                      for i in range(n)) + "END:VEVENT\r\n"), 100, False),
}
RATIO_LIMIT = 20  # 8x the input; linear is ~8, quadratic ~64


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_work_grows_linearly_with_the_input(shape: str, tmp_path: Path) -> None:
    read, build, n, from_file = SHAPES[shape]
    args = []
    for size in (n, 8 * n):
        data = build(size)
        if from_file:
            path = tmp_path / f"input-{size}"
            path.write_bytes(data)
            args.append(path)
        else:
            args.append(data)
        if shape.startswith("header"):  # the cap must not be what keeps it fast
            assert len(data) <= MAX_HEADER_BYTES, shape
    gc.collect()
    gc.disable()
    try:
        small = _best(lambda: read(args[0]), 7)
        large = _best(lambda: read(args[1]), 5)
    finally:
        gc.enable()
    ratio = large / small
    assert ratio < RATIO_LIMIT, f"{shape}: {small * 1000:.2f} ms -> {large * 1000:.2f} ms " \
                                f"for 8x the input (x{ratio:.1f})"
