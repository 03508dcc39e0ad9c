"""Delivery status notifications (RFC 3464): which recipients failed, and when.

Pure on purpose: the bytes of one ``message/delivery-status`` part in, one report per recipient
out, never an exception. The SUSTAIN report uses these rows to warn before the user writes to a
dead address, so only the recipient, the action, the status and the times are kept.

Two times, because they answer different questions. ``Last-Attempt-Date`` is when delivery
failed; ``Arrival-Date`` is when the reporting MTA received the message that bounced, which is
about when that message was sent, not when it failed. The report's own Date header (not in
this part; the caller has it) is the failure's time when there is no ``Last-Attempt-Date``.

Real reports bend the RFC's layout, so blocks are found by field names rather than by blank
lines alone:

- recipient blocks with no blank line between them (a repeated per-recipient field starts the
  next block), or with several blank lines;
- ``Action`` before ``Final-Recipient`` (Exim);
- MIME headers repeated inside the part (AOL puts ``MIME-Version`` and ``Content-Type`` in
  every block);
- no space after the colon, ``<>`` around the address, and a missing ``Action`` (then the
  ``Status`` class says what happened).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ingest.headers import decode_header_bytes, normalize_address, parse_date

MAX_PART_BYTES = 256 * 1024
MAX_RECIPIENTS = 1000

# RFC 3464 2.3: fields that describe one recipient.
PER_RECIPIENT = frozenset({
    "original-recipient", "final-recipient", "action", "status", "remote-mta",
    "diagnostic-code", "last-attempt-date", "final-log-id", "will-retry-until",
})
# RFC 3464 2.2: fields that describe the whole report.
PER_MESSAGE = frozenset({
    "reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date", "original-envelope-id",
})
# Seen inside real delivery-status parts; they are not report fields.
_MIME_NOISE = frozenset({
    "mime-version", "content-type", "content-transfer-encoding", "content-description",
})
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$")
_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_ACTION_BY_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """What one report says about one recipient."""

    recipient: str  # lower-case address (Final-Recipient, else Original-Recipient)
    action: str | None  # failed, delayed, delivered, relayed, expanded
    status: str | None  # e.g. 5.1.1
    diagnostic: str | None  # the remote server's words, for a person to read
    reported_at: dt.datetime | None  # Last-Attempt-Date (UTC): when delivery failed
    arrival_at: dt.datetime | None  # Arrival-Date (UTC): when the bounced message arrived


def _fields(text: str) -> list[tuple[str, str] | None]:
    """Unfolded (name, value) pairs in order; None marks a blank line."""
    out: list[tuple[str, list[str]] | None] = []  # value pieces joined once, at the end
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if not line.strip():
            out.append(None)
            continue
        if line[0] in " \t":
            last = out[-1] if out else None
            if last is not None:
                last[1].append(line.strip())
            continue
        m = _FIELD.match(line)
        if m is not None:
            out.append((m.group(1).lower(), [m.group(2).strip()]))
    return [None if item is None else (item[0], " ".join(item[1])) for item in out]


def _blocks(fields: list[tuple[str, str] | None]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and the recipient blocks."""
    message: dict[str, str] = {}
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}

    def close() -> None:
        nonlocal current
        if current:
            blocks.append(current)
            current = {}

    for item in fields:
        if item is None:
            close()
            continue
        name, value = item
        if name in _MIME_NOISE:
            continue
        if name in PER_RECIPIENT:
            if name in current:  # the next recipient, without a blank line in between
                close()
            current[name] = value
        elif name in PER_MESSAGE:
            close()
            message.setdefault(name, value)
        elif not current:
            message.setdefault(name, value)  # X-Postfix-Queue-ID and friends
    close()
    return message, blocks


def _address(value: str | None) -> str | None:
    """'rfc822; <a@b.example>' -> 'a@b.example'; other address types only if they look like mail."""
    if not value:
        return None
    _, sep, rest = value.partition(";")
    return normalize_address(rest if sep else value)


def _status(block: dict[str, str]) -> str | None:
    for name in ("status", "diagnostic-code"):
        m = _STATUS.search(block.get(name, ""))
        if m:
            return m.group(1)
    return None


def _action(block: dict[str, str], status: str | None) -> str | None:
    words = block.get("action", "").split()
    if words:
        return words[0].lower().rstrip(";")
    return _ACTION_BY_CLASS.get(status[0]) if status else None


def parse_delivery_status(data: bytes | str) -> list[DsnRecipient]:
    """Every recipient a delivery-status part reports on, in order, without repeats."""
    if isinstance(data, bytes):
        data = decode_header_bytes(data[:MAX_PART_BYTES])
    else:
        data = data[:MAX_PART_BYTES]
    message, blocks = _blocks(_fields(data))
    arrival = parse_date(message.get("arrival-date"))
    out: list[DsnRecipient] = []
    seen: set[tuple[str, str | None, str | None]] = set()
    for block in blocks:
        recipient = _address(block.get("final-recipient")) or \
            _address(block.get("original-recipient"))
        if recipient is None:
            continue
        status = _status(block)
        action = _action(block, status)
        key = (recipient, action, status)
        if key in seen:
            continue
        seen.add(key)
        diagnostic = block.get("diagnostic-code")
        out.append(DsnRecipient(
            recipient=recipient, action=action, status=status,
            diagnostic=" ".join(diagnostic.split())[:500] if diagnostic else None,
            reported_at=parse_date(block.get("last-attempt-date")), arrival_at=arrival))
        if len(out) >= MAX_RECIPIENTS:
            break
    return out
