"""Calendars as sources: a real local HTTP server, vdirs on disk, and the stored meetings."""

from __future__ import annotations

import datetime as dt
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest import calendars
from netaudit import config, db
from netaudit.errors import SourceError
from tests.conftest import Run, data_path, write_config

UTC = dt.UTC
ME = "robin@example.org"


def weekly(uid: str = "weekly-1@example.org", *, start: str = "20260105T100000Z",
           moved: bool = False, extra: str = "") -> str:
    """A weekly 5-week meeting: one EXDATE, one declined attendee, a room, one cancelled
    occurrence, Alice accepted, me accepted, on Zoom."""
    override = f"""BEGIN:VEVENT
UID:{uid}
RECURRENCE-ID:20260126T100000Z
DTSTART:20260126T100000Z
DTEND:20260126T110000Z
STATUS:CANCELLED
SUMMARY:Weekly sync
END:VEVENT
"""
    if moved:
        override += f"""BEGIN:VEVENT
UID:{uid}
RECURRENCE-ID:20260202T100000Z
DTSTART:20260203T150000Z
DTEND:20260203T160000Z
ORGANIZER;CN=Olga Org:mailto:olga@example.com
ATTENDEE;PARTSTAT=ACCEPTED;CN=Robin:mailto:{ME}
ATTENDEE;PARTSTAT=ACCEPTED;CN=Alice:mailto:alice@example.com
SUMMARY:Weekly sync (moved)
LOCATION:https://zoom.us/j/123
END:VEVENT
"""
    return f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//netaudit tests//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
DTSTART:{start}
DTEND:20260105T110000Z
RRULE:FREQ=WEEKLY;COUNT=5
EXDATE:20260112T100000Z
ORGANIZER;CN=Olga Org:mailto:Olga@Example.com
ATTENDEE;PARTSTAT=ACCEPTED;CN=Robin:mailto:{ME}
ATTENDEE;PARTSTAT=ACCEPTED;CN=Alice:mailto:alice@example.com
ATTENDEE;PARTSTAT=DECLINED;CN=Bob:mailto:bob@example.com
ATTENDEE;CUTYPE=ROOM;CN=Room 1:mailto:room1@resource.example.com
SUMMARY:Weekly sync
LOCATION:https://zoom.us/j/123
{extra}END:VEVENT
{override}END:VCALENDAR
""".replace("\n", "\r\n")


ONE_OFF = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//netaudit tests//EN\r
BEGIN:VEVENT\r
UID:lunch-1@example.org\r
DTSTAMP:{stamp}\r
DTSTART:20260210T120000Z\r
DTEND:20260210T130000Z\r
ORGANIZER;CN=Robin:mailto:robin@example.org\r
ATTENDEE;PARTSTAT=ACCEPTED;CN=Carol:mailto:carol@example.net\r
LOCATION:Café Central\\, Vienna\r
SUMMARY:Lunch\r
END:VEVENT\r
END:VCALENDAR\r
"""


def make_config(tmp_path: Path, history: str = "2025-01-01") -> config.Config:
    path = write_config(tmp_path / "config.toml",
                        f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\nme = ["{ME}"]\n'
                        f'history_start = {history}\ntimezone = "Europe/Berlin"\n')
    cfg = config.load(str(path))
    with db.writer(cfg.database):
        pass
    return cfg


def meetings(cfg: config.Config, calendar: str | None = None) -> list[tuple]:
    where = "WHERE calendar = ?" if calendar else ""
    with db.reader(cfg.database) as con:
        return con.execute(f"SELECT occurrence_key, starts_at, mode, summary FROM meetings "
                           f"{where} ORDER BY starts_at, occurrence_key",
                           [calendar] if calendar else []).fetchall()


def attendees(cfg: config.Config, key: str) -> list[tuple]:
    with db.reader(cfg.database) as con:
        return con.execute("SELECT address, name, role FROM attendees WHERE occurrence_key = ? "
                           "ORDER BY role DESC, address", [key]).fetchall()


def test_weekly_meeting_exact_occurrences_and_counterparts(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    ics = tmp_path / "weekly.ics"
    ics.write_text(weekly())
    result = calendars.sync_files(cfg.database, cfg, "work", ics, frozenset({ME}))
    assert (result.files, result.occurrences, result.problems) == (1, 3, 0)
    rows = meetings(cfg)
    # 5 weeks, minus the EXDATE (12 Jan) and the cancelled one (26 Jan)
    assert [r[1] for r in rows] == [dt.datetime(2026, 1, d, 10, tzinfo=UTC) for d in (5, 19)] \
        + [dt.datetime(2026, 2, 2, 10, tzinfo=UTC)]
    assert {r[2] for r in rows} == {"online"}
    assert {r[3] for r in rows} == {None}  # summaries only with store_subjects
    for key, *_ in rows:
        assert attendees(cfg, key) == [("olga@example.com", "Olga Org", "organizer"),
                                       ("alice@example.com", "Alice", "attendee")]


def test_change_moves_and_deletes_without_duplicates(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    ics = tmp_path / "cal.ics"
    ics.write_text(weekly() .replace("END:VCALENDAR", ONE_OFF.split("VERSION:2.0\r\n", 1)[1]
                                     .split("PRODID:-//netaudit tests//EN\r\n", 1)[1]
                                     .replace("{stamp}", "20260101T000000Z")))
    me = frozenset({ME})
    calendars.sync_files(cfg.database, cfg, "work", ics, me)
    assert len(meetings(cfg)) == 4
    ics.write_text(weekly(moved=True))  # lunch deleted, 2 Feb moved to 3 Feb 15:00
    calendars.sync_files(cfg.database, cfg, "work", ics, me)
    starts = [r[1] for r in meetings(cfg)]
    assert starts == [dt.datetime(2026, 1, 5, 10, tzinfo=UTC),
                      dt.datetime(2026, 1, 19, 10, tzinfo=UTC),
                      dt.datetime(2026, 2, 3, 15, tzinfo=UTC)]
    with db.reader(cfg.database) as con:
        assert con.execute("SELECT count(*) FROM attendees").fetchone() == (6,)


def test_vdir_add_edit_by_rename_and_delete(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    vdir = tmp_path / "vdir"
    vdir.mkdir()
    (vdir / "displayname").write_text("Work")
    (vdir / "weekly.ics").write_text(weekly())
    me = frozenset({ME})
    first = calendars.sync_files(cfg.database, cfg, "v", vdir, me)
    assert (first.files, first.occurrences) == (1, 3)
    # Add a file; edit the other one the way editors do: write a temp file, rename over it.
    (vdir / "lunch.ics").write_text(ONE_OFF.replace("{stamp}", "20260101T000000Z"))
    tmp = vdir / "weekly.ics.tmp"
    tmp.write_text(weekly(moved=True))
    os.replace(tmp, vdir / "weekly.ics")
    second = calendars.sync_files(cfg.database, cfg, "v", vdir, me)
    assert (second.files, second.unchanged) == (2, 0)
    assert [r[1] for r in meetings(cfg)][-2:] == [dt.datetime(2026, 2, 3, 15, tzinfo=UTC),
                                                  dt.datetime(2026, 2, 10, 12, tzinfo=UTC)]
    lunch = [r for r in meetings(cfg) if r[0].startswith("lunch-1")]
    assert lunch[0][2] == "in_person"
    assert attendees(cfg, lunch[0][0]) == [("carol@example.net", "Carol", "attendee")]
    third = calendars.sync_files(cfg.database, cfg, "v", vdir, me)
    assert (third.files, third.unchanged) == (0, 2)  # nothing changed: nothing parsed
    (vdir / "weekly.ics").unlink()
    fourth = calendars.sync_files(cfg.database, cfg, "v", vdir, me)
    assert fourth.removed == 1
    assert [r[0] for r in meetings(cfg)] == ["lunch-1@example.org|2026-02-10T12:00:00Z"]


def test_a_broken_copy_keeps_what_was_stored(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    ics = tmp_path / "cal.ics"
    ics.write_text(weekly())
    me = frozenset({ME})
    calendars.sync_files(cfg.database, cfg, "work", ics, me)
    ics.write_bytes(b"\x00\x01 garbage, not a calendar")
    result = calendars.sync_files(cfg.database, cfg, "work", ics, me)
    assert result.problems == 1
    assert len(meetings(cfg)) == 3
    with db.reader(cfg.database) as con:
        location, reason = con.execute("SELECT location, reason FROM quarantine").fetchone()
    assert location.startswith(str(ics)) and reason


@dataclass
class Feed:
    """What the test server serves, and what it was asked."""

    body: bytes = b""
    etag: str = '"v1"'
    status: int = 200
    retry_after: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def feed_server() -> Iterator[tuple[Feed, str, http.server.ThreadingHTTPServer]]:
    feed = Feed()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            feed.requests.append({k.lower(): v for k, v in self.headers.items()})
            if feed.status != 200:
                self.send_response(feed.status)
                if feed.retry_after:
                    self.send_header("Retry-After", feed.retry_after)
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == feed.etag:
                self.send_response(304)
                self.send_header("ETag", feed.etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/calendar")
            self.send_header("ETag", feed.etag)
            self.send_header("Content-Length", str(len(feed.body)))
            self.end_headers()
            self.wfile.write(feed.body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/private-s3cr3t-token/basic.ics"
    yield feed, url, server
    server.shutdown()
    server.server_close()


FAST = calendars.FeedPolicy(timeout=5, attempts=3, base_delay=0.01, max_wait=1)


def test_feed_etag_change_and_failures(tmp_path: Path, feed_server: tuple) -> None:
    feed, url, server = feed_server
    cfg = make_config(tmp_path)
    me = frozenset({ME})
    feed.body = weekly().encode()
    first = calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert (first.files, first.occurrences) == (1, 3)
    assert "if-none-match" not in feed.requests[0]

    second = calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert (second.files, second.unchanged) == (0, 1)  # 304: one request, nothing parsed
    assert feed.requests[-1]["if-none-match"] == '"v1"' and len(feed.requests) == 2

    feed.body, feed.etag = weekly(moved=True).encode(), '"v2"'
    third = calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert third.files == 1
    assert [r[1].day for r in meetings(cfg)] == [5, 19, 3]

    # Same content, new ETag and a regenerated DTSTAMP (as Google does): not re-parsed.
    feed.body = weekly(moved=True).replace("DTSTAMP:20260101T000000Z",
                                           "DTSTAMP:20261128T101010Z").encode()
    feed.etag = '"v3"'
    fourth = calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert (fourth.files, fourth.unchanged) == (0, 1)

    feed.status = 500
    with pytest.raises(SourceError) as err:
        calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert str(err.value) == ("feed http://127.0.0.1/<redacted> failed: 500 Internal Server "
                              "Error; stored meetings are kept")
    assert "s3cr3t" not in str(err.value)
    assert len(meetings(cfg)) == 3

    feed.status, feed.etag, feed.body = 200, '"v4"', b"<html>maintenance</html>"
    with pytest.raises(SourceError, match="did not return a calendar"):
        calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert len(meetings(cfg)) == 3

    server.shutdown()
    server.server_close()
    with pytest.raises(SourceError, match=r"failed: .*stored meetings are kept") as err:
        calendars.sync_feed(cfg.database, cfg, "work", url, me, FAST)
    assert "s3cr3t" not in str(err.value)
    assert len(meetings(cfg)) == 3


def test_feed_backs_off_on_429_with_retry_after(tmp_path: Path, feed_server: tuple) -> None:
    feed, url, _ = feed_server
    feed.status, feed.retry_after = 429, "0"
    slept: list[float] = []
    with pytest.raises(SourceError, match="429 Too Many Requests"):
        calendars.fetch_feed(url, None, "2026-11", FAST, sleep=slept.append)
    assert len(feed.requests) == 3 and len(slept) == 2
    assert all(s < 0.01 for s in slept)  # Retry-After: 0 honoured instead of the backoff
    assert calendars.retry_after_seconds("120") == 120
    assert calendars.retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT",
                                         dt.datetime(2026, 10, 21, 7, 27, tzinfo=UTC)) == 60


def test_sync_command_with_a_feed(run: Run, tmp_path: Path, feed_server: tuple) -> None:
    feed, url, _ = feed_server
    feed.body = ONE_OFF.replace("{stamp}", "20260101T000000Z").encode()
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"'
                       f'\nme = ["{ME}"]\nhistory_start = 2025-01-01\n'
                       f'[[calendar]]\nname = "work"\nurl = "{url}"\n')
    proc = run("--config", str(cfg), "sync", check=True)
    assert proc.stdout.strip() == "work: 1 occurrences from 1 changed file, 0 quarantined"
    again = run("--config", str(cfg), "sync", check=True)
    assert again.stdout.strip() == "work: 0 occurrences from 0 changed files, 1 unchanged, " \
                                   "0 quarantined"
    assert "s3cr3t" not in proc.stdout + proc.stderr + again.stdout + again.stderr


def test_http_feed_to_a_remote_host_is_refused_in_config(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="allowed only to loopback hosts"):
        config.parse(b'[[calendar]]\nname = "c"\nurl = "http://cal.example.org/t/basic.ics"\n',
                     tmp_path / "c.toml")


def test_every_real_calendar_is_stored_or_quarantined(tmp_path: Path) -> None:
    """All 402 .ics files of the shared corpus, through the store: nothing escapes."""
    cfg = make_config(tmp_path, history="1990-01-01")
    files = sorted(data_path("ics").rglob("*.ics"))
    assert len(files) >= 400
    total = calendars.import_files(cfg, files, frozenset())
    assert total.files == len(files)
    with db.reader(cfg.database) as con:
        per_file = dict(con.execute("SELECT origin, count(*) FROM meetings GROUP BY 1")
                        .fetchall())
        quarantined = {row[0].split(" (", 1)[0] for row in con.execute(
            "SELECT location FROM quarantine").fetchall()}
        states = con.execute("SELECT count(*) FROM sync_state WHERE source = 'import'"
                             ).fetchone()
    assert states == (len(files),)
    # every file produced meetings or a quarantine entry, or holds no occurrence of mine in
    # the window (and then parsing it again finds nothing to store and nothing wrong)
    silent = [f for f in files if str(f) not in per_file and str(f) not in quarantined]
    assert len(silent) < len(files) / 2
    for f in silent[:40]:
        again = calendars.parse_for(cfg, f.read_bytes(), frozenset())
        assert (again.occurrences, again.problems) == ((), ()), f
