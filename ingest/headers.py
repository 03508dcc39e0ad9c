"""Mail header parsing: header bytes in, one message record out, never an exception.

Pure on purpose: no I/O, no clock, no database. Everything the header cannot tell (the IMAP
INTERNALDATE, the mbox From_ line date, the file time, whether the folder is \\Sent) comes in as
an argument, so the same function serves IMAP, Maildir, mbox and single files, and can be fuzzed.

The fast path is the one the stdlib makes cheap: ``compat32`` header parsing on *text* (bytes
would turn raw UTF-8 into surrogates), ``getaddresses`` for address lists and ``decode_header``
for RFC 2047 names. Each header is read on its own inside a guard, so one broken header costs
only that header.

It is also the hot path of IMAP sync and local import, so the common shapes have their own
cheap routes: one regex splits the fields, one reads RFC 5322 dates, and bounded caches keep
what a mailbox repeats (its From/To/Cc combinations, senders, header names, encoded words).
Each route gives exactly what the general one gives and leaves everything else to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime

MAX_HEADER_BYTES = 256 * 1024
MAX_RECIPIENTS_PARSED = 2000
MAX_REFERENCES = 200
# Longest value decode_words reads: the stdlib's decode_header is quadratic in the number of
# encoded words (list.pop(0) per part), ~1 s for one 256 KiB Subject of them.
MAX_DECODED_CHARS = 8192

# Roles kept as participants, in the order they are stored.
ADDRESS_ROLES = ("from", "sender", "reply-to", "to", "cc", "bcc")
RECIPIENT_ROLES = ("to", "cc", "bcc")

# Dates before this are junk (zero timestamps, misread two-digit years).
_EARLIEST = dt.datetime(1971, 1, 1, tzinfo=dt.UTC)  # the first email
_MAX_FUTURE = dt.timedelta(days=2)

_ADDR_OK = re.compile(r"^[^@\s<>,;:\"]+@[^@\s<>,;:\"]+$")
_ADDR_FALLBACK = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_MSGID = re.compile(r"<([^<>]+)>")
_ENCODED_WORD = "=?"
# MessageError: bad base64 in a B word ("=?utf-8?b?A===?=", HeaderParseError) or a charset
# name that is not ASCII ("=?\x80ISO8859-2?B?...", CharsetError)
_DECODE_ERRORS = (LookupError, ValueError, UnicodeError, AssertionError, TypeError,
                  MessageError)
_ROLE_LOCAL = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|donotreply|notifications?|"
    r"notify|bounces?|bounce-[^@]*|auto-?confirm|automated|newsletters?|listserv|majordomo|"
    r"[^@]*-(bounces|request|owner)(\+[^@]*)?|owner-[^@]*)$")
_OOO_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"réponse automatique|respuesta automática|risposta automatica|autosvar|"
    r"automatisch antwoord|fuera de la oficina|absence|ferien|vacation|on vacation)",
    re.IGNORECASE)
_AUTO_HEADER = re.compile(r"^(x-)?auto-?(response|submitted|replied|generated|reply)")
_ESP_HEADERS = ("feedback-id", "x-ses-outgoing", "x-mailgun-sid", "x-mailgun-tag",
                "x-campaign", "x-mc-user", "x-sg-eid", "x-mandrill-user", "x-pm-message-id")



@dataclass(frozen=True, slots=True)
class Participant:
    role: str  # from, sender, reply-to, to, cc, bcc
    position: int
    address: str
    name: str | None


@dataclass(slots=True)  # not frozen: a frozen one takes 2.9 µs to build, this one 0.3
class MessageRecord:
    """One message as netaudit stores it: who, when, which thread, and whether it is personal.

    Treated as immutable all the same (``dataclasses.replace`` makes a changed copy).
    """

    message_key: str
    message_id: str | None
    date: dt.datetime | None  # UTC
    date_source: str  # header, internaldate, from_line, file_mtime or none
    from_addr: str | None
    from_name: str | None
    direction: str  # sent or received
    participants: tuple[Participant, ...]
    recipient_count: int
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str | None
    automated_reason: str | None
    is_dsn: bool
    size: int | None
    problems: tuple[str, ...] = ()  # headers that were unreadable and how they were handled
    thread_hint: str | None = None  # a server's own thread id (Gmail X-GM-THRID)

    @property
    def date_fallback(self) -> bool:
        return self.date_source != "header"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that is not a usable message; it goes to quarantine with this reason."""

    reason: str


@dataclass(slots=True)
class _Fields:
    """The header fields, unfolded, by lower-case name.

    Each name's first value (what nearly every reading wants) apart from the rare repeats,
    so that the common message, every name once, costs no list per field.
    """

    first_values: dict[str, str]  # in order of appearance
    repeated: dict[str, list[str]]  # all the values of a name that comes more than once

    def first(self, name: str) -> str | None:
        return self.first_values.get(name)

    def all(self, name: str) -> list[str]:
        found = self.repeated.get(name)
        if found is not None:
            return found
        value = self.first_values.get(name)
        return [] if value is None else [value]


def decode_header_bytes(raw: bytes) -> str:
    """UTF-8 first (RFC 6532), then cp1252, then latin-1, which cannot fail."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# The earliest "\n\n" or "\n\r\n": one search instead of two finds and a min().
_BLANK_LINE = re.compile(rb"\n\r?\n")


def header_block(raw: bytes) -> bytes:
    """The bytes before the first blank line (the whole input when there is none)."""
    m = _BLANK_LINE.search(raw)
    return raw[: m.start() + 1] if m else raw


_FIELD_LINE = re.compile(r"([!-9;-~]+)[ \t]*:")
# Each match is one field: its name, the rest of its line, the continuation lines after it,
# and the line break that ends it; or, from the first line that is neither a field nor a
# continuation, everything that is left, with an empty name. Possessive quantifiers:
# backtracking could never find another split (neither ":" nor a line break is a name
# character), so none is recorded.
_FIELDS = re.compile(r"([!-9;-~]++)[ \t]*+:(.*+)((?:\n[ \t].*+)*+)\n?|()(?s:.+)")
# Continuation lines before the first field belong to nothing and are skipped.
_LEADING_CONTINUATIONS = re.compile(r"(?:[ \t][^\n]*\n)*")


def _read_fields(text: str) -> _Fields:
    """Split and unfold the header block.

    Written here rather than using ``email.parser``: its feed parser costs ~150 µs per header
    block, most of the import budget, and builds objects for fields netaudit never reads.
    Like the stdlib, reading stops at the first line that is neither a field nor a
    continuation. Unlike it, obsolete ``Name  :`` (RFC 5322 4.5) is accepted.

    One ``findall`` does the line work in C (a Python loop over lines cost most of this
    function): every match starts where the previous one ended, and the first line that is
    not a field is the empty-named rest. Unfolding drops each line break with the CR before
    it, as splitting on LF and dropping one trailing CR per line would.
    """
    pos = 0
    if text.startswith("From ") and not _FIELD_LINE.match(text):
        # an mbox From_ line left in place
        pos = text.find("\n") + 1
        if not pos:
            return _Fields({}, {})
    if text.startswith((" ", "\t"), pos):
        leading = _LEADING_CONTINUATIONS.match(text, pos)
        if leading is not None:  # always, given the first character
            pos = leading.end()
    first_values: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    matches = _FIELDS.findall(text, pos)
    if matches and not matches[-1][0]:
        del matches[-1]  # not a field: the header ends there
    for name, value, continued, _ in matches:
        if continued:
            value = (value + continued).replace("\r\n", "").replace("\n", "")
        name = name.lower()
        if name not in first_values:
            first_values[name] = value.strip()
        elif name in repeated:
            repeated[name].append(value.strip())
        else:
            repeated[name] = [first_values[name], value.strip()]
    return _Fields(first_values, repeated)


_SIMPLE_ENTRY = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^",<>]*?))\s*<([^<>,"]*)>\s*$')


def _fast_address_pairs(value: str) -> list[tuple[str, str]] | None:
    """getaddresses' answer for the plain lists most mail has; None when it needs the parser.

    A measured shortcut: getaddresses costs ~50 µs per address. Anything with comments,
    groups, escapes or quotes holding a comma goes to the stdlib instead.
    """
    if "(" in value or ":" in value or ";" in value or "\\" in value:
        return None
    if '"' in value:
        if value.count('"') % 2:
            return None
        # a comma inside quotes would split an entry: leave it to the parser
        if any(i % 2 for i, chunk in enumerate(value.split('"')) if "," in chunk):
            return None
    pairs = []
    for entry in value.split(","):
        if not entry.strip():
            continue
        if "<" in entry:
            m = _SIMPLE_ENTRY.match(entry)
            if m is None:
                return None
            pairs.append(((m.group(1) or m.group(2) or "").strip(), m.group(3).strip()))
        elif '"' in entry or ">" in entry or len(entry.split()) != 1:
            return None
        else:
            pairs.append(("", entry.strip()))
    return pairs


# Bounds of the per-value caches below: values longer than this are computed each time, so one
# huge header cannot pin memory; real mailboxes repeat short From/To/Subject values.
_CACHED_VALUE_CHARS = 1024
_CACHE_ENTRIES = 4096


def decode_words(value: str) -> str:
    """RFC 2047 encoded words to text; undecodable words are kept as they are."""
    if _ENCODED_WORD not in value:
        return " ".join(value.split())
    if len(value) <= _CACHED_VALUE_CHARS:
        return _decode_encoded_cached(value)
    return _decode_encoded(value)


def _decode_encoded(value: str) -> str:
    value = value[:MAX_DECODED_CHARS]
    try:
        return " ".join(str(make_header(decode_header(value))).split())
    except _DECODE_ERRORS:
        pass
    # Decode word by word so one bad charset keeps the others.
    parts = []
    for word in re.split(r"(=\?[^?]*\?[bBqQ]\?[^?]*\?=)", value):
        if word.startswith("=?"):
            with contextlib.suppress(*_DECODE_ERRORS):
                word = str(make_header(decode_header(word)))
        parts.append(word)
    return " ".join("".join(parts).split())


# decode_header + make_header cost tens of µs; the result is a pure function of the value.
_decode_encoded_cached = functools.lru_cache(maxsize=_CACHE_ENTRIES)(_decode_encoded)


def normalize_address(addr: str) -> str | None:
    """Lower-case, strip, IDN domains as Unicode; None when it is not an address."""
    addr = addr.strip().strip("<>").strip().lower()
    if addr.startswith("mailto:"):
        addr = addr[7:]
    if not _ADDR_OK.match(addr):
        return None
    local, _, domain = addr.rpartition("@")
    domain = domain.rstrip(".")
    if not local or not domain:
        return None
    if "xn--" in domain:
        with contextlib.suppress(UnicodeError, ValueError):
            domain = domain.encode("ascii").decode("idna")
    return f"{local}@{domain}"


_Pairs = tuple[tuple[str, str | None], ...]


def _parse_address_value(value: str) -> tuple[_Pairs, bool]:
    """One header value's (address, display name) pairs, deduplicated, and the fallback flag.

    Exactly parse_address_list([value]) below the limit, and pure, so it is cached: a mailbox
    repeats the same From/To values, and getaddresses costs ~50 µs per address.
    """
    pairs = _fast_address_pairs(value)
    if pairs is None:
        try:
            pairs = getaddresses([value])
        except Exception:  # the stdlib parser has raised many kinds here
            pairs = []
    found: dict[str, str | None] = {}  # the first display name of each address
    for name, addr in pairs:
        norm = normalize_address(addr)
        if norm:
            display = decode_words(name).strip(" \"'") or None
            if display is not None and display.lower().strip("<>") == norm:
                display = None  # "a@x <a@x>": the name adds nothing
            found.setdefault(norm, display)
    if not found and "@" in value:
        return tuple(dict.fromkeys(filter(
            None, (normalize_address(m) for m in _ADDR_FALLBACK.findall(value)))).items()), True
    return tuple(found.items()), False


_parse_address_value_cached = functools.lru_cache(maxsize=_CACHE_ENTRIES)(_parse_address_value)


def parse_address_list(values: Iterable[str], limit: int = MAX_RECIPIENTS_PARSED
                       ) -> tuple[list[tuple[str, str | None]], bool]:
    """(address, display name) pairs, deduplicated; the flag says a fallback was needed."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    fallback = False
    for value in values:
        if len(out) >= limit:
            break
        if len(value) <= _CACHED_VALUE_CHARS:
            found, used_fallback = _parse_address_value_cached(value)
        else:
            found, used_fallback = _parse_address_value(value)
        if used_fallback:
            fallback = True
        for pair in found:
            if pair[0] not in seen and len(out) < limit:
                seen.add(pair[0])
                out.append(pair)
    return out, fallback


_RECIPIENT_INDEXES = tuple(ADDRESS_ROLES.index(role) for role in RECIPIENT_ROLES)


@dataclass(frozen=True, slots=True)
class _Addresses:
    """What the address fields say, for parse_headers; shared from a cache, so immutable."""

    by_role: tuple[_Pairs | None, ...]  # per ADDRESS_ROLES entry; None when the field is absent
    participants: tuple[Participant, ...]
    from_addr: str | None
    from_name: str | None
    recipient_count: int
    problems: tuple[str, ...]


def _read_addresses(role_values: Sequence[Sequence[str] | None]) -> _Addresses:
    """Read the address fields: one list of values per ADDRESS_ROLES entry, None if absent."""
    by_role: list[_Pairs | None] = []
    problems: list[str] = []
    for role, values in zip(ADDRESS_ROLES, role_values, strict=True):
        if not values:
            by_role.append(None)
            continue
        found, used_fallback = parse_address_list(values)
        by_role.append(tuple(found))
        if used_fallback:
            problems.append(f"{role}: addresses recovered by pattern")
        if len(found) >= MAX_RECIPIENTS_PARSED:
            problems.append(f"{role}: only the first {MAX_RECIPIENTS_PARSED} addresses kept")
    from_pairs = by_role[0]
    from_list = from_pairs or by_role[1]
    from_addr, from_name = from_list[0] if from_list else (None, None)
    if from_pairs is not None and not from_pairs:
        problems.append("from: no address")
    recipients: set[str] = set()
    for i in _RECIPIENT_INDEXES:
        pairs = by_role[i]
        if pairs:
            recipients.update(addr for addr, _ in pairs)
    return _Addresses(tuple(by_role), _participants(by_role), from_addr, from_name,
                      len(recipients), tuple(problems))


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _read_addresses_cached(role_values: tuple[str | None, ...]) -> _Addresses:
    """_read_addresses for one value per role, as nearly every message has.

    Cached whole: a mailbox repeats the same From/To/Cc combinations, and reading them costs
    more than the rest of the header together.
    """
    return _read_addresses([None if value is None else [value] for value in role_values])


def _participants(by_role: Sequence[Sequence[tuple[str, str | None]] | None]
                  ) -> tuple[Participant, ...]:
    return tuple(Participant(role, pos, addr, name)
                 for role, found in zip(ADDRESS_ROLES, by_role, strict=True) if found
                 for pos, (addr, name) in enumerate(found))


# The shape nearly every Date header has: "Sun, 02 Mar 2025 14:00:02 +0000", with or without
# the weekday, the seconds or a trailing "(PDT)" comment. Anything else goes to the stdlib.
# The stdlib drops any first word ending in a comma, and every word after the zone.
_COMMON_DATE = re.compile(
    r"(?:[A-Z][a-z][a-z],[ \t]+)?([0-9][0-9]?)[ \t]+([A-Z][a-z][a-z])[ \t]+([0-9]{4}|[0-9]{2})"
    r"[ \t]+([0-9][0-9]?):([0-9][0-9])(?::([0-9][0-9]))?[ \t]+([+-][0-9]{4})"
    r"(?:[ \t]+\([^()]*\))?")
_MONTHS = {name: i for i, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# "7", "07" -> 7: cheaper than int() for the day and time fields
_SMALL_NUMBERS = {f"{i:02d}": i for i in range(100)} | {str(i): i for i in range(10)}
# "+0200" -> what to subtract for UTC, or None when timezone() would refuse it (a day or
# more); filled as zones are met, at most 2 x 10,000 entries.
_ZONES: dict[str, dt.timedelta | None] = {}


def _zone_offset(zone: str) -> dt.timedelta | None:
    """The stdlib's reading of a numeric zone: "-0000" is UTC (RFC 5322 3.3) like "+0000"."""
    minutes = int(zone[1:3]) * 60 + int(zone[3:5])
    if minutes >= 24 * 60:
        return None
    return dt.timedelta(minutes=-minutes if zone[0] == "-" else minutes)


def parse_date(value: str | None) -> dt.datetime | None:
    """A UTC datetime from a Date header, or None when it is missing or implausible."""
    if not value:
        return None
    value = value.strip()
    m = _COMMON_DATE.fullmatch(value)
    if m is not None:
        day, month_name, year, hour, minute, second, zone = m.groups()
        month = _MONTHS.get(month_name)
        if month is not None:
            # What parsedate_to_datetime does with these words, at a tenth of the cost:
            # two-digit years by the POSIX rule, and whatever datetime refuses (31 Feb,
            # 24:00, :60) or cannot shift to UTC is no date.
            if zone in _ZONES:
                offset = _ZONES[zone]
            else:
                offset = _ZONES[zone] = _zone_offset(zone)
            if offset is None:
                return None
            yy = int(year)
            if yy < 100:
                yy += 1900 if yy > 68 else 2000
            numbers = _SMALL_NUMBERS
            try:
                parsed = dt.datetime(yy, month, numbers[day], numbers[hour], numbers[minute],
                                     numbers[second] if second else 0, 0, dt.UTC)
                if offset:
                    parsed -= offset
            except (ValueError, OverflowError):
                return None
            return parsed if parsed >= _EARLIEST else None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 3.3)
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        parsed = parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if parsed >= _EARLIEST else None


# A Message-ID that is only "<id>" in printable ASCII: what the general rule below gives.
_PLAIN_MSGID = re.compile(r"<([!-;=?-~]+)>")


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    m = _PLAIN_MSGID.fullmatch(value)
    if m is not None:
        return m.group(1)
    m = _MSGID.search(value)
    ident = m.group(1) if m else value
    ident = "".join(ident.split())
    return ident or None


def _references(values: Sequence[str]) -> tuple[str, ...]:
    refs: list[str] = []
    for value in values:
        refs.extend("".join(r.split()) for r in _MSGID.findall(value))
    refs = [r for r in dict.fromkeys(refs) if r]
    if len(refs) > MAX_REFERENCES:  # keep the root (the thread id) and the nearest parents
        refs = [refs[0], *refs[1 - MAX_REFERENCES:]]
    return tuple(refs)


# Longest header name or sender address whose verdict is cached (real ones are far shorter).
_CACHED_NAME_CHARS = 256


def _role_sender(from_addr: str) -> str | None:
    """Why mail from this address is automated by its local part, if it is."""
    local = from_addr.rpartition("@")[0]
    return f"role sender ({local})" if _ROLE_LOCAL.match(local) else None


def _name_reason(name: str) -> str | None:
    """Why a header of this (lower-case) name marks a message as automated, if it does."""
    if name in ("x-auto-response-suppress", "auto-submitted"):
        return None  # the first is on ordinary Outlook mail; the second is judged by value
    if name in ("x-autoreply", "x-autorespond") or _AUTO_HEADER.match(name):
        return f"auto-reply header ({name})"
    if name in _ESP_HEADERS or name.startswith("x-mailgun-"):
        return f"bulk sender ({name})"
    return None


# Cached: the same few senders and few dozen header names come again and again. The names'
# cache is a plain dict, cheaper to ask than an lru_cache; once full it just stops growing.
_role_sender_cached = functools.lru_cache(maxsize=_CACHE_ENTRIES)(_role_sender)
_NAME_REASONS: dict[str, str | None] = {}
_UNKNOWN = "?"  # not a reason: every reason has a space


def _remember_name_reason(name: str) -> str | None:
    reason = _name_reason(name)
    if len(name) <= _CACHED_NAME_CHARS and len(_NAME_REASONS) < _CACHE_ENTRIES:
        _NAME_REASONS[name] = reason
    return reason


def classify_automated(fields: _Fields, from_addr: str | None, subject: str | None
                       ) -> tuple[str | None, bool]:
    """(reason, is_dsn): why this message is not personal, and whether it is a bounce."""
    reason, is_dsn = _header_verdict(fields, from_addr)
    if reason is None and subject and _OOO_SUBJECT.match(subject):
        return "out-of-office subject", False
    return reason, is_dsn


def might_be_dsn(raw: bytes) -> bool:
    """False only for header bytes ``parse_headers`` can never call a bounce; cheap.

    A bounce is a Content-Type of multipart/report naming delivery-status (``_header_verdict``),
    so those letters are in the bytes, in some case: no other character lower-cases to one of
    them, unfolding leaves the white space it joins on, and only a NUL, dropped before
    parsing, could split them. The IMAP sync relies on this to hand messages to another
    process unparsed, where no bounce report could be fetched (tests/test_headers.py).
    Keep it in step with the rule.
    """
    return b"delivery-status" in raw.lower() or b"\x00" in raw


def _header_verdict(fields: _Fields, from_addr: str | None) -> tuple[str | None, bool]:
    """classify_automated without its last rule, the subject's: parse_headers decodes the
    subject only when it is kept or this says nothing."""
    present = fields.first_values
    first = present.get
    ctype = first("content-type")
    if ctype:
        ctype = ctype.lower()
        if ctype.lstrip().startswith("multipart/report"):
            is_dsn = "delivery-status" in ctype
            return ("bounce (multipart/report)" if is_dsn else "multipart/report"), is_dsn
    auto = first("auto-submitted")
    if auto:
        auto = auto.strip().lower()
        if auto and not auto.startswith("no"):
            return f"Auto-Submitted: {auto.split(';')[0]}", False
    prec = first("precedence")
    if prec:
        prec = prec.strip().lower()
        if prec in ("bulk", "list", "junk", "auto_reply"):
            return f"Precedence: {prec}", False
    for name in ("list-id", "list-unsubscribe", "mailing-list", "list-post"):
        if name in present:
            return f"mailing list ({name.title()})", False
    if from_addr:
        reason = (_role_sender_cached if len(from_addr) <= _CACHED_NAME_CHARS
                  else _role_sender)(from_addr)
        if reason is not None:
            return reason, False
    known = _NAME_REASONS.get
    found = None
    for name in present:
        reason = known(name, _UNKNOWN)
        if reason is _UNKNOWN:
            reason = _remember_name_reason(name)
        if reason is not None:
            if found is not None:
                # Two or more: the one named is the first in the order of the set of names,
                # as it always was (an order that depends on string hashing).
                for name in set(present):
                    reason = _name_reason(name)
                    if reason is not None:
                        return reason, False
            found = reason
    return found, False


def _fallback_name(x_from: str | None, from_addr: str) -> str | None:
    """A display name from Enron-style X-From ('Allen, Phillip K. </O=ENRON/...>')."""
    if not x_from:
        return None
    name = decode_words(x_from).split(" <", 1)[0].strip().strip("\"'")
    if not name or "@" in name or name.startswith("/"):
        return None
    return name if name.lower() != from_addr else None


def _hash_key(fields: _Fields, size: int | None) -> str:
    parts = [fields.first(n) or "" for n in ("from", "to", "cc", "date", "subject")]
    parts.append(str(size or ""))
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:40]}"


def parse_headers(
    raw: bytes,
    *,
    me: frozenset[str] = frozenset(),
    fallback_dates: Iterable[tuple[str, dt.datetime | None]] = (),
    size: int | None = None,
    keep_subject: bool = False,
    from_sent_folder: bool = False,
    now: dt.datetime | None = None,
) -> MessageRecord | Rejected:
    """Parse one message's header block.

    ``fallback_dates`` are tried in order when the Date header is missing or unusable, e.g.
    ``[("internaldate", d1), ("from_line", d2), ("file_mtime", d3)]``; the record says which
    one was used. A generator is read only then, so a fallback can cost nothing until needed.
    ``from_sent_folder`` marks the message as mine whatever its From says.
    """
    m = _BLANK_LINE.search(raw)  # header_block, inline
    block = raw[: m.start() + 1] if m else raw
    if len(block) > MAX_HEADER_BYTES:
        return Rejected(f"header block larger than {MAX_HEADER_BYTES // 1024} KiB")
    try:  # decode_header_bytes, inline for the common case
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = decode_header_bytes(block)
    if "\x00" in text:
        text = text.replace("\x00", "")
    fields = _read_fields(text)
    present = fields.first_values
    if not present:
        return Rejected("no header fields")
    first = present.get
    repeated = fields.repeated

    role_values = tuple(map(first, ADDRESS_ROLES))
    if ((repeated and not repeated.keys().isdisjoint(ADDRESS_ROLES))
            or (len(text) > _CACHED_VALUE_CHARS
                and sum(map(len, filter(None, role_values))) > _CACHED_VALUE_CHARS)):
        addresses = _read_addresses([fields.all(role) or None for role in ADDRESS_ROLES])
    else:  # one value per role, and short enough to keep
        addresses = _read_addresses_cached(role_values)
    from_addr, from_name = addresses.from_addr, addresses.from_name
    participants = addresses.participants
    problems = addresses.problems

    message_id = _msgid(first("message-id"))
    if from_addr is None and not addresses.recipient_count and message_id is None:
        return Rejected("no sender, no recipients and no Message-ID: not a mail header")

    if from_addr and not from_name:
        from_name = _fallback_name(first("x-from"), from_addr)
        if from_name:
            by_role = list(addresses.by_role)
            by_role[0] = ((from_addr, from_name), *(by_role[0] or ())[1:])
            participants = _participants(by_role)

    date = parse_date(first("date"))
    date_source = "header"
    # the clock is read only when there is a date to check against it
    if date is not None and date > (now or dt.datetime.now(dt.UTC)) + _MAX_FUTURE:
        date = None
    if date is None:
        if "date" in present:
            problems += ("date: unparseable or implausible",)
        date_source = "none"
        for source, candidate in fallback_dates:
            if candidate is not None:
                date = candidate.astimezone(dt.UTC)
                date_source = source
                break

    references = _references(fields.all("references")) if "references" in present else ()
    if len(references) >= MAX_REFERENCES:
        problems += (f"references: only the first and the last {MAX_REFERENCES - 1} kept",)
    reason, is_dsn = _header_verdict(fields, from_addr)
    subject = first("subject")
    # Decoded only when kept or needed for the out-of-office rule; words that need the stdlib
    # are always decoded, so that nothing it might do is skipped.
    if subject and (keep_subject or reason is None or _ENCODED_WORD in subject):
        subject = decode_words(subject)
        if reason is None and subject and _OOO_SUBJECT.match(subject):
            reason = "out-of-office subject"
    else:
        subject = None

    mine = from_sent_folder or (from_addr is not None and from_addr in me)
    # positional, in field order: a keyword call costs a third more
    return MessageRecord(
        message_id or _hash_key(fields, size),  # message_key
        message_id,
        date,
        date_source,
        from_addr,
        from_name,
        "sent" if mine else "received",  # direction
        participants,
        addresses.recipient_count,
        _msgid(first("in-reply-to")),  # in_reply_to
        references,
        subject if keep_subject else None,
        reason,  # automated_reason
        is_dsn,
        size,
        problems,
    )
