"""User decisions about people: merge two addresses, let a tie go, forget someone entirely."""

from __future__ import annotations

from netaudit.db import Connection, people_inputs_changed
from netaudit.errors import UsageError
from netaudit.privacy import forget_hash


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


def forget(con: Connection, address: str) -> dict[str, int]:
    """Delete every stored row that mentions ``address``; keep only a hash so that the next
    sync does not bring it back. Returns rows deleted per table."""
    like = f"%{address}%"
    deleted: dict[str, int] = {}

    def run(table: str, sql: str, params: list[object]) -> None:
        row = con.execute(sql + " RETURNING 1", params).fetchall()
        deleted[table] = deleted.get(table, 0) + len(row)

    # Messages sent by them, or whose ids carry their address (some clients build ids so).
    con.execute("CREATE OR REPLACE TEMP TABLE forget_keys AS SELECT message_key FROM messages "
                "WHERE from_addr = ? OR message_key LIKE ? OR message_id LIKE ?",
                [address, like, like])
    run("participants", "DELETE FROM participants WHERE address = ? OR message_key IN "
        "(SELECT message_key FROM forget_keys)", [address])
    run("bounces", "DELETE FROM bounces WHERE recipient = ? OR message_key IN "
        "(SELECT message_key FROM forget_keys)", [address])
    run("messages", "DELETE FROM messages WHERE message_key IN "
        "(SELECT message_key FROM forget_keys)", [])
    con.execute("UPDATE messages SET in_reply_to = NULL WHERE in_reply_to LIKE ?", [like])
    con.execute("UPDATE messages SET refs = list_filter(refs, lambda r: NOT contains(r, ?)) "
                "WHERE list_aggregate(refs, 'string_agg', ' ') LIKE ?", [address, like])
    run("attendees", "DELETE FROM attendees WHERE address = ?", [address])
    run("identities", "DELETE FROM identities WHERE address = ?", [address])
    run("identity_links", "DELETE FROM identity_links WHERE previous = ? OR current = ?",
        [address, address])
    run("person_decisions", "DELETE FROM person_decisions WHERE address = ? OR other = ?",
        [address, address])
    run("me_addresses", "DELETE FROM me_addresses WHERE address = ?", [address])
    run("quarantine", "DELETE FROM quarantine WHERE location LIKE ? OR reason LIKE ?",
        [like, like])
    con.execute("INSERT INTO person_decisions (kind, address) VALUES ('forget', ?)",
                [forget_hash(address)])
    people_inputs_changed(con)
    return deleted
