"""Calendars as sources: HTTP feeds, .ics files and vdirs, stored as meeting occurrences.

Parsing is ``ingest.ics_parse`` (pure); this module fetches, decides what changed, and
replaces stored occurrences per UID in one transaction. A fetch or parse that fails never
deletes anything: stored meetings stay until a good copy of the calendar says otherwise.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ingest.ics_parse import CalendarParse, parse_calendar
from ingest.safe_files import NotRegularFile, TooLarge, path_text, read_capped
from ingest.store import Quarantined, forgotten_hashes, write_quarantine
from netaudit import __version__, db
from netaudit.config import Config, Source
from netaudit.db import Connection
from netaudit.errors import SourceError
from netaudit.privacy import forget_hash

log = logging.getLogger(__name__)

MAX_CALENDAR_BYTES = 20_000_000
FILES_PER_BATCH = 50
FUTURE = dt.timedelta(days=365)  # occurrences are stored a year ahead; reports cut at as-of
_DTSTAMP = re.compile(rb"^DTSTAMP[;:][^\r\n]*(\r?\n[ \t][^\r\n]*)*\r?\n", re.MULTILINE)
# vdir metadata and editor leftovers (vdirsyncer's vdir spec)
_IGNORED = {"color", "displayname", "description", "order"}


@dataclass(slots=True)
class CalendarResult:
    files: int = 0  # files or feeds parsed
    unchanged: int = 0  # skipped because nothing changed
    removed: int = 0  # files gone from a vdir
    occurrences: int = 0  # occurrences stored by this run
    problems: int = 0  # quarantined problems

    def summary(self) -> str:
        parts = [f"{self.occurrences:,} occurrences from {self.files:,} changed "
                 f"{'file' if self.files == 1 else 'files'}"]
        if self.unchanged:
            parts.append(f"{self.unchanged:,} unchanged")
        if self.removed:
            parts.append(f"{self.removed:,} removed")
        parts.append(f"{self.problems:,} quarantined")
        return ", ".join(parts)


def redact_url(url: str) -> str:
    """A feed URL as logs may show it: the host only, as its path and query hold the token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/<redacted>"


def normalized_hash(body: bytes) -> str:
    """SHA-256 of the body without DTSTAMP lines, which Google regenerates on every request."""
    return hashlib.sha256(_DTSTAMP.sub(b"", body.replace(b"\r\n", b"\n"))).hexdigest()


def window(cfg: Config, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime, str]:
    """(start, end, bucket): the expansion window and a label that changes monthly, so an
    unchanged calendar is expanded again once a month as the window moves on."""
    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime.combine(cfg.history_start, dt.time(), dt.UTC)
    bucket = now.strftime("%Y-%m")
    end = dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC) + FUTURE + dt.timedelta(days=31)
    return start, end, bucket


def parse_for(cfg: Config, data: bytes, me: frozenset[str]) -> CalendarParse:
    start, end, _ = window(cfg)
    return parse_calendar(data, me=me, window_start=start, window_end=end,
                          default_tz=cfg.timezone, max_bytes=MAX_CALENDAR_BYTES)


def _stage(con: Connection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE stage_meetings AS "
                "SELECT * EXCLUDE (ingested_at) FROM meetings LIMIT 0")
    con.execute("CREATE OR REPLACE TEMP TABLE stage_attendees AS SELECT * FROM attendees LIMIT 0")
    con.execute("CREATE OR REPLACE TEMP TABLE stage_replace (origin VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE stage_keep (origin VARCHAR, uid VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE stage_cancelled (occurrence_key VARCHAR)")


def store_calendars(con: Connection, calendar: str, items: list[tuple[str, CalendarParse]], *,
                    keep_summary: bool = False) -> tuple[int, int]:
    """Replace what each origin (a file or a feed) contributed to ``calendar``.

    UIDs whose events failed keep their stored occurrences; a parse that produced nothing
    but a calendar-level problem changes nothing. Set-based over the whole batch, so a vdir
    of hundreds of files costs a handful of statements. Returns (occurrences, problems).
    Runs inside the caller's transaction.
    """
    quarantined = [Quarantined(f"{origin} ({p.location})", p.reason)
                   for origin, parse in items for p in parse.problems]
    write_quarantine(con, calendar, quarantined)
    usable = [(o, p) for o, p in items if p.uids or p.cancelled_keys or not p.problems]
    if not usable:
        return 0, len(quarantined)  # only broken copies: keep everything stored
    _stage(con)
    with con.appender("stage_keep") as app:
        app.append_rows((origin, uid) for origin, p in usable for uid in p.failed_uids)
    # A failed UID keeps what is stored for it; one with nothing stored yet gets what this
    # parse could read (a capped series: its first occurrences), rather than nothing.
    held = set(con.execute("SELECT k.origin, k.uid FROM stage_keep k SEMI JOIN meetings m "
                           "ON m.calendar = ? AND m.origin = k.origin AND m.uid = k.uid",
                           [calendar]).fetchall())
    fresh = [(origin, o) for origin, p in usable for o in p.occurrences
             if o.uid not in p.failed_uids or (origin, o.uid) not in held]
    with con.appender("stage_meetings") as app:
        app.append_rows(
            (calendar, o.occurrence_key, o.uid, o.start, o.end, o.start_date, o.end_date,
             o.all_day, o.mode, o.organizer_is_me, o.summary if keep_summary else None, origin)
            for origin, o in fresh)
    forgotten = forgotten_hashes(con)
    with con.appender("stage_attendees") as app:
        app.append_rows((calendar, o.occurrence_key, c.address, c.name, c.role, c.partstat)
                        for _, o in fresh for c in o.counterparts
                        if not forgotten or forget_hash(c.address) not in forgotten)
    with con.appender("stage_replace") as app:  # read whole: what is gone from it is gone
        app.append_rows((origin,) for origin, p in usable if p.uids)
    with con.appender("stage_cancelled") as app:
        app.append_rows((key,) for _, p in usable for key in p.cancelled_keys)
    con.execute("""
        DELETE FROM meetings m WHERE m.calendar = ?
          AND m.origin IN (SELECT origin FROM stage_replace)
          AND NOT EXISTS (SELECT 1 FROM stage_keep k WHERE k.origin = m.origin
                          AND k.uid = m.uid)""", [calendar])
    con.execute("DELETE FROM meetings WHERE calendar = ? AND occurrence_key IN "
                "(SELECT occurrence_key FROM stage_cancelled)", [calendar])
    _drop_orphan_attendees(con, calendar)
    con.execute("INSERT INTO meetings SELECT s.*, current_timestamp FROM stage_meetings s")
    con.execute("INSERT INTO attendees SELECT * FROM stage_attendees")
    db.people_inputs_changed(con)
    return len(fresh), len(quarantined)


def _drop_orphan_attendees(con: Connection, calendar: str) -> None:
    con.execute("DELETE FROM attendees a WHERE a.calendar = ? AND NOT EXISTS (SELECT 1 FROM "
                "meetings m WHERE m.calendar = a.calendar AND "
                "m.occurrence_key = a.occurrence_key)", [calendar])


def forget_origin(con: Connection, calendar: str, origin: str) -> None:
    """A vdir file was deleted: its events are gone from the calendar."""
    con.execute("DELETE FROM meetings WHERE calendar = ? AND origin = ?", [calendar, origin])
    _drop_orphan_attendees(con, calendar)
    db.people_inputs_changed(con)


def _get_state(con: Connection, source: str, scope: str) -> tuple[str | None, ...] | None:
    row = con.execute("SELECT etag, last_modified, content_hash FROM sync_state "
                      "WHERE source = ? AND scope = ?", [source, scope]).fetchone()
    return tuple(row) if row else None


def _set_state(con: Connection, source: str, scope: str, *, etag: str | None = None,
               last_modified: str | None = None, content_hash: str | None = None) -> None:
    con.execute("DELETE FROM sync_state WHERE source = ? AND scope = ?", [source, scope])
    con.execute("INSERT INTO sync_state (source, scope, etag, last_modified, content_hash) "
                "VALUES (?, ?, ?, ?, ?)", [source, scope, etag, last_modified, content_hash])


# ------------------------------------------------------------------------------------------
# files and vdirs
# ------------------------------------------------------------------------------------------

def calendar_files(path: Path) -> Iterator[Path]:
    """The .ics items of a vdir (or the path itself), skipping temp and metadata files.

    Anything named *.ics that is not a folder is listed, FIFOs and devices too: reading
    refuses them with a reason for the quarantine, instead of their vanishing unsaid.
    """
    if not path.is_dir():
        yield path
        return
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        name = entry.name
        if (name.startswith(".") or name in _IGNORED or not name.lower().endswith(".ics")
                or entry.is_dir()):
            continue
        yield Path(entry.path)


def _file_fingerprint(path: Path, bucket: str) -> str:
    st = path.stat()
    return f"{bucket}:{st.st_mtime_ns}:{st.st_ino}:{st.st_size}"


def sync_files(db_path: Path, cfg: Config, calendar: str, root: Path | list[Path],
               me: frozenset[str], *, track_removals: bool = True) -> CalendarResult:
    """Bring a .ics file or a vdir up to date: changed files re-parsed, deleted ones removed.

    A file counts as changed when its (mtime_ns, inode, size) differs, which also catches
    the write-to-temp-then-rename that editors and vdirsyncer do. Only regular files are
    opened, and never more than the cap is read, whatever ``stat`` said (a symlink to
    ``/dev/zero`` has size 0); a FIFO, socket or device is quarantined. A path is stored
    (origin, sync state, quarantine) as ``path_text``: a name that is not UTF-8 keeps its
    bytes as ``\\xNN``.
    """
    _, _, bucket = window(cfg)
    result = CalendarResult()
    with db.writer(db_path) as con:  # a writer: it also creates and migrates the file
        known = dict(con.execute("SELECT scope, content_hash FROM sync_state WHERE source = ?",
                                 [calendar]).fetchall())
    seen: set[str] = set()
    pending: list[tuple[str, str, CalendarParse | str]] = []  # a str: why it was not read

    def flush() -> None:
        """Write parsed files in one short transaction: one open per batch, not per file."""
        if not pending:
            return
        refused = [Quarantined(scope, p) for scope, _, p in pending if isinstance(p, str)]
        parsed = [(scope, p) for scope, _, p in pending if not isinstance(p, str)]
        with db.writer(db_path) as con:
            con.execute("BEGIN TRANSACTION")
            write_quarantine(con, calendar, refused)
            stored, problems = store_calendars(con, calendar, parsed,
                                               keep_summary=cfg.store_subjects)
            for scope, fingerprint, _ in pending:
                _set_state(con, calendar, scope, content_hash=fingerprint)
            con.execute("COMMIT")
        result.occurrences += stored
        result.problems += problems + len(refused)
        result.files += len(pending)
        pending.clear()

    for path in calendar_files(root) if isinstance(root, Path) else root:
        scope = path_text(path)
        seen.add(scope)
        try:
            fingerprint = _file_fingerprint(path, bucket)
            if known.get(scope) == fingerprint:
                result.unchanged += 1
                continue
            data = read_capped(path, MAX_CALENDAR_BYTES)
        except NotRegularFile as exc:
            pending.append((scope, fingerprint, exc.strerror or "not a regular file"))
        except TooLarge:
            pending.append((scope, fingerprint, f"calendar file larger than "
                                                f"{MAX_CALENDAR_BYTES // 1_000_000} MB"))
        except OSError as exc:  # vanished between listing and reading: next run sees it
            log.info("%s: skipped %s: %s", calendar, scope, exc.strerror)
            continue
        else:
            pending.append((scope, fingerprint, parse_for(cfg, data, me)))
        if len(pending) >= FILES_PER_BATCH:
            flush()
    flush()
    gone = [scope for scope in known if scope not in seen] if track_removals else []
    if gone:
        with db.writer(db_path) as con:
            con.execute("BEGIN TRANSACTION")
            for scope in gone:
                forget_origin(con, calendar, scope)
                con.execute("DELETE FROM sync_state WHERE source = ? AND scope = ?",
                            [calendar, scope])
            con.execute("COMMIT")
        result.removed = len(gone)
    return result


# ------------------------------------------------------------------------------------------
# HTTP feeds
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FeedPolicy:
    """How hard to try; tests shorten the waits."""

    timeout: float = 30.0
    attempts: int = 4
    max_wait: float = 120.0  # longest single Retry-After honoured within one sync
    base_delay: float = 2.0


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise SourceError(f"feed is larger than {limit // 1_000_000} MB ({declared} bytes)")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise SourceError(f"feed is larger than {limit // 1_000_000} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_feed(url: str, state: tuple[str | None, ...] | None, bucket: str,
               policy: FeedPolicy, sleep: Callable[[float], None] = time.sleep
               ) -> tuple[int, bytes, dict[str, str]]:
    """GET a feed conditionally; (status, body, headers). Retries 429 and 5xx with backoff.

    Conditional headers are sent only while the stored copy belongs to this month's window;
    once a month the whole feed is fetched and expanded again.
    """
    headers = {"User-Agent": f"netaudit/{__version__}", "Accept": "text/calendar, */*"}
    if state and state[2] and state[2].startswith(bucket + ":"):
        if state[0]:
            headers["If-None-Match"] = state[0]
        if state[1]:
            headers["If-Modified-Since"] = state[1]
    shown = redact_url(url)
    last = ""
    with httpx.Client(timeout=policy.timeout, follow_redirects=True, max_redirects=5) as client:
        for attempt in range(policy.attempts):
            try:
                with client.stream("GET", url, headers=headers) as response:
                    code = response.status_code
                    if code == 304:
                        return 304, b"", dict(response.headers)
                    if code == 200:
                        body = _read_capped(response, MAX_CALENDAR_BYTES)
                        return 200, body, dict(response.headers)
                    last = f"{code} {response.reason_phrase}".strip()
                    if code != 429 and code < 500:
                        raise SourceError(f"feed {shown} answered {last}")
                    wait = retry_after_seconds(response.headers.get("retry-after"))
            except httpx.HTTPError as exc:
                last = _transport_error(exc, url)
                wait = None
            if attempt + 1 == policy.attempts:
                break
            delay = wait if wait is not None else policy.base_delay * 2 ** attempt
            if delay > policy.max_wait:
                break
            sleep(delay + random.uniform(0, policy.base_delay / 4))
    raise SourceError(f"feed {shown} failed: {last}; stored meetings are kept")


def _transport_error(exc: httpx.HTTPError, url: str) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace(url, redact_url(url))


def sync_feed(db_path: Path, cfg: Config, calendar: str, url: str, me: frozenset[str],
              policy: FeedPolicy = FeedPolicy()) -> CalendarResult:
    """One feed: unchanged (304 or same content) costs one request and no parsing."""
    _, _, bucket = window(cfg)
    scope = "feed"
    with db.writer(db_path) as con:
        state = _get_state(con, calendar, scope)
    code, body, headers = fetch_feed(url, state, bucket, policy)
    result = CalendarResult()
    if code == 304:
        result.unchanged = 1
        return result
    digest = f"{bucket}:{normalized_hash(body)}"
    etag, modified = headers.get("etag"), headers.get("last-modified")
    if state and state[2] == digest:
        with db.writer(db_path) as con:  # same content under a new ETag: remember the ETag
            _set_state(con, calendar, scope, etag=etag, last_modified=modified,
                       content_hash=digest)
        result.unchanged = 1
        return result
    if b"BEGIN:VCALENDAR" not in body[:4096].upper():
        raise SourceError(f"feed {redact_url(url)} did not return a calendar; stored meetings "
                          "are kept")
    parse = parse_for(cfg, body, me)
    with db.writer(db_path) as con:
        con.execute("BEGIN TRANSACTION")
        stored, problems = store_calendars(con, calendar, [(redact_url(url), parse)],
                                           keep_summary=cfg.store_subjects)
        _set_state(con, calendar, scope, etag=etag, last_modified=modified, content_hash=digest)
        con.execute("COMMIT")
    result.files, result.occurrences, result.problems = 1, stored, problems
    return result


def sync_calendar(cfg: Config, source: Source, me: frozenset[str]) -> str:
    """A [[calendar]] source; returns its summary line."""
    if source["url"]:
        return sync_feed(cfg.database, cfg, source.name, source["url"], me).summary()
    path = Path(source["path"])
    if not path.exists():
        raise SourceError(f"{path_text(path)} does not exist")
    return sync_files(cfg.database, cfg, source.name, path, me).summary()


def import_files(cfg: Config, paths: list[Path], me: frozenset[str]) -> CalendarResult:
    """`netaudit import` of .ics files: stored under the calendar name "import"."""
    return sync_files(cfg.database, cfg, "import", paths, me, track_removals=False)
