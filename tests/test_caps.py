"""Resource bounds (issue 7, item 2): one test per cap, with an input built to hit it.

Each cap either refuses an input with a clear quarantine reason (the input cannot be used
at all), or keeps a bounded part of it (the input is still a real message or calendar, and
dropping it would lose more than the cap protects) and says so: in the quarantine table for
calendars, in ``MessageRecord.problems`` for mail. The bounce caps only bound the report rows
read from a bounce that is stored either way. Mail goes through the real
import pipeline (``ingest.local``) into a real DuckDB file; calendars through
``ingest.calendars`` with a real file system and a real local HTTP server.

The caps, their values and what happens when each is hit are listed in docs/reliability.md.
"""

from __future__ import annotations

import datetime as dt
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import calendars, dsn, local, mailfiles
from ingest.headers import (
    MAX_DECODED_CHARS,
    MAX_HEADER_BYTES,
    MAX_RECIPIENTS_PARSED,
    MAX_REFERENCES,
    MessageRecord,
    parse_headers,
)
from netaudit import config, db
from netaudit.errors import SourceError
from tests.conftest import Run, write_config
from tests.test_calendars import make_config as calendar_config

UTC = dt.UTC
ME = "robin@example.org"
TOO_BIG = "header block larger than 256 KiB"


def message(n: int, extra: bytes = b"", *, sender: bytes = b"alice@example.com",
            to: bytes = ME.encode()) -> bytes:
    return (b"From: " + sender + b"\nTo: " + to + b"\nDate: Tue, 05 Mar 2024 09:%02d:00"
            b" +0000\nMessage-ID: <m%d@example.com>\n" % (n % 60, n) + extra + b"\nHello.\n")


def import_mail(tmp_path: Path, *paths: Path) -> tuple[Path, local.BatchResult]:
    database = tmp_path / "n.duckdb"
    me = local.prepare_me(database, [ME], [])
    result = local.import_inputs(database, "import", local.discover(list(paths)), me=me)
    return database, result


def query(database: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    with db.reader(database) as con:
        return con.execute(sql, params or []).fetchall()


# ---------------------------------------------------------------------------------------------
# Header block size


def test_header_block_cap_in_a_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.host:2,S").write_bytes(message(1))
    big = b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\n"
    (maildir / "cur" / "2.host:2,S").write_bytes(message(2, big))
    folded = b"X-Folded: a" + b"\r\n b" * (MAX_HEADER_BYTES // 4 + 1) + b"\n"
    (maildir / "new" / "3.host").write_bytes(message(3, folded))
    (maildir / "new" / "4.host").write_bytes(message(4, b"X-Just-Under: " + b"a" * 200_000
                                                     + b"\n"))
    database, result = import_mail(tmp_path, maildir)
    assert (result.new, result.quarantined) == (2, 2)
    assert sorted(query(database, "SELECT location, reason FROM quarantine")) == [
        (str(maildir / "cur" / "2.host:2,S"), TOO_BIG),
        (str(maildir / "new" / "3.host"), TOO_BIG)]
    assert sorted(r[0] for r in query(database, "SELECT message_key FROM messages")) == \
        ["m1@example.com", "m4@example.com"]


def test_header_block_cap_reads_no_more_of_a_huge_file(tmp_path: Path) -> None:
    """A 1 GiB file without a blank line (sparse: NULs, no newline) costs one cap's worth
    of reading, not the file."""
    huge = tmp_path / "huge.eml"
    with open(huge, "wb") as fh:
        fh.write(b"From: alice@example.com\nX-Junk: ")
        fh.truncate(1 << 30)
    assert len(mailfiles.read_header_block(huge)) == MAX_HEADER_BYTES + 1
    database, result = import_mail(tmp_path, huge)
    assert (result.new, result.quarantined) == (0, 1)
    assert query(database, "SELECT location, reason FROM quarantine") == [(str(huge), TOO_BIG)]


def test_mbox_message_header_larger_than_the_cap(tmp_path: Path) -> None:
    """The middle message of an mbox has a 300 KiB header: it alone is quarantined, under
    its own offset, and the messages around it are stored."""
    first = b"From alice Tue Mar  5 09:00:00 2024\n" + message(1)
    middle = (b"From bob Tue Mar  5 09:01:00 2024\n"
              + message(2, b"X-Big: " + b"b" * (300 * 1024) + b"\n", sender=b"bob@example.com"))
    last = b"From carol Tue Mar  5 09:02:00 2024\n" + message(3, sender=b"carol@example.com")
    mbox = tmp_path / "takeout.mbox"
    mbox.write_bytes(first + middle + last)
    database, result = import_mail(tmp_path, mbox)
    assert (result.new, result.quarantined) == (2, 1)
    assert query(database, "SELECT location, reason FROM quarantine") == \
        [(f"{mbox}#{len(first)}", TOO_BIG)]
    assert sorted(r[0] for r in query(database, "SELECT from_addr FROM messages")) == \
        ["alice@example.com", "carol@example.com"]


def test_status_counts_the_quarantined_header(run: Run, tmp_path: Path) -> None:
    """The same cap seen by a user: `netaudit import` then `netaudit status --json`."""
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\nme = ["{ME}"]\n')
    eml = tmp_path / "big.eml"
    eml.write_bytes(message(1, b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\n"))
    proc = run("--config", str(cfg), "import", str(eml))
    assert proc.returncode == 0, proc.stderr
    assert "0 new, 0 already stored, 1 quarantined" in proc.stdout
    status = run("--config", str(cfg), "status", "--json", check=True)
    assert '"quarantined": 1' in status.stdout


# ---------------------------------------------------------------------------------------------
# Recipients parsed


def test_recipient_cap_keeps_the_first_and_says_so(tmp_path: Path) -> None:
    """5000 addresses in To (and 3000 in Cc): the message is real mail and is stored, with the
    first 2000 of each role. It is bulk mail either way (more than max_recipients), so it
    never becomes an interaction."""
    to = b", ".join(b"user%d@example.net" % i for i in range(5000))
    cc = b", ".join(b"Person %d <p%d@example.org>" % (i, i) for i in range(3000))
    raw = message(1, b"To: " + to + b"\nCc: " + cc + b"\n")
    rec = parse_headers(raw)
    assert isinstance(rec, MessageRecord)
    assert "to: only the first 2000 addresses kept" in rec.problems
    assert "cc: only the first 2000 addresses kept" in rec.problems
    eml = tmp_path / "announce.eml"
    eml.write_bytes(raw)
    database, result = import_mail(tmp_path, eml)
    assert (result.new, result.quarantined) == (1, 0)
    rows = dict(query(database, "SELECT role, count(*) FROM participants GROUP BY role"))
    # the message's own To: ME comes first, then 1999 of the 5000
    assert rows == {"from": 1, "to": MAX_RECIPIENTS_PARSED, "cc": MAX_RECIPIENTS_PARSED}
    assert query(database, "SELECT recipient_count FROM messages") == \
        [(2 * MAX_RECIPIENTS_PARSED,)]
    last_to = query(database, "SELECT address FROM participants WHERE role = 'to' "
                              "ORDER BY position DESC LIMIT 1")
    assert last_to == [("user1998@example.net",)]
    assert query(database, "SELECT count(*) FROM interactions") == [(0,)]


# ---------------------------------------------------------------------------------------------
# References


def test_references_cap_keeps_the_root_so_the_thread_holds(tmp_path: Path) -> None:
    """A reply deep in a 500-message thread: References is cut to 200, but the root (which
    names the thread) is kept with the 199 nearest parents, so the reply stays in the thread
    its first message started."""
    root = message(0, sender=ME.encode(), to=b"alice@example.com")
    refs = [b"<m0@example.com>"] + [b"<t%d@example.com>" % i for i in range(1, 500)]
    reply = message(1, b"In-Reply-To: <t499@example.com>\nReferences: "
                    + b"\r\n ".join(refs) + b"\n")
    rec = parse_headers(reply)
    assert isinstance(rec, MessageRecord)
    assert len(rec.references) == MAX_REFERENCES
    assert rec.references[0] == "m0@example.com"
    assert rec.references[1] == "t301@example.com" and rec.references[-1] == "t499@example.com"
    assert "references: only the first and the last 199 kept" in rec.problems
    (tmp_path / "root.eml").write_bytes(root)
    (tmp_path / "reply.eml").write_bytes(reply)
    database, _ = import_mail(tmp_path, tmp_path / "root.eml", tmp_path / "reply.eml")
    assert query(database, "SELECT len(refs), refs[1], refs[200] FROM messages "
                           "WHERE message_key = 'm1@example.com'") == \
        [(200, "m0@example.com", "t499@example.com")]
    threads = dict(query(database, "SELECT message_key, thread_id FROM message_threads"))
    assert threads == {"m0@example.com": "m0@example.com", "m1@example.com": "m0@example.com"}
    # so the reply counts as a reply from the other side, not as a thread they started
    assert query(database, "SELECT direction, starts_thread, is_reply FROM interactions "
                           "ORDER BY ts") == [("sent", True, False), ("received", False, True)]


# ---------------------------------------------------------------------------------------------
# Decoded header text


def test_encoded_words_beyond_the_decode_cap_are_left_encoded() -> None:
    """The stdlib's decode_header is quadratic in the number of encoded words; only the first
    MAX_DECODED_CHARS of a value are decoded (a Subject is stored only with store_subjects)."""
    word = b"=?utf-8?q?=C3=BC?="
    n = 2 * MAX_DECODED_CHARS // len(word)
    rec = parse_headers(b"From: a@x.example\nSubject: " + word * n + b"\n", keep_subject=True)
    assert isinstance(rec, MessageRecord) and rec.subject is not None
    assert rec.subject.startswith("ü" * 100)
    assert rec.subject.count("ü") <= MAX_DECODED_CHARS // len(word) + 1


# ---------------------------------------------------------------------------------------------
# Calendars: file size and occurrences per series


def make_config(tmp_path: Path, history: str = "2024-01-01") -> config.Config:
    return calendar_config(tmp_path, history)


LUNCH = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//caps//EN\r\nBEGIN:VEVENT\r\n"
         "UID:lunch@example.org\r\nDTSTART:20250210T120000Z\r\nDTEND:20250210T130000Z\r\n"
         f"ORGANIZER:mailto:{ME}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:carol@example.net\r\n"
         "END:VEVENT\r\nEND:VCALENDAR\r\n")


def test_calendar_file_larger_than_the_cap(tmp_path: Path) -> None:
    """A vdir with a normal event and a file one byte over MAX_CALENDAR_BYTES (sparse, so it
    costs no disk and, being refused by its size, no reading): the big one is quarantined
    without being read, the other is stored."""
    cfg = make_config(tmp_path)
    vdir = tmp_path / "vdir"
    vdir.mkdir()
    (vdir / "lunch.ics").write_text(LUNCH)
    big = vdir / "big.ics"
    with open(big, "wb") as fh:
        fh.write(LUNCH.replace("END:VCALENDAR\r\n", "").encode())
        fh.truncate(calendars.MAX_CALENDAR_BYTES + 1)
    result = calendars.sync_files(cfg.database, cfg, "work", vdir, frozenset({ME}))
    assert (result.files, result.occurrences, result.problems) == (2, 1, 1)
    assert query(cfg.database, "SELECT location, reason FROM quarantine") == \
        [(str(big), "calendar file larger than 20 MB")]
    assert query(cfg.database, "SELECT uid, origin FROM meetings") == \
        [("lunch@example.org", str(vdir / "lunch.ics"))]


def test_endless_rrule_is_capped_per_series(tmp_path: Path) -> None:
    """An hourly RRULE without end inside the window would be ~25,000 occurrences: the first
    5000 are stored, the cut is quarantined with its reason, and the other event is kept."""
    cfg = make_config(tmp_path, history="2024-01-01")
    endless = LUNCH.replace("BEGIN:VEVENT", "BEGIN:VEVENT\r\nUID:endless@example.org\r\n"
                            "DTSTART:20240101T000000Z\r\nDTEND:20240101T003000Z\r\n"
                            "RRULE:FREQ=HOURLY\r\nEND:VEVENT\r\nBEGIN:VEVENT", 1)
    ics = tmp_path / "cal.ics"
    ics.write_text(endless)
    result = calendars.sync_files(cfg.database, cfg, "work", ics, frozenset({ME}))
    assert result.problems == 1
    assert query(cfg.database, "SELECT location, reason FROM quarantine") == [
        (f"{ics} (UID endless@example.org)",
         "more than 5000 occurrences in the window; kept the first 5000")]
    counts = dict(query(cfg.database, "SELECT uid, count(*) FROM meetings GROUP BY uid"))
    assert counts == {"endless@example.org": 5000, "lunch@example.org": 1}
    assert query(cfg.database, "SELECT max(starts_at) FROM meetings WHERE uid = "
                               "'endless@example.org'") == \
        [(dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=4999),)]
    # synced again (the file changed): still 5000, nothing doubled
    ics.write_text(endless + "\r\n")
    calendars.sync_files(cfg.database, cfg, "work", ics, frozenset({ME}))
    assert query(cfg.database, "SELECT count(*), count(DISTINCT occurrence_key) FROM meetings") \
        == [(5001, 5001)]


# ---------------------------------------------------------------------------------------------
# HTTP feed size


MB = 1_000_000
OVER = calendars.MAX_CALENDAR_BYTES + MB  # 21 MB: the real cap, not a patched one
ENDLESS = 50 * calendars.MAX_CALENDAR_BYTES  # what a streaming server would send if let
START = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-PAD:"


class Feed:
    """What the server does (``mode``) and how many body bytes it managed to send."""

    def __init__(self) -> None:
        self.mode = "good"
        self.sent = 0


@pytest.fixture
def feed() -> Iterator[tuple[Feed, str]]:
    """A local server whose answer lies or overflows in the way ``Feed.mode`` says."""
    state = Feed()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            mode = state.mode
            state.sent = 0
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/calendar")
                if mode == "good":
                    body = LUNCH.encode()
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self._send(body)
                elif mode == "declared-too-big":  # honest about a size over the cap
                    self.send_header("Content-Length", str(OVER))
                    self.end_headers()
                    self._send(START)
                elif mode == "no-length":  # HTTP/1.0 style: the body ends when the socket does
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self._stream(ENDLESS)
                elif mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self._stream(ENDLESS, chunked=True)
                elif mode == "understated":  # claims 1000 bytes, then streams on
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self._stream(ENDLESS)
                elif mode == "overstated":  # claims 5000 bytes, sends 100 and hangs up
                    self.send_header("Content-Length", "5000")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self._send(START + b"x" * (100 - len(START)))
                self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading: as it should

        def _send(self, data: bytes) -> None:
            self.wfile.write(data)
            state.sent += len(data)

        def _stream(self, total: int, chunked: bool = False) -> None:
            piece = START + b"x" * (MB - len(START))
            while state.sent < total:
                self._send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/private-t0ken/basic.ics"
    server.shutdown()
    server.server_close()


ONCE = calendars.FeedPolicy(timeout=10, attempts=1, base_delay=0.01, max_wait=1)


@pytest.mark.parametrize(("mode", "error"), [
    ("declared-too-big", re.escape(f"feed is larger than 20 MB ({OVER} bytes)")),
    ("no-length", "feed is larger than 20 MB"),
    ("chunked", "feed is larger than 20 MB"),
    # httpx's own words, with both numbers
    ("overstated", r"feed http://127\.0\.0\.1/<redacted> failed: .*\b100\b.*\b5000\b.*; "
                   "stored meetings are kept"),
])
def test_feed_size_cap_and_lying_servers(tmp_path: Path, feed: tuple[Feed, str],
                                         mode: str, error: str) -> None:
    state, url = feed
    cfg = make_config(tmp_path)
    me = frozenset({ME})
    assert calendars.sync_feed(cfg.database, cfg, "work", url, me, ONCE).occurrences == 1
    state.mode = mode
    with pytest.raises(SourceError) as err:
        calendars.sync_feed(cfg.database, cfg, "work", url, me, ONCE)
    assert re.fullmatch(error, str(err.value)), str(err.value)
    assert "t0ken" not in str(err.value)
    if mode in ("no-length", "chunked"):  # the client hung up soon after the cap
        assert calendars.MAX_CALENDAR_BYTES < state.sent < calendars.MAX_CALENDAR_BYTES + 16 * MB
    assert query(cfg.database, "SELECT uid FROM meetings") == [("lunch@example.org",)]


def test_understated_length_reads_only_what_was_declared(feed: tuple[Feed, str]) -> None:
    """A server that declares 1000 bytes and streams on: the client takes the 1000 bytes it
    was promised and reads nothing more."""
    state, url = feed
    state.mode = "understated"
    code, body, _ = calendars.fetch_feed(url, None, "2026-11", ONCE)
    assert (code, len(body)) == (200, 1000)
    assert body.startswith(START)


# ---------------------------------------------------------------------------------------------
# Bounces: the one place a body is read


def bounce(report: bytes, *, before: bytes = b"", nested: int = 0) -> bytes:
    inner = b"".join(b"--n%d\nContent-Type: multipart/mixed; boundary=n%d\n\n" % (i, i + 1)
                     for i in range(nested))
    return (b"From: MAILER-DAEMON@mx.example.org\nTo: " + ME.encode() + b"\n"
            b"Date: Tue, 05 Mar 2024 09:00:00 +0000\nMessage-ID: <bounce@mx.example.org>\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
            b"--b\nContent-Type: text/plain\n\n" + before + b"\n--b\n"
            b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
            + report + b"\n--b\nContent-Type: multipart/mixed; boundary=n0\n\n" + inner
            + b"\n--b--\n")


def recipients(n: int, pad: int = 0) -> bytes:
    return b"".join(b"Final-Recipient: rfc822; u%d@example.net\nAction: failed\nStatus: 5.1.1\n"
                    b"Diagnostic-Code: smtp; 550 %s\n\n" % (i, b"x" * pad) for i in range(n))


@pytest.mark.parametrize(("name", "raw", "stored"), [
    ("few", bounce(recipients(3)), 3),
    ("recipient cap", bounce(recipients(3000)), dsn.MAX_RECIPIENTS),
    ("part size cap", bounce(recipients(400, pad=2000)), None),  # ~2 KiB per recipient
    ("shallow nesting", bounce(recipients(3), nested=3), 3),
    ("message read cap", bounce(recipients(3), before=b"x" * mailfiles.MAX_MESSAGE_BYTES), 0),
    ("nesting cap", bounce(recipients(3), nested=mailfiles.MAX_MULTIPARTS), 0),
])
def test_bounce_caps(tmp_path: Path, name: str, raw: bytes, stored: int | None) -> None:
    """The bounce itself is always stored (flagged as a bounce); only the report rows are
    bounded."""
    if stored is None:  # the recipients whose Final-Recipient line lies in the first 256 KiB
        part = mailfiles.delivery_status_part(raw)
        assert part is not None and len(part) > 2 * dsn.MAX_PART_BYTES
        stored = len(re.findall(rb"Final-Recipient: rfc822; u\d+@example\.net\n",
                                part[:dsn.MAX_PART_BYTES]))
        assert 100 < stored < 200
    eml = tmp_path / "bounce.eml"
    eml.write_bytes(raw)
    database, result = import_mail(tmp_path, eml)
    assert (result.new, result.quarantined) == (1, 0)
    assert query(database, "SELECT is_dsn FROM messages") == [(True,)]
    assert query(database, "SELECT count(*) FROM bounces") == [(stored,)]
