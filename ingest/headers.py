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
import unicodedata
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

# Dates before this are placeholders, not dates: Outlook and PST exports write a null date as
# "Mon, 31 Dec 1979 16:00:00 -0800" (1980-01-01T00:00Z; ten messages of the Enron allen-p
# mailbox), zero timestamps give 1970-01-01, and misread two-digit years land earlier still.
# A day's margin past the PST null date in every zone; no real mail is lost by it.
_EARLIEST = dt.datetime(1980, 1, 2, tzinfo=dt.UTC)
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
# Words that make a local part a role or broadcast mailbox wherever they stand in it, between
# dots, dashes, underscores or plus signs ("critical.notice", "sap.administrator",
# "announcements.enron"). Each was read in real mail before it was added. In Phillip Allen's
# Enron mailbox (allen-p) the company's broadcasts come from no.address, chairman.office,
# announcements.enron and public.relations, pipeline notices from critical.notice, the access
# request system from arsystem (BMC Remedy's Action Request System: 39 messages "Your Approval
# is Overdue: Access Request for ...", none written by a person), newsletters and offers from
# webmaster, announce, news, subscriptions, customer_service and unsubscribe mailboxes; across
# the Enron corpus also chairman.ken and chairman.enron ("Office of the Chairman" to every
# employee), admin.enron and system.administrator (quarantine notices), feedback and info
# mailboxes. None of the 6,695 addresses in those messages that holds one of these words
# belongs to a person.
_ROLE_WORDS = frozenset({
    "announce", "announcement", "announcements", "chairman", "webmaster", "hostmaster",
    "feedback", "survey", "surveys", "administrator", "admin", "sysadmin", "arsystem", "info",
    "notice", "notices", "news", "subscriptions", "subscription", "unsubscribe",
})
# The same, for local parts read with their separators removed ("no.address", "office.of.the.
# chairman", "customer_service", "exchange.administrator").
_ROLE_SQUASHED = re.compile(
    r"^(noaddress|noreply|donotreply|officeofthe(chairman|ceo|president)|(ceo|president)office|"
    r"customerservices?|customercare|publicrelations|[a-z]*administrator)$")
_LOCAL_WORDS = re.compile(r"[._+\-]+")
# Auto-reply subjects: what Outlook, Exchange, Gmail, Notes and the usual vacation programs put
# before the subject they answer ("Automatic reply: Lunch"), or the whole subject ("Auto
# Reply"). A prefix needs its colon, so that a person's "Auto-reply settings" or "Absence
# request for Friday" stays personal mail.
_OOO_SUBJECT = re.compile(
    r"^(?:(?:automatic reply|auto(?:matic)?[ -]?(?:reply|response|responder|antwort)|"
    r"abwesenheitsnotiz|automatische antwort|automatisch antwoord|réponse automatique|"
    r"respuesta automática|risposta automatica|resposta automática|autosvar|automatisk svar|"
    r"automaattinen vastaus|odpowiedź automatyczna|automatická odpověď|otomatik yanıt|"
    r"out of (?:the )?office (?:auto-?reply|reply|notification))\s*(?:[:：]|$)|"
    r"out of (?:the )?office\s*[:：])",  # "Out of Office: Lunch", not "Out of office Friday"
    re.IGNORECASE)
# Words people also write themselves ("Vacation day tomorrow", "Out of office Friday",
# "Phillip is out of the office"): an auto-reply only with a marker that a person's mail never
# has, a null Return-Path (_subject_verdict).
_VACATION_SUBJECT = re.compile(
    r"\b(?:out of (?:the )?office|on vacation|on holiday|on (?:annual |parental )?leave|"
    r"away from (?:the |my )?(?:office|desk)|vacation|abwesend|abwesenheit|urlaub|ferien|"
    r"congés|en vacances|vacaciones|fuera de la oficina|fuori ufficio|ausente|absent)\b",
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
    # A hash of the subject without reply/forward prefixes, kept even when the subject is not
    # (store_subjects = false), and which prefix it had: threads for mail without References.
    subject_key: str | None = None
    subject_prefix: str | None = None  # reply, forward or None

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
# The X- copies of the recipient fields and the role each one names
_X_RECIPIENT_FIELDS = tuple((f"x-{role}", ADDRESS_ROLES.index(role)) for role in RECIPIENT_ROLES)


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
    """A UTC datetime from a Date header, or None when it is missing, unreadable or a
    placeholder (before 1980-01-02: see _EARLIEST)."""
    parsed = _read_date(value)
    return parsed if parsed is not None and parsed >= _EARLIEST else None


def _plausible(when: dt.datetime, now: dt.datetime | None) -> bool:
    """Not a placeholder and not beyond tomorrow: a date that can be when mail was sent."""
    return _EARLIEST <= when <= (now or dt.datetime.now(dt.UTC)) + _MAX_FUTURE


def _read_date(value: str | None) -> dt.datetime | None:
    """What a Date header says, in UTC, however implausible; None when it says no date."""
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
            return parsed
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 3.3)
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None


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
    if _ROLE_LOCAL.match(local):
        return f"role sender ({local})"
    if not _ROLE_WORDS.isdisjoint(_LOCAL_WORDS.split(local)) or \
            _ROLE_SQUASHED.match(_LOCAL_WORDS.sub("", local)):
        return f"role sender ({local})"
    return None


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
    """(reason, is_dsn): why this message is not personal by its headers and subject, and
    whether it is a bounce. parse_headers adds the rules about its recipients."""
    reason, is_dsn = _header_verdict(fields, from_addr)
    if reason is None and subject:
        reason = _subject_verdict(subject, fields)
    return reason, is_dsn


# A null reverse path (RFC 5321 4.5.5, RFC 3834 3.3): what vacation programs and Exchange send
# their replies with, and what a person's mail never has.
_NULL_RETURN_PATH = re.compile(r"^<\s*>$")


def _subject_verdict(subject: str, fields: _Fields) -> str | None:
    """The out-of-office rule: an auto-reply's own subject, or a vacation word with a marker.

    "Vacation day tomorrow" and "Absence request for Friday" are written by people; only what
    auto-replies say on their own (_OOO_SUBJECT) counts alone.
    """
    if _OOO_SUBJECT.match(subject):
        return "out-of-office subject"
    return_path = fields.first("return-path")
    if return_path is not None and _NULL_RETURN_PATH.match(return_path) and \
            _VACATION_SUBJECT.search(subject):
        return "out-of-office subject (null Return-Path)"
    return None


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
    # The first header in the message's own order that gives a reason: a fixed order, so the
    # reason stored does not depend on string hashing (PYTHONHASHSEED), as it once did.
    known = _NAME_REASONS.get
    for name in present:
        reason = known(name, _UNKNOWN)
        if reason is _UNKNOWN:
            reason = _remember_name_reason(name)
        if reason is not None:
            return reason, False
    return None, False


# ---------------------------------------------------------------------------------------------
# Display names from X-From / X-To / X-cc (Enron, Lotus Notes and Exchange exports)
#
# Mail converted from Notes or Exchange often carries its display names only in these copies:
# "To: mike.grigsby@enron.com, keith.holst@enron.com" with "X-To: Mike Grigsby, Keith Holst";
# "X-To: Allen, Phillip K. </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>"; "X-To: \"Jeff Smith\"
# <jsmith@austintx.com> @ ENRON". Everything below is pure and bounded, and never guesses: a
# name goes to an address only by that address, by the words of its local part, or by position
# when the two lists are the same length and nothing contradicts it.

# Longer X- copies are not read. The longest in allen-p, a broadcast's X-To of 349 names, has
# 20,463 characters and costs 7 ms; the cost grows in step with the length.
MAX_X_HEADER_CHARS = 64 * 1024
_NOTES_DOMAIN = re.compile(r"(?:\s*@\s*[A-Za-z][\w-]*)+\s*$")  # "Name@ENRON", "x @ ENRON"
_X500 = "/o="  # an Exchange directory path: </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>
_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "cfp", "cpa", "esq"})
_NOT_LETTERS = re.compile(r"[^a-z]+")
# What converted mail writes where a broadcast's recipients would be: "undisclosed-recipients:;",
# "(Recipient list suppressed)", and Notes group names such as "All Enron Houston@ENRON".
_UNDISCLOSED = re.compile(r"undisclosed|recipient list|^all\b", re.IGNORECASE)
_NO_RECIPIENT_NAME = re.compile(r"undisclosed|recipient list", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class XEntry:
    """One recipient of an X-To / X-cc / X-From value: a display name, an SMTP address, or
    both; ``text`` is what it said, for the undisclosed-recipients rule."""

    name: str | None
    address: str | None
    text: str


def _close(value: str, start: int, char: str) -> int:
    """Index of ``char`` after ``start``, or the end of the value."""
    end = value.find(char, start)
    return len(value) if end < 0 else end


# An Exchange wrapper's closing quote: one followed by an angle bracket, a comma or the end
_WRAPPER_END = re.compile(r"'(?=\s*(?:[<,]|$))")
_SPECIAL = re.compile(r"[\"'<(,]")
# Where a comment stood in a segment's text: a display name may carry one ("Ward, Kim S
# (Houston)"), an address must not ("hargr@webtv.net (Neal Hargrove)").
_OPEN, _CLOSE = "\x01", "\x02"
_MARKED_COMMENT = re.compile("\x01[^\x02]*\x02")


def _segments(value: str, single: bool) -> list[tuple[str, list[str], list[str]]]:
    """(text, angle parts, comments) per comma-separated part of the value (one part when
    ``single``); quotes, angle brackets, parentheses and Exchange's 'wrappers' ('Laura
    Harder' <...>) hide commas. A quote that closes no wrapper is an apostrophe (O'Rourke)."""
    out: list[tuple[str, list[str], list[str]]] = []
    text: list[str] = []
    angles: list[str] = []
    comments: list[str] = []
    i, n = 0, len(value)
    while i < n:
        m = _SPECIAL.search(value, i)
        if m is None:
            text.append(value[i:])
            break
        if m.start() > i:
            text.append(value[i:m.start()])
        i = m.start()
        c = value[i]
        if c == '"':
            end = _close(value, i + 1, '"')
            text.append(value[i + 1:end])
            i = end + 1
        elif c == "'" and not angles and not "".join(text).strip() and \
                (closing := _WRAPPER_END.search(value, i + 1)) is not None:
            inner_text, inner_angles, inner_comments = _segments(value[i + 1:closing.start()],
                                                                 True)[0]
            text.append(inner_text)
            angles.extend(inner_angles)
            comments.extend(inner_comments)
            i = closing.end()
        elif c == "<":
            end = _close(value, i + 1, ">")
            angles.append(value[i + 1:end])
            i = end + 1
        elif c == "(":
            end = _close(value, i + 1, ")")
            comments.append(value[i + 1:end])
            text.append(f"{_OPEN}{value[i + 1:end]}{_CLOSE}")  # kept in place, marked
            i = end + 1
        elif c == "," and not single:
            out.append(("".join(text), angles, comments))
            text, angles, comments = [], [], []
            i += 1
        else:  # an apostrophe, or a comma in a single entry
            text.append(c)
            i += 1
    out.append(("".join(text), angles, comments))
    return out


def _merge_exchange_names(segments: list[tuple[str, list[str], list[str]]]
                          ) -> list[tuple[str, list[str], list[str]]]:
    """Join "Allen", " Phillip K. </O=...>" back into "Allen, Phillip K.".

    Exchange writes names "Last, First", with a comma: before a directory path the last
    name may have a few words ("Baughman Jr., Don"), before an address only one ("Sumey,
    Katrina <KSumey@ftenergy.com>"), so that "Mike Grigsby, Keith Holst <k@x>" stays two.
    """
    out: list[tuple[str, list[str], list[str]]] = []
    for text, angles, comments in segments:
        if out and angles and "," not in text and text.strip():
            prev_text, prev_angles, prev_comments = out[-1]
            words = len(prev_text.split())
            directory = angles[0].lstrip().lower().startswith(_X500)
            if not prev_angles and not prev_comments and "@" not in prev_text and \
                    0 < words <= (3 if directory else 1):
                out[-1] = (f"{prev_text.strip()}, {text.strip()}", angles, comments)
                continue
        elif out and angles and angles[0].lstrip().lower().startswith(_X500):
            # "Office of the Chairman, </O=...>": the name is all before the comma
            prev_text, prev_angles, prev_comments = out[-1]
            if not prev_angles and not prev_comments and "@" not in prev_text and \
                    not text.strip():
                out[-1] = (prev_text, angles, comments)
                continue
        out.append((text, angles, comments))
    return out


# What Outlook adds to a contact's name: "Patrick Shortridge (E-mail)"
_CONTACT_SUFFIX = re.compile(r"\s*\((?:e-?mail(?: \d)?|business fax|home fax)\)\s*$",
                             re.IGNORECASE)


def _usable_name(name: str) -> str | None:
    """The name as a display name, or None when it is no name: empty, an address, a path."""
    name = _CONTACT_SUFFIX.sub("", " ".join(name.split())).strip(" ,;:'\"")
    if not name or "@" in name or name.startswith("/") or "/o=" in name.lower():
        return None
    if not any(c.isalpha() for c in name) or _NO_RECIPIENT_NAME.search(name):
        return None
    return name


def _entry(text: str, angles: list[str], comments: list[str]) -> XEntry | None:
    """One segment as a recipient: its SMTP address if it shows one, its name if it has one."""
    address = gateway = None
    for angle in angles:
        candidate = normalize_address(angle.strip().rstrip(",;"))
        # IMCEANOTES-... is the Exchange gateway's encoding of a Notes name, not a mailbox: it
        # keeps its entry from being matched to another address, and nothing more
        if candidate is not None and candidate.startswith("imcea"):
            gateway = gateway or candidate
        elif candidate is not None:
            address = candidate
            break
    plain = _MARKED_COMMENT.sub("", text).strip().strip("'\"").strip()  # without comments
    full = text.replace(_OPEN, "(").replace(_CLOSE, ")").strip().strip("'\"").strip()
    if "@" in plain:  # a Notes domain ("Ken Lay@ENRON", "x@aol.com @ ENRON"), or an address
        plain = _NOTES_DOMAIN.sub("", plain)
        full = _NOTES_DOMAIN.sub("", full)
    shown = decode_words(full)
    if "@" in plain:  # an address where the name would be: "JacquesTC@aol.com @ ENRON"
        if address is None:
            address = normalize_address(plain.strip("'\" "))
        shown = ""
    elif "/" in shown and not shown.startswith("/"):
        head, _, path = shown.partition("/")
        if " " not in path.strip():  # a Notes name: "Mark Whitt/DEN/ECT", not "GRE/ER Fuel"
            shown = head
    address = address or gateway
    name = _usable_name(shown)
    if name is None and not shown.strip():
        for comment in comments:  # "hargr@webtv.net (Neal Hargrove)"
            name = _usable_name(decode_words(comment))
            if name is not None:
                break
    if name is None and address is None:
        return None if not plain and not angles else XEntry(None, None, plain)
    return XEntry(name, address, plain)


def x_entries(value: str, single: bool = False) -> tuple[XEntry, ...]:
    """The recipients an X-To / X-cc value lists (one sender for X-From: ``single``).

    Commas separate entries except inside quotes, angle brackets, comments and Exchange's
    quoted wrappers, and in Exchange's "Last, First </O=...>" names.
    """
    if not value or len(value) > MAX_X_HEADER_CHARS:
        return ()
    if _OPEN in value or _CLOSE in value:
        value = value.replace(_OPEN, "").replace(_CLOSE, "")
    found = (_entry(*segment) for segment in _merge_exchange_names(_segments(value, single)))
    return tuple(entry for entry in found if entry is not None)


def _plain_letters(text: str) -> str:
    """Lower case without accents or apostrophes: "O'Rourke" -> "orourke", "José" -> "jose"."""
    text = text.casefold().replace("'", "").replace("’", "")
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text)
                       if not unicodedata.combining(c))
    return text


def name_words(name: str) -> list[str]:
    """A person's name as lower-case words in first-to-last order ("Grigsby, Mike" -> mike,
    grigsby); titles after a comma ("Huntley, CFP") are dropped, not moved."""
    before, comma, after = name.partition(",")
    head = [w for w in _NOT_LETTERS.split(_plain_letters(before)) if w]
    tail = [w for w in _NOT_LETTERS.split(_plain_letters(after)) if w] if comma else []
    if tail and all(w in _NAME_SUFFIXES for w in tail):
        tail = []
    words = tail + head
    return [w for w in words if w not in _NAME_SUFFIXES] or words


def _local_parts(address: str) -> list[str]:
    """The letter runs of an address's local part: "k..allen" -> k, allen; "pallen70" -> pallen."""
    return [p for p in _NOT_LETTERS.split(_plain_letters(address.rpartition("@")[0])) if p]


def _one_word_forms(words: Sequence[str]) -> set[str]:
    """The one-word local parts a name can have: "Phillip K Allen" -> phillipkallen,
    phillipallen, allenphillip, pallen, pkallen, allenp, allen (three letters at least)."""
    if len(words) == 1:
        return {words[0]}
    first, last, middle = words[0], words[-1], words[1:-1]
    initials = "".join(w[0] for w in middle)
    forms = {"".join(words), first + last, last + first, first[0] + last,
             first[0] + initials + last, last + first[0], last}
    return {form for form in forms if len(form) >= 3}


def _words_fit(words: Sequence[str], parts: Sequence[str]) -> bool:
    """name_fits_address on a name's words and an address's parts."""
    if not words or not parts:
        return False
    if len(parts) == 1:
        return parts[0] in _one_word_forms(words)
    unused = list(words)
    whole = False
    for part in sorted(parts, key=len, reverse=True):  # whole words before initials
        match = next((w for w in unused if w == part), None)
        if match is None and len(part) == 1:
            match = next((w for w in unused if w[0] == part), None)
        if match is None:
            return False
        whole = whole or len(part) > 1
        unused.remove(match)
    return whole


def name_fits_address(name: str, address: str) -> bool:
    """Is the address's local part made of this name's words or initials?

    mike.grigsby@ and k..allen@ fit "Mike Grigsby" and "Allen, Phillip K." word by word (a
    one-letter part is an initial); jsmith@, pallen@, johnniebrown@ and grigsby@ fit "Jeff
    Smith", "Phillip K Allen", "Johnnie Brown" and "Mike Grigsby" as one word. Digits are
    ignored (pallen70@).
    """
    return _words_fit(name_words(name), _local_parts(address))


def _looks_like_a_name(address: str) -> bool:
    """A local part of two or more words ("mike.grigsby"): a name a wrong one contradicts."""
    return sum(len(p) > 1 for p in _local_parts(address)) >= 2


def _fitting(addresses: Sequence[str], entries: Sequence[XEntry]) -> list[set[int]]:
    """For each address, the entries whose names fit it.

    Through an index of the names' words and one-word forms, so that a broadcast's X-To of
    349 names costs a few milliseconds, not the half second of trying every pair.
    """
    words_of = [name_words(entry.name) if entry.name else [] for entry in entries]
    by_word: dict[str, set[int]] = {}
    by_form: dict[str, set[int]] = {}
    for j, words in enumerate(words_of):
        for word in words:
            by_word.setdefault(word, set()).add(j)
        if words:
            for form in _one_word_forms(words):
                by_form.setdefault(form, set()).add(j)
    found: list[set[int]] = []
    for address in addresses:
        parts = _local_parts(address)
        if len(parts) == 1:
            found.append(set(by_form.get(parts[0], ())))
            continue
        longest = max(parts, key=len, default="")
        candidates = by_word.get(longest, ()) if len(longest) > 1 else ()
        found.append({j for j in candidates if _words_fit(words_of[j], parts)})
    return found


def names_for_addresses(pairs: _Pairs, entries: Sequence[XEntry]) -> _Pairs:
    """``pairs`` (address, name) with names from ``entries`` for the addresses that have none.

    By explicit address first ("Jeff Smith" <jsmith@...>), then by the words of the local part
    when exactly one name fits an address and fits no other, then by position when there are
    as many entries as addresses and every match found so far, every explicit address and
    every local part that reads as a name agree with that order. Otherwise nothing is guessed.
    """
    if not entries or all(name for _, name in pairs):
        return pairs
    addresses = [address for address, _ in pairs]
    index = {address: i for i, address in enumerate(addresses)}
    chosen: dict[int, int] = {}  # pair -> entry
    for j, entry in enumerate(entries):
        i = index.get(entry.address) if entry.address else None
        if i is not None and i not in chosen:
            chosen[i] = j
    taken = set(chosen.values())
    fitting = _fitting(addresses, entries)  # per address, the entries that fit it
    fits_of: dict[int, set[int]] = {}  # per entry, the addresses it fits
    for i, js in enumerate(fitting):
        for j in js:
            fits_of.setdefault(j, set()).add(i)
    free = {j for j, entry in enumerate(entries)
            if j not in taken and entry.address is None and entry.name}
    open_ = [i for i in range(len(addresses)) if i not in chosen and pairs[i][1] is None]
    candidates = {i: fitting[i] & free for i in open_}
    claims: dict[int, int] = {}
    for js in candidates.values():
        for j in js:
            claims[j] = claims.get(j, 0) + 1
    for i, js in candidates.items():
        if len(js) == 1 and claims[next(iter(js))] == 1:
            chosen[i] = next(iter(js))
    if len(entries) == len(addresses) and all(i == j for i, j in chosen.items()) and \
            all(entry.address is None or entry.address == addresses[j]
                for j, entry in enumerate(entries)):
        positional: dict[int, int] = {}
        for i, address in enumerate(addresses):
            entry = entries[i]
            if i in chosen or pairs[i][1] is not None or entry.name is None:
                continue
            fits = fits_of.get(i, set())
            if (_looks_like_a_name(address) and i not in fits) or fits - {i}:
                positional = {}  # the order is not the same: guess nothing
                break
            positional[i] = i
        chosen.update(positional)
    if not chosen:
        return pairs
    out = []
    for i, (address, name) in enumerate(pairs):
        if name is None and i in chosen:
            name = entries[chosen[i]].name
        out.append((address, name))
    return tuple(out)


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _x_names_cached(pairs: _Pairs, value: str) -> _Pairs:
    """names_for_addresses for one X- value: pure, and repeated across a mailbox."""
    return names_for_addresses(pairs, x_entries(value))


def _fallback_name(x_from: str | None, from_addr: str) -> str | None:
    """A display name from Enron-style X-From ('Allen, Phillip K. </O=ENRON/...>'), the only
    place such mail names its sender."""
    if not x_from:
        return None
    entries = x_entries(x_from, single=True)
    if len(entries) != 1 or entries[0].name is None:
        return None
    name = entries[0].name
    return name if name.lower() != from_addr else None


# ---------------------------------------------------------------------------------------------
# Recipients: mail not addressed to anyone in particular


def _list_address(address: str) -> bool:
    """A distribution list or list server by its address alone: all.houston@,
    dl-ga-all_enron_worldwide2@, undisclosed.recipients@, anything@listserv.example.

    Narrow on purpose: a plain name@ list address is not recognised, and that costs only a
    missed exclusion, never a person's mail.
    """
    local, _, domain = address.rpartition("@")
    words = [w for w in _LOCAL_WORDS.split(local) if w]
    if not words:
        return False
    return (words[0] in ("all", "dl") and len(words) > 1) or "undisclosed" in words or \
        "recipients" in words or words[0] in ("everyone", "allstaff", "allemployees") or \
        domain.split(".", 1)[0] in ("listserv", "lists")


def _recipient_verdict(addresses: _Addresses, from_addr: str | None, me: frozenset[str],
                       x_to: str | None) -> str | None:
    """Why mail I received is addressed to nobody in particular, if it is.

    The sender as the only recipient is how broadcast tools send (everyone else in Bcc); no
    recipient at all is the same with no To (an X-To that names real recipients, as converted
    Notes mail has, means the To was lost instead); only list addresses in To and Cc is a
    distribution list. None of these asks whether my address is there: ``me`` may be
    incomplete, and my missing address proves nothing.
    """
    count = addresses.recipient_count
    if count == 0:
        entries = x_entries(x_to) if x_to else ()
        if all(entry.address is None and (entry.name is None or _UNDISCLOSED.search(entry.text))
               for entry in entries):
            return "no recipients"
        return None
    by_role = addresses.by_role
    if count == 1 and from_addr is not None:
        only = next(pairs[0][0] for i in _RECIPIENT_INDEXES if (pairs := by_role[i]))
        if only == from_addr:
            return "sent to the sender only"
    listed = [address for i in _RECIPIENT_INDEXES[:2] for address, _ in by_role[i] or ()]
    if listed and all(_list_address(a) for a in listed) and me.isdisjoint(listed):
        return f"distribution list ({listed[0]})"
    return None


# ---------------------------------------------------------------------------------------------
# Subject keys: threads for mail without threading headers


# Reply and forward prefixes as mail clients write them in their languages; matched on the
# case-folded subject. "VS" is a forward in Danish and Norwegian and a reply in Finnish:
# counted as a forward, the more common reading.
_REPLY_PREFIXES = ("re", "aw", "sv", "antw", "antwort", "r", "rif", "réf", "res", "odp", "ynt",
                   "atb", "ats", "vá", "απ", "σχετ", "השב", "回复", "回覆", "答复", "返信", "회신")
_FORWARD_PREFIXES = ("fw", "fwd", "wg", "tr", "rv", "enc", "doorst", "vs", "vb", "vl", "i",
                     "pd", "ilt", "i\u0307lt", "tov", "πρθ", "הועבר", "转发", "轉寄", "转寄",
                     "転送", "전달")
_PREFIX_KIND = {word: "reply" for word in _REPLY_PREFIXES} | \
    {word: "forward" for word in _FORWARD_PREFIXES}
_SUBJECT_PREFIX = re.compile(
    r"\s*(" + "|".join(sorted(map(re.escape, _PREFIX_KIND), key=len, reverse=True)) +
    r")\s*(?:\[\d{1,4}\]|\(\d{1,4}\)|\^\d{1,4})?\s*[:：]")
_SUBJECT_TAG = re.compile(r"\s*\[[^\[\]]{0,100}\]\s*(?=\S)")  # "[EXTERNAL] ", "[dev] "
_FORWARD_SUFFIX = re.compile(r"\s*\(fwd\)\s*$")
_NO_SUBJECT = frozenset({"(no subject)", "no subject", "[no subject]", "(kein betreff)",
                         "(sans objet)", "(sin asunto)", "(nessun oggetto)", "(geen onderwerp)"})
SUBJECT_KEY_DIGITS = 16


def subject_key(subject: str | None) -> tuple[str | None, str | None]:
    """(key, prefix) of a decoded subject: a short hash of the subject with reply and forward
    prefixes and bracket tags stripped, and whether the first prefix was a reply or a forward.

    The key joins mail that has no threading headers (Enron has none) to its thread without
    storing the subject: "RE: [EXTERNAL] Fwd: Budget" and "Budget" get the same one. None
    when nothing is left. White space is collapsed and case folded, so only wording counts.
    """
    if not subject:
        return None, None
    if len(subject) <= _CACHED_VALUE_CHARS:
        return _subject_key_cached(subject)
    return _subject_key(subject)


def _subject_key(subject: str) -> tuple[str | None, str | None]:
    text = subject if subject.isascii() else unicodedata.normalize("NFKC", subject)
    text = " ".join(text.casefold().split())
    prefix = None
    while True:
        m = _SUBJECT_PREFIX.match(text)
        if m is not None:
            if prefix is None:
                prefix = _PREFIX_KIND[m.group(1)]
            text = text[m.end():]
            continue
        m = _SUBJECT_TAG.match(text)
        if m is not None:
            text = text[m.end():]
            continue
        break
    m = _FORWARD_SUFFIX.search(text)
    if m is not None and m.start() > 0:  # Pine's "Budget (fwd)"
        text = text[:m.start()]
        prefix = prefix or "forward"
    text = text.strip()
    if not text or text in _NO_SUBJECT:
        return None, prefix
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                             digest_size=SUBJECT_KEY_DIGITS // 2).hexdigest()
    return digest, prefix


_subject_key_cached = functools.lru_cache(maxsize=_CACHE_ENTRIES)(_subject_key)


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

    ``fallback_dates`` are tried in order when the Date header is missing or unreadable, e.g.
    ``[("internaldate", d1), ("from_line", d2), ("file_mtime", d3)]``; the record says which
    one was used. A generator is read only then, so a fallback can cost nothing until needed.
    A Date that is a placeholder (the PST null date, an epoch, the far future) is no date, and
    only an INTERNALDATE stands in for it: a converted mbox's From_ lines and its files' times
    are the day of the conversion. A fallback that is a placeholder itself is skipped.
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

    by_role: list[_Pairs | None] | None = None  # a copy, once a name is added to it
    if from_addr and not from_name:
        from_name = _fallback_name(first("x-from"), from_addr)
        if from_name:
            by_role = list(addresses.by_role)
            by_role[0] = ((from_addr, from_name), *(by_role[0] or ())[1:])
    # Names that only the X- copies give (Enron, Notes and Exchange exports); most mail has none
    for x_name, index in _X_RECIPIENT_FIELDS:
        x_value = first(x_name)
        if not x_value:
            continue
        pairs = addresses.by_role[index]
        if not pairs or len(x_value) > MAX_X_HEADER_CHARS or all(n for _, n in pairs):
            continue
        named = (_x_names_cached(pairs, x_value) if len(x_value) <= _CACHED_VALUE_CHARS
                 else names_for_addresses(pairs, x_entries(x_value)))
        if named is not pairs:
            if by_role is None:
                by_role = list(addresses.by_role)
            by_role[index] = named
    if by_role is not None:
        participants = _participants(by_role)

    date = _read_date(first("date"))
    date_source = "header"
    placeholder = False
    if date is not None and not _plausible(date, now):
        # The PST null date, an epoch or a year 2100: no date, and no From_ line or file time
        # in its place (a converted mbox's From_ lines all carry the day it was converted).
        problems += (f"date: {date:%Y-%m-%dT%H:%MZ} is a placeholder or implausible",)
        placeholder = True
        date = None
    elif date is None and "date" in present:
        problems += ("date: unparseable",)
    if date is None:
        date_source = "none"
        for source, candidate in fallback_dates:
            if candidate is None or (placeholder and source != "internaldate"):
                continue
            candidate = candidate.astimezone(dt.UTC)
            if _plausible(candidate, now):  # a zero file time or INTERNALDATE is none either
                date = candidate
                date_source = source
                break

    references = _references(fields.all("references")) if "references" in present else ()
    if len(references) >= MAX_REFERENCES:
        problems += (f"references: only the first and the last {MAX_REFERENCES - 1} kept",)
    mine = from_sent_folder or (from_addr is not None and from_addr in me)
    reason, is_dsn = _header_verdict(fields, from_addr)
    if reason is None and not mine:
        reason = _recipient_verdict(addresses, from_addr, me, first("x-to"))
    subject = first("subject")
    key = prefix = None
    if subject:
        # Always decoded (cached when it has encoded words): the key needs the text.
        subject = decode_words(subject)
        key, prefix = subject_key(subject)
        if reason is None and subject:
            reason = _subject_verdict(subject, fields)
    else:
        subject = None

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
        None,  # thread_hint
        key,  # subject_key
        prefix,  # subject_prefix
    )
