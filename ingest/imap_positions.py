"""Where each folder's sync stands: the last UID stored under its UIDVALIDITY (``sync_state``).

Its own module because every sync reads the positions, while only one that fetches needs the
writer (ingest/imap_commit.py) and what it loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaudit import db


@dataclass(frozen=True, slots=True)
class Position:
    uidvalidity: int
    last_uid: int


def load_positions(con: db.Connection, source: str) -> dict[str, Position]:
    rows = con.execute("SELECT scope, uidvalidity, last_uid FROM sync_state WHERE source = ? "
                       "AND uidvalidity IS NOT NULL", [source]).fetchall()
    return {scope: Position(int(v), int(u or 0)) for scope, v, u in rows}


def save_position(con: db.Connection, source: str, folder: str, pos: Position) -> None:
    con.execute("DELETE FROM sync_state WHERE source = ? AND scope = ?", [source, folder])
    con.execute("INSERT INTO sync_state (source, scope, uidvalidity, last_uid, updated_at) "
                "VALUES (?, ?, ?, ?, current_timestamp)",
                [source, folder, pos.uidvalidity, pos.last_uid])
