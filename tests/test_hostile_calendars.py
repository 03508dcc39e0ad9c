"""Calendar files that are not what they seem: a VTIMEZONE that expands into millions of
transitions, a million RDATEs, rules dateutil would search to the year 9999, a few hundred
bytes of series that make millions of occurrences, and FIFOs, devices and names that are not
UTF-8 where .ics files should be.

Memory is bounded by parsing in a child process under RLIMIT_AS; hangs are detected with
subprocess timeouts, never with timed assertions. Every expectation is worked out from the
input: the exact quarantine reason, which events are kept and at what time.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dateutil.rrule import rrulestr

from ingest import calendars, ics_parse
from ingest.ics_parse import parse_calendar
from netaudit import db
from tests.conftest import REPO, data_path, write_config
from tests.test_calendars import make_config

UTC = dt.UTC
ME = "robin@example.org"
HANG = 120  # seconds: only ever reached when something hangs
PARSER_MEMORY = 512 * 2**20  # address space of a child that only parses
CLI_MEMORY = 2 * 2**30  # DuckDB reserves about 600 MB of address space on its own
WINDOW = {"window_start": dt.datetime(2015, 1, 1, tzinfo=UTC),
          "window_end": dt.datetime(2027, 1, 1, tzinfo=UTC)}

# Parses one file under an address-space limit and prints what came out, as JSON.
PARSE_CHILD = """
import collections, datetime as dt, json, resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from ingest.ics_parse import parse_calendar
data = open(sys.argv[1], "rb").read()
result = parse_calendar(data, me=frozenset(), window_start=dt.datetime(2015, 1, 1, tzinfo=dt.UTC),
                        window_end=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
print(json.dumps({
    "per_uid": collections.Counter(o.uid for o in result.occurrences),
    "starts": {o.occurrence_key: o.start.isoformat() for o in result.occurrences[:20]},
    "problems": [[p.location, p.reason] for p in result.problems],
    "failed": sorted(result.failed_uids),
}))
"""


def parse_in_child(path: Path) -> dict:
    """``parse_calendar`` of a file in a child with 512 MB of address space."""
    proc = subprocess.run([sys.executable, "-c", PARSE_CHILD, str(path), str(PARSER_MEMORY)],
                          cwd=REPO, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def limited(memory: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return apply


def netaudit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a process, under 2 GB of address space (a read of /dev/zero that were not
    capped would end in MemoryError, not in the machine's memory)."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share")}
    env.pop("NETAUDIT_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "netaudit", *args], capture_output=True,
                          text=True, env=env, timeout=HANG, cwd=REPO,
                          preexec_fn=limited(CLI_MEMORY))


def crlf(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def fold(line: str) -> list[str]:
    """An RFC 5545 folded line (75 octets, then a space at the start of each next line)."""
    parts = [line[:75]]
    parts += [" " + line[i:i + 74] for i in range(75, len(line), 74)]
    return parts


UTC_EVENT = ("BEGIN:VEVENT", "UID:plain@example.org", "DTSTAMP:20240101T000000Z",
             "DTSTART:20240105T100000Z", "DTEND:20240105T110000Z", "END:VEVENT")


# ---------------------------------------------------------------------------------------------
# VTIMEZONE rules that tzical would expand without end


def zone_calendar(standard_rule: str, *, daylight_rule: str = "FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
                  start: str = "19000101T000000", tzid: str = "Bomb/Zone",
                  extra: tuple[str, ...] = ()) -> bytes:
    """A zone of two parts and an event at 10:00 in it on 5 January 2024, plus a UTC event.
    ``Bomb/Zone`` is known to no system, so only the VTIMEZONE can say what it means."""
    return crlf(
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//netaudit tests//EN",
        "BEGIN:VTIMEZONE", f"TZID:{tzid}",
        "BEGIN:STANDARD", f"DTSTART:{start}", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100",
        f"RRULE:{standard_rule}", *extra, "TZNAME:S", "END:STANDARD",
        "BEGIN:DAYLIGHT", f"DTSTART:{start}", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
        f"RRULE:{daylight_rule}", "TZNAME:D", "END:DAYLIGHT",
        "END:VTIMEZONE",
        "BEGIN:VEVENT", "UID:zoned@example.org", "DTSTAMP:20240101T000000Z",
        f"DTSTART;TZID={tzid}:20240105T100000", f"DTEND;TZID={tzid}:20240105T110000",
        "SUMMARY:Planning", "ORGANIZER:mailto:olga@example.com",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{ME}", "END:VEVENT",
        *UTC_EVENT, "END:VCALENDAR")


DAYS = ",".join(str(d) for d in range(1, 367))
DENSE_YEARLY = f"FREQ=YEARLY;BYYEARDAY={DAYS}"


@pytest.mark.parametrize(("rule", "extra", "reason"), [
    # the 854-byte file of the report: a transition every minute since 1900
    ("FREQ=MINUTELY", (), "RRULE FREQ=MINUTELY is not a time-zone rule"),
    ("FREQ=SECONDLY", (), "RRULE FREQ=SECONDLY is not a time-zone rule"),
    ("FREQ=DAILY", (), "RRULE FREQ=DAILY is not a time-zone rule"),
    # YEARLY, yet a transition every day
    (DENSE_YEARLY, (),
     f"RRULE {DENSE_YEARLY[:60]} changes the offset more than 24 times in two years"),
    # YEARLY, yet every minute of January
    ("FREQ=YEARLY;BYMONTH=1;BYHOUR=" + ",".join(map(str, range(24)))
     + ";BYMINUTE=" + ",".join(map(str, range(60))), (),
     "RRULE FREQ=YEARLY;BYMONTH=1;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13 changes the offset "
     "more than 24 times in two years"),
    # never an instance: tzical would search every year up to 9999, each time it is asked
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", (),
     "RRULE FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30 has no instance in the two years from its "
     "DTSTART"),
    (f"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;BYSETPOS={DAYS}", (),
     "RRULE with BYSETPOS is not a time-zone rule"),
    # a sound rule, and an EXRULE that tzical walks alongside it
    ("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", ("EXRULE:FREQ=SECONDLY",),
     "EXRULE FREQ=SECONDLY is not a time-zone rule"),
], ids=["minutely", "secondly", "daily", "every-day-yearly", "every-minute-yearly",
        "no-instance", "bysetpos", "exrule"])
def test_runaway_time_zone_is_ignored_within_512_mb(tmp_path: Path, rule: str,
                                                    extra: tuple[str, ...],
                                                    reason: str) -> None:
    """Before, the MINUTELY zone grew past 6.8 GB (MemoryError here); now the zone is
    dropped before icalendar reads it, with its reason, and its event is read as floating
    time (the default zone, UTC), next to the untouched UTC event."""
    data = zone_calendar(rule, extra=extra)
    assert len(data) < 3500  # the MINUTELY one is 774 bytes
    path = tmp_path / "bomb.ics"
    path.write_bytes(data)
    result = parse_in_child(path)
    assert result["problems"] == [["calendar", f"VTIMEZONE 'Bomb/Zone' ignored: {reason}"]]
    assert result["per_uid"] == {"zoned@example.org": 1, "plain@example.org": 1}
    ten = "2024-01-05T10:00:00+00:00"
    assert result["starts"] == {"zoned@example.org|2024-01-05T10:00:00Z": ten,
                                "plain@example.org|2024-01-05T10:00:00Z": ten}
    assert result["failed"] == []


@pytest.mark.parametrize(("start", "winter", "summer"), [
    ("19701025T030000", "2024-01-05T09:00:00Z", "2024-07-05T08:00:00Z"),
    # Outlook writes its zones from 1601; tzical then walks 423 years of each rule
    ("16010101T030000", "2024-01-05T09:00:00Z", "2024-07-05T08:00:00Z"),
])
def test_a_real_custom_zone_is_still_used(start: str, winter: str, summer: str) -> None:
    """Central European rules under a name no system knows: 10:00 is 09:00 UTC in January
    and 08:00 UTC in July, with nothing quarantined."""
    data = zone_calendar("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", start=start,
                         tzid="Netaudit Test Zone")
    data = data.replace(b"BEGIN:VEVENT\r\nUID:plain", b"BEGIN:VEVENT\r\nUID:summer\r\n"
                        b"DTSTART;TZID=Netaudit Test Zone:20240705T100000\r\nEND:VEVENT\r\n"
                        b"BEGIN:VEVENT\r\nUID:plain")
    result = parse_calendar(data, me=frozenset(), **WINDOW)
    assert result.problems == ()
    assert {o.uid: o.start for o in result.occurrences} == {
        "zoned@example.org": dt.datetime.fromisoformat(winter),
        "summer": dt.datetime.fromisoformat(summer),
        "plain@example.org": dt.datetime(2024, 1, 5, 10, tzinfo=UTC),
    }


def test_too_many_time_zone_parts_and_zones() -> None:
    """501 STANDARD parts in one zone, then 101 zones in one file: each over its cap is
    ignored with its reason; the first 100 zones are kept."""
    part = ("BEGIN:STANDARD", "DTSTART:19700101T000000", "TZOFFSETFROM:+0100",
            "TZOFFSETTO:+0100", "END:STANDARD")
    many_parts = ("BEGIN:VTIMEZONE", "TZID:Many/Parts", *part * 501, "END:VTIMEZONE")
    zones = [line for n in range(101) for line in
             ("BEGIN:VTIMEZONE", f"TZID:Zone/{n}", *part, "END:VTIMEZONE")]
    data = crlf("BEGIN:VCALENDAR", "VERSION:2.0", *many_parts, *zones, *UTC_EVENT,
                "END:VCALENDAR")
    result = parse_calendar(data, me=frozenset(), **WINDOW)
    assert [(p.location, p.reason) for p in result.problems] == [
        ("calendar", "VTIMEZONE 'Many/Parts' ignored: 501 STANDARD/DAYLIGHT parts, more than "
                     "500"),
        ("calendar", "VTIMEZONE 'Zone/100' ignored: the calendar has more than 100 "
                     "VTIMEZONEs"),
    ]
    assert [o.uid for o in result.occurrences] == ["plain@example.org"]


# ---------------------------------------------------------------------------------------------
# RDATE and EXDATE floods


def rdate_flood(shape: str, values: int) -> bytes:
    """One event with ``values`` RDATEs or EXDATEs, in one folded line (an hour apart from
    1970) or one line each (a day apart: a shorter line, to stay under 20 MB), and a plain
    event."""
    if shape == "a line each":
        first_day = dt.date(1970, 1, 1)
        lines = [f"RDATE:{(first_day + dt.timedelta(days=d)):%Y%m%d}" for d in range(values)]
    else:
        first = dt.datetime(1970, 1, 1)
        stamps = ",".join(f"{first + dt.timedelta(hours=h):%Y%m%dT%H%M%SZ}"
                          for h in range(values))
        lines = fold(("RDATE:" if shape == "one line" else "EXDATE:") + stamps)
    return crlf("BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:flood@example.org",
                "DTSTART:19700101T000000Z", "DTEND:19700101T010000Z",
                "RRULE:FREQ=HOURLY;COUNT=10" if shape == "exdate" else "SUMMARY:flood",
                *lines, "END:VEVENT", *UTC_EVENT, "END:VCALENDAR")


@pytest.mark.parametrize(("shape", "values"), [("one line", 1_100_000),
                                               ("a line each", 1_000_000),
                                               ("exdate", 1_100_000)])
def test_a_million_rdates_are_refused_within_512_mb(tmp_path: Path, shape: str,
                                                    values: int) -> None:
    """Up to 20 MB of RDATE or EXDATE values (under the file cap) used 110 times the file
    size; now the event is refused from the text, its UID kept as stored, the rest read."""
    data = rdate_flood(shape, values)
    assert len(data) < calendars.MAX_CALENDAR_BYTES
    path = tmp_path / "flood.ics"
    path.write_bytes(data)
    result = parse_in_child(path)
    count = values + (1 if shape == "exdate" else 0)  # the RRULE counts too
    assert result["problems"] == [["UID flood@example.org", f"not read: {count} RDATE, EXDATE "
                                   "and RRULE values, more than 1000"]]
    assert result["failed"] == ["flood@example.org"]
    assert result["per_uid"] == {"plain@example.org": 1}


def test_recurrence_values_are_capped_per_file_too() -> None:
    """25 events of 999 RDATEs each: the first 20 (19,980 values) are read, the 21st would
    pass 20,000 and is refused, and so is every later one with any value."""
    events = []
    for n in range(25):
        stamps = ",".join(f"{1000 + y}0101T000000Z" for y in range(999))  # before 2015
        events += ["BEGIN:VEVENT", f"UID:series-{n}", "DTSTART:10000101T000000Z",
                   *fold("RDATE:" + stamps), "END:VEVENT"]
    data = crlf("BEGIN:VCALENDAR", "VERSION:2.0", *events, *UTC_EVENT, "END:VCALENDAR")
    result = parse_calendar(data, me=frozenset(), **WINDOW)
    reason = "not read: the calendar has more than 20000 RDATE, EXDATE and RRULE values"
    assert [(p.location, p.reason) for p in result.problems] == [
        (f"UID series-{n}", reason) for n in range(20, 25)]
    assert result.failed_uids == {f"series-{n}" for n in range(20, 25)}
    assert result.uids == {f"series-{n}" for n in range(25)} | {"plain@example.org"}
    assert [o.uid for o in result.occurrences] == ["plain@example.org"]


def test_a_refused_series_takes_its_overrides_along() -> None:
    """A master with 1001 RDATEs and an override of one instance: the override alone would
    be a meeting of a series that was never read, so neither is read."""
    first = dt.datetime(2024, 1, 1, 10)
    stamps = ",".join(f"{first + dt.timedelta(days=d):%Y%m%dT%H%M%SZ}" for d in range(1001))
    data = crlf("BEGIN:VCALENDAR", "VERSION:2.0",
                "BEGIN:VEVENT", "UID:weekly", "DTSTART:20240101T100000Z",
                *fold("RDATE:" + stamps), "END:VEVENT",
                "BEGIN:VEVENT", "UID:weekly", "RECURRENCE-ID:20240102T100000Z",
                "DTSTART:20240102T150000Z", "END:VEVENT", *UTC_EVENT, "END:VCALENDAR")
    result = parse_calendar(data, me=frozenset(), **WINDOW)
    assert [(p.location, p.reason) for p in result.problems] == [
        ("UID weekly", "not read: 1001 RDATE, EXDATE and RRULE values, more than 1000")]
    assert [o.uid for o in result.occurrences] == ["plain@example.org"]
    assert result.failed_uids == {"weekly"}


# ---------------------------------------------------------------------------------------------
# rules dateutil would search to the year 9999, and the time cap


def endless_search(rule: str) -> bytes:
    return crlf("BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:never@example.org",
                "DTSTART:20200101T090000Z", "DTEND:20200101T100000Z", f"RRULE:{rule}",
                "END:VEVENT", *UTC_EVENT, "END:VCALENDAR")


@pytest.mark.parametrize("rule", ["FREQ=HOURLY;BYSETPOS=2", "FREQ=DAILY;BYDAY=MO;BYSETPOS=2",
                                  "FREQ=WEEKLY;BYSETPOS=3"])
def test_a_rule_without_instances_does_not_run_to_the_year_9999(tmp_path: Path,
                                                               rule: str) -> None:
    """These rules never match. dateutil searches period by period to the year 9999 for
    the next instance: for HOURLY 70 million periods, minutes inside one call that no check
    between series could stop. The count now gives up 30 years after the window."""
    path = tmp_path / "never.ics"
    path.write_bytes(endless_search(rule))
    result = parse_in_child(path)
    assert result["problems"] == [[
        "UID never@example.org",
        "series not expanded: its RRULE has no instance between the end of the window and 2057",
    ]]
    assert result["failed"] == ["never@example.org"]
    assert result["per_uid"] == {"plain@example.org": 1}


def test_the_time_cap_stops_dateutil_inside_one_search() -> None:
    """dateutil's own loop is stopped, not only the loop around it: a guarded rule with no
    instance and a deadline already passed raises at its first period, before any instance
    (unguarded, ``next()`` would search to 9999)."""
    rule = ics_parse._guard(
        rrulestr("FREQ=HOURLY;BYSETPOS=2", dtstart=dt.datetime(2020, 1, 1), cache=False),
        ics_parse._Stop(dt.datetime(9999, 12, 1), deadline=0.0),
    )
    with pytest.raises(ics_parse._OutOfTime):
        next(iter(rule))
    unguarded = rrulestr("FREQ=DAILY;COUNT=3", dtstart=dt.datetime(2020, 1, 1), cache=False)
    assert list(unguarded) == [dt.datetime(2020, 1, d) for d in (1, 2, 3)]  # others untouched


def test_occurrences_are_capped_per_file() -> None:
    """Ten daily series since 2015 (4,383 days each in a window of 2015-2026) with a file cap
    of 10,000: two whole series, 1,234 of the third, none of the rest; each says why."""
    events = [line for n in range(10) for line in (
        "BEGIN:VEVENT", f"UID:daily-{n}", "DTSTART:20150101T090000Z",
        "DTEND:20150101T093000Z", "RRULE:FREQ=DAILY", "END:VEVENT")]
    data = crlf("BEGIN:VCALENDAR", "VERSION:2.0", *events, "END:VCALENDAR")
    result = parse_calendar(data, me=frozenset(), max_occurrences=10_000, **WINDOW)
    per_uid: dict[str, int] = {}
    for o in result.occurrences:
        per_uid[o.uid] = per_uid.get(o.uid, 0) + 1
    assert per_uid == {"daily-0": 4383, "daily-1": 4383, "daily-2": 1234}
    assert [(p.location, p.reason) for p in result.problems] == [
        ("UID daily-2", "the calendar has more than 10000 occurrences; kept the first 1234"),
        *[(f"UID daily-{n}", "not expanded: the calendar has more than 10000 occurrences")
          for n in range(3, 10)]]
    assert result.failed_uids == {f"daily-{n}" for n in range(2, 10)}
    assert ics_parse.MAX_OCCURRENCES == 100_000  # the default every caller gets


# ---------------------------------------------------------------------------------------------
# files that are not files, names that are not UTF-8


LUNCH = crlf("BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//netaudit tests//EN", "BEGIN:VEVENT",
             "UID:lunch@example.org", "DTSTART:20250210T120000Z", "DTEND:20250210T130000Z",
             f"ORGANIZER:mailto:{ME}", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:carol@example.net",
             "END:VEVENT", "END:VCALENDAR")


def rows(database: Path, sql: str) -> list[tuple]:
    with db.reader(database) as con:
        return con.execute(sql).fetchall()


def test_a_name_that_is_not_utf8_is_stored_losslessly(tmp_path: Path) -> None:
    """``caf\\xe9.ics`` (Latin-1) in a vdir, and a broken one beside it: before, the
    surrogate in the name reached DuckDB and the batch failed with a traceback. Now the
    origin, the sync state and the quarantine hold ``caf\\\\xe9``; an unchanged run finds
    it unchanged, and deleting the file removes its meeting."""
    cfg = make_config(tmp_path, history="2024-01-01")
    vdir = tmp_path / "vdir"
    vdir.mkdir()
    good = vdir / os.fsdecode(b"caf\xe9.ics")
    good.write_bytes(LUNCH)
    broken = vdir / os.fsdecode(b"\xff-broken.ics")
    broken.write_bytes(b"BEGIN:VCALENDAR\r\nthis is not a calendar\r\n")
    shown, shown_broken = f"{vdir}/caf\\xe9.ics", f"{vdir}/\\xff-broken.ics"
    result = calendars.sync_files(cfg.database, cfg, "work", vdir, frozenset({ME}))
    assert (result.files, result.occurrences, result.problems) == (2, 1, 1)
    assert rows(cfg.database, "SELECT uid, origin FROM meetings") == \
        [("lunch@example.org", shown)]
    assert rows(cfg.database, "SELECT location FROM quarantine") == \
        [(f"{shown_broken} (calendar)",)]
    assert rows(cfg.database, "SELECT scope FROM sync_state WHERE source = 'work' "
                              "ORDER BY scope") == [(shown_broken,), (shown,)]
    again = calendars.sync_files(cfg.database, cfg, "work", vdir, frozenset({ME}))
    assert (again.files, again.unchanged) == (0, 2)
    good.unlink()
    gone = calendars.sync_files(cfg.database, cfg, "work", vdir, frozenset({ME}))
    assert gone.removed == 1
    assert rows(cfg.database, "SELECT count(*) FROM meetings") == [(0,)]


def test_fifo_and_device_in_a_vdir_are_quarantined(tmp_path: Path) -> None:
    """A FIFO, a symlink to /dev/zero (stat size 0: the old size cap let it read until
    MemoryError) and a real calendar, synced by the CLI in a process with 2 GB of address
    space and a hang timeout: two one-line reasons, the lunch stored."""
    home = tmp_path / "home"
    home.mkdir()
    vdir = tmp_path / "vdir"
    vdir.mkdir()
    (vdir / "lunch.ics").write_bytes(LUNCH)
    os.mkfifo(vdir / "pipe.ics")
    (vdir / "zero.ics").symlink_to("/dev/zero")
    database = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "config.toml", f"""
[netaudit]
database = "{database}"
me = ["{ME}"]
history_start = 2024-01-01

[[calendar]]
name = "cal"
path = "{vdir}"
""")
    proc = netaudit(home, "--config", str(cfg), "sync")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert rows(database, "SELECT location, reason FROM quarantine ORDER BY location") == [
        (str(vdir / "pipe.ics"), "a FIFO, not a file"),
        (str(vdir / "zero.ics"), "a device, not a file"),
    ]
    assert rows(database, "SELECT uid, origin FROM meetings") == \
        [("lunch@example.org", str(vdir / "lunch.ics"))]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_fifo_or_device_named_on_import(tmp_path: Path, kind: str) -> None:
    """`netaudit import x.ics` where x.ics is a FIFO (open() blocked for ever) or a symlink
    to /dev/zero (read until MemoryError): one quarantined file, the real one stored, the
    usual summary line, exit code 0."""
    home = tmp_path / "home"
    home.mkdir()
    odd = tmp_path / "odd.ics"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    lunch = tmp_path / "lunch.ics"
    lunch.write_bytes(LUNCH)
    database = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "config.toml", f'[netaudit]\ndatabase = "{database}"\n'
                                                 f'me = ["{ME}"]\nhistory_start = 2024-01-01\n')
    proc = netaudit(home, "--config", str(cfg), "import", str(odd), str(lunch))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == \
        "Calendars: 1 occurrences from 2 changed files, 1 quarantined."
    reason = "a FIFO, not a file" if kind == "fifo" else "a device, not a file"
    assert rows(database, "SELECT location, reason FROM quarantine") == [(str(odd), reason)]
    assert rows(database, "SELECT uid FROM meetings") == [("lunch@example.org",)]


@pytest.fixture
def bomb_feed() -> Iterator[str]:
    """A real HTTP server on loopback serving the MINUTELY zone; yields the feed's URL."""
    body = zone_calendar("FREQ=MINUTELY", daylight_rule="FREQ=MINUTELY")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/calendar")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/private-token/basic.ics"
    server.shutdown()
    server.server_close()


def test_a_time_zone_bomb_in_a_feed(tmp_path: Path, bomb_feed: str) -> None:
    """The MINUTELY zone served as a feed and synced by the CLI under 2 GB: the zone is
    quarantined with its reason under the feed's redacted name, and both events stored."""
    url = bomb_feed
    home = tmp_path / "home"
    home.mkdir()
    database = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{database}"\n'
                       f'me = ["{ME}"]\nhistory_start = 2024-01-01\n'
                       f'[[calendar]]\nname = "work"\nurl = "{url}"\n')
    proc = netaudit(home, "--config", str(cfg), "sync")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "work: 2 occurrences from 1 changed file, 1 quarantined"
    assert rows(database, "SELECT location, reason FROM quarantine") == [
        ("http://127.0.0.1/<redacted> (calendar)",
         "VTIMEZONE 'Bomb/Zone' ignored: RRULE FREQ=MINUTELY is not a time-zone rule")]
    assert rows(database, "SELECT uid, starts_at FROM meetings ORDER BY uid") == [
        ("plain@example.org", dt.datetime(2024, 1, 5, 10, tzinfo=UTC)),
        ("zoned@example.org", dt.datetime(2024, 1, 5, 10, tzinfo=UTC))]


# ---------------------------------------------------------------------------------------------
# one calendar's time zones are not the next one's


def test_a_calendar_cannot_pin_a_time_zone_for_the_next_one() -> None:
    """icalendar caches the first VTIMEZONE of a TZID for the whole process. A daemon or an
    import of many files read Outlook's "Customized Time Zone 1" of the second file with the
    offsets of the first; a hostile file could pin any zone. Each file now reads its own."""
    def customized(offset: str) -> bytes:
        return crlf("BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VTIMEZONE",
                    "TZID:Customized Time Zone 1", "BEGIN:STANDARD", "DTSTART:16010101T000000",
                    f"TZOFFSETFROM:{offset}", f"TZOFFSETTO:{offset}", "END:STANDARD",
                    "END:VTIMEZONE", "BEGIN:VEVENT", "UID:meeting",
                    "DTSTART;TZID=Customized Time Zone 1:20240105T100000", "END:VEVENT",
                    "END:VCALENDAR")

    india, paris = customized("+0530"), customized("+0100")
    for first, second, expected in ((india, paris, dt.datetime(2024, 1, 5, 9, tzinfo=UTC)),
                                    (paris, india, dt.datetime(2024, 1, 5, 4, 30, tzinfo=UTC))):
        parse_calendar(first, me=frozenset(), **WINDOW)
        [o] = parse_calendar(second, me=frozenset(), **WINDOW).occurrences
        assert o.start == expected


def test_real_files_read_the_same_after_any_other() -> None:
    """issue_526 uses TZID "Western/Central Europe" without defining it: a floating time,
    16:00 in the default zone (UTC). khal_2 defines that name as CET; read first in the same
    process, it used to make the same event 15:00 UTC."""
    calendars_dir = data_path("ics", "icalendar", "tests", "calendars")
    khal = (calendars_dir / "issue_156_RDATE_with_PERIOD_TZID_khal_2.ics").read_bytes()
    events = (calendars_dir / "issue_526_calendar_with_events.ics").read_bytes()
    alone = parse_calendar(events, me=frozenset(), **WINDOW)
    parse_calendar(khal, me=frozenset(), **WINDOW)
    after = parse_calendar(events, me=frozenset(), **WINDOW)
    assert [(o.uid, o.start) for o in after.occurrences] == \
        [(o.uid, o.start) for o in alone.occurrences] == [
            ("1", dt.datetime(2021, 11, 1, 16, tzinfo=UTC)),
            ("2", dt.datetime(2021, 11, 1, 16, 40, tzinfo=UTC))]
