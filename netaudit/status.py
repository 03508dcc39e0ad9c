"""What `netaudit status` reports: counts, sources, positions and quarantined inputs."""

from __future__ import annotations

from typing import Any

from netaudit.config import Config
from netaudit.db import Connection
from netaudit.output import jsonable


def _table_exists(con: Connection, name: str) -> bool:
    row = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? "
                      "AND database_name = current_database()", [name]).fetchone()
    return bool(row and row[0])


def _one(con: Connection, sql: str, params: list[Any] | None = None) -> int:
    row = con.execute(sql, params or []).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def collect(con: Connection, config: Config) -> dict[str, Any]:
    """The status document; `--json` prints it as is, the text view formats it."""
    meetings = _one(con, "SELECT count(*) FROM meetings") if _table_exists(con, "meetings") \
        else 0
    stored = {row[0]: row for row in con.execute(
        "SELECT name, kind, last_success, last_error, last_error_at, last_summary FROM sources"
    ).fetchall()}
    names = [s.name for s in config.sources] + sorted(n for n in stored if n not in
                                                      {s.name for s in config.sources})
    kinds = {s.name: s.kind for s in config.sources}
    sources = []
    for name in names:
        row = stored.get(name)
        sources.append({
            "name": name,
            "kind": kinds.get(name) or (row[1] if row else ""),
            "last_success": jsonable(row[2]) if row and row[2] else "",
            "last_error": (row[3] or "") if row else "",
            "last_error_at": jsonable(row[4]) if row and row[4] else "",
            "last_summary": (row[5] or "") if row else "",
            "messages": _one(con, "SELECT count(*) FROM messages WHERE source = ?", [name]),
        })
    positions = [
        {"source": r[0], "scope": r[1], "uidvalidity": r[2], "last_uid": r[3],
         "updated_at": jsonable(r[4])}
        for r in con.execute("SELECT source, scope, uidvalidity, last_uid, updated_at "
                             "FROM sync_state ORDER BY source, scope").fetchall()
    ]
    reasons = [
        {"reason": r[0], "count": int(r[1])}
        for r in con.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason "
                             "ORDER BY count(*) DESC, reason LIMIT 10").fetchall()
    ]
    return {
        "database": str(config.database),
        # one row per message (the writers' anti-join keeps keys unique); counting distinct
        # keys held every key in memory: 110 MB more at a million messages
        "messages": _one(con, "SELECT count(*) FROM messages"),
        "automated": _one(con, "SELECT count(*) FROM messages WHERE automated_reason "
                               "IS NOT NULL"),
        "meetings": meetings,
        "quarantined": _one(con, "SELECT count(*) FROM quarantine"),
        "me": [r[0] for r in con.execute(
            "SELECT DISTINCT address FROM me_addresses ORDER BY address").fetchall()],
        "sources": sources,
        "positions": positions,
        "quarantine_reasons": reasons,
    }
