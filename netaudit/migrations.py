"""Numbered schema migrations, applied in order by ``netaudit.db.migrate``.

Big tables carry no PRIMARY KEY, UNIQUE or index: DuckDB cannot ALTER a table that has one,
and zone maps serve the scans. Uniqueness comes from the anti-join in the writers instead.
Never edit a migration that has shipped; add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


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
)
