"""Saving ingested mail: bulk appends through a staging table, deduplicated by message key.

The caller opens the write connection (``netaudit.db.writer``) and the transaction, so a
source's position can move in the same transaction as the events it covers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.safe_files import path_text
from netaudit.db import Connection, people_inputs_changed
from netaudit.privacy import forget_hash

if TYPE_CHECKING:  # the parser is not loaded by a sync that has nothing to parse
    from ingest.headers import MessageRecord

MESSAGE_COLUMNS = (
    "message_key", "message_id", "source", "location", "sent_at", "date_source", "from_addr",
    "from_name", "direction", "recipient_count", "in_reply_to", "refs", "subject",
    "automated_reason", "is_dsn", "size_bytes", "ingested_at", "thread_hint", "subject_key",
    "subject_prefix",
)
PARTICIPANT_COLUMNS = ("message_key", "role", "position", "address", "name")


@dataclass(frozen=True, slots=True)
class Quarantined:
    location: str
    reason: str


@dataclass(slots=True)
class BatchResult:
    new: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: BatchResult) -> None:
        self.new += other.new
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined

    @property
    def seen(self) -> int:
        return self.new + self.duplicates + self.quarantined


# The staging tables hold what varies per message in the cheapest types the appender takes:
# converting an aware datetime costs the appender about 1 µs and a Python list about 2 µs
# per value, so dates arrive as microseconds since the epoch and References as one string
# (message ids hold no white space), and SQL turns them back. The source and the time of
# ingestion are the same for the whole batch and are filled in by SQL. Per message this
# made the write about three times cheaper, most of a sync's time after parsing.
_STAGE_MESSAGES = """
    CREATE OR REPLACE TEMP TABLE stage_messages (
        seq INTEGER, message_key VARCHAR, message_id VARCHAR, location VARCHAR,
        sent_us BIGINT, date_source VARCHAR, from_addr VARCHAR, from_name VARCHAR,
        direction VARCHAR, recipient_count INTEGER, in_reply_to VARCHAR, refs VARCHAR,
        subject VARCHAR, automated_reason VARCHAR, is_dsn BOOLEAN, size_bytes BIGINT,
        thread_hint VARCHAR, subject_key VARCHAR, subject_prefix VARCHAR)"""
_STAGE_KEYS = "CREATE OR REPLACE TEMP TABLE stage_keys (seq INTEGER, message_key VARCHAR)"
_STAGE_PARTICIPANTS = """
    CREATE OR REPLACE TEMP TABLE stage_participants (
        seq INTEGER, role VARCHAR, position INTEGER, address VARCHAR, name VARCHAR)"""
# MESSAGE_COLUMNS in order, computed from stage_messages s; $1 is the source, $2 the time.
_MESSAGE_VALUES = (
    "s.message_key", "s.message_id", "$1", "s.location",
    "timezone('UTC', make_timestamp(s.sent_us))", "s.date_source", "s.from_addr",
    "s.from_name", "s.direction", "s.recipient_count", "s.in_reply_to",
    "CASE WHEN s.refs = '' THEN []::VARCHAR[] ELSE string_split(s.refs, ' ') END",
    "s.subject", "s.automated_reason", "s.is_dsn", "s.size_bytes", "$2", "s.thread_hint",
    "s.subject_key", "s.subject_prefix",
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _stage(con: Connection) -> None:
    con.execute(_STAGE_MESSAGES)
    con.execute(_STAGE_PARTICIPANTS)


def _micros(when: dt.datetime | None) -> int | None:
    return None if when is None else (when - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class Bounce:
    """One failed (or delayed) recipient from a delivery status notification.

    ``reported_at`` is when delivery failed: the report's Last-Attempt-Date, else the date of
    the notification itself (the message ``message_key``). ``arrival_at`` is its Arrival-Date,
    when the message that bounced reached the reporting server: about when it was sent.
    """

    message_key: str
    recipient: str
    action: str | None
    status: str | None
    reported_at: dt.datetime | None
    arrival_at: dt.datetime | None


MessageRow = tuple[Any, ...]  # stage_messages' columns in order, seq (the index) first
ParticipantRow = tuple[int, str, int, str, str | None]  # (message index, role, position, ...)


@dataclass(frozen=True, slots=True)
class Rows:
    """A batch of messages as the staging tables take them.

    Plain tuples, so a batch is cheap to hand to another process (ingest/imap_commit.py):
    pickling a MessageRecord costs about 10 µs, its row about 2 µs.
    """

    messages: list[MessageRow]
    participants: list[ParticipantRow]


def message_rows(records: Sequence[tuple[str, MessageRecord]],
                 seqs: Sequence[int] | None = None) -> Rows:
    """Records (with their locations) as staging rows; pure.

    ``seqs`` are the records' places in their batch when it was split (the first copy of a
    message key in batch order is the one stored); by default their order here.
    """
    micros = _micros
    numbered = zip(seqs, records, strict=True) if seqs is not None else enumerate(records)
    messages = []
    participants = []
    for index, (loc, r) in numbered:
        messages.append(
            (index, r.message_key, r.message_id, loc, micros(r.date), r.date_source, r.from_addr,
             r.from_name, r.direction, r.recipient_count, r.in_reply_to, " ".join(r.references),
             r.subject, r.automated_reason, r.is_dsn, r.size, r.thread_hint, r.subject_key,
             r.subject_prefix))
        participants.extend([(index, p.role, p.position, p.address, p.name)
                             for p in r.participants])
    return Rows(messages, participants)


def write_mail_batch(con: Connection, source: str,
                     records: Sequence[tuple[str, MessageRecord]],
                     quarantined: Sequence[Quarantined] = (),
                     bounces: Sequence[Bounce] = ()) -> BatchResult:
    """Store new messages and quarantine entries; anything already stored is skipped.

    Runs inside the caller's transaction. ``records`` pairs each message with its location.
    """
    return write_rows(con, source, message_rows(records), quarantined, bounces)


_FROM_ADDR = 6  # where from_addr is in a MessageRow


def write_rows(con: Connection, source: str, rows: Rows,
               quarantined: Sequence[Quarantined] = (),
               bounces: Sequence[Bounce] = ()) -> BatchResult:
    """``write_mail_batch`` for rows made by ``message_rows``.

    Addresses the user asked netaudit to forget never come back: their messages are
    skipped and they are left out of other messages' participants.
    """
    total = len(rows.messages)
    forgotten = forgotten_hashes(con)
    messages, participants = rows.messages, rows.participants
    if forgotten:
        skipped = {row[0] for row in messages
                   if row[_FROM_ADDR] and forget_hash(row[_FROM_ADDR]) in forgotten}
        messages = [row for row in messages if row[0] not in skipped]
        participants = [row for row in participants if row[0] not in skipped
                        and forget_hash(row[3]) not in forgotten]
    # The keys alone first: one row per new key, the first copy of a key not stored yet.
    # Staging whole rows costs 5 µs a message, and most are stored already when a mailbox
    # is read again by another route.
    con.execute(_STAGE_KEYS)
    with con.appender("stage_keys") as app:
        app.append_rows((row[0], row[1]) for row in messages)
    chosen = {seq for (seq,) in con.execute("""
        SELECT min(s.seq) FROM stage_keys s
        ANTI JOIN messages m ON m.message_key = s.message_key
        GROUP BY s.message_key""").fetchall()}
    if chosen:
        _stage(con)
        with con.appender("stage_messages") as app:
            app.append_rows(row for row in messages if row[0] in chosen)
        with con.appender("stage_participants") as app:
            app.append_rows(row for row in participants if row[0] in chosen)
        con.execute(f"""
            INSERT INTO messages ({", ".join(MESSAGE_COLUMNS)})
            SELECT {", ".join(_MESSAGE_VALUES)} FROM stage_messages s""",
                    [source, dt.datetime.now(dt.UTC)])
        con.execute(f"""
            INSERT INTO participants ({", ".join(PARTICIPANT_COLUMNS)})
            SELECT s.message_key, p.role, p.position, p.address, p.name
            FROM stage_participants p JOIN stage_messages s ON s.seq = p.seq""")
    new = len(chosen)
    if new:
        people_inputs_changed(con)
    if bounces:
        write_bounces(con, bounces)
    write_quarantine(con, source, quarantined)
    return BatchResult(new=new, duplicates=total - new, quarantined=len(quarantined))


def write_quarantine(con: Connection, source: str, items: Sequence[Quarantined]) -> None:
    """Record inputs that could not be used, once per (source, location, reason)."""
    if not items:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE stage_quarantine AS "
                "SELECT * FROM quarantine LIMIT 0")
    now = dt.datetime.now(dt.UTC)
    with con.appender("stage_quarantine") as app:
        app.append_rows((source, q.location, q.reason, now) for q in items)
    con.execute("""
        INSERT INTO quarantine
        SELECT DISTINCT s.* FROM stage_quarantine s
        ANTI JOIN quarantine q
          ON q.source = s.source AND q.location = s.location AND q.reason = s.reason""")


def write_bounces(con: Connection, bounces: Sequence[Bounce]) -> None:
    """Store bounce rows once per (report, recipient), inside the caller's transaction."""
    forgotten = forgotten_hashes(con)
    con.execute("CREATE OR REPLACE TEMP TABLE stage_bounces AS SELECT message_key, recipient, "
                "action, status, reported_at, arrival_at FROM bounces LIMIT 0")
    with con.appender("stage_bounces") as app:
        app.append_rows((b.message_key, b.recipient, b.action, b.status, b.reported_at,
                         b.arrival_at)
                        for b in bounces if forget_hash(b.recipient) not in forgotten)
    con.execute("""
        INSERT INTO bounces (message_key, recipient, action, status, reported_at, arrival_at)
        SELECT DISTINCT s.* FROM stage_bounces s ANTI JOIN bounces b
          ON b.message_key = s.message_key AND b.recipient = s.recipient""")


@dataclass(frozen=True, slots=True)
class FileMark:
    """How far a local source's file or folder has been read, saved in ``sync_state``
    (scope = the path as ``path_text``) in the same transaction as the mail it covers.

    An mbox: ``last_uid`` is the byte offset where the last read ended, ``content_hash``
    the rest of its ``mailfiles.MboxPosition``. A Maildir: ``last_uid`` is the time
    (ns since the epoch) taken before its last complete scan, ``content_hash`` "maildir1".
    """

    scope: str
    last_uid: int
    content_hash: str


def save_marks(con: Connection, source: str, marks: Iterable[FileMark]) -> None:
    """Replace the marks' rows, inside the caller's transaction."""
    now = dt.datetime.now(dt.UTC)
    for mark in marks:
        scope = mark.scope
        con.execute("DELETE FROM sync_state WHERE source = ? AND scope = ?", [source, scope])
        con.execute("INSERT INTO sync_state (source, scope, last_uid, content_hash, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [source, scope, mark.last_uid, mark.content_hash, now])


def load_marks(con: Connection, source: str, tag: str) -> dict[str, FileMark]:
    """The source's marks whose content_hash starts with ``tag`` ("mbox1", "maildir1"), by
    scope; the calendar and IMAP rows of the same table are left out."""
    rows = con.execute("SELECT scope, last_uid, content_hash FROM sync_state WHERE source = ? "
                       "AND content_hash IS NOT NULL AND last_uid IS NOT NULL "
                       "AND starts_with(content_hash, ?)", [source, tag]).fetchall()
    return {scope: FileMark(scope, int(last), text) for scope, last, text in rows}


def forgotten_hashes(con: Connection) -> frozenset[str]:
    return frozenset(r[0] for r in con.execute(
        "SELECT address FROM person_decisions WHERE kind = 'forget'").fetchall())


def known_me(con: Connection) -> set[str]:
    return {row[0] for row in con.execute("SELECT DISTINCT address FROM me_addresses").fetchall()}


def remember_me(con: Connection, addresses: Iterable[str], origin: str) -> int:
    """Add my addresses; mail already stored from them becomes 'sent'. Returns how many new."""
    new = sorted({a.strip().lower() for a in addresses} - known_me(con))
    if not new:
        return 0
    now = dt.datetime.now(dt.UTC)
    with con.appender("me_addresses") as app:
        app.append_rows((a, origin, now) for a in new)
    con.execute("""
        UPDATE messages SET direction = 'sent'
        WHERE direction = 'received' AND from_addr IN (SELECT address FROM me_addresses)""")
    people_inputs_changed(con)
    return len(new)


def _storable(text: str) -> str:
    try:
        return path_text(text)
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_source(con: Connection, name: str, kind: str, *, error: str | None = None,
                  summary: str | None = None) -> None:
    """Remember how a source's last run went, for `netaudit status`.

    Either text may hold a file name Python decoded with surrogates, which DuckDB refuses:
    it is stored escaped rather than losing the whole record.
    """
    error = None if error is None else _storable(error)
    summary = None if summary is None else _storable(summary)
    now = dt.datetime.now(dt.UTC)
    exists = con.execute("SELECT count(*) FROM sources WHERE name = ?", [name]).fetchone()
    if not exists or not exists[0]:
        con.execute("INSERT INTO sources (name, kind) VALUES (?, ?)", [name, kind])
    if error is None:
        con.execute("UPDATE sources SET kind = ?, last_success = ?, last_summary = ? "
                    "WHERE name = ?", [kind, now, summary, name])
    else:
        con.execute("UPDATE sources SET kind = ?, last_error = ?, last_error_at = ? "
                    "WHERE name = ?", [kind, error, now, name])
