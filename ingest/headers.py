"""Mail header parsing: header bytes in, one message record out, never an exception.

Pure on purpose: no I/O, no clock, no database. Everything the header cannot tell (the IMAP
INTERNALDATE, the mbox From_ line date, the file time, whether the folder is \\Sent) comes in as
an argument, so the same function serves IMAP, Maildir, mbox and single files, and can be fuzzed.

The fast path is the one the stdlib makes cheap: ``compat32`` header parsing on *text* (bytes
would turn raw UTF-8 into surrogates), ``getaddresses`` for address lists and ``decode_header``
for RFC 2047 names. Each header is read on its own inside a guard, so one broken header costs
only that header.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as netaudit stores it: who, when, which thread, and whether it is personal."""

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
    """The header fields netaudit reads, unfolded, by lower-case name."""

    values: dict[str, list[str]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def first(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])


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


def header_block(raw: bytes) -> bytes:
    """The bytes before the first blank line (the whole input when there is none)."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    return raw[: min(ends) + 1] if ends else raw


_FIELD_LINE = re.compile(r"([!-9;-~]+)[ \t]*:")


def _read_fields(text: str) -> _Fields:
    """Split and unfold the header block.

    Written here rather than using ``email.parser``: its feed parser costs ~150 µs per header
    block, most of the import budget, and builds objects for fields netaudit never reads.
    Like the stdlib, reading stops at the first line that is neither a field nor a
    continuation. Unlike it, obsolete ``Name  :`` (RFC 5322 4.5) is accepted.
    """
    out = _Fields()
    values = out.values
    name: str | None = None
    parts: list[str] = []
    lines = text.split("\n")
    if lines and lines[0].startswith("From ") and not _FIELD_LINE.match(lines[0]):
        # an mbox From_ line left in place
        lines = lines[1:]
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            break
        first = line[0]
        if first == " " or first == "\t":
            if name is not None:
                parts.append(line)
            continue
        m = _FIELD_LINE.match(line)
        if m is None:
            break
        if name is not None:
            values.setdefault(name, []).append("".join(parts).strip())
        name = m.group(1).lower()
        parts = [line[m.end():]]
    if name is not None:
        values.setdefault(name, []).append("".join(parts).strip())
    out.names.update(values)
    return out


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


def decode_words(value: str) -> str:
    """RFC 2047 encoded words to text; undecodable words are kept as they are."""
    if _ENCODED_WORD not in value:
        return " ".join(value.split())
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


def parse_address_list(values: Iterable[str], limit: int = MAX_RECIPIENTS_PARSED
                       ) -> tuple[list[tuple[str, str | None]], bool]:
    """(address, display name) pairs, deduplicated; the flag says a fallback was needed."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    fallback = False
    for value in values:
        if len(out) >= limit:
            break
        pairs = _fast_address_pairs(value)
        if pairs is None:
            try:
                pairs = getaddresses([value])
            except Exception:  # the stdlib parser has raised many kinds here
                pairs = []
        found: list[tuple[str, str | None]] = []
        for name, addr in pairs:
            norm = normalize_address(addr)
            if norm:
                display = decode_words(name).strip(" \"'") or None
                if display is not None and display.lower().strip("<>") == norm:
                    display = None  # "a@x <a@x>": the name adds nothing
                found.append((norm, display))
        if not found and "@" in value:
            fallback = True
            found = [(a, None) for a in
                     filter(None, (normalize_address(m) for m in _ADDR_FALLBACK.findall(value)))]
        for addr, display in found:
            if addr not in seen and len(out) < limit:
                seen.add(addr)
                out.append((addr, display))
    return out, fallback


def parse_date(value: str | None) -> dt.datetime | None:
    """A UTC datetime from a Date header, or None when it is missing or implausible."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
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


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
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


def classify_automated(fields: _Fields, from_addr: str | None, subject: str | None
                       ) -> tuple[str | None, bool]:
    """(reason, is_dsn): why this message is not personal, and whether it is a bounce."""
    ctype = (fields.first("content-type") or "").lower()
    if ctype.lstrip().startswith("multipart/report"):
        is_dsn = "delivery-status" in ctype
        return ("bounce (multipart/report)" if is_dsn else "multipart/report"), is_dsn
    auto = (fields.first("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto.split(';')[0]}", False
    prec = (fields.first("precedence") or "").strip().lower()
    if prec in ("bulk", "list", "junk", "auto_reply"):
        return f"Precedence: {prec}", False
    for name in ("list-id", "list-unsubscribe", "mailing-list", "list-post"):
        if name in fields.names:
            return f"mailing list ({name.title()})", False
    if from_addr:
        local = from_addr.rpartition("@")[0]
        if _ROLE_LOCAL.match(local):
            return f"role sender ({local})", False
    for name in fields.names:
        if name in ("x-auto-response-suppress", "auto-submitted"):
            continue  # the first is on ordinary Outlook mail; the second was judged by value
        if name in ("x-autoreply", "x-autorespond") or _AUTO_HEADER.match(name):
            return f"auto-reply header ({name})", False
        if name in _ESP_HEADERS or name.startswith("x-mailgun-"):
            return f"bulk sender ({name})", False
    if subject and _OOO_SUBJECT.match(subject):
        return "out-of-office subject", False
    return None, False


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
    fallback_dates: Sequence[tuple[str, dt.datetime | None]] = (),
    size: int | None = None,
    keep_subject: bool = False,
    from_sent_folder: bool = False,
    now: dt.datetime | None = None,
) -> MessageRecord | Rejected:
    """Parse one message's header block.

    ``fallback_dates`` are tried in order when the Date header is missing or unusable, e.g.
    ``[("internaldate", d1), ("from_line", d2), ("file_mtime", d3)]``; the record says which
    one was used. ``from_sent_folder`` marks the message as mine whatever its From says.
    """
    block = header_block(raw)
    if len(block) > MAX_HEADER_BYTES:
        return Rejected(f"header block larger than {MAX_HEADER_BYTES // 1024} KiB")
    text = decode_header_bytes(block)
    if "\x00" in text:
        text = text.replace("\x00", "")
    fields = _read_fields(text)
    if not fields.names:
        return Rejected("no header fields")
    problems: list[str] = []

    addresses: dict[str, list[tuple[str, str | None]]] = {}
    for role in ADDRESS_ROLES:
        values = fields.all(role)
        if values:
            found, used_fallback = parse_address_list(values)
            addresses[role] = found
            if used_fallback:
                problems.append(f"{role}: addresses recovered by pattern")
            if len(found) >= MAX_RECIPIENTS_PARSED:
                problems.append(f"{role}: only the first {MAX_RECIPIENTS_PARSED} addresses kept")
    from_list = addresses.get("from") or addresses.get("sender") or []
    from_addr, from_name = from_list[0] if from_list else (None, None)
    if "from" in fields.names and not addresses.get("from"):
        problems.append("from: no address")

    message_id = _msgid(fields.first("message-id"))
    recipients = {a for role in RECIPIENT_ROLES for a, _ in addresses.get(role, [])}
    if from_addr is None and not recipients and message_id is None:
        return Rejected("no sender, no recipients and no Message-ID: not a mail header")

    if from_addr and not from_name:
        from_name = _fallback_name(fields.first("x-from"), from_addr)
        if from_name:
            addresses["from"] = [(from_addr, from_name), *addresses.get("from", [])[1:]]

    date = parse_date(fields.first("date"))
    now = now or dt.datetime.now(dt.UTC)
    date_source = "header"
    if date is not None and date > now + _MAX_FUTURE:
        date = None
    if date is None:
        if "date" in fields.names:
            problems.append("date: unparseable or implausible")
        date_source = "none"
        for source, candidate in fallback_dates:
            if candidate is not None:
                date = candidate.astimezone(dt.UTC)
                date_source = source
                break

    references = _references(fields.all("references"))
    if len(references) >= MAX_REFERENCES:
        problems.append(f"references: only the first and the last {MAX_REFERENCES - 1} kept")
    subject_raw = fields.first("subject")
    subject = decode_words(subject_raw) if subject_raw else None
    reason, is_dsn = classify_automated(fields, from_addr, subject)

    participants = tuple(
        Participant(role, pos, addr, name)
        for role in ADDRESS_ROLES
        for pos, (addr, name) in enumerate(addresses.get(role, []))
    )
    mine = from_sent_folder or (from_addr is not None and from_addr in me)
    return MessageRecord(
        message_key=message_id or _hash_key(fields, size),
        message_id=message_id,
        date=date,
        date_source=date_source,
        from_addr=from_addr,
        from_name=from_name,
        direction="sent" if mine else "received",
        participants=participants,
        recipient_count=len(recipients),
        in_reply_to=_msgid(fields.first("in-reply-to")),
        references=references,
        subject=subject if keep_subject else None,
        automated_reason=reason,
        is_dsn=is_dsn,
        size=size,
        problems=tuple(problems),
    )
