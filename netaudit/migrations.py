"""Numbered schema migrations, applied in order by ``netaudit.db.migrate``.

Big tables carry no PRIMARY KEY, UNIQUE or index: DuckDB cannot ALTER a table that has one,
and zone maps serve the scans. Uniqueness comes from the anti-join in the writers instead.
Never edit a migration that has shipped; add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "messages, participants, quarantine, sync state", (
        """CREATE TABLE messages (
            message_key VARCHAR NOT NULL,      -- Message-ID, else sha256: of several fields
            message_id VARCHAR,
            source VARCHAR NOT NULL,           -- the configured source name, or 'import'
            location VARCHAR NOT NULL,         -- file path, mbox path#offset, folder/uid
            sent_at TIMESTAMPTZ,
            date_source VARCHAR NOT NULL,      -- header, internaldate, from_line, file_mtime, none
            from_addr VARCHAR,
            from_name VARCHAR,
            direction VARCHAR NOT NULL,        -- sent or received
            recipient_count INTEGER NOT NULL,
            in_reply_to VARCHAR,
            refs VARCHAR[],
            subject VARCHAR,                   -- only with store_subjects = true
            automated_reason VARCHAR,          -- NULL for personal mail
            is_dsn BOOLEAN NOT NULL,
            size_bytes BIGINT,
            ingested_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE participants (
            message_key VARCHAR NOT NULL,
            role VARCHAR NOT NULL,             -- from, sender, reply-to, to, cc, bcc
            position INTEGER NOT NULL,
            address VARCHAR NOT NULL,          -- lower-case
            name VARCHAR
        )""",
        """CREATE TABLE quarantine (
            source VARCHAR NOT NULL,
            location VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            quarantined_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE sync_state (
            source VARCHAR NOT NULL,
            scope VARCHAR NOT NULL,            -- IMAP folder, feed URL, file
            uidvalidity BIGINT,
            last_uid BIGINT,
            etag VARCHAR,
            last_modified VARCHAR,
            content_hash VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE sources (
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            last_success TIMESTAMPTZ,
            last_error VARCHAR,
            last_error_at TIMESTAMPTZ,
            last_summary VARCHAR
        )""",
        """CREATE TABLE me_addresses (
            address VARCHAR NOT NULL,
            origin VARCHAR NOT NULL,           -- config, import --me, login, sent folder
            added_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
    )),
    Migration(2, "meetings, attendees, bounces, Gmail thread ids", (
        """CREATE TABLE meetings (
            calendar VARCHAR NOT NULL,         -- the source name
            occurrence_key VARCHAR NOT NULL,   -- UID|RECURRENCE-ID (or original start)
            uid VARCHAR NOT NULL,
            starts_at TIMESTAMPTZ,             -- timed events, UTC
            ends_at TIMESTAMPTZ,
            start_date DATE,                   -- all-day events: the date, never via UTC
            end_date DATE,                     -- exclusive
            all_day BOOLEAN NOT NULL,
            mode VARCHAR,                      -- in_person, online or NULL
            organizer_is_me BOOLEAN NOT NULL,
            summary VARCHAR,                   -- only with store_subjects = true
            origin VARCHAR NOT NULL,           -- the file or feed it came from (redacted)
            ingested_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE attendees (
            calendar VARCHAR NOT NULL,
            occurrence_key VARCHAR NOT NULL,
            address VARCHAR NOT NULL,          -- lower-case; my own addresses excluded
            name VARCHAR,
            role VARCHAR NOT NULL,             -- organizer or attendee
            partstat VARCHAR                   -- ACCEPTED, TENTATIVE, NEEDS-ACTION...
        )""",
        """CREATE TABLE bounces (
            message_key VARCHAR NOT NULL,      -- the delivery status notification
            recipient VARCHAR NOT NULL,        -- Final-Recipient, lower-case
            action VARCHAR,                    -- failed, delayed, ...
            status VARCHAR,                    -- 5.1.1 ...
            reported_at TIMESTAMPTZ
        )""",
        "ALTER TABLE messages ADD COLUMN thread_hint VARCHAR",  # X-GM-THRID on Gmail
    )),
    Migration(3, "identities, user decisions and the public views", (
        """CREATE TABLE person_decisions (
            kind VARCHAR NOT NULL,             -- merge, ignore, forget
            address VARCHAR NOT NULL,
            other VARCHAR,                     -- merge: the address it joins
            decided_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        """CREATE TABLE identities (           -- rebuilt after every sync; see analysis/identity
            address VARCHAR NOT NULL,
            person_id VARCHAR NOT NULL,
            name VARCHAR,
            is_primary BOOLEAN NOT NULL,
            is_automated BOOLEAN NOT NULL,
            ignored BOOLEAN NOT NULL,
            first_seen TIMESTAMPTZ,
            last_seen TIMESTAMPTZ
        )""",
        """CREATE TABLE identity_links (       -- why two addresses are one person
            person_id VARCHAR NOT NULL,
            previous VARCHAR NOT NULL,
            current VARCHAR NOT NULL,
            since TIMESTAMPTZ,
            reason VARCHAR NOT NULL            -- new_address or merge
        )""",
        """CREATE TABLE settings (key VARCHAR NOT NULL, value VARCHAR)""",
        """CREATE TABLE imported_paths (        -- what `netaudit rebuild` imports again
            path VARCHAR NOT NULL,
            imported_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        )""",
        # Threads: References names the root (RFC 5322 3.6.4), else the message replied to,
        # else the message itself; Gmail's own thread id wins. No parent lookup: clients
        # that drop References are rare, and a join here would cost more than the rest.
        """CREATE VIEW message_threads AS
        WITH threaded AS (
            SELECT message_key, sent_at, direction, source, automated_reason,
                   recipient_count,
                   coalesce(thread_hint, refs[1], in_reply_to, message_key) AS thread_id
            FROM messages WHERE sent_at IS NOT NULL)
        SELECT *, row_number() OVER w = 1 AS starts_thread,
               coalesce(lag(direction) OVER w <> direction, false) AS is_reply
        FROM threaded
        WINDOW w AS (PARTITION BY thread_id ORDER BY sent_at, message_key)""",
        """CREATE VIEW interactions AS
        WITH me AS (SELECT DISTINCT address FROM me_addresses),
        limits AS (SELECT coalesce(max(try_cast(value AS INTEGER)), 10) AS max_recipients
                   FROM settings WHERE key = 'max_recipients'),
        people_in AS (  -- one row per message and address, whatever roles it appears in
            SELECT DISTINCT message_key, address, role = 'from' AS is_from
            FROM participants WHERE role IN ('from', 'to', 'cc', 'bcc')),
        mail AS (
            SELECT t.sent_at AS ts, p.address, t.direction, t.thread_id, t.starts_thread,
                   t.is_reply, t.source
            FROM message_threads t JOIN people_in p USING (message_key)
            WHERE t.automated_reason IS NULL
              AND t.recipient_count <= (SELECT max_recipients FROM limits)
              AND (t.direction = 'sent') <> p.is_from),
        events AS (
            SELECT ts, address, 'email' AS channel, direction, thread_id, starts_thread,
                   is_reply, source FROM mail
            UNION ALL
            SELECT coalesce(mt.starts_at, timezone(current_setting('TimeZone'),
                                                   mt.start_date::TIMESTAMP)),
                   a.address, 'meeting', 'met', NULL, NULL, NULL, mt.calendar
            FROM meetings mt JOIN attendees a
              ON a.calendar = mt.calendar AND a.occurrence_key = mt.occurrence_key)
        SELECT e.ts, coalesce(i.person_id, 'p' || substr(md5(e.address), 1, 10)) AS person_id,
               e.address AS email, e.channel, e.direction, e.thread_id, e.starts_thread,
               e.is_reply, e.source
        FROM events e LEFT JOIN identities i ON i.address = e.address
        WHERE e.address NOT IN (SELECT address FROM me)
          AND NOT coalesce(i.is_automated, false) AND NOT coalesce(i.ignored, false)""",
        """CREATE VIEW people AS
        SELECT person_id,
               arg_max(name, is_primary::INTEGER * 1e12
                             + epoch(coalesce(last_seen, 'epoch'::TIMESTAMPTZ)))
                   FILTER (WHERE name IS NOT NULL) AS name,
               arg_max(address, is_primary) AS email,
               list(address ORDER BY address) AS addresses,
               bool_or(is_automated AND is_primary) AS is_automated,
               min(first_seen) AS first_seen, max(last_seen) AS last_seen
        FROM identities GROUP BY person_id""",
        # src: the relation to read, so a report can pass a snapshot it already filtered
        """CREATE MACRO tie_metrics(as_of, src := 'interactions') AS TABLE
        WITH i AS (SELECT * FROM query_table(src) WHERE ts <= as_of),
        agg AS (
            SELECT person_id, min(ts) AS first_contact, max(ts) AS last_contact,
                count(*) FILTER (WHERE channel = 'email' AND direction = 'sent') AS emails_sent,
                count(*) FILTER (WHERE channel = 'email' AND direction = 'received')
                    AS emails_received,
                count(*) FILTER (WHERE channel = 'meeting') AS meetings,
                count(DISTINCT thread_id) FILTER (WHERE starts_thread AND direction = 'sent')
                    AS threads_started_by_me,
                count(DISTINCT thread_id) FILTER (WHERE starts_thread AND direction = 'received')
                    AS threads_started_by_them,
                count(*) FILTER (WHERE is_reply AND direction = 'sent') AS replies_by_me,
                count(*) FILTER (WHERE is_reply AND direction = 'received') AS replies_by_them,
                arg_max(email, ts) AS last_email
            FROM i GROUP BY person_id),
        days AS (SELECT DISTINCT person_id, ts::DATE AS d FROM i),
        gaps AS (
            SELECT person_id, count(*) AS interaction_days,
                   median(gap) AS usual_gap_days
            FROM (SELECT person_id, d, d - lag(d) OVER (PARTITION BY person_id ORDER BY d)
                         AS gap FROM days)
            GROUP BY person_id)
        SELECT agg.*, gaps.interaction_days, gaps.usual_gap_days::DOUBLE AS usual_gap_days,
               (emails_sent > 0 AND emails_received > 0) OR meetings > 0 AS is_tie
        FROM agg JOIN gaps USING (person_id)""",
        """CREATE VIEW ties AS
        SELECT t.person_id, p.name, coalesce(p.email, t.last_email) AS email, t.first_contact,
               t.last_contact, t.emails_sent, t.emails_received, t.meetings,
               t.threads_started_by_me, t.threads_started_by_them, t.replies_by_me,
               t.replies_by_them, t.usual_gap_days
        FROM tie_metrics(now()) t LEFT JOIN people p USING (person_id)
        WHERE t.is_tie""",
    )),
    Migration(4, "threads found by subject, bounce arrival dates, why addresses are joined", (
        # A hash of the subject with reply and forward prefixes stripped, and which prefix it
        # had: enough to put mail without threading headers into threads without keeping
        # subjects (store_subjects = false).
        "ALTER TABLE messages ADD COLUMN subject_key VARCHAR",
        "ALTER TABLE messages ADD COLUMN subject_prefix VARCHAR",  # reply, forward or NULL
        # When the bounced message itself arrived (Arrival-Date); reported_at is the failure
        "ALTER TABLE bounces ADD COLUMN arrival_at TIMESTAMPTZ",
        # An address not configured as mine but carrying my own name (a home address I
        # write to myself): kept in identities, out of people and interactions.
        "ALTER TABLE identities ADD COLUMN is_me BOOLEAN NOT NULL DEFAULT false",
        # Why two addresses were joined, in words `netaudit person` shows
        "ALTER TABLE identity_links ADD COLUMN evidence VARCHAR",
        """CREATE OR REPLACE VIEW people AS
        SELECT person_id,
               arg_max(name, is_primary::INTEGER * 1e12
                             + epoch(coalesce(last_seen, 'epoch'::TIMESTAMPTZ)))
                   FILTER (WHERE name IS NOT NULL) AS name,
               arg_max(address, is_primary) AS email,
               list(address ORDER BY address) AS addresses,
               bool_or(is_automated AND is_primary) AS is_automated,
               min(first_seen) AS first_seen, max(last_seen) AS last_seen
        FROM identities WHERE NOT is_me GROUP BY person_id""",
        """CREATE TABLE thread_links (         -- rebuilt with identities; see analysis/threads
            message_key VARCHAR NOT NULL,
            thread_id VARCHAR NOT NULL,
            method VARCHAR NOT NULL            -- subject; copy (a second copy of thread_id)
        )""",
        # thread_method says how each message found its thread: server (Gmail), references,
        # in_reply_to, subject (no threading headers: same normalised subject, a shared
        # participant, within 90 days) or new (it starts one). A first message whose subject
        # is a reply ("Re: ...") answers mail that is not stored: it starts no thread and is
        # a reply. Copies of one message under other Message-IDs are left out.
        """CREATE OR REPLACE VIEW message_threads AS
        WITH threaded AS (
            SELECT m.message_key, m.sent_at, m.direction, m.source, m.automated_reason,
                   m.recipient_count, m.subject_prefix,
                   coalesce(m.thread_hint, m.refs[1], m.in_reply_to, l.thread_id,
                            m.message_key) AS thread_id,
                   CASE WHEN m.thread_hint IS NOT NULL THEN 'server'
                        WHEN m.refs[1] IS NOT NULL THEN 'references'
                        WHEN m.in_reply_to IS NOT NULL THEN 'in_reply_to'
                        WHEN l.thread_id IS NOT NULL THEN 'subject'
                        ELSE 'new' END AS thread_method
            FROM messages m LEFT JOIN thread_links l USING (message_key)
            WHERE m.sent_at IS NOT NULL AND l.method IS DISTINCT FROM 'copy')
        SELECT message_key, sent_at, direction, source, automated_reason, recipient_count,
               thread_id, thread_method,
               row_number() OVER w = 1 AND coalesce(subject_prefix, '') <> 'reply'
                   AS starts_thread,
               coalesce(lag(direction) OVER w <> direction,
                        subject_prefix = 'reply', false) AS is_reply
        FROM threaded
        WINDOW w AS (PARTITION BY thread_id ORDER BY sent_at, message_key)""",
        """CREATE OR REPLACE VIEW interactions AS
        WITH me AS (SELECT DISTINCT address FROM me_addresses),
        limits AS (SELECT coalesce(max(try_cast(value AS INTEGER)), 10) AS max_recipients
                   FROM settings WHERE key = 'max_recipients'),
        people_in AS (  -- one row per message and address, whatever roles it appears in
            SELECT DISTINCT message_key, address, role = 'from' AS is_from
            FROM participants WHERE role IN ('from', 'to', 'cc', 'bcc')),
        mail AS (
            SELECT t.sent_at AS ts, p.address, t.direction, t.thread_id, t.starts_thread,
                   t.is_reply, t.source, t.thread_method
            FROM message_threads t JOIN people_in p USING (message_key)
            WHERE t.automated_reason IS NULL
              AND t.recipient_count <= (SELECT max_recipients FROM limits)
              AND (t.direction = 'sent') <> p.is_from),
        events AS (
            SELECT ts, address, 'email' AS channel, direction, thread_id, starts_thread,
                   is_reply, source, thread_method FROM mail
            UNION ALL
            SELECT coalesce(mt.starts_at, timezone(current_setting('TimeZone'),
                                                   mt.start_date::TIMESTAMP)),
                   a.address, 'meeting', 'met', NULL, NULL, NULL, mt.calendar, NULL
            FROM meetings mt JOIN attendees a
              ON a.calendar = mt.calendar AND a.occurrence_key = mt.occurrence_key)
        SELECT e.ts, coalesce(i.person_id, 'p' || substr(md5(e.address), 1, 10)) AS person_id,
               e.address AS email, e.channel, e.direction, e.thread_id, e.starts_thread,
               e.is_reply, e.source, e.thread_method
        FROM events e LEFT JOIN identities i ON i.address = e.address
        WHERE e.address NOT IN (SELECT address FROM me)
          AND NOT coalesce(i.is_automated OR i.ignored OR i.is_me, false)""",
    )),
    Migration(5, "interactions stored with the people; thread ids without the thread order", (
        # message_threads without the order inside each thread (a window over all mail):
        # what finding a message's thread takes, for queries that need no more
        """CREATE VIEW message_thread_ids AS
        SELECT m.message_key, m.sent_at, m.direction, m.source, m.automated_reason,
               m.recipient_count, m.subject_prefix,
               coalesce(m.thread_hint, m.refs[1], m.in_reply_to, l.thread_id,
                        m.message_key) AS thread_id,
               CASE WHEN m.thread_hint IS NOT NULL THEN 'server'
                    WHEN m.refs[1] IS NOT NULL THEN 'references'
                    WHEN m.in_reply_to IS NOT NULL THEN 'in_reply_to'
                    WHEN l.thread_id IS NOT NULL THEN 'subject'
                    ELSE 'new' END AS thread_method
        FROM messages m LEFT JOIN thread_links l USING (message_key)
        WHERE m.sent_at IS NOT NULL AND l.method IS DISTINCT FROM 'copy'""",
        """CREATE OR REPLACE VIEW message_threads AS
        SELECT message_key, sent_at, direction, source, automated_reason, recipient_count,
               thread_id, thread_method,
               row_number() OVER w = 1 AND coalesce(subject_prefix, '') <> 'reply'
                   AS starts_thread,
               coalesce(lag(direction) OVER w <> direction,
                        subject_prefix = 'reply', false) AS is_reply
        FROM message_thread_ids
        WINDOW w AS (PARTITION BY thread_id ORDER BY sent_at, message_key)""",
        # The two halves of interactions, computed from the raw tables each time they are read.
        # Mail: ordered as message_threads orders it, but only threads that hold personal mail
        # (most automated mail is in threads of its own). They are picked by a hash of the
        # thread id: two threads that share one are both ordered, each on its own, and only
        # personal mail is kept; a set of a million ids held as text ran out of DuckDB's
        # 128 MB where the hashes fit.
        """CREATE VIEW mail_interactions AS
        WITH me AS (SELECT DISTINCT address FROM me_addresses),
        limits AS (SELECT coalesce(max(try_cast(value AS INTEGER)), 10) AS max_recipients
                   FROM settings WHERE key = 'max_recipients'),
        ordered AS (
            SELECT message_key, sent_at, direction, source, automated_reason, recipient_count,
                   thread_id, thread_method,
                   row_number() OVER w = 1 AND coalesce(subject_prefix, '') <> 'reply'
                       AS starts_thread,
                   coalesce(lag(direction) OVER w <> direction,
                            subject_prefix = 'reply', false) AS is_reply
            FROM message_thread_ids
            WHERE hash(thread_id) IN (
                SELECT hash(thread_id) FROM message_thread_ids
                WHERE automated_reason IS NULL
                  AND recipient_count <= (SELECT max_recipients FROM limits))
            WINDOW w AS (PARTITION BY thread_id ORDER BY sent_at, message_key)),
        people_in AS (  -- one row per message and address, whatever roles it appears in
            SELECT DISTINCT message_key, address, role = 'from' AS is_from
            FROM participants WHERE role IN ('from', 'to', 'cc', 'bcc')),
        mail AS (
            SELECT t.sent_at AS ts, p.address, t.direction, t.thread_id, t.starts_thread,
                   t.is_reply, t.source, t.thread_method
            FROM ordered t JOIN people_in p USING (message_key)
            WHERE t.automated_reason IS NULL
              AND t.recipient_count <= (SELECT max_recipients FROM limits)
              AND (t.direction = 'sent') <> p.is_from)
        SELECT e.ts, coalesce(i.person_id, 'p' || substr(md5(e.address), 1, 10)) AS person_id,
               e.address AS email, 'email' AS channel, e.direction, e.thread_id,
               e.starts_thread, e.is_reply, e.source, e.thread_method
        FROM mail e LEFT JOIN identities i ON i.address = e.address
        WHERE e.address NOT IN (SELECT address FROM me)
          AND NOT coalesce(i.is_automated OR i.ignored OR i.is_me, false)""",
        """CREATE VIEW meeting_interactions AS
        WITH me AS (SELECT DISTINCT address FROM me_addresses),
        events AS (
            SELECT coalesce(mt.starts_at, timezone(current_setting('TimeZone'),
                                                   mt.start_date::TIMESTAMP)) AS ts,
                   a.address, mt.calendar AS source
            FROM meetings mt JOIN attendees a
              ON a.calendar = mt.calendar AND a.occurrence_key = mt.occurrence_key)
        SELECT e.ts, coalesce(i.person_id, 'p' || substr(md5(e.address), 1, 10)) AS person_id,
               e.address AS email, 'meeting' AS channel, 'met' AS direction,
               NULL::VARCHAR AS thread_id, NULL::BOOLEAN AS starts_thread,
               NULL::BOOLEAN AS is_reply, e.source, NULL::VARCHAR AS thread_method
        FROM events e LEFT JOIN identities i ON i.address = e.address
        WHERE e.address NOT IN (SELECT address FROM me)
          AND NOT coalesce(i.is_automated OR i.ignored OR i.is_me, false)""",
        # mail_interactions as of the last regrouping (analysis/identity.py), which writes it
        # and then points interactions at it: a report over a million messages reads these
        # rows instead of ordering every thread again.
        """CREATE TABLE interaction_rows (
            ts TIMESTAMPTZ,
            person_id VARCHAR,
            email VARCHAR,
            channel VARCHAR,
            direction VARCHAR,
            thread_id VARCHAR,
            starts_thread BOOLEAN,
            is_reply BOOLEAN,
            source VARCHAR,
            thread_method VARCHAR
        )""",
        # Until the next regrouping, interactions are computed (what LIVE_INTERACTIONS says)
        """CREATE OR REPLACE VIEW interactions AS
        SELECT * FROM mail_interactions UNION ALL SELECT * FROM meeting_interactions""",
    )),
    Migration(6, "mail interactions of chosen threads", (
        # mail_interactions of the messages in ``src`` (rows of message_thread_ids, whole
        # threads): a regrouping after new mail recomputes the threads it changed, not all.
        # Personal mail is picked by hashes of its thread and message keys (two that share a
        # hash only bring in more rows, which the exact joins drop): sets of a million keys
        # held as text ran out of DuckDB's 128 MB where their hashes fit.
        """CREATE MACRO mail_interactions_of(src) AS TABLE
        WITH me AS (SELECT DISTINCT address FROM me_addresses),
        limits AS (SELECT coalesce(max(try_cast(value AS INTEGER)), 10) AS max_recipients
                   FROM settings WHERE key = 'max_recipients'),
        personal AS (
            SELECT hash(thread_id) AS thread, hash(message_key) AS message
            FROM query_table(src)
            WHERE automated_reason IS NULL
              AND recipient_count <= (SELECT max_recipients FROM limits)),
        ordered AS (  -- every message of those threads: the order needs them all
            SELECT message_key, sent_at, direction, source, automated_reason, recipient_count,
                   thread_id, thread_method,
                   row_number() OVER w = 1 AND coalesce(subject_prefix, '') <> 'reply'
                       AS starts_thread,
                   coalesce(lag(direction) OVER w <> direction,
                            subject_prefix = 'reply', false) AS is_reply
            FROM query_table(src)
            WHERE hash(thread_id) IN (SELECT thread FROM personal)
            WINDOW w AS (PARTITION BY thread_id ORDER BY sent_at, message_key)),
        people_in AS (  -- one row per message and address, whatever roles it appears in
            SELECT DISTINCT message_key, address, role = 'from' AS is_from
            FROM participants WHERE role IN ('from', 'to', 'cc', 'bcc')
              AND hash(message_key) IN (SELECT message FROM personal)),
        mail AS (
            SELECT t.sent_at AS ts, p.address, t.direction, t.thread_id, t.starts_thread,
                   t.is_reply, t.source, t.thread_method
            FROM ordered t JOIN people_in p USING (message_key)
            WHERE t.automated_reason IS NULL
              AND t.recipient_count <= (SELECT max_recipients FROM limits)
              AND (t.direction = 'sent') <> p.is_from)
        SELECT e.ts, coalesce(i.person_id, 'p' || substr(md5(e.address), 1, 10)) AS person_id,
               e.address AS email, 'email' AS channel, e.direction, e.thread_id,
               e.starts_thread, e.is_reply, e.source, e.thread_method
        FROM mail e LEFT JOIN identities i ON i.address = e.address
        WHERE e.address NOT IN (SELECT address FROM me)
          AND NOT coalesce(i.is_automated OR i.ignored OR i.is_me, false)""",
        """CREATE OR REPLACE VIEW mail_interactions AS
        SELECT * FROM mail_interactions_of('message_thread_ids')""",
    )),
)

# What ``interactions`` reads. Stored: the rows the last regrouping wrote, while nothing the
# people are built from has changed since (analysis/identity.py switches to it). Live: computed
# from the raw tables, after any write to them (``netaudit.db.people_inputs_changed``). Each
# gives the same rows as the other right after a regrouping. A migration that changes either
# view changes these too.
COMPUTED_INTERACTIONS = ("SELECT * FROM mail_interactions "
                         "UNION ALL SELECT * FROM meeting_interactions")
LIVE_INTERACTIONS = f"CREATE OR REPLACE VIEW interactions AS {COMPUTED_INTERACTIONS}"
STORED_INTERACTIONS = """CREATE OR REPLACE VIEW interactions AS
    SELECT * FROM interaction_rows UNION ALL SELECT * FROM meeting_interactions"""


def compute_interactions(con: Any) -> None:
    """Point ``interactions`` back at the rows computed from the raw tables, since the ones
    stored at the last regrouping lack what a write brings (``db.people_inputs_changed``
    calls this). Nothing to do before schema 5, nor when the view computes them already.
    ``con`` is a DuckDB connection inside the writer's transaction.
    """
    row = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'interactions' "
        "AND schema_name = 'main' AND database_name = current_database() "
        "AND sql LIKE '%interaction_rows%'").fetchone()
    if row and row[0]:
        con.execute(LIVE_INTERACTIONS)
