"""Tests for ingest.ics_parse: real exports from shared/data/ics and small inline calendars.

Expected values are worked out from the .ics text (noted next to each assertion), not copied
from the parser's output.
"""

from __future__ import annotations

import time
import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.ics_parse import CalendarParse, Counterpart, parse_calendar

# shared/ sits beside the repository, in a work tree and in CI alike.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ics"
ALL_FILES = sorted(DATA.rglob("*.ics"))

WIDE = {
    "window_start": datetime(1990, 1, 1, tzinfo=UTC),
    "window_end": datetime(2030, 1, 1, tzinfo=UTC),
}
NOBODY: frozenset[str] = frozenset()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def parse_file(relative: str, *, me: frozenset[str] = NOBODY, **window: datetime) -> CalendarParse:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # icalendar warns about guessed vendor TZIDs
        return parse_calendar((DATA / relative).read_bytes(), me=me, **(window or WIDE))


def by_uid(result: CalendarParse, uid: str) -> list:
    return [o for o in result.occurrences if o.uid == uid]


def crlf(text: str) -> bytes:
    return "\r\n".join(line.strip() for line in text.strip().splitlines()).encode() + b"\r\n"


# ------------------------------------------------------------------------------------------
# every real file
# ------------------------------------------------------------------------------------------


def test_the_corpus_is_there() -> None:
    assert len(ALL_FILES) >= 400


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_every_file_parses_without_raising(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = parse_calendar(path.read_bytes(), me=NOBODY, **WIDE)
    assert isinstance(result, CalendarParse)
    for problem in result.problems:
        assert problem.location and problem.reason and "\n" not in problem.reason
        # the limits against hostile input never refuse a real calendar
        assert not problem.reason.startswith(("not read:", "VTIMEZONE")), problem
        assert "no instance" not in problem.reason and "the calendar has" not in problem.reason
    keys = [o.occurrence_key for o in result.occurrences]
    assert len(keys) == len(set(keys))
    for o in result.occurrences:
        assert o.uid in result.uids
        if o.all_day:
            assert o.start is None and o.start_date is not None and o.end_date > o.start_date
        else:
            assert o.start.tzinfo is UTC and o.end >= o.start


# ------------------------------------------------------------------------------------------
# time zones
# ------------------------------------------------------------------------------------------


def test_google_export_with_x_wr_timezone() -> None:
    # Google Calendar 70.9054, X-WR-TIMEZONE:America/New_York; the SUMMARY says "noon to 1PM on
    # 12/22/2021" and DTSTART:20211222T170000Z (noon EST = 17:00 UTC).
    result = parse_file(
        "recurring-ical-events/test-calendars/x_wr_timezone_simple_events_issue_59.ics"
    )
    [noon] = by_uid(result, "3bc4jff97631or97ntnk75n4se@google.com")
    assert (noon.start, noon.end) == (utc(2021, 12, 22, 17), utc(2021, 12, 22, 18))
    # "9PM to 10PM on 12/22/2021" New York = 02:00 UTC the next day.
    [evening] = by_uid(result, "14n7h56i35m32ukcq76s46d45p@google.com")
    assert evening.start == utc(2021, 12, 23, 2)


@pytest.mark.parametrize(
    ("header", "after_dst"),
    [
        # Google writes a recurring event's DTSTART in UTC and means the local time of
        # X-WR-TIMEZONE: 14:00 London stays 14:00 after the clocks go forward (13:00 UTC).
        ("X-WR-TIMEZONE:Europe/London", utc(2024, 4, 5, 13)),
        # Without X-WR-TIMEZONE a UTC rule repeats at the same UTC time.
        ("X-WR-CALNAME:plain", utc(2024, 4, 5, 14)),
    ],
)
def test_x_wr_timezone_keeps_local_time_across_dst(header: str, after_dst: datetime) -> None:
    ics = crlf(f"""
        BEGIN:VCALENDAR
        VERSION:2.0
        PRODID:-//Google Inc//Google Calendar 70.9054//EN
        {header}
        BEGIN:VEVENT
        UID:weekly-utc@google.com
        DTSTART:20240322T140000Z
        DTEND:20240322T150000Z
        RRULE:FREQ=WEEKLY;COUNT=3
        END:VEVENT
        END:VCALENDAR
    """)
    result = parse_calendar(ics, me=NOBODY, **WIDE)
    assert [o.start for o in result.occurrences] == [
        utc(2024, 3, 22, 14),
        utc(2024, 3, 29, 14),  # still GMT: BST starts on 31 March
        after_dst,
    ]


def test_floating_time_uses_x_wr_timezone() -> None:
    # DTSTART:20210916T210000 (floating) with X-WR-TIMEZONE:Europe/Brussels (CEST, UTC+2).
    result = parse_file(
        "recurring-ical-events/test-calendars/issue_86_x_wr_timezone_without_time_zone_in_dt.ics"
    )
    [o] = by_uid(result, "match_1025179")
    assert (o.start, o.end) == (utc(2021, 9, 16, 19), utc(2021, 9, 16, 20, 45))


def test_floating_time_without_x_wr_timezone_uses_default_tz() -> None:
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:floating-1
        DTSTART:20240610T090000
        DTEND:20240610T100000
        END:VEVENT
        END:VCALENDAR
    """)
    window = {"window_start": utc(2024, 1, 1), "window_end": utc(2025, 1, 1)}
    [as_utc] = parse_calendar(ics, me=NOBODY, **window).occurrences
    assert as_utc.start == utc(2024, 6, 10, 9)
    [in_tokyo] = parse_calendar(ics, me=NOBODY, default_tz="Asia/Tokyo", **window).occurrences
    assert in_tokyo.start == utc(2024, 6, 10, 0)


def test_outlook_windows_time_zone_names() -> None:
    # Microsoft Exchange Server 2010 export with VTIMEZONEs named by Windows.
    result = parse_file("node-ical/fixtures/ms_timezones.ics")
    # DTSTART;TZID=W. Europe Standard Time:20200910T090000 -> CEST (UTC+2) -> 07:00 UTC.
    berlin = by_uid(
        result,
        "040000008200E00074C5B7101A82E0080000000070DE40F38786D601000000000000000"
        "010000000D2A9BA8A3668CA4ABB2CC6838268179F",
    )
    assert [(o.start, o.end) for o in berlin] == [(utc(2020, 9, 10, 7), utc(2020, 9, 10, 7, 30))]
    # DTSTART;TZID=Pacific Standard Time:20200915T083000 -> PDT (UTC-7) -> 15:30 UTC.
    pacific = by_uid(
        result,
        "040000008200E00074C5B7101A82E008000000007070639B9D82D601000000000000000"
        "010000000690B7C3173632247A60664DDD8E0160E",
    )
    assert [o.start for o in pacific] == [utc(2020, 9, 15, 15, 30)]
    # The event whose TZID quotes swallowed the value (DTSTART;TZID="...:20200609T090000") has
    # no start: a Problem for its UID, while the rest of the file is kept.
    broken_uid = (
        "040000008200E00074C5B7101A82E008000000008001F1896B63D301000000000000000"
        "0100000005D0552D848712746896D6C8E2E066560"
    )
    assert [p.location for p in result.problems] == [f"UID {broken_uid}"]
    assert broken_uid in result.failed_uids


def test_outlook_weekly_series_with_exdates_and_bluejeans_location() -> None:
    # RRULE:FREQ=WEEKLY;BYDAY=TU,TH,FR,SU from 2020-07-07 12:00 Pacific (PDT = 19:00 UTC),
    # EXDATE 2020-07-21, 07-23, ... ; LOCATION:https://bluejeans.com/7999979999.
    result = parse_file("node-ical/fixtures/ms_timezones.ics")
    series = by_uid(
        result,
        "040000008200E00074C5B7101A82E00800000000C8CF296B9654D601000000000000000"
        "01000000031C6A267A9E4A2489CEB57D709E7A37F",
    )
    starts = [o.start for o in series]
    assert starts[:4] == [
        utc(2020, 7, 7, 19),
        utc(2020, 7, 9, 19),
        utc(2020, 7, 10, 19),
        utc(2020, 7, 12, 19),
    ]
    assert utc(2020, 7, 21, 19) not in starts and utc(2020, 7, 23, 19) not in starts
    assert utc(2020, 7, 24, 19) in starts
    # After the return to standard time (1 Nov 2020) 12:00 PST is 20:00 UTC.
    assert utc(2020, 11, 3, 20) in starts
    assert {o.mode for o in series} == {"online"}


def test_all_day_event_west_of_utc_keeps_its_date() -> None:
    # X-WR-TIMEZONE:America/Los_Angeles; DTSTART;VALUE=DATE:20211215, DTEND;VALUE=DATE:20211216.
    result = parse_file("recurring-ical-events/test-calendars/issue_61_time_zone_error.ics")
    [o] = by_uid(result, "20211215T205931Z-1325586105@confluence.sd.apple.com")
    assert o.all_day
    assert (o.start_date, o.end_date) == (date(2021, 12, 15), date(2021, 12, 16))
    assert (o.start, o.end) == (None, None)
    assert o.recurrence_id == "2021-12-15"


def test_all_day_event_with_us_pacific_x_wr_timezone() -> None:
    # X-WR-TIMEZONE;VALUE=TEXT:US/Pacific; "Date Only (Explicit)" DTSTART;VALUE=DATE:20021028.
    result = parse_file("node-ical/fixtures/mixed-timezone-handling.ics")
    [o] = by_uid(result, "4C9439B1-FF65-11D6-9973-003065F99D04")
    assert (o.start_date, o.end_date, o.all_day) == (date(2002, 10, 28), date(2002, 10, 29), True)


# ------------------------------------------------------------------------------------------
# recurrence: moved, excluded, cancelled, THISANDFUTURE
# ------------------------------------------------------------------------------------------


def test_moved_occurrence() -> None:
    # Google, Europe/Berlin. RRULE:FREQ=MONTHLY;BYDAY=-1FR from 2021-11-26 21:30 (CET = 20:30
    # UTC). The override RECURRENCE-ID 2021-12-31 21:30 moves that Friday to 2021-12-17 21:30.
    result = parse_file(
        "recurring-ical-events/test-calendars/issue_62_moved_event.ics",
        window_start=utc(2021, 11, 1),
        window_end=utc(2022, 2, 1),
    )
    series = by_uid(result, "38m812jicsrer5gorh3mlp7qhc@google.com")
    assert [o.start for o in series] == [
        utc(2021, 11, 26, 20, 30),
        utc(2021, 12, 17, 20, 30),  # the moved one
        utc(2022, 1, 28, 20, 30),
    ]
    moved = series[1]
    # Its identity is the slot it came from, so a later move keeps the same key.
    assert moved.recurrence_id == "2021-12-31T20:30:00Z"
    assert moved.occurrence_key == "38m812jicsrer5gorh3mlp7qhc@google.com|2021-12-31T20:30:00Z"
    assert utc(2021, 12, 31, 20, 30) not in [o.start for o in series]


def test_exdate_removes_the_occurrence() -> None:
    # Thunderbird. RRULE:FREQ=WEEKLY;COUNT=8 from 2019-03-04 00:30 Europe/Berlin (23:30 UTC the
    # day before); EXDATE:20190310T233000Z removes the second of the eight.
    result = parse_file("recurring-ical-events/test-calendars/each_week_but_one_deleted.ics")
    starts = [o.start for o in by_uid(result, "SX2CURHKFTKKFFU3VUD7K")]
    assert len(starts) == 7
    assert utc(2019, 3, 10, 23, 30) not in starts
    assert starts[:2] == [utc(2019, 3, 3, 23, 30), utc(2019, 3, 17, 23, 30)]
    # Summer time from 31 March: 00:30 CEST on 1 April is 22:30 UTC on 31 March.
    assert starts[-1] == utc(2019, 4, 21, 22, 30)


def test_cancelled_occurrence_is_absent() -> None:
    # RRULE:FREQ=DAILY;COUNT=3 from 2020-01-28 22:00 Europe/Berlin (21:00 UTC); the override
    # RECURRENCE-ID 2020-01-29 22:00 has STATUS:CANCELLED.
    result = parse_file("recurring-ical-events/test-calendars/issue_18_cancel_status.ics")
    keys = [o.occurrence_key for o in result.occurrences]
    assert keys == [
        "b65c2b5b-b785-4edc-9560-e0379036d1f2|2020-01-28T21:00:00Z",
        "b65c2b5b-b785-4edc-9560-e0379036d1f2|2020-01-30T21:00:00Z",
    ]


def test_cancelled_single_event_is_absent() -> None:
    # Apple: the event with SUMMARY:Cancelled has STATUS:CANCELLED; "Tentative" and "Confirmed"
    # stay.
    result = parse_file("node-ical/fixtures/tentative-apple-calendar.ics")
    assert "8CAB46C5-669F-4249-B1AD-52BFA72F4E0A" in result.uids
    assert by_uid(result, "8CAB46C5-669F-4249-B1AD-52BFA72F4E0A") == []
    assert by_uid(result, "F00F3710-BF4D-46D3-9A2C-1037AB24C6AC") != []


def test_this_and_future_keys_name_the_original_slots() -> None:
    # RRULE:FREQ=DAILY;INTERVAL=2 at 12:00 UTC from 2024-09-01. RECURRENCE-ID;RANGE=THISANDFUTURE
    # 20240913T120000Z moves it and later ones 3 h earlier; ...20240921T120000Z moves again.
    result = parse_file(
        "recurring-ical-events/test-calendars/issue_75_range_parameter.ics",
        window_start=utc(2024, 9, 1),
        window_end=utc(2024, 10, 1),
    )
    by_key = {o.recurrence_id: o for o in result.occurrences}
    assert len(by_key) == len(result.occurrences)
    assert by_key["2024-09-17T12:00:00Z"].start == utc(2024, 9, 17, 9)
    assert by_key["2024-09-23T12:00:00Z"].start == utc(2024, 9, 24, 14, 22)


# ------------------------------------------------------------------------------------------
# who met
# ------------------------------------------------------------------------------------------


def test_partstat_role_and_delegation_from_khal_fixture() -> None:
    # Six ATTENDEEs: Henry Cabot TENTATIVE, iamboss NON-PARTICIPANT + DELEGATED, Jane Doe
    # ACCEPTED, jqpublic ACCEPTED, another DECLINED, tent TENTATIVE. No ORGANIZER.
    [o] = parse_file("khal/event_dt_partstat.ics").occurrences
    assert o.counterparts == (
        Counterpart("hcabot@example.com", "Henry Cabot", "attendee", "TENTATIVE"),
        Counterpart("jdoe@example.com", "Jane Doe", "attendee", "ACCEPTED"),
        Counterpart("jqpublic@example.com", None, "attendee", "ACCEPTED"),
        Counterpart("tent@example.com", None, "attendee", "TENTATIVE"),
    )
    assert o.start == utc(2014, 4, 9, 7, 30)  # 09:30 Europe/Berlin, CEST


def test_me_must_be_there() -> None:
    # The same event seen by jdoe (accepted), by another (declined) and by a stranger.
    assert parse_file(
        "khal/event_dt_partstat.ics", me=frozenset({"JDoe@Example.com"}), **WIDE
    ).occurrences
    assert not parse_file(
        "khal/event_dt_partstat.ics", me=frozenset({"another@example.com"}), **WIDE
    ).occurrences
    assert not parse_file(
        "khal/event_dt_partstat.ics", me=frozenset({"x@example.org"}), **WIDE
    ).occurrences
    [o] = parse_file(
        "khal/event_dt_partstat.ics", me=frozenset({"mailto:jdoe@example.com"}), **WIDE
    ).occurrences
    assert "jdoe@example.com" not in [c.address for c in o.counterparts]
    assert not o.organizer_is_me


def test_apple_organizer_listed_as_attendee() -> None:
    # Apple: ORGANIZER:mailto:confirmed@example.com is also the only ATTENDEE, with the invalid
    # PARTSTAT=CONFIRMED (RFC 5545: read as NEEDS-ACTION). 09:00-10:00 America/Vancouver (PDT).
    uid = "F00F3710-BF4D-46D3-9A2C-1037AB24C6AC"
    [o] = by_uid(parse_file("node-ical/fixtures/tentative-apple-calendar.ics"), uid)
    assert o.counterparts == (
        Counterpart("confirmed@example.com", "confirmed@example.com", "organizer", "NEEDS-ACTION"),
    )
    assert (o.start, o.end) == (utc(2022, 7, 5, 16), utc(2022, 7, 5, 17))
    mine = parse_file(
        "node-ical/fixtures/tentative-apple-calendar.ics",
        me=frozenset({"confirmed@example.com"}),
        **WIDE,
    )
    [o] = by_uid(mine, uid)
    assert o.organizer_is_me and o.counterparts == ()
    # "Tentative" is organized by another address that does not list me: not mine.
    # "No Status" has neither ORGANIZER nor ATTENDEE: a private entry, so it is mine.
    assert [x.uid for x in mine.occurrences] == [uid, "99F615DE-82C6-4CEF-97B8-CD0D3E1EE0D3"]


def test_address_forms_and_pseudo_attendees() -> None:
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:forms
        DTSTART:20240105T100000Z
        ORGANIZER;CN=Team calendar:mailto:c_abc123@group.calendar.google.com
        ATTENDEE;PARTSTAT=ACCEPTED:MAILTO:Me@Example.com
        ATTENDEE;CN=Eve;EMAIL=eve@example.com;PARTSTAT=ACCEPTED:urn:uuid:1234-5678
        ATTENDEE;CN=Big room;PARTSTAT=ACCEPTED:mailto:c_room@resource.calendar.google.com
        ATTENDEE;CN=Frank;PARTSTAT=ACCEPTED:mailto:frank%40example.com
        ATTENDEE;CN=Frank again;PARTSTAT=TENTATIVE:mailto:FRANK@example.com
        ATTENDEE;CN=All staff;CUTYPE=GROUP:mailto:staff@example.com
        ATTENDEE;CN=No address:invalid:nomail
        END:VEVENT
        END:VCALENDAR
    """)
    [o] = parse_calendar(ics, me=ME, **WIDE).occurrences
    assert o.counterparts == (
        Counterpart("eve@example.com", "Eve", "attendee", "ACCEPTED"),
        Counterpart("frank@example.com", "Frank", "attendee", "ACCEPTED"),
    )


def test_organizer_who_declined_is_no_counterpart() -> None:
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:assistant-booked
        DTSTART:20240105T100000Z
        ORGANIZER;CN=Assistant:mailto:assistant@example.com
        ATTENDEE;PARTSTAT=DECLINED:mailto:assistant@example.com
        ATTENDEE;PARTSTAT=ACCEPTED:mailto:me@example.com
        ATTENDEE;CN=Gina;PARTSTAT=ACCEPTED:mailto:gina@example.com
        END:VEVENT
        END:VCALENDAR
    """)
    [o] = parse_calendar(ics, me=ME, **WIDE).occurrences
    assert [c.address for c in o.counterparts] == ["gina@example.com"]


SYNTHETIC = """
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//netaudit//tests//EN
{method}
BEGIN:VEVENT
UID:weekly-sync@example.com
SEQUENCE:0
SUMMARY:Weekly sync
DTSTART;TZID=Europe/Berlin:20240108T100000
DTEND;TZID=Europe/Berlin:20240108T103000
RRULE:FREQ=WEEKLY;COUNT=5
EXDATE;TZID=Europe/Berlin:20240115T100000
{location}
DESCRIPTION:Join Zoom Meeting https://us02web.zoom.us/j/81234567890?pwd=abc
ORGANIZER;CN=Boss Person:mailto:Boss@Example.com
ATTENDEE;CN=Boss Person;PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:boss@example.com
ATTENDEE;CN=Me Myself;PARTSTAT={my_partstat};RSVP=TRUE:MAILTO:Me@Example.COM
ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED:mailto:alice@example.com
ATTENDEE;CN=Bob;PARTSTAT=DECLINED:mailto:bob@example.com
ATTENDEE;CN=Room 4.01;CUTYPE=ROOM;PARTSTAT=ACCEPTED:mailto:room401@example.com
ATTENDEE;CN=Carol;ROLE=NON-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:carol@example.com
END:VEVENT
BEGIN:VEVENT
UID:weekly-sync@example.com
SEQUENCE:1
SUMMARY:Weekly sync
RECURRENCE-ID;TZID=Europe/Berlin:20240129T100000
DTSTART;TZID=Europe/Berlin:20240129T100000
DTEND;TZID=Europe/Berlin:20240129T103000
STATUS:CANCELLED
ORGANIZER;CN=Boss Person:mailto:boss@example.com
ATTENDEE;CN=Me Myself;PARTSTAT=ACCEPTED:mailto:me@example.com
END:VEVENT
END:VCALENDAR
"""
ME = frozenset({"me@example.com"})
JAN_FEB = {"window_start": utc(2024, 1, 1), "window_end": utc(2024, 3, 1)}


def synthetic(*, method: str = "", location: str = "", my_partstat: str = "ACCEPTED") -> bytes:
    return crlf(SYNTHETIC.format(method=method, location=location, my_partstat=my_partstat))


def test_synthetic_weekly_meeting() -> None:
    result = parse_calendar(synthetic(), me=ME, **JAN_FEB)
    assert result.problems == ()
    assert result.uids == frozenset({"weekly-sync@example.com"})
    # Five Mondays from 8 Jan 2024 at 10:00 CET (09:00 UTC); 15 Jan is an EXDATE and 29 Jan is
    # cancelled by its override, which leaves 8 Jan, 22 Jan and 5 Feb.
    assert [o.start for o in result.occurrences] == [
        utc(2024, 1, 8, 9),
        utc(2024, 1, 22, 9),
        utc(2024, 2, 5, 9),
    ]
    assert [o.end for o in result.occurrences] == [
        utc(2024, 1, 8, 9, 30),
        utc(2024, 1, 22, 9, 30),
        utc(2024, 2, 5, 9, 30),
    ]
    assert [o.occurrence_key for o in result.occurrences] == [
        "weekly-sync@example.com|2024-01-08T09:00:00Z",
        "weekly-sync@example.com|2024-01-22T09:00:00Z",
        "weekly-sync@example.com|2024-02-05T09:00:00Z",
    ]
    for o in result.occurrences:
        # The organizer (also listed as an attendee) once, and the accepting attendee; not
        # me, the declined Bob, the room or the non-participant Carol.
        assert o.counterparts == (
            Counterpart("boss@example.com", "Boss Person", "organizer", "ACCEPTED"),
            Counterpart("alice@example.com", "Alice", "attendee", "ACCEPTED"),
        )
        assert o.mode == "online"
        assert o.summary == "Weekly sync"
        assert not o.organizer_is_me and not o.all_day


def test_synthetic_declined_by_me() -> None:
    result = parse_calendar(synthetic(my_partstat="DECLINED"), me=ME, **JAN_FEB)
    assert result.occurrences == ()
    assert result.uids == frozenset({"weekly-sync@example.com"})  # so stored ones get replaced


def test_synthetic_physical_location() -> None:
    result = parse_calendar(
        synthetic(location="LOCATION:Room 4.01\\, Main Street 1"), me=ME, **JAN_FEB
    )
    assert {o.mode for o in result.occurrences} == {"in_person"}


def test_synthetic_teams_location_is_online() -> None:
    result = parse_calendar(
        synthetic(location="LOCATION:Microsoft Teams Meeting"), me=ME, **JAN_FEB
    )
    assert {o.mode for o in result.occurrences} == {"online"}


def test_synthetic_method_cancel() -> None:
    result = parse_calendar(synthetic(method="METHOD:CANCEL"), me=ME, **JAN_FEB)
    assert result.occurrences == ()
    assert result.uids == frozenset({"weekly-sync@example.com"})


def test_synthetic_without_me_counts_everything_and_keeps_my_address() -> None:
    # With no own addresses configured the file is taken as my calendar; "me" is then just
    # another attendee.
    result = parse_calendar(synthetic(my_partstat="DECLINED"), me=NOBODY, **JAN_FEB)
    assert len(result.occurrences) == 3
    assert [c.address for c in result.occurrences[0].counterparts] == [
        "boss@example.com",
        "alice@example.com",
    ]


def test_organizer_is_me_and_private_events() -> None:
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:mine
        DTSTART:20240301T100000Z
        DTEND:20240301T110000Z
        ORGANIZER:mailto:me@example.com
        ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:dave@example.com
        END:VEVENT
        BEGIN:VEVENT
        UID:dentist
        DTSTART;VALUE=DATE:20240302
        SUMMARY:Dentist
        LOCATION:Dr. Smith
        END:VEVENT
        BEGIN:VEVENT
        UID:not-mine
        DTSTART:20240303T100000Z
        ORGANIZER:mailto:someone@example.org
        ATTENDEE:mailto:other@example.org
        END:VEVENT
        END:VCALENDAR
    """)
    result = parse_calendar(ics, me=ME, window_start=utc(2024, 1, 1), window_end=utc(2025, 1, 1))
    mine, dentist = result.occurrences
    assert mine.organizer_is_me
    assert mine.counterparts == (Counterpart("dave@example.com", None, "attendee", "NEEDS-ACTION"),)
    # A private all-day entry: a DATE without DTEND lasts one day; no counterparts.
    assert (dentist.start_date, dentist.end_date, dentist.counterparts) == (
        date(2024, 3, 2),
        date(2024, 3, 3),
        (),
    )
    assert dentist.mode == "in_person"
    assert result.uids == frozenset({"mine", "dentist", "not-mine"})


def test_method_cancel_for_one_instance() -> None:
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        METHOD:CANCEL
        BEGIN:VEVENT
        UID:series-1
        RECURRENCE-ID;TZID=Europe/Berlin:20240115T100000
        DTSTART;TZID=Europe/Berlin:20240115T100000
        STATUS:CANCELLED
        END:VEVENT
        END:VCALENDAR
    """)
    result = parse_calendar(ics, me=ME, **JAN_FEB)
    assert result.occurrences == () and result.uids == frozenset()
    assert result.cancelled_keys == frozenset({"series-1|2024-01-15T09:00:00Z"})


# ------------------------------------------------------------------------------------------
# limits and bad input
# ------------------------------------------------------------------------------------------

ENDLESS = """
BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
UID:endless
DTSTART:{start}
DURATION:PT30M
RRULE:FREQ={freq}
END:VEVENT
BEGIN:VEVENT
UID:normal
DTSTART:20240105T100000Z
END:VEVENT
END:VCALENDAR
"""


def test_endless_rrule_is_capped() -> None:
    ics = crlf(ENDLESS.format(start="20000103T090000Z", freq="DAILY"))
    begin = time.monotonic()
    result = parse_calendar(ics, me=NOBODY, max_occurrences_per_series=500, **WIDE)
    assert time.monotonic() - begin < 10
    endless = by_uid(result, "endless")
    assert len(endless) == 500
    assert endless[0].start == utc(2000, 1, 3, 9) and endless[-1].start == utc(2001, 5, 16, 9)
    assert [p.location for p in result.problems] == ["UID endless"]
    assert "500" in result.problems[0].reason
    assert result.failed_uids == frozenset({"endless"})
    assert len(by_uid(result, "normal")) == 1


def test_dense_rrule_long_before_the_window_is_refused_quickly() -> None:
    # Hourly since 2020 is ~35,000 instances before a 2024 window: more than 100 x the cap of
    # 100 would have to be walked just to reach it.
    ics = crlf(ENDLESS.format(start="20200101T000000Z", freq="HOURLY"))
    begin = time.monotonic()
    result = parse_calendar(
        ics,
        me=NOBODY,
        max_occurrences_per_series=100,
        window_start=utc(2024, 1, 1),
        window_end=utc(2025, 1, 1),
    )
    assert time.monotonic() - begin < 10
    assert by_uid(result, "endless") == []
    assert [p.location for p in result.problems] == ["UID endless"]
    assert "10000 instances" in result.problems[0].reason
    assert len(by_uid(result, "normal")) == 1


@pytest.mark.parametrize("freq", ["MINUTELY", "SECONDLY"])
def test_sub_hourly_rules_are_refused(freq: str) -> None:
    ics = crlf(ENDLESS.format(start="20240101T000000Z", freq=freq))
    result = parse_calendar(ics, me=NOBODY, **WIDE)
    assert by_uid(result, "endless") == []
    assert [p.location for p in result.problems] == ["UID endless"]
    assert f"FREQ={freq}" in result.problems[0].reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no VCALENDAR"),
        (b"this is not a calendar", "cannot parse"),
        (b"\x00\xff\xfe garbage \x80", "cannot parse"),
    ],
)
def test_unparseable_input_is_one_calendar_problem(data: bytes, reason: str) -> None:
    result = parse_calendar(data, me=NOBODY, **WIDE)
    assert result.occurrences == ()
    assert len(result.problems) == 1 and result.problems[0].location == "calendar"
    assert reason in result.problems[0].reason


def test_oversized_input_is_refused_before_parsing() -> None:
    result = parse_calendar(b"x" * 101, me=NOBODY, max_bytes=100, **WIDE)
    assert result.occurrences == ()
    assert result.problems[0].location == "calendar" and "100" in result.problems[0].reason


def test_bad_events_become_problems_and_the_rest_is_kept() -> None:
    # 401 VEVENTs. Six have impossible dates (DTSTART:20240230T100000Z, ...0231, 0431, 0631,
    # 0931, 1131) and the last one has two DTSTARTs; the other 394 are fine.
    result = parse_file("node-ical/fixtures/large-file-with-late-error.ics")
    assert len(result.occurrences) == 394 and len(result.uids) == 401
    bad = {"event060", "event061", "event123", "event185", "event278", "event340", "event_error"}
    assert {p.location for p in result.problems} == {f"UID {u}@example.com" for u in bad}
    assert result.failed_uids == {f"{u}@example.com" for u in bad}
    [double] = [p for p in result.problems if "event_error" in p.location]
    assert double.reason == "event has more than one DTSTART"
    [first] = by_uid(result, "event001@example.com")
    assert first.start == utc(2024, 1, 2, 10)  # DTSTART:20240102T100000Z


def test_structural_errors_lose_no_event() -> None:
    # A negative "PT-2H" alarm trigger and a stray END:VFOO each make icalendar reject the
    # whole file. Salvaging VEVENT by VEVENT (alarms are never read) keeps all three events.
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:good
        DTSTART:20240105T100000Z
        END:VEVENT
        BEGIN:VEVENT
        UID:bad-alarm
        DTSTART:20240106T100000Z
        BEGIN:VALARM
        ACTION:DISPLAY
        TRIGGER;RELATED=START:PT-2H
        END:VALARM
        END:VEVENT
        BEGIN:VEVENT
        UID:stray-end
        DTSTART:20240107T100000Z
        END:VFOO
        END:VEVENT
        END:VCALENDAR
    """)
    result = parse_calendar(ics, me=NOBODY, **WIDE)
    assert [o.uid for o in result.occurrences] == ["good", "bad-alarm", "stray-end"]
    assert [o.start for o in result.occurrences] == [
        utc(2024, 1, 5, 10),
        utc(2024, 1, 6, 10),
        utc(2024, 1, 7, 10),
    ]
    assert result.problems == ()


def test_salvaged_events_keep_their_custom_time_zone() -> None:
    # The unterminated VALARM forces the salvage path; TZID still resolves to the file's own
    # VTIMEZONE (+05:30), so 10:00 there is 04:30 UTC.
    ics = crlf("""
        BEGIN:VCALENDAR
        VERSION:2.0
        BEGIN:VEVENT
        UID:odd-zone
        DTSTART;TZID=Netaudit Test Zone:20240105T100000
        BEGIN:VALARM
        END:VEVENT
        BEGIN:VTIMEZONE
        TZID:Netaudit Test Zone
        BEGIN:STANDARD
        DTSTART:16010101T000000
        TZOFFSETFROM:+0530
        TZOFFSETTO:+0530
        END:STANDARD
        END:VTIMEZONE
        END:VCALENDAR
    """)
    [o] = parse_calendar(ics, me=NOBODY, **WIDE).occurrences
    assert o.start == utc(2024, 1, 5, 4, 30)


def test_bom_and_windows_1252_are_read() -> None:
    text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20240105T100000Z\r\n"
    text += "ORGANIZER;CN=Jürgen Müller:mailto:j@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    for data in (b"\xef\xbb\xbf" + text.encode(), text.encode("cp1252"), text.encode("utf-16")):
        [o] = parse_calendar(data, me=NOBODY, **WIDE).occurrences
        assert o.counterparts == (Counterpart("j@example.com", "Jürgen Müller", "organizer"),)


def test_one_stray_byte_does_not_garble_utf8_elsewhere() -> None:
    # Valid UTF-8 except for one cp1252 byte (0xE9, "é") in DESCRIPTION.
    data = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20240105T100000Z\r\n"
        "ORGANIZER;CN=Jürgen Müller:mailto:j@example.com\r\n"
    ).encode() + b"DESCRIPTION:caf\xe9\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    [o] = parse_calendar(data, me=NOBODY, **WIDE).occurrences
    assert o.counterparts[0].name == "Jürgen Müller"


def test_naive_window_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        parse_calendar(
            b"", me=NOBODY, window_start=datetime(2024, 1, 1), window_end=utc(2025, 1, 1)
        )


# ------------------------------------------------------------------------------------------
# fuzzing
# ------------------------------------------------------------------------------------------

SEED = (DATA / "recurring-ical-events/test-calendars/issue_62_moved_event.ics").read_bytes()
FUZZ = {"window_start": utc(2015, 1, 1), "window_end": utc(2026, 1, 1)}


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(parse_calendar(data, me=ME, max_seconds=5, **FUZZ), CalendarParse)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]),
            st.integers(min_value=0, max_value=len(SEED)),
            st.binary(min_size=1, max_size=12)
            | st.sampled_from([b":", b";", b"\r\n", b"\r\n ", b"=", b'"', b"Z", b"T", b"-", b"9"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_mutated_real_calendar_never_raises(edits: list[tuple[str, int, bytes]]) -> None:
    data = SEED
    for kind, position, chunk in edits:
        position = min(position, len(data))
        if kind == "insert":
            data = data[:position] + chunk + data[position:]
        elif kind == "delete":
            data = data[:position] + data[position + len(chunk) :]
        elif kind == "replace":
            data = data[:position] + chunk + data[position + len(chunk) :]
        elif kind == "duplicate":
            data = data[:position] + data[position : position + 200] + data[position:]
        else:
            data = data[:position]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = parse_calendar(data, me=NOBODY, max_seconds=5, **FUZZ)
    assert isinstance(result, CalendarParse)
