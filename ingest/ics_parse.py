"""Pure calendar parsing: iCalendar bytes in, meeting occurrences out.

This module is the whole of netaudit's calendar *understanding* and nothing else: no files,
no network, no database. A caller (file import, vdir watcher, HTTP feed) hands over the bytes
of one ``.ics`` and gets back a :class:`CalendarParse` with

* the expanded, non-cancelled occurrences of events inside a time window (DESIGN.md
  "Definitions: Meeting"),
* the problems met on the way, one per broken calendar or per broken UID (for the
  quarantine table), and
* the UIDs the file describes, so the caller can replace stored occurrences UID by UID.

The rules come from research/ingestion.md §3 (R-ICS-2..5). The decisions that go beyond
them are written next to the code that makes them and summed up here:

* ``me`` empty: the file is taken to be the user's own calendar, so every event counts as
  attended and ``organizer_is_me`` is False. With ``me`` given, an event counts when I am
  its organizer or a non-declining attendee; an event with neither ORGANIZER nor ATTENDEE
  (a private entry in my own calendar) counts too; my own ATTENDEE entry saying DECLINED
  (or DELEGATED) wins over being the organizer.
* Events with no counterparts are still returned (``counterparts == ()``): they are
  meetings of mine in the calendar sense; the caller makes no edges from them.
* Counterparts leave out PARTSTAT DECLINED and DELEGATED (a delegator hands the seat to the
  delegate, who is listed on their own), CUTYPE ROOM/RESOURCE/GROUP, ROLE NON-PARTICIPANT,
  Google's calendar pseudo-addresses (``*.calendar.google.com``), entries that carry no
  e-mail address, and my own addresses. TENTATIVE and NEEDS-ACTION are kept, with the
  PARTSTAT on :class:`Counterpart`, so a caller can apply the configurable policy of R-ICS-4.
* ``mode``: a physical LOCATION wins over a conferencing link (Google Workspace and Teams add
  a link to every event, in-person ones too); otherwise any conferencing link or conference
  property makes the occurrence ``online``.
* Cancelled: ``STATUS:CANCELLED`` on the master cancels every occurrence (overrides too);
  on an override, that occurrence. A ``METHOD:CANCEL`` calendar yields nothing, and also
  removes its UIDs (or single instances) from the other VCALENDARs of the same file.
* A series whose window holds more than ``max_occurrences_per_series`` occurrences keeps the
  first ones and reports a Problem; a rule too dense to even count cheaply, a
  ``FREQ=SECONDLY``/``MINUTELY`` rule, a rule with an impossible BYMONTHDAY and one with
  no instance for 30 years after the window (dateutil would search to the year 9999) are
  dropped with a Problem. A file gives at most ``max_occurrences`` in all. The caller must
  not replace stored occurrences of a UID in ``failed_uids``.
* Hostile input is cut before icalendar builds any object from it (:func:`_screen`): an
  event with more than :data:`MAX_RECURRENCE_VALUES` RDATE/EXDATE values (or past
  :data:`MAX_FILE_RECURRENCE_VALUES` in the file) is not read and its UID fails; a
  VTIMEZONE whose rules are no time-zone rules (sub-daily, dense, never matching) is
  ignored with a ``"calendar"`` Problem, as dateutil would expand it without end.
* Each file is read on its own: icalendar's process-wide cache of time zones is emptied
  first, so one calendar's custom TZID never decides the offsets of the next.
* Problems are everything dropped, cut short or guessed. A ``"calendar"`` Problem can come
  with occurrences (an unknown X-WR-TIMEZONE, a VTIMEZONE that did not parse).
* Structural damage (a stray END, an unterminated component, a bad VALARM) makes icalendar
  drop the whole file; then every VEVENT block is parsed on its own and only those that
  still fail become Problems.
* An event without UID gets ``no-uid-<sha256 of its content>``, stable across re-imports.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import dateutil.rrule
import icalendar
import recurring_ical_events
import x_wr_timezone
from dateutil.rrule import rrulestr
from icalendar.enums import CUTYPE, PARTSTAT, ROLE, STATUS
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

__all__ = [
    "CalendarParse",
    "Counterpart",
    "Occurrence",
    "Problem",
    "parse_calendar",
]


MAX_OCCURRENCES = 100_000  # per file, all series together (parse_calendar's default)


@dataclass(frozen=True, slots=True)
class Counterpart:
    """Someone I met at an occurrence.

    ``partstat`` (an addition to the brief) is the upper-case PARTSTAT of their entry
    (``ACCEPTED``, ``TENTATIVE``, ``NEEDS-ACTION``...; ``ACCEPTED`` for an organizer who is
    not also listed as an attendee) so that callers can drop TENTATIVE / NEEDS-ACTION when
    configured to (R-ICS-4).
    """

    address: str  # lower-cased e-mail address, without 'mailto:'
    name: str | None  # CN
    role: str  # 'organizer' or 'attendee'
    partstat: str = "ACCEPTED"


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One expanded, non-cancelled occurrence of an event that I attended.

    ``occurrence_key`` is ``f"{uid}|{recurrence_id}"``. ``recurrence_id`` is the
    RECURRENCE-ID of an overriding component, else the original start of the occurrence (for
    a RANGE=THISANDFUTURE shift: the slot before the shift), written ``YYYY-MM-DD`` for dates
    and ``YYYY-MM-DDTHH:MM:SSZ`` (UTC) for date-times. It therefore does not change when an
    occurrence is moved, and a re-import yields the same keys.
    """

    occurrence_key: str
    uid: str
    recurrence_id: str
    start: datetime | None  # UTC-aware for timed events; None for all-day
    end: datetime | None
    start_date: date | None  # all-day: the DATE itself, never shifted through UTC
    end_date: date | None  # all-day: exclusive end date
    all_day: bool
    mode: str | None  # 'online', 'in_person' or None
    organizer_is_me: bool
    counterparts: tuple[Counterpart, ...]
    summary: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the input that was dropped, cut short or guessed, for the quarantine."""

    location: str  # "calendar" or "UID <uid>"
    reason: str  # one readable line


@dataclass(frozen=True, slots=True)
class CalendarParse:
    """The result of :func:`parse_calendar`.

    Additions to the brief, both empty in the usual case:

    * ``failed_uids``: UIDs with a Problem whose occurrences are missing or cut short. A
      caller replacing occurrences per UID must leave these UIDs as they were stored
      ("a failed or partial fetch never deletes stored data").
    * ``cancelled_keys``: occurrence keys cancelled by a ``METHOD:CANCEL`` component that
      names a RECURRENCE-ID (an iTIP cancel of one instance). Such a file says nothing about
      the rest of the series, so its UID is not in ``uids``; the caller deletes these keys.
    """

    occurrences: tuple[Occurrence, ...]
    problems: tuple[Problem, ...]
    uids: frozenset[str]
    failed_uids: frozenset[str] = frozenset()
    cancelled_keys: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def parse_calendar(
    data: bytes,
    *,
    me: frozenset[str],
    window_start: datetime,
    window_end: datetime,
    default_tz: str = "UTC",
    max_bytes: int = 20_000_000,
    max_occurrences_per_series: int = 5000,
    max_seconds: float = 120.0,
    max_occurrences: int = MAX_OCCURRENCES,
) -> CalendarParse:
    """Expand the events of an iCalendar file into my meeting occurrences in a window.

    Never raises for any ``data``: unparseable input gives no occurrences and one
    ``Problem("calendar", ...)``; a broken event or series gives a Problem for its UID and the
    rest of the file is still returned. Only caller mistakes raise ``ValueError``: a naive or
    reversed window, or an unknown ``default_tz``.

    ``window_start``/``window_end`` bound the occurrences (an occurrence overlapping the
    window is included). ``default_tz`` is the zone of floating times in a calendar without a
    valid X-WR-TIMEZONE. ``max_seconds`` (an addition) is a safety valve against rules that
    make dateutil search for centuries (``FREQ=DAILY;BYDAY=MO;BYSETPOS=2`` and other rules
    with no instance): series not reached in time become Problems. The limit also stops a
    single rule that dateutil walks for ever (see :func:`_guard`); what is left is icalendar
    reading the text, which takes time in proportion to its size. ``max_occurrences`` (an
    addition) bounds the whole file: a few hundred bytes of daily series would otherwise
    make millions of occurrences.
    """
    if window_start.tzinfo is None or window_end.tzinfo is None:
        raise ValueError("window_start and window_end must be timezone-aware")
    if window_end < window_start:
        raise ValueError("window_end is before window_start")
    fallback_tz = _resolve_zone(default_tz)
    if fallback_tz is None:
        raise ValueError(f"unknown default_tz {default_tz!r}")
    with _ICALENDAR:
        icalendar.use_zoneinfo()  # empties icalendar's time zone cache
        settings = _Settings(
            me=frozenset(filter(None, (_normalise_address(a) for a in me))),
            window_start=window_start.astimezone(UTC),
            window_end=window_end.astimezone(UTC),
            default_tz=fallback_tz,
            cap=max(1, max_occurrences_per_series),
            deadline=time.monotonic() + max_seconds,
            total=max(1, max_occurrences),
            left=[max(1, max_occurrences)],
        )
        try:
            return _parse(data, settings, max_bytes)
        except Exception as exc:  # the last guard of "never raises": report, do not crash
            return CalendarParse(
                occurrences=(),
                problems=(Problem("calendar", f"unexpected error: {_describe(exc)}"),),
                uids=frozenset(),
            )


# icalendar keeps one process-wide cache of time zones by TZID, filled from the first
# VTIMEZONE of that name it reads: a second calendar whose "Customized Time Zone 1" or
# "W. Europe Standard Time" says otherwise got the first one's offsets, and one hostile
# file could pin a zone for every calendar read after it. So each file is parsed from an
# empty cache, one at a time (parsing holds the GIL anyway), which also bounds memory to
# one file's parse per process.
_ICALENDAR = threading.Lock()


# --------------------------------------------------------------------------------------
# decoding and parsing the text
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    me: frozenset[str]
    window_start: datetime
    window_end: datetime
    default_tz: tzinfo
    cap: int
    deadline: float
    total: int  # occurrences the whole file may give
    left: list[int]  # [what is left of total]: the one mutable part


def _describe(exc: BaseException) -> str:
    """One readable line for an exception, short enough for a quarantine row."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode(data: bytes) -> str:
    """Turn bytes into text the way real exports need it.

    RFC 5545 says UTF-8, but Outlook and older tools write Windows-1252 or UTF-16, and
    icalendar would replace every undecodable byte with U+FFFD, losing names in CN. A file
    that is not valid UTF-8 is decoded line by line, so one stray byte does not garble the
    UTF-8 names on every other line. Latin-1 never fails, so this always returns.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode("utf-16")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(_decode_line(line) for line in data.splitlines(keepends=True))


def _decode_line(line: bytes) -> str:
    for encoding in ("utf-8", "cp1252"):
        with contextlib.suppress(UnicodeDecodeError):
            return line.decode(encoding)
    return line.decode("latin-1")


# --------------------------------------------------------------------------------------
# screening the text before icalendar builds objects from it
# --------------------------------------------------------------------------------------

MAX_RECURRENCE_VALUES = 1_000  # RDATE/EXDATE values and RRULE/EXRULE lines, per component
MAX_FILE_RECURRENCE_VALUES = 20_000  # the same, per file
MAX_TIME_ZONES = 100  # VTIMEZONEs per file
MAX_ZONE_PARTS = 500  # STANDARD/DAYLIGHT parts per VTIMEZONE
MAX_ZONE_CHANGES = 24  # instances of one VTIMEZONE rule in the two years from its DTSTART
MAX_ZONE_TRANSITIONS = 50_000  # all rules of a VTIMEZONE, up to their end or the year 9999
_ZONE_FREQS = frozenset({"YEARLY", "MONTHLY"})

_FOLD = re.compile(r"\r?\n[ \t]")
_SCREENED = re.compile(
    r"^(BEGIN|END|UID|TZID|DTSTART|RRULE|EXRULE|RDATE|EXDATE)(?=[;:])([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_PARAMS = re.compile(r'(?:[^:"]|"[^"]*")*:')  # a property's parameters, up to the value


@dataclass(slots=True)
class _ZonePart:
    """A STANDARD or DAYLIGHT part of a VTIMEZONE, as text."""

    start: str = ""  # DTSTART value
    rules: list[tuple[str, str]] = field(default_factory=list)  # ("RRULE", "FREQ=...")


@dataclass(slots=True)
class _Unit:
    """A component directly inside a VCALENDAR (VEVENT, VTIMEZONE...), as text."""

    name: str
    start: int  # offset of its BEGIN line in the unfolded text
    end: int = -1  # offset just after its END line
    uid: str = ""
    tzid: str = ""
    values: int = 0  # RDATE/EXDATE values and RRULE/EXRULE lines, its parts included
    parts: list[_ZonePart] = field(default_factory=list)


@dataclass(slots=True)
class _Screened:
    text: str
    problems: list[Problem]
    failed_uids: set[str]


def _value(rest: str) -> str:
    """The value of a content line, given what follows its name (``;TZID=x:value``)."""
    match = _PARAMS.match(rest)
    return rest[match.end() :] if match else rest


def _line_end(text: str, at: int) -> int:
    """Past the line break at ``at``, if there is one."""
    if text.startswith("\r\n", at):
        return at + 2
    return at + 1 if text.startswith("\n", at) else at


def _units(text: str) -> Iterator[_Unit]:
    """The components directly inside each VCALENDAR (or bare ones), with what the checks
    need, in one pass over the lines that matter.

    Nesting is followed the way :func:`_salvage` does (an END closes any unterminated
    component inside it; an END without BEGIN is ignored), with a count per name so that
    membership is O(1) and thousands of nested BEGINs cost no quadratic time.
    """
    stack: list[str] = []
    open_names: dict[str, int] = {}
    unit: _Unit | None = None
    base = 0  # depth of units: 1 inside a VCALENDAR, 0 for a bare component
    for match in _SCREENED.finditer(text):
        name = match.group(1).upper()
        rest = match.group(2)
        if name == "BEGIN":
            component = _value(rest).strip().upper()
            if not stack:
                base = 1 if component == "VCALENDAR" else 0
            if len(stack) == base:
                unit = _Unit(component, match.start())
            elif unit is not None and unit.name == "VTIMEZONE" and len(stack) == base + 1:
                unit.parts.append(_ZonePart())
            stack.append(component)
            open_names[component] = open_names.get(component, 0) + 1
            continue
        if name == "END":
            component = _value(rest).strip().upper()
            if not open_names.get(component):
                continue
            while True:
                popped = stack.pop()
                open_names[popped] -= 1
                if unit is not None and len(stack) == base:
                    # its own END line goes with it; an END that closes it unterminated stays
                    unit.end = (
                        _line_end(text, match.end()) if popped == component else (match.start())
                    )
                    yield unit
                    unit = None
                if popped == component:
                    break
            continue
        if unit is None:
            continue
        depth = len(stack) - base  # 1: the unit's own lines; 2: a part's
        if name in ("RDATE", "EXDATE"):
            value = _value(rest)
            unit.values += value.count(",") + 1 if value.strip() else 0
        elif name in ("RRULE", "EXRULE"):
            unit.values += 1
            if depth == 2 and unit.parts:
                unit.parts[-1].rules.append((name, _value(rest).strip()))
        elif name == "UID" and depth == 1 and not unit.uid:
            unit.uid = _value(rest).strip()
        elif name == "TZID" and depth == 1 and unit.name == "VTIMEZONE":
            unit.tzid = _value(rest).strip()
        elif name == "DTSTART" and depth == 2 and unit.parts:
            unit.parts[-1].start = _value(rest).strip()
    if unit is not None:  # unterminated at the end of the text
        unit.end = len(text)
        yield unit


def _screen(text: str, deadline: float) -> _Screened:
    """Drop the components that would make icalendar or dateutil take unbounded memory or
    time, before icalendar builds a single object.

    * Too many RDATE/EXDATE values or RRULEs (one component, or the file): icalendar keeps
      an object of some hundred bytes per value, and recurring-ical-events a copy of the
      event per instance. An event goes with every component of its UID, so that no
      override is applied to the wrong series; the UID becomes a failed one.
    * A VTIMEZONE that would change its offset too often, see :func:`_zone_complaint`.
      icalendar hands it to dateutil's ``tzical``, which expands and caches every
      transition from DTSTART up to any date asked about (an 854-byte
      ``FREQ=MINUTELY`` zone since 1900 grows past 6 GB); it is dropped whole, and times
      given in it are then read as in a zone of that name known to the system, else as
      floating times.

    Returns the text unchanged when nothing is dropped, else without those components
    (and unfolded).
    """
    unfolded = _FOLD.sub("", text)
    units: list[_Unit] = []
    refused: list[tuple[_Unit, str]] = []
    values = zones = 0
    for unit in _units(unfolded):
        units.append(unit)
        reason = None
        if unit.values > MAX_RECURRENCE_VALUES:
            reason = (
                f"{unit.values} RDATE, EXDATE and RRULE values, more than {MAX_RECURRENCE_VALUES}"
            )
        elif unit.values and values + unit.values > MAX_FILE_RECURRENCE_VALUES:
            reason = (
                f"the calendar has more than {MAX_FILE_RECURRENCE_VALUES} RDATE, EXDATE "
                "and RRULE values"
            )
        elif unit.name == "VTIMEZONE":
            if zones >= MAX_TIME_ZONES:
                reason = f"the calendar has more than {MAX_TIME_ZONES} VTIMEZONEs"
            else:
                reason = _zone_complaint(unit.parts, deadline)
        if reason is None:
            values += unit.values
            zones += unit.name == "VTIMEZONE"
        else:
            refused.append((unit, reason))
    if not refused:
        return _Screened(text, [], set())

    problems: list[Problem] = []
    failed: set[str] = set()
    line, at = 1, 0
    for unit, reason in refused:
        line, at = line + unfolded.count("\n", at, unit.start), unit.start
        uid = _unescape(unit.uid) if unit.uid else ""
        if unit.name == "VTIMEZONE":
            problems.append(Problem("calendar", f"VTIMEZONE {unit.tzid!r} ignored: {reason}"))
        elif unit.name == "VEVENT" and uid:
            problems.append(Problem(f"UID {uid}", f"not read: {reason}"))
            failed.add(uid)
        else:
            problems.append(Problem(f"{unit.name} at line {line}", f"not read: {reason}"))
    dropped = {id(unit) for unit, _ in refused}
    kept: list[str] = []
    at = 0
    for unit in units:
        if id(unit) in dropped or (
            unit.name == "VEVENT" and unit.uid and _unescape(unit.uid) in failed
        ):
            kept.append(unfolded[at : unit.start])
            at = unit.end
    kept.append(unfolded[at:])
    return _Screened("".join(kept), problems, failed)


def _unescape(uid: str) -> str:
    """A UID as :func:`_uid_of` reads it (``\\,`` is a comma), so failed UIDs match."""
    if "\\" in uid:
        with contextlib.suppress(Exception):
            return str(
                icalendar.Event.from_ical(f"BEGIN:VEVENT\r\nUID:{uid}\r\nEND:VEVENT\r\n").uid
            ).strip()
    return uid.strip()


def _zone_complaint(parts: list[_ZonePart], deadline: float) -> str | None:
    """Why a VTIMEZONE must not reach dateutil's ``tzical``, or None.

    ``tzical`` walks each rule of a zone, period by period, from its DTSTART up to any
    date asked about, caching every transition, and nothing can stop it. Real zones change
    their offset once or twice a year by ``FREQ=YEARLY`` rules (or RDATE lists, counted
    with the other recurrence values), so a zone is refused when a rule

    * has a FREQ other than YEARLY or MONTHLY (a sub-daily one from 1900 is millions of
      transitions), or BYSETPOS (each period then costs up to 366 x 732 steps);
    * has more than :data:`MAX_ZONE_CHANGES` instances in the two years from its DTSTART,
      or none there although it has not ended (dateutil would search on to the year 9999);

    or when all its rules together would walk more than :data:`MAX_ZONE_TRANSITIONS`
    transitions or years up to their UNTIL, COUNT or the year 9999. A rule dateutil cannot
    read is left to icalendar, which reports it.
    """
    if len(parts) > MAX_ZONE_PARTS:
        return f"{len(parts)} STANDARD/DAYLIGHT parts, more than {MAX_ZONE_PARTS}"
    walked = 0.0
    for part in parts:
        for kind, rule in part.rules:
            fields = _rule_fields(rule)
            freq = fields.get("FREQ", "")
            if freq and freq not in _ZONE_FREQS:
                return f"{kind} FREQ={freq} is not a time-zone rule"
            if "BYSETPOS" in fields:
                return f"{kind} with BYSETPOS is not a time-zone rule"
            if time.monotonic() > deadline:
                return f"time limit reached while checking its {kind}"
            count = _zone_changes_seen if len(rule) <= 200 else _zone_changes
            found = count(part.start, rule)
            if found is None:
                continue
            changes, ended = found
            if changes > MAX_ZONE_CHANGES:
                return (
                    f"{kind} {rule[:60]} changes the offset more than {MAX_ZONE_CHANGES} "
                    "times in two years"
                )
            if changes == 0 and not ended:
                return f"{kind} {rule[:60]} has no instance in the two years from its DTSTART"
            walked += max(1.0, changes / 2) * _rule_years(part.start, fields)
    if walked > MAX_ZONE_TRANSITIONS:
        return (
            f"its rules would have dateutil walk more than {MAX_ZONE_TRANSITIONS} "
            "transitions or years"
        )
    return None


def _rule_fields(rule: str) -> dict[str, str]:
    """``FREQ=YEARLY;BYMONTH=3`` as ``{"FREQ": "YEARLY", "BYMONTH": "3"}``, upper case."""
    fields = {}
    for item in rule.upper().split(";"):
        key, _, value = item.partition("=")
        fields[key.strip()] = value.strip()
    return fields


def _rule_years(start_text: str, fields: dict[str, str]) -> int:
    """Years a VTIMEZONE rule spans from its DTSTART: to its UNTIL, to the year 9999, or
    (with COUNT) 40 years per instance, the longest gap a YEARLY pattern can leave."""
    start = int(start_text[:4]) if start_text[:4].isdigit() else 1
    end = 9999
    until = fields.get("UNTIL", "")
    if until[:4].isdigit():
        end = min(end, int(until[:4]))
    count, interval = fields.get("COUNT", ""), fields.get("INTERVAL", "1")
    if count.isdigit():
        span = 40 * int(count) * (int(interval) if interval.isdigit() else 1)
        end = min(end, start + (span // 12 if fields.get("FREQ") == "MONTHLY" else span))
    return max(1, end - start + 1)


def _zone_changes(start_text: str, rule: str) -> tuple[int, bool] | None:
    """(instances, ended): the instances of a VTIMEZONE rule in the two years from its
    DTSTART, stopping one past :data:`MAX_ZONE_CHANGES`, and whether the rule ended there;
    None when dateutil cannot read it.

    Bounded without a deadline: the caller lets only YEARLY and MONTHLY rules without
    BYSETPOS through, so the walk is at most 25 periods of at most 366 days, stopped at the
    25th instance.
    """
    try:
        start = datetime.strptime(start_text.strip()[:15], "%Y%m%dT%H%M%S")
        parsed = rrulestr(rule, dtstart=start, ignoretz=True, cache=False)
    except Exception:
        return None
    end = _add_years(start, 2)
    count = 0
    try:
        for instant in _guard(parsed, _Stop(end, deadline=float("inf"))):
            if instant >= end or count > MAX_ZONE_CHANGES:
                return count, False
            count += 1
    except _PastHorizon:
        return count, False
    except Exception:
        return None
    return count, True


# The same few zones come in every file of a vdir; short rules only, to bound the memory.
_zone_changes_seen = functools.lru_cache(maxsize=256)(_zone_changes)


def _load(text: str) -> tuple[list[icalendar.Calendar], list[Problem]]:
    """Parse the text into calendars; on a structural error, salvage the events one by one.

    icalendar turns bad property *values* into broken properties, but a stray END, an
    unterminated component or a bad alarm makes it reject the whole file, or silently drop
    events. When the parse fails or finds fewer VEVENTs than the text has, each VEVENT block
    is parsed on its own, so the rest of the calendar is kept.
    """
    expected = len(_BEGIN_VEVENT.findall(text))
    try:
        components = icalendar.Calendar.from_ical(text, multiple=True)
    except Exception as exc:
        salvaged, problems = _salvage(text)
        if not salvaged:
            return [], [Problem("calendar", f"cannot parse calendar: {_describe(exc)}"), *problems]
        return salvaged, problems
    calendars = [c for c in components if isinstance(c, icalendar.Calendar)]
    loose = [c for c in components if isinstance(c, icalendar.Event)]
    if loose:  # bare VEVENTs without a VCALENDAR around them
        wrapper = icalendar.Calendar()
        for event in loose:
            wrapper.add_component(event)
        calendars.append(wrapper)
    found = sum(len(c.walk("VEVENT")) for c in calendars)
    if found < expected:
        salvaged, problems = _salvage(text)
        if sum(len(c.walk("VEVENT")) for c in salvaged) > found:
            return salvaged, problems
    if not calendars:
        return [], [Problem("calendar", "no VCALENDAR or VEVENT found")]
    return calendars, []


_BEGIN_VEVENT = re.compile(r"^BEGIN:VEVENT[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_BEGIN_END = re.compile(r"^(BEGIN|END):([A-Za-z0-9-]+)\s*$", re.IGNORECASE)
_UID_LINE = re.compile(r"^UID[;:](?:[^:]*:)?(.*)$", re.IGNORECASE)


def _salvage(text: str) -> tuple[list[icalendar.Calendar], list[Problem]]:
    """Rebuild each VCALENDAR from its VTIMEZONE and VEVENT blocks, dropping broken ones."""
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()  # unfold (RFC 5545 §3.1)
    calendars: list[icalendar.Calendar] = []
    problems: list[Problem] = []
    header: list[str] = []
    blocks: list[tuple[str, int, list[str]]] = []
    stack: list[str] = []
    current: list[str] = []
    start_line = 0

    def finish_calendar() -> None:
        if blocks:
            calendar, found = _rebuild(header, blocks)
            problems.extend(found)
            if calendar is not None:
                calendars.append(calendar)
        header.clear()
        blocks.clear()

    for number, line in enumerate(lines, start=1):
        match = _BEGIN_END.match(line.strip())
        kind, name = (match.group(1).upper(), match.group(2).upper()) if match else ("", "")
        if kind == "BEGIN":
            if not stack and name != "VCALENDAR":
                stack.append("VCALENDAR")  # a bare component: pretend a VCALENDAR around it
            if len(stack) == 1:
                current, start_line = [], number
            stack.append(name)
            if _keep_line(stack, len(stack) - 1):
                current.append(line)
        elif kind == "END" and name in stack:
            depth = len(stack) - 1 - stack[::-1].index(name)  # closes this one and any
            if _keep_line(stack, depth):  # unterminated ones inside it
                current.append(line)
            del stack[depth:]
            if depth == 1:
                blocks.append((name, start_line, current))
                current = []
            elif depth == 0:
                finish_calendar()
        elif kind == "END":
            continue  # an END without its BEGIN: drop the line, keep the component
        elif len(stack) >= 2:
            if _keep_line(stack, len(stack) - 1):
                current.append(line)
        elif len(stack) == 1:
            header.append(line)
    if len(stack) >= 2 and current:
        blocks.append((stack[1], start_line, [*current, f"END:{stack[1]}"]))  # unterminated
    finish_calendar()
    return calendars, problems


def _keep_line(stack: list[str], depth: int) -> bool:
    """Whether a line at ``depth`` of ``stack`` belongs in a salvaged block.

    An event keeps its own lines but not those of its VALARMs: netaudit never reads alarms,
    and a bad TRIGGER must not cost the event. A VTIMEZONE needs all of its parts.
    """
    return depth == 1 or (depth >= 2 and stack[1] == "VTIMEZONE")


_HEADER_KEEP = ("METHOD", "X-WR-TIMEZONE", "CALSCALE")


def _rebuild(
    header: list[str], blocks: list[tuple[str, int, list[str]]]
) -> tuple[icalendar.Calendar | None, list[Problem]]:
    """Parse salvaged blocks separately and join the ones that parse into one calendar."""
    problems: list[Problem] = []
    kept_header = [line for line in header if line.upper().startswith(_HEADER_KEEP)]
    calendar = None
    with contextlib.suppress(Exception):
        calendar = icalendar.Calendar.from_ical(
            "\r\n".join(["BEGIN:VCALENDAR", *kept_header, "END:VCALENDAR", ""])
        )
    if calendar is None:
        calendar = icalendar.Calendar()
    # Time zones first: icalendar resolves TZID references while parsing an event.
    ordered = sorted(blocks, key=lambda block: block[0] != "VTIMEZONE")
    for name, line_number, block in ordered:
        if name not in ("VTIMEZONE", "VEVENT"):
            continue
        text = "\r\n".join(["BEGIN:VCALENDAR", *block, "END:VCALENDAR", ""])
        try:
            parsed = icalendar.Calendar.from_ical(text)
        except Exception as exc:
            uid = next((m.group(1).strip() for m in map(_UID_LINE.match, block) if m), "")
            where = f"UID {uid}" if uid else f"{name} at line {line_number}"
            problems.append(Problem(where, f"cannot parse {name}: {_describe(exc)}"))
            continue
        for component in parsed.subcomponents:
            calendar.add_component(component)
    if not calendar.subcomponents:
        return None, problems
    return calendar, problems


# --------------------------------------------------------------------------------------
# the calendar level: time zones, METHOD:CANCEL, grouping by UID
# --------------------------------------------------------------------------------------


def _parse(data: bytes, settings: _Settings, max_bytes: int) -> CalendarParse:
    if not isinstance(data, bytes | bytearray | memoryview):
        return CalendarParse((), (Problem("calendar", "input is not bytes"),), frozenset())
    if len(data) > max_bytes:
        reason = f"calendar is {len(data)} bytes, more than the limit of {max_bytes}"
        return CalendarParse((), (Problem("calendar", reason),), frozenset())
    screened = _screen(_decode(bytes(data)), settings.deadline)
    calendars, problems = _load(screened.text)
    problems[:0] = screened.problems

    occurrences: dict[str, Occurrence] = {}
    uids: set[str] = set(screened.failed_uids)
    failed: set[str] = set(screened.failed_uids)
    cancelled_uids: set[str] = set()
    cancelled_keys: set[str] = set()
    for calendar in calendars:
        try:
            result = _parse_one(calendar, settings)
        except Exception as exc:
            problems.append(Problem("calendar", f"cannot read calendar: {_describe(exc)}"))
            continue
        problems.extend(result.problems)
        uids.update(result.uids)
        failed.update(result.failed_uids)
        cancelled_uids.update(result.cancelled_uids)
        cancelled_keys.update(result.cancelled_keys)
        for occurrence in result.occurrences:
            occurrences.setdefault(occurrence.occurrence_key, occurrence)  # first one wins

    # A METHOD:CANCEL calendar in the same file cancels that UID (or instance) everywhere.
    kept = [
        o
        for o in occurrences.values()
        if o.uid not in cancelled_uids and o.occurrence_key not in cancelled_keys
    ]
    kept.sort(key=_sort_key)
    return CalendarParse(
        occurrences=tuple(kept),
        problems=tuple(problems),
        uids=frozenset(uids),
        failed_uids=frozenset(failed),
        cancelled_keys=frozenset(cancelled_keys),
    )


def _sort_key(occurrence: Occurrence) -> tuple[datetime, str]:
    if occurrence.start is not None:
        return occurrence.start, occurrence.occurrence_key
    assert occurrence.start_date is not None
    return datetime.combine(occurrence.start_date, datetime.min.time(), UTC), (
        occurrence.occurrence_key
    )


@dataclass(slots=True)
class _CalendarResult:
    occurrences: list[Occurrence]
    problems: list[Problem]
    uids: set[str]
    failed_uids: set[str]
    cancelled_uids: set[str]
    cancelled_keys: set[str]


def _parse_one(calendar: icalendar.Calendar, settings: _Settings) -> _CalendarResult:
    """Expand one VCALENDAR, series by series, so one broken series loses only itself."""
    result = _CalendarResult([], [], set(), set(), set(), set())
    if str(calendar.get("CALSCALE", "GREGORIAN")).strip().upper() != "GREGORIAN":
        result.problems.append(Problem("calendar", "only GREGORIAN calendars are supported"))
        return result
    zone, x_wr_valid, zone_problem = _calendar_zone(calendar, settings.default_tz)
    if zone_problem is not None:
        result.problems.append(zone_problem)
    method = str(calendar.get("METHOD", "")).strip().upper()

    groups: dict[str, list[icalendar.Event]] = {}
    for event in _standardise(calendar, zone, x_wr_valid):
        uid, event = _uid_of(event)
        groups.setdefault(uid, []).append(event)

    if method == "CANCEL":
        _collect_cancels(groups, zone, result)
        return result

    result.uids.update(groups)
    for uid, events in groups.items():
        reason = None
        if time.monotonic() > settings.deadline:
            reason = "not expanded: time limit reached"
        elif settings.left[0] <= 0:
            reason = f"not expanded: the calendar has more than {settings.total} occurrences"
        if reason is not None:
            result.problems.append(Problem(f"UID {uid}", reason))
            result.failed_uids.add(uid)
            continue
        occurrences, problems = _expand_series(uid, events, zone, settings)
        settings.left[0] -= len(occurrences)
        result.occurrences.extend(occurrences)
        result.problems.extend(problems)
        if problems:
            result.failed_uids.add(uid)
    return result


def _collect_cancels(
    groups: dict[str, list[icalendar.Event]], zone: tzinfo, result: _CalendarResult
) -> None:
    """iTIP CANCEL (RFC 5546): a component cancels its UID, or one instance if it has a
    RECURRENCE-ID. Nothing of it is a meeting."""
    for uid, events in groups.items():
        for event in events:
            rid = event.get("RECURRENCE-ID")
            if rid is None:
                result.uids.add(uid)
                result.cancelled_uids.add(uid)
                continue
            try:
                key = _instant_key(_dt(event, "RECURRENCE-ID"), zone)
                result.cancelled_keys.add(f"{uid}|{key}")
            except Exception as exc:
                result.problems.append(
                    Problem(f"UID {uid}", f"bad RECURRENCE-ID: {_describe(exc)}")
                )
                result.failed_uids.add(uid)


def _uid_of(event: icalendar.Event) -> tuple[str, icalendar.Event]:
    """The UID of an event; a UID-less event gets a stable one from its content.

    recurring-ical-events would use ``id()`` of the object, which changes on every run and
    would break "re-running an import adds nothing".
    """
    uid = ""
    with contextlib.suppress(Exception):
        uid = str(event.uid).strip()
    if uid and isinstance(event.get("UID"), str) and str(event.get("UID")) == uid:
        return uid, event
    if not uid:
        content = event.copy()
        content.pop("DTSTAMP", None)
        try:
            serialised = content.to_ical()
        except Exception:  # a value icalendar cannot write back; its repr is stable too
            serialised = repr(sorted((str(k), repr(v)) for k, v in content.items())).encode()
        uid = f"no-uid-{hashlib.sha256(serialised).hexdigest()[:32]}"
    patched = event.copy()  # a missing, repeated or padded UID: give the library a clean one
    for sub in event.subcomponents:
        patched.add_component(sub)
    patched["UID"] = uid
    return uid, patched


# --------------------------------------------------------------------------------------
# time zones
# --------------------------------------------------------------------------------------


def _resolve_zone(name: object) -> tzinfo | None:
    """An IANA or Windows zone name as tzinfo, or None if unknown."""
    text = str(name).strip().strip('"').strip()
    if not text:
        return None
    for candidate in (text, WINDOWS_TO_OLSON.get(text)):
        if candidate:
            with contextlib.suppress(Exception):
                return ZoneInfo(candidate)
    return None


def _calendar_zone(
    calendar: icalendar.Calendar, default: tzinfo
) -> tuple[tzinfo, bool, Problem | None]:
    """The zone for floating times: X-WR-TIMEZONE if it names a zone, else the default.

    The flag says whether X-WR-TIMEZONE was valid, i.e. whether its semantics apply.
    """
    raw = calendar.get("X-WR-TIMEZONE")
    if raw is None:
        return default, False, None
    zone = _resolve_zone(raw)
    if zone is None:
        reason = f"unknown X-WR-TIMEZONE {str(raw)[:60]!r}; floating times read as {default}"
        return default, False, Problem("calendar", reason)
    return zone, True, None


class _KeepParams:
    """x-wr-timezone rebuilds a changed value without its parameters; this keeps them, so
    that ``RECURRENCE-ID;RANGE=THISANDFUTURE`` survives the conversion."""

    def walk_value_vDDDTypes(self, value):  # name dictated by CalendarWalker
        new_dt = self.walk_value(value.dt)  # type: ignore[attr-defined]
        if new_dt is value.dt:
            return value
        new = icalendar.prop.vDDDTypes(new_dt)
        for key, param in value.params.items():
            if key.upper() != "TZID":
                new.params[key] = param
        return new


class _WrTimezone(_KeepParams, x_wr_timezone.UTCChangingWalker):
    """X-WR-TIMEZONE semantics: UTC and floating times become times in that zone."""


class _FloatingOnly(_KeepParams, x_wr_timezone.CalendarWalker):
    """Without X-WR-TIMEZONE, only floating times are placed in the default zone; UTC times
    stay UTC so that their recurrences keep a fixed UTC time across DST."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone

    def walk_value_datetime(self, dt: datetime) -> datetime:
        return dt.replace(tzinfo=self._zone) if dt.tzinfo is None else dt


def _standardise(
    calendar: icalendar.Calendar, zone: tzinfo, x_wr_timezone_valid: bool
) -> list[icalendar.Event]:
    """The calendar's events with a zone on every time, the way R-ICS-5 asks.

    This is ``x_wr_timezone.to_standard`` (which ``recurring_ical_events.of`` would apply)
    with the zone already resolved, so an unknown X-WR-TIMEZONE cannot make it raise, plus
    the default zone for floating times. It works event by event: an event whose values
    cannot be rebuilt (a PERIOD ending before it starts) is passed on as it is, for the
    expansion to judge. The input is not modified.
    """
    walker: x_wr_timezone.CalendarWalker = (
        _WrTimezone(zone) if x_wr_timezone_valid else _FloatingOnly(zone)
    )
    events: list[icalendar.Event] = []
    for component in calendar.subcomponents:
        if isinstance(component, icalendar.Event):
            try:
                events.append(walker.walk_event(component))
            except Exception:
                events.append(component)
    return events


def _as_utc(value: datetime, zone: tzinfo) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _instant_key(value: date | datetime, zone: tzinfo) -> str:
    """The text form of a recurrence id: ``YYYY-MM-DD`` or a UTC ``...Z`` timestamp."""
    if isinstance(value, datetime):
        return _as_utc(value, zone).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


# --------------------------------------------------------------------------------------
# one series: guard, expand, turn into occurrences
# --------------------------------------------------------------------------------------


class _TooDense(Exception):
    """The RRULE needs more work than the budget allows before the window even ends."""


def _expand_series(
    uid: str, events: list[icalendar.Event], zone: tzinfo, settings: _Settings
) -> tuple[list[Occurrence], list[Problem]]:
    """Expand one UID in the window, under the per-series cap and what the file has left."""
    where = f"UID {uid}"
    problems: list[Problem] = []
    cap = min(settings.cap, settings.left[0])
    for event in events:
        complaint = _start_complaint(event) or _rule_complaint(event)
        if complaint is not None:
            return [], [Problem(where, complaint)]
    span = _single_span(events)
    if span is not None:
        start, end = span
        if not _overlaps(start, end, settings):
            return [], []
        try:
            built = _build(uid, events[0], start, end, _instant_key(start, zone), zone, settings)
        except Exception as exc:
            return [], [Problem(where, f"cannot read the event: {_describe(exc)}")]
        return ([built] if built is not None else []), []

    master = _master(events)
    try:
        stop = settings.window_end
        cutoff = _rule_cutoff(master, settings, cap) if master is not None else None
        if cutoff is not None:
            stop = min(stop, cutoff)
        calendar = icalendar.Calendar()
        for event in events:
            calendar.add_component(event)
        # Times are already standardised, so of()'s own X-WR-TIMEZONE step is a no-op here.
        query = recurring_ical_events.of(calendar, skip_bad_series=False)
        components = query.between(settings.window_start, stop)
    except _TooDense as exc:
        return [], [Problem(where, f"series not expanded: {exc}")]
    except Exception as exc:
        return [], [Problem(where, f"cannot expand series: {_describe(exc)}")]

    series_cancelled = master is not None and _is_cancelled(master)
    shifts = _this_and_future_shifts(events, zone)
    occurrences: list[Occurrence] = []
    for component in components:
        try:
            occurrence = _occurrence(uid, component, zone, shifts, series_cancelled, settings)
        except Exception as exc:
            problems.append(Problem(where, f"cannot read an occurrence: {_describe(exc)}"))
            continue
        if occurrence is not None:
            occurrences.append(occurrence)
    if cutoff is not None or len(components) > cap:
        occurrences.sort(key=_sort_key)
        occurrences = occurrences[:cap]
        limit = (
            f"more than {settings.cap} occurrences in the window"
            if cap == settings.cap
            else f"the calendar has more than {settings.total} occurrences"
        )
        problems.append(Problem(where, f"{limit}; kept the first {len(occurrences)}"))
    return occurrences, problems


def _start_complaint(event: icalendar.Event) -> str | None:
    """Say in words what is wrong with an event's DTSTART, before the library trips on it."""
    value = event.get("DTSTART")
    if value is None:
        return "event has no DTSTART"
    if isinstance(value, list):
        return "event has more than one DTSTART"
    try:
        start = _dt(event, "DTSTART")
    except Exception as exc:
        return f"bad DTSTART: {_describe(exc)}"
    if not isinstance(start, date):
        return f"DTSTART is not a date or date-time: {start!r}"
    return None


_SUB_HOURLY = re.compile(r"FREQ=(SECONDLY|MINUTELY)", re.IGNORECASE)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month can have


def _rule_complaint(event: icalendar.Event) -> str | None:
    """Refuse rules that would make the expansion crawl.

    * ``FREQ=SECONDLY``/``MINUTELY``: no calendar program offers them for meetings, and
      recurring-ical-events checks overrides against every instance of the day, which for
      ``SECONDLY`` takes minutes.
    * A BYMONTHDAY that no BYMONTH has (30 February): dateutil then searches day by day up
      to the year 9999 for an instance that never comes (seconds per rule, twice).
    """
    for rule in _as_list(event.get("RRULE")):
        text = _rule_text(rule)
        match = _SUB_HOURLY.search(text)
        if match:
            return f"RRULE FREQ={match.group(1).upper()} is not a meeting; series not expanded"
        if isinstance(rule, dict) and _impossible_month_days(rule):
            return f"RRULE {text[:80]} has no instance; series not expanded"
    return None


def _rule_text(rule: object) -> str:
    """An RRULE as its iCalendar text (``FREQ=WEEKLY;COUNT=5``), also for a broken one."""
    to_ical = getattr(rule, "to_ical", None)
    if to_ical is not None:
        with contextlib.suppress(Exception):
            value = to_ical()
            return value.decode() if isinstance(value, bytes) else str(value)
    return str(rule)


def _impossible_month_days(rule: dict[str, Any]) -> bool:
    try:
        days = [int(d) for d in rule.get("BYMONTHDAY", [])]
        months = [int(m) for m in rule.get("BYMONTH", [])] or list(range(1, 13))
        longest = max(_MONTH_DAYS[m - 1] for m in months)
    except Exception:
        return False  # leave odd values to the library
    return bool(days) and all(abs(d) > longest for d in days)


def _master(events: list[icalendar.Event]) -> icalendar.Event | None:
    """The component without RECURRENCE-ID with the highest SEQUENCE, as the library picks."""
    masters = [e for e in events if e.get("RECURRENCE-ID") is None]
    if not masters:
        return None

    def sequence(event: icalendar.Event) -> int:
        try:
            return int(event.get("SEQUENCE", -1))
        except Exception:
            return -1

    return max(masters, key=sequence)


def _rule_cutoff(master: icalendar.Event, settings: _Settings, cap: int) -> datetime | None:
    """Where to stop expanding so a series yields at most about ``cap`` occurrences.

    dateutil's ``rrule.between`` (used by recurring-ical-events) builds a list of every
    instance in the span, so ``FREQ=MINUTELY`` without end over years would eat gigabytes.
    Here the rules are walked lazily instead, counting instances up to the window's end.
    Returns None when the window holds at most ``cap`` instances, else the start of the
    first instance beyond the cap. Raises :class:`_TooDense` when even counting exceeds the
    budget (a dense rule starting long before the window), and when a rule has no instance
    for :data:`_GAP` after the window: dateutil would then search up to the year 9999 in
    the library's turn (``FREQ=HOURLY;BYSETPOS=2``: minutes that no deadline can stop).
    """
    # An empty "RRULE:" means no rule, as recurring-ical-events reads it.
    rules = [rule for rule in _as_list(master.get("RRULE")) if rule]
    if not rules:
        return None
    start = _dt(master, "DTSTART")
    zone = start.tzinfo if isinstance(start, datetime) else None
    naive_start = _naive(start, zone)
    duration = timedelta(0)
    with contextlib.suppress(Exception):  # only widens the counting span; no DTEND is fine
        duration = max(timedelta(0), _naive(_dt(master, "DTEND"), zone) - naive_start)
    margin = timedelta(days=2)
    longest = min(duration, timedelta(days=3650))
    low = _naive_clamped(settings.window_start, zone, -(margin + longest))
    high = _naive_clamped(settings.window_end, zone, margin)

    stop = _Stop(_add_years(max(high, naive_start), _GAP_YEARS), settings.deadline)
    iterators = [_rule_instances(rule, naive_start, zone, high, stop) for rule in rules]
    budget = settings.cap * 100
    scanned = 0
    inside = 0
    try:
        for instant in heapq.merge(*iterators):
            scanned += 1
            if scanned > budget:
                raise _TooDense(
                    f"its RRULE has more than {budget} instances before the window ends"
                )
            if scanned % 1000 == 0 and time.monotonic() > settings.deadline:
                raise _OutOfTime
            if instant < low:
                continue
            inside += 1
            if inside > cap:
                return instant.replace(tzinfo=zone or UTC).astimezone(UTC)
    except _PastHorizon:
        raise _TooDense(
            f"its RRULE has no instance between the end of the window and {stop.horizon.year}"
        ) from None
    except _OutOfTime:
        raise _TooDense("time limit reached while counting its RRULE") from None
    return None


def _naive(value: date | datetime, zone: tzinfo | None) -> datetime:
    """Wall-clock time in the series' zone, the scale on which dateutil repeats."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    if value.tzinfo is not None and zone is not None:
        value = value.astimezone(zone)
    return value.replace(tzinfo=None)


def _naive_clamped(value: datetime, zone: tzinfo | None, shift: timedelta) -> datetime:
    with contextlib.suppress(OverflowError):
        value = value + shift
    return _naive(value.astimezone(zone) if zone is not None else value.astimezone(UTC), None)


# --------------------------------------------------------------------------------------
# bounding dateutil's own search
# --------------------------------------------------------------------------------------

_GAP_YEARS = 30  # a rule with no instance for this long after the window is refused
_GAP = f"{_GAP_YEARS} years"


class _Bounded(Exception):
    """Raised from inside dateutil's iteration of a rule that :func:`_guard` marked."""


class _PastHorizon(_Bounded):
    """The search went past the date given: the rule has no instance up to there."""


class _OutOfTime(_Bounded):
    """The deadline passed while dateutil was still searching."""


@dataclass(frozen=True, slots=True)
class _Stop:
    horizon: datetime
    deadline: float


_STOP = "_netaudit_stop"


def _guard(rule: Any, stop: _Stop) -> Any:
    """Make dateutil give up on ``rule`` past ``stop.horizon`` or ``stop.deadline``.

    dateutil ends a search only at an instance past UNTIL, after COUNT, or in the year
    9999: a rule that has no next instance (``FREQ=HOURLY;BYSETPOS=2``, an ended COUNT whose
    pattern never matches again) is walked period by period to the year 9999, which no
    check between calls can stop. Its loop calls ``_iterinfo.rebuild`` at least once a
    month of the search; :class:`_GuardedIterinfo` checks there. Only rules marked here
    (our own, never cached) are checked: icalendar's time zones and recurring-ical-events
    keep cached rules that an exception would leave locked.
    """
    for one in getattr(rule, "_rrule", None) or [rule]:  # an rruleset's rules, or the rule
        setattr(one, _STOP, stop)
    return rule


_ITERINFO: Any = getattr(dateutil.rrule, "_iterinfo", None)


if _ITERINFO is not None and not getattr(_ITERINFO, "netaudit_guard", False):

    class _GuardedIterinfo(_ITERINFO):  # type: ignore[misc,valid-type]
        """dateutil's per-period helper, stopping the walk of a rule :func:`_guard` marked."""

        netaudit_guard = True

        def rebuild(self, year: int, month: int) -> None:
            stop = getattr(self.rrule, _STOP, None)
            if stop is not None:
                if (year, month) > (stop.horizon.year, stop.horizon.month):
                    raise _PastHorizon
                if time.monotonic() > stop.deadline:
                    raise _OutOfTime
            super().rebuild(year, month)

    dateutil.rrule._iterinfo = _GuardedIterinfo  # type: ignore[attr-defined]


def _add_years(value: datetime, years: int) -> datetime:
    """The month ``years`` after ``value`` (all :class:`_Stop` looks at), at most 9999-12."""
    year = value.year + years
    return datetime(year, value.month, 1) if year <= 9999 else datetime(9999, 12, 1)


_UNTIL = re.compile(r"(^|;)UNTIL=[^;]*", re.IGNORECASE)
_NEGATIVE_COUNT = re.compile(r"COUNT=-\d+;?", re.IGNORECASE)


def _rule_instances(
    rule: object, naive_start: datetime, zone: tzinfo | None, high: datetime, stop: _Stop
) -> Iterator[datetime]:
    """Lazily yield the naive instants of one RRULE up to ``high`` (and its UNTIL); dateutil
    stops at ``stop`` (see :func:`_guard`)."""
    text = _NEGATIVE_COUNT.sub(
        "", _rule_text(rule)
    )  # as recurring-ical-events does (its issue 128)
    limit = high
    untils = rule.get("UNTIL") if isinstance(rule, dict) else None
    if untils:
        until = untils[0] if isinstance(untils, list) else untils
        if isinstance(until, datetime):
            until_naive = _naive(until, zone) if zone is not None else until.replace(tzinfo=None)
        else:
            until_naive = datetime(until.year, until.month, until.day) + timedelta(days=1)
        limit = min(limit, until_naive)
    text = _UNTIL.sub("", text).lstrip(";")
    for instant in _guard(rrulestr(text, dtstart=naive_start, cache=False), stop):
        if instant > limit:
            return
        yield instant


def _this_and_future_shifts(events: list[icalendar.Event], zone: tzinfo) -> dict[str, timedelta]:
    """RANGE=THISANDFUTURE overrides move later instances too; the library copies the
    override's RECURRENCE-ID onto them, so keep each override's shift to undo it."""
    shifts: dict[str, timedelta] = {}
    for event in events:
        rid: Any = event.get("RECURRENCE-ID")
        if rid is None or str(rid.params.get("RANGE", "")).upper() != "THISANDFUTURE":
            continue
        with contextlib.suppress(Exception):
            start, original = _dt(event, "DTSTART"), rid.dt
            key = _instant_key(original, zone)
            if isinstance(start, datetime) and isinstance(original, datetime):
                shifts[key] = _as_utc(start, zone) - _as_utc(original, zone)
            elif not isinstance(start, datetime) and not isinstance(original, datetime):
                shifts[key] = start - original
    return shifts


def _dt(component: icalendar.Component, name: str) -> Any:
    """The ``.dt`` of a date-time property, or None.

    Typed ``Any`` on purpose: icalendar types ``get()`` as the union of every property type,
    most without ``.dt``; callers check the value with isinstance.
    """
    prop: Any = component.get(name)
    return None if prop is None else prop.dt


def _is_cancelled(component: icalendar.Event) -> bool:
    status = ""
    with contextlib.suppress(Exception):
        status = str(component.status or "")
    if not status:
        status = str(component.get("STATUS", ""))
    return status.strip().upper() == STATUS.CANCELLED


def _occurrence(
    uid: str,
    component: icalendar.Event,
    zone: tzinfo,
    shifts: dict[str, timedelta],
    series_cancelled: bool,
    settings: _Settings,
) -> Occurrence | None:
    """One expanded component as an Occurrence, or None if it is no meeting of mine."""
    if series_cancelled:
        return None
    start_value = _dt(component, "DTSTART")
    end_value = _dt(component, "DTEND") if "DTEND" in component else start_value
    recurrence_id = _recurrence_id(component, start_value, zone, shifts)
    return _build(uid, component, start_value, end_value, recurrence_id, zone, settings)


def _build(
    uid: str,
    component: icalendar.Event,
    start_value: date | datetime,
    end_value: date | datetime,
    recurrence_id: str,
    zone: tzinfo,
    settings: _Settings,
) -> Occurrence | None:
    """The Occurrence of a component at the given times, or None if it is no meeting of mine."""
    if _is_cancelled(component):
        return None
    people = _people(component, settings.me)
    if people is None:
        return None
    organizer_is_me, counterparts = people
    start: datetime | None = None
    end: datetime | None = None
    start_date: date | None = None
    end_date: date | None = None
    if isinstance(start_value, datetime):
        start = _as_utc(start_value, zone)
        # A DATE end on a DATE-TIME start is malformed: keep the event as a point in time.
        end = max(_as_utc(end_value, zone), start) if isinstance(end_value, datetime) else start
    else:
        start_date = start_value
        end_date = end_value.date() if isinstance(end_value, datetime) else end_value
        if end_date is None or end_date <= start_value:
            end_date = start_value + timedelta(days=1)
    return Occurrence(
        occurrence_key=f"{uid}|{recurrence_id}",
        uid=uid,
        recurrence_id=recurrence_id,
        start=start,
        end=end,
        start_date=start_date,
        end_date=end_date,
        all_day=start is None,
        mode=_mode(component),
        organizer_is_me=organizer_is_me,
        counterparts=counterparts,
        summary=str(component.get("SUMMARY", "")).strip() or None,
    )


_RECURRENCE_PROPERTIES = ("RRULE", "RDATE", "EXDATE", "RECURRENCE-ID")


def _single_span(events: list[icalendar.Event]) -> tuple[date, date] | None:
    """Start and end of a UID that is one plain event, or None to let the library decide.

    Most events in a real calendar happen once; working them out here skips the library's
    copying and makes a large export about twice as fast. Only the unambiguous cases are
    taken: one component, no recurrence, DTSTART and DTEND (or DURATION, or neither) of the
    same kind, all times with a zone. Like recurring-ical-events, a date without an end lasts
    a day, a date-time without an end is a moment, and an end before the start is swapped.
    """
    if len(events) != 1 or any(name in events[0] for name in _RECURRENCE_PROPERTIES):
        return None
    event = events[0]
    try:
        start = _dt(event, "DTSTART")
        if "DTEND" in event:
            end = _dt(event, "DTEND")
        elif "DURATION" in event:
            duration = _dt(event, "DURATION")
            if not isinstance(duration, timedelta) or (
                not isinstance(start, datetime) and duration.seconds
            ):
                return None
            end = start + duration
        else:
            end = start if isinstance(start, datetime) else start + timedelta(days=1)
    except Exception:
        return None  # the library reports it in its own words
    if isinstance(start, datetime) and isinstance(end, datetime):
        if start.tzinfo is None or end.tzinfo is None:
            return None
    elif isinstance(start, datetime) or isinstance(end, datetime):
        return None  # a DATE mixed with a DATE-TIME
    elif not isinstance(start, date) or not isinstance(end, date):
        return None
    return (start, end) if start <= end else (end, start)


def _overlaps(start: date, end: date, settings: _Settings) -> bool:
    """recurring-ical-events' rule: overlap, and a moment counts if it lies in the window."""
    if isinstance(start, datetime) and isinstance(end, datetime):
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    else:
        start_utc = datetime(start.year, start.month, start.day, tzinfo=UTC)
        end_utc = datetime(end.year, end.month, end.day, tzinfo=UTC)
    if start_utc == end_utc:
        return settings.window_start <= start_utc < settings.window_end
    return start_utc < settings.window_end and settings.window_start < end_utc


def _recurrence_id(
    component: icalendar.Event,
    start: date | datetime,
    zone: tzinfo,
    shifts: dict[str, timedelta],
) -> str:
    """The stable identity of an occurrence: its RECURRENCE-ID, else its original start."""
    rid = _dt(component, "RECURRENCE-ID")
    if rid is None:
        return _instant_key(start, zone)
    key = _instant_key(rid, zone)
    if key in shifts:  # a THISANDFUTURE override or an instance it moved
        shift = shifts[key]
        original = _as_utc(start, zone) - shift if isinstance(start, datetime) else start - shift
        return _instant_key(original, zone)
    return key


# --------------------------------------------------------------------------------------
# who met
# --------------------------------------------------------------------------------------

_NOT_THERE = frozenset({PARTSTAT.DECLINED.value, PARTSTAT.DELEGATED.value})
_NOT_PEOPLE = frozenset({CUTYPE.ROOM.value, CUTYPE.RESOURCE.value, CUTYPE.GROUP.value})
_PARTSTATS = frozenset(p.value for p in PARTSTAT)
_EMAILISH = re.compile(r"^[^\s@<>:,;]+@[^\s@<>:,;]+$")


def _normalise_address(value: object) -> str | None:
    """A plain lower-case e-mail address from a mailto: URI (any case) or a bare address."""
    # No whitespace can be part of an address; it gets in when a writer folds lines with
    # more than one space of indent (as RFC 5545's own examples do).
    text = "".join(str(value).split())
    if text.lower().startswith("mailto:"):
        text = unquote(text[7:])
    text = text.strip("<>").lower()
    return text if _EMAILISH.match(text) else None


def _is_pseudo_address(address: str) -> bool:
    """Google writes calendars, rooms and a placeholder as addresses; none is a person."""
    domain = address.rpartition("@")[2]
    return domain == "calendar.google.com" or domain.endswith(".calendar.google.com")


def _param(prop: object, typed: str, name: str, default: str) -> str:
    """A parameter through icalendar's typed accessor, falling back to the raw value.

    The typed accessor raises when a parameter is given twice (a list); then the first
    value is used.
    """
    try:
        value = getattr(prop, typed)
    except Exception:
        params = getattr(prop, "params", {}) or {}
        value = params.get(name, default)
        if isinstance(value, list | tuple):
            value = value[0] if value else default
    return str(value if value is not None else default).strip().upper() or str(default)


def _entry_address(prop: object) -> str | None:
    address = _normalise_address(prop)
    if address is None:  # e.g. Apple's "urn:uuid:..." with the address in EMAIL=
        params = getattr(prop, "params", {}) or {}
        email = params.get("EMAIL")
        if email:
            address = _normalise_address(email[0] if isinstance(email, list) else email)
    return address


def _entry_name(prop: object) -> str | None:
    try:
        name = getattr(prop, "name", None)
    except Exception:
        name = None
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    text = str(name).strip().strip('"').strip() if name else ""
    return text or None


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _people(
    component: icalendar.Event, me: frozenset[str]
) -> tuple[bool, tuple[Counterpart, ...]] | None:
    """Decide whether I was at this occurrence, and with whom.

    Returns None when it is no meeting of mine (DESIGN.md "Meeting"), else
    ``(organizer_is_me, counterparts)``.
    """
    try:
        attendees = _as_list(component.attendees)
    except Exception:
        attendees = _as_list(component.get("ATTENDEE"))
    try:
        organizer = component.organizer
    except Exception:
        organizer = component.get("ORGANIZER")
    if isinstance(organizer, list):  # ORGANIZER given twice: the first one counts
        organizer = organizer[0] if organizer else None

    organizer_address = _entry_address(organizer) if organizer is not None else None
    organizer_is_me = organizer_address is not None and organizer_address in me

    my_statuses: list[str] = []
    entries: dict[str, Counterpart] = {}  # address -> the person, in file order
    excluded: dict[str, str] = {}  # address -> PARTSTAT, for entries that do not count
    for prop in attendees:
        address = _entry_address(prop)
        if address is None:
            continue
        partstat = _param(prop, "PARTSTAT", "PARTSTAT", PARTSTAT.NEEDS_ACTION.value)
        if partstat not in _PARTSTATS:
            partstat = PARTSTAT.NEEDS_ACTION.value  # RFC 5545: unknown means NEEDS-ACTION
        if address in me:
            my_statuses.append(partstat)
            continue
        cutype = _param(prop, "CUTYPE", "CUTYPE", CUTYPE.INDIVIDUAL.value)
        role = _param(prop, "ROLE", "ROLE", ROLE.REQ_PARTICIPANT.value)
        if (
            partstat in _NOT_THERE
            or cutype in _NOT_PEOPLE
            or role == ROLE.NON_PARTICIPANT.value
            or _is_pseudo_address(address)
        ):
            excluded.setdefault(address, partstat)
        elif address not in entries:  # listed twice: the first entry that counts wins
            entries[address] = Counterpart(address, _entry_name(prop), "attendee", partstat)

    if me:
        explicitly_absent = bool(my_statuses) and all(s in _NOT_THERE for s in my_statuses)
        present = organizer_is_me or any(s not in _NOT_THERE for s in my_statuses)
        unscheduled = organizer is None and not attendees  # a private entry in my calendar
        if explicitly_absent or not (present or unscheduled):
            return None

    counterparts: list[Counterpart] = []
    if organizer_address is not None and not organizer_is_me:
        listed = entries.pop(organizer_address, None)
        organizer_counts = (
            # An organizer's own attendee entry can say DECLINED: then they were not there.
            (listed is not None or organizer_address not in excluded)
            and _param(organizer, "CUTYPE", "CUTYPE", CUTYPE.INDIVIDUAL.value) not in _NOT_PEOPLE
            and not _is_pseudo_address(organizer_address)
        )
        if organizer_counts:
            name = _entry_name(organizer) or (listed.name if listed else None)
            partstat = listed.partstat if listed else PARTSTAT.ACCEPTED.value
            counterparts.append(Counterpart(organizer_address, name, "organizer", partstat))
    counterparts.extend(entries.values())
    return organizer_is_me, tuple(counterparts)


# --------------------------------------------------------------------------------------
# online or in person
# --------------------------------------------------------------------------------------

_CONFERENCE_HOSTS = (
    "meet.google.com",
    "hangouts.google.com",
    "zoom.us",
    "zoom.com",
    "zoomgov.com",
    "teams.microsoft.com",
    "teams.live.com",
    "webex.com",
    "meet.jit.si",
    "8x8.vc",
    "gotomeeting.com",
    "gotomeet.me",
    "meet.goto.com",
    "app.goto.com",
    "bluejeans.com",
    "whereby.com",
    "skype.com",
    "lync.com",
    "chime.aws",
    "ringcentral.com",
    "facetime.apple.com",
    "join.me",
    "around.co",
)
# A host after a URL scheme or "www.", or a bare host name such as "zoom.us/j/1" (but not the
# domain of an e-mail address, which names a person, not a meeting room).
_HOST = re.compile(
    r"(?:(?:https?|sips?|webcal)://|\bwww\.)([a-z0-9.-]+\.[a-z]{2,})"
    r"|(?<![@\w.-])((?:[a-z0-9-]+\.)+"
    r"(?:com|us|me|si|vc|aws|co|net|org|io|cc|tv|fm|de|uk|eu|app|chat|live|info))\b",
    re.IGNORECASE,
)
_URL = re.compile(r"(?:(?:https?|sips?|webcal)://|\bwww\.|\btel:)\S+", re.IGNORECASE)
_BRANDS = (
    r"microsoft\s+teams|teams|zoom|google\s+meet|hangouts?|skype(?:\s+for\s+business)?|webex"
    r"|jitsi(?:\s+meet)?|goto\s*(?:meeting|webinar)|bluejeans|whereby|facetime|mumble|discord"
    r"|slack(?:\s+huddle)?|whatsapp|signal|telegram"
)
# LOCATION words that say "not a place": remote ones (they also make a meeting online),
# neutral ones, and placeholders.
_REMOTE_WORDS = re.compile(
    rf"\b(?:{_BRANDS}|online|virtual|remote|video(?:\s*call)?|phone|call|webinar|website"
    r"|internet|live\s*stream|stream(?:ing)?|channel|dial[\s-]*in)\b",
    re.IGNORECASE,
)
_NOT_A_PLACE = re.compile(
    r"\b(?:conference|meeting|web|server|port|tbd|tba|n/a|none|see|below|above|description"
    r"|details|info(?:rmation)?|link)\b",
    re.IGNORECASE,
)
_CONFERENCE_PROPERTIES = ("CONFERENCE", "ONLINEMEETING", "TEAMSMEETING", "SKYPETEAMS")


def _is_conference_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if "jitsi" in host:  # self-hosted Jitsi instances
        return True
    return any(host == h or host.endswith("." + h) for h in _CONFERENCE_HOSTS)


def _has_conference_link(text: str) -> bool:
    for match in _HOST.finditer(text):
        if _is_conference_host(match.group(1) or match.group(2) or ""):
            return True
    return False


def _text(component: icalendar.Event, name: str) -> str:
    return " ".join(str(v) for v in _as_list(component.get(name)))


def _mode(component: icalendar.Event) -> str | None:
    """'in_person' for a physical LOCATION, else 'online' for any conferencing sign.

    A place wins over a link: Google Workspace and Teams attach a conferencing link to
    in-person meetings by default, so a link alone does not prove nobody was in the room.
    """
    location = _text(component, "LOCATION").strip()
    remote_location = False
    if location:
        rest = _HOST.sub(" ", _URL.sub(" ", location))
        remote_location = bool(_REMOTE_WORDS.search(rest)) or _has_conference_link(location)
        rest = _NOT_A_PLACE.sub(" ", _REMOTE_WORDS.sub(" ", rest))
        if re.search(r"[^\W\d_]", rest):  # letters left over: a place, not a link
            return "in_person"
    for name in component:
        upper = name.upper()
        if any(part in upper for part in _CONFERENCE_PROPERTIES) and _text(component, name).strip():
            return "online"  # CONFERENCE (RFC 7986), X-GOOGLE-CONFERENCE, X-MICROSOFT-...
    texts = (location, *(_text(component, n) for n in ("DESCRIPTION", "URL", "X-ALT-DESC")))
    if remote_location or any(_has_conference_link(text) for text in texts if text):
        return "online"
    return None
