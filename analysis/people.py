"""User decisions about people: merge two addresses, let a tie go, forget someone entirely."""

from __future__ import annotations

from dataclasses import dataclass

from netaudit.db import Connection, people_inputs_changed
from netaudit.errors import UsageError
from netaudit.privacy import (
    MEETING_ALONE,
    SQL_MEETING_HASH,
    BackupCheck,
    Rewritten,
    forget_hash,
    scrub_mentions,
    scrub_orphans,
)

_TABLES = frozenset({"participants", "bounces", "thread_links", "messages", "quarantine"})


def _known(con: Connection, address: str) -> bool:
    row = con.execute("SELECT count(*) FROM identities WHERE address = ?", [address]).fetchone()
    return bool(row and row[0])


def merge(con: Connection, a: str, b: str) -> None:
    """Record that ``a`` and ``b`` are one person (identities are rebuilt afterwards)."""
    for address in (a, b):
        if not _known(con, address):
            raise UsageError(f"no person has the address {address}")
    if a == b:
        raise UsageError("give two different addresses")
    con.execute("INSERT INTO person_decisions (kind, address, other) VALUES ('merge', ?, ?)",
                [a, b])
    people_inputs_changed(con)


def ignore(con: Connection, address: str) -> None:
    """Let a tie go: excluded from every list, counted in respect.ignored."""
    if not _known(con, address):
        raise UsageError(f"no person has the address {address}")
    con.execute("INSERT INTO person_decisions (kind, address) VALUES ('ignore', ?)", [address])
    people_inputs_changed(con)


def person_addresses(con: Connection, address: str) -> list[str]:
    """``address`` and every address netaudit joined to the same person: one person in
    ``identities``, a link in ``identity_links``, or a ``people merge`` decision, followed
    until nothing new turns up. My own addresses are never among them."""
    mine = {r[0] for r in con.execute(
        "SELECT address FROM me_addresses UNION SELECT address FROM identities WHERE is_me"
    ).fetchall()}
    if address in mine:
        raise UsageError(f"{address} is one of your own addresses; netaudit forgets other "
                         "people, not you")
    found = {address}
    frontier = [address]
    while frontier:
        rows = con.execute("""
            WITH f AS (SELECT unnest(?::VARCHAR[]) AS address)
            SELECT i.address FROM identities i
              WHERE i.person_id IN (SELECT person_id FROM identities
                                    WHERE address IN (SELECT address FROM f))
            UNION SELECT CASE WHEN previous IN (SELECT address FROM f) THEN current
                              ELSE previous END
              FROM identity_links
              WHERE previous IN (SELECT address FROM f) OR current IN (SELECT address FROM f)
            UNION SELECT CASE WHEN address IN (SELECT address FROM f) THEN other
                              ELSE address END
              FROM person_decisions
              WHERE kind = 'merge' AND (address IN (SELECT address FROM f)
                                        OR other IN (SELECT address FROM f))""",
                           [frontier]).fetchall()
        frontier = sorted({r[0] for r in rows if r[0]} - found - mine)
        found.update(frontier)
    return sorted(found)


@dataclass(frozen=True)
class Forgotten:
    """What ``forget`` did: the addresses forgotten, and rows deleted or values cleared."""

    addresses: list[str]
    deleted: dict[str, int]
    cleared: dict[str, int]

    @property
    def hashes(self) -> list[str]:
        return [forget_hash(a) for a in self.addresses]


def forget(con: Connection, address: str) -> Forgotten:
    """Delete everything stored about the person with ``address`` (every address of theirs);
    keep only hashes, so that mail from them is not stored again.

    Their messages go whole; they leave the mail and meetings they shared with others, which
    stay; mail that was with them alone keeps its row without its subject (see
    ``privacy.scrub_orphans``); a meeting that was with them alone keeps its time, not its
    summary. Runs inside the caller's transaction; the caller then rewrites the file
    (``privacy.rewrite``), since deleted rows stay readable in DuckDB's free blocks.
    """
    addresses = person_addresses(con, address)
    deleted: dict[str, int] = {}
    cleared: dict[str, int] = {}

    def run(table: str, sql: str, params: list[object] | None = None) -> None:
        n = len(con.execute(sql + " RETURNING 1", params or []).fetchall())
        deleted[table] = deleted.get(table, 0) + n

    con.execute("CREATE OR REPLACE TEMP TABLE forget_addresses AS "
                "SELECT DISTINCT unnest(?::VARCHAR[]) AS address", [addresses])
    con.execute("CREATE OR REPLACE TEMP TABLE forget_keys AS SELECT message_key FROM messages "
                "WHERE from_addr IN (SELECT address FROM forget_addresses)")
    # Meetings with them and nobody else (my own addresses are not stored as attendees) keep
    # their time, not their summary; a hash of each says so to a rebuild, which reads the
    # calendar again (privacy.scrub_orphans).
    con.execute("""
        CREATE OR REPLACE TEMP TABLE forget_alone AS
        SELECT calendar, occurrence_key FROM meetings m
        WHERE EXISTS (SELECT 1 FROM attendees a WHERE a.calendar = m.calendar
                      AND a.occurrence_key = m.occurrence_key
                      AND a.address IN (SELECT address FROM forget_addresses))
          AND NOT EXISTS (SELECT 1 FROM attendees a WHERE a.calendar = m.calendar
                          AND a.occurrence_key = m.occurrence_key
                          AND a.address NOT IN (SELECT address FROM forget_addresses))""")
    alone = con.execute("UPDATE meetings SET summary = NULL WHERE summary IS NOT NULL AND "
                        "(calendar, occurrence_key) IN (SELECT (calendar, occurrence_key) "
                        "FROM forget_alone) RETURNING 1").fetchall()
    cleared["meeting summaries"] = len(alone)
    con.execute(f"""
        INSERT INTO person_decisions (kind, address)
        SELECT DISTINCT '{MEETING_ALONE}', {SQL_MEETING_HASH} FROM forget_alone
        WHERE {SQL_MEETING_HASH} NOT IN (SELECT address FROM person_decisions
                                          WHERE kind = '{MEETING_ALONE}')""")
    run("participants", "DELETE FROM participants WHERE address IN (SELECT address FROM "
        "forget_addresses) OR message_key IN (SELECT message_key FROM forget_keys)")
    run("bounces", "DELETE FROM bounces WHERE recipient IN (SELECT address FROM "
        "forget_addresses) OR message_key IN (SELECT message_key FROM forget_keys)")
    run("thread_links", "DELETE FROM thread_links WHERE message_key IN "
        "(SELECT message_key FROM forget_keys)")
    run("messages", "DELETE FROM messages WHERE message_key IN "
        "(SELECT message_key FROM forget_keys)")
    run("attendees", "DELETE FROM attendees WHERE address IN "
        "(SELECT address FROM forget_addresses)")
    run("identities", "DELETE FROM identities WHERE address IN "
        "(SELECT address FROM forget_addresses)")
    run("identity_links", "DELETE FROM identity_links WHERE previous IN (SELECT address FROM "
        "forget_addresses) OR current IN (SELECT address FROM forget_addresses)")
    run("person_decisions", "DELETE FROM person_decisions WHERE address IN (SELECT address "
        "FROM forget_addresses) OR other IN (SELECT address FROM forget_addresses)")
    hashes = [forget_hash(a) for a in addresses]
    for table, n in scrub_mentions(con, frozenset(hashes), addresses).items():
        counts = deleted if table in _TABLES else cleared
        counts[table] = counts.get(table, 0) + n
    for what, n in scrub_orphans(con).items():
        cleared[what] = cleared.get(what, 0) + n
    con.execute("INSERT INTO person_decisions (kind, address) SELECT 'forget', h FROM "
                "(SELECT unnest(?::VARCHAR[]) AS h) WHERE h NOT IN "
                "(SELECT address FROM person_decisions WHERE kind = 'forget')", [hashes])
    people_inputs_changed(con)
    return Forgotten(addresses, {k: v for k, v in deleted.items() if v},
                     {k: v for k, v in cleared.items() if v})


def _files(n: int) -> str:
    return f"{n} backup file{'s' if n > 1 else ''}"


def forget_report(done: Forgotten, rewritten: Rewritten, backups: BackupCheck) -> str:
    """What ``people forget`` tells the user: whom it forgot, and where nothing is left."""
    lines = [f"Forgot {len(done.addresses)} address{'es' if len(done.addresses) > 1 else ''}: "
             f"{', '.join(done.addresses)}.",
             f"Deleted {sum(done.deleted.values()):,} rows and cleared "
             f"{sum(done.cleared.values()):,} subjects and ids about them; rewrote "
             f"{rewritten.path} so that no deleted row can be read back "
             f"({rewritten.bytes_before:,} -> {rewritten.bytes_after:,} bytes)."]
    for verb, files, why in (
            ("Removed", backups.removed, "that held them"),
            ("Removed", backups.unreadable, "that could not be read, so nothing showed that "
                                            "they did not hold them"),
            ("Kept", backups.kept, "that never held them")):
        if files:
            lines.append(f"{verb} {_files(len(files))} {why}: "
                         + ", ".join(str(p) for p in files) + ".")
    lines.append("They will not be stored again: mail from these addresses is skipped, and "
                 "they are left out of the mail and meetings of others.")
    return "\n".join(lines)
