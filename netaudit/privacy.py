"""Forgetting someone so that nothing of them can be read back.

A forgotten address is remembered by a hash only: enough to refuse it when mail from it
arrives again, not to read it. Deleting rows is not enough: DuckDB neither zeroes the blocks
that deleted rows leave (a CHECKPOINT reuses them only partly, VACUUM not at all) nor touches
the backups kept beside the file, so after a forget the file is copied into a fresh one
(``COPY FROM DATABASE``, DuckDB's documented way to compact a file) that replaces it, and
every backup that still holds a forgotten address is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from netaudit import db
from netaudit.db import Connection


def forget_hash(address: str) -> str:
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()


# SQL that gives forget_hash of a stored (lower-case, trimmed) address column
SQL_HASH = "'sha256:' || sha256(lower(trim({})))"
# person_decisions kind for a meeting that was with forgotten people alone, by this hash of
# its calendar and occurrence key: its summary is not stored again
MEETING_ALONE = "forget-summary"
SQL_MEETING_HASH = "'sha256:' || sha256(calendar || '|' || occurrence_key)"

# Characters that end an address written inside an id or a text ("<a@b>", "a@b, c@d")
_STOP = frozenset('<>()[]{}"\',;:\\/|!?=*&^%$#~` \t\r\n')


def address_candidates(text: str) -> set[str]:
    """Every substring of ``text`` that could be a whole address, lower-case.

    Around each ``@``: from any start that follows a non-alphanumeric character (or the start
    of the text) to any end before one. So ``<1234.zelda@x.example.12>`` yields
    ``zelda@x.example`` among others, but ``joann@x.example`` never yields ``ann@x.example``:
    an id names a forgotten address only where the address stands whole.
    """
    t = text.lower()
    found: set[str] = set()
    at = t.find("@")
    while at != -1:
        starts = []
        i = at - 1
        while i >= 0 and t[i] not in _STOP and t[i] != "@":
            if i == 0 or not t[i - 1].isalnum():
                starts.append(i)
            i -= 1
        ends = []
        j = at + 1
        while j < len(t) and t[j] not in _STOP and t[j] != "@":
            j += 1
            if j == len(t) or not t[j].isalnum():
                ends.append(j)
        found.update(t[s:e] for s in starts for e in ends)
        at = t.find("@", at + 1)
    return found


def mentions(text: str | None, hashes: frozenset[str]) -> bool:
    """Whether ``text`` spells, whole, an address whose forget_hash is in ``hashes``."""
    if not text or "@" not in text:
        return False
    return any(forget_hash(c) in hashes for c in address_candidates(text))


def forgotten_hashes(con: Connection) -> frozenset[str]:
    return frozenset(r[0] for r in con.execute(
        "SELECT address FROM person_decisions WHERE kind = 'forget'").fetchall())


def _like_any(column: str, terms: Sequence[str] | None) -> tuple[str, list[object]]:
    """A cheap SQL filter that every value mentioning one of ``terms`` passes (all values
    with an @ when the terms are unknown, as in a rebuilt file that holds only hashes)."""
    if not terms:
        return f"contains({column}, '@')", []
    return (f"list_bool_or([contains(lower({column}), t) FOR t IN ?::VARCHAR[]])",
            [list(terms)])


class _Mentions:
    """``mentions`` with each distinct text checked once (an id is often both a message's
    key and its Message-ID, and a References entry of many replies)."""

    def __init__(self, hashes: frozenset[str]) -> None:
        self.hashes = hashes
        self.seen: dict[str, bool] = {}

    def __call__(self, text: str | None) -> bool:
        if not text:
            return False
        hit = self.seen.get(text)
        if hit is None:
            hit = self.seen[text] = mentions(text, self.hashes)
        return hit


def _matching(con: Connection, sql: str, params: list[object], hit: _Mentions) -> list[str]:
    return [v for (v,) in con.execute(sql, params).fetchall() if hit(v)]


def scrub_mentions(con: Connection, hashes: frozenset[str],
                   terms: Sequence[str] | None = None) -> dict[str, int]:
    """Remove what spells a forgotten address inside an id or a text, not in an address
    column: some clients build Message-IDs (and calendars their UIDs) from the sender's
    address, and a reply's In-Reply-To and References carry those ids.

    ``terms`` (the plain addresses, when known) narrow the rows read; the hashes decide.
    Messages keyed by such an id go; a reply keeps its place but loses the reference; a
    meeting keeps its attendees under a hashed UID. Returns what was removed or changed.
    Runs inside the caller's transaction.
    """
    done: dict[str, int] = {}
    if not hashes:
        return done
    hit = _Mentions(hashes)
    where, params = _like_any("message_key", terms)
    where_id, params_id = _like_any("message_id", terms)
    keys = {k for k, mid in con.execute(
        f"SELECT message_key, message_id FROM messages WHERE {where} OR {where_id}",
        params + params_id).fetchall() if hit(k) or hit(mid)}
    if keys:
        key_list = [sorted(keys)]
        for table in ("participants", "bounces", "thread_links", "messages"):
            n = con.execute(f"DELETE FROM {table} WHERE message_key IN "
                            "(SELECT unnest(?::VARCHAR[])) RETURNING 1", key_list).fetchall()
            done[table] = len(n)
    where, params = _like_any("in_reply_to", terms)
    replies = _matching(con, f"SELECT DISTINCT in_reply_to FROM messages WHERE {where}",
                        params, hit)
    if replies:
        n = con.execute("UPDATE messages SET in_reply_to = NULL WHERE in_reply_to IN "
                        "(SELECT unnest(?::VARCHAR[])) RETURNING 1", [replies]).fetchall()
        done["in_reply_to"] = len(n)
    where, params = _like_any("r", terms)
    refs = _matching(con, f"SELECT DISTINCT r FROM (SELECT unnest(refs) AS r FROM messages) "
                          f"WHERE {where}", params, hit)
    if refs:
        n = con.execute("UPDATE messages SET refs = list_filter(refs, lambda r: NOT "
                        "list_contains(?::VARCHAR[], r)) WHERE list_has_any(refs, ?::VARCHAR[]) "
                        "RETURNING 1", [refs, refs]).fetchall()
        done["references"] = len(n)
    where, params = _like_any("occurrence_key", terms)
    occurrences = _matching(con, f"SELECT DISTINCT occurrence_key FROM meetings WHERE {where}",
                            params, hit)
    if occurrences:
        # Hashed, not deleted: the meeting stays for the others who were there.
        for table in ("meetings", "attendees"):
            con.execute(f"UPDATE {table} SET occurrence_key = 'sha256:' || sha256("
                        "occurrence_key) WHERE occurrence_key IN (SELECT unnest(?::VARCHAR[]))",
                        [occurrences])
        done["meeting ids"] = len(occurrences)
    where, params = _like_any("uid", terms)
    uids = _matching(con, f"SELECT DISTINCT uid FROM meetings WHERE {where}", params, hit)
    if uids:
        con.execute("UPDATE meetings SET uid = 'sha256:' || sha256(uid) WHERE uid IN "
                    "(SELECT unnest(?::VARCHAR[]))", [uids])
    for column in ("location", "reason"):
        where, params = _like_any(column, terms)
        bad = _matching(con, f"SELECT DISTINCT {column} FROM quarantine WHERE {where}",
                        params, hit)
        if bad:
            n = con.execute(f"DELETE FROM quarantine WHERE {column} IN "
                            "(SELECT unnest(?::VARCHAR[])) RETURNING 1", [bad]).fetchall()
            done["quarantine"] = done.get("quarantine", 0) + len(n)
    for column in ("last_error", "last_summary"):
        where, params = _like_any(column, terms)
        bad = _matching(con, f"SELECT DISTINCT {column} FROM sources WHERE {where}",
                        params, hit)
        if bad:
            con.execute(f"UPDATE sources SET {column} = NULL WHERE {column} IN "
                        "(SELECT unnest(?::VARCHAR[]))", [bad])
    return done


def scrub_orphans(con: Connection) -> dict[str, int]:
    """Clear the subjects that only a forgotten person shared.

    A message lost recipients when its recipient count (the distinct To/Cc/Bcc addresses of
    the header) exceeds the recipients stored: the store leaves forgotten addresses out and
    ``people forget`` deletes them. When nobody but me is left on it, it was mail with them
    alone, and its subject (and the subject's hash) goes; the row stays, without a
    counterpart, so a rescan of the source sees the message as stored and does not add it
    again. Group mail keeps its subject: the others on it are still there. A delivery
    report with no bounce left was about forgotten recipients (its subject often repeats
    the subject of the mail that bounced) and loses its subject too, as does a meeting
    ``people forget`` found to be with forgotten people alone. Runs inside the
    caller's transaction, in a live file or one just rebuilt from the sources.
    """
    lone = con.execute("""
        WITH me AS (SELECT address FROM me_addresses
                    UNION SELECT address FROM identities WHERE is_me),
        stored AS (SELECT message_key, count(DISTINCT address) AS n FROM participants
                   WHERE role IN ('to', 'cc', 'bcc') GROUP BY message_key),
        others AS (SELECT DISTINCT message_key FROM participants
                   WHERE address NOT IN (SELECT address FROM me))
        UPDATE messages m SET subject = NULL, subject_key = NULL
        WHERE (m.subject IS NOT NULL OR m.subject_key IS NOT NULL)
          AND m.recipient_count > coalesce(
                (SELECT n FROM stored s WHERE s.message_key = m.message_key), 0)
          AND m.message_key NOT IN (SELECT message_key FROM others)
        RETURNING 1""").fetchall()
    meetings = con.execute(f"""
        UPDATE meetings SET summary = NULL
        WHERE summary IS NOT NULL AND {SQL_MEETING_HASH} IN
              (SELECT address FROM person_decisions WHERE kind = '{MEETING_ALONE}')
        RETURNING 1""").fetchall()
    reports = con.execute("""
        UPDATE messages m SET subject = NULL, subject_key = NULL
        WHERE m.is_dsn AND (m.subject IS NOT NULL OR m.subject_key IS NOT NULL)
          AND m.message_key NOT IN (SELECT message_key FROM bounces)
        RETURNING 1""").fetchall()
    return {"subjects": len(lone) + len(reports) + len(meetings)}


# --- the file and its backups ----------------------------------------------------------------


def _mode_of(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Rewritten:
    path: Path
    bytes_before: int
    bytes_after: int


def rewrite(con: Connection, path: Path) -> Rewritten:
    """Copy the open database into a fresh file that then replaces it.

    DuckDB does not zero the blocks of deleted rows, and CHECKPOINT reclaims them only
    partly (VACUUM not at all); a copy holds only live rows. ``con`` must be a writer with
    no open transaction: its lock keeps every other process out while the copy is made, and
    the copy replaces the file (a symlink's target, keeping the link) while the lock is
    held, so no write lands in the old file unseen. The old file made no changes after its
    CHECKPOINT, so closing it afterwards writes nothing. Mode and owner are kept.
    """
    real = path.resolve()
    fresh = real.with_name(real.name + ".forget")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    before = real.stat().st_size
    mode, uid, gid = _mode_of(real)
    con.execute("CHECKPOINT")
    row = con.execute("SELECT current_database()").fetchone()
    source = _quote(row[0]) if row else "main"
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' ORDER BY 1").fetchall()]
    old_umask = os.umask(0o077)
    try:
        con.execute(f"ATTACH '{str(fresh).replace(chr(39), chr(39) * 2)}' AS netaudit_fresh "
                    f"(ROW_GROUP_SIZE {db.ROW_GROUP_ROWS})")
        try:
            con.execute(f"COPY FROM DATABASE {source} TO netaudit_fresh")
            for table in tables:  # the copy must hold every row before it replaces the file
                a = con.execute(f"SELECT count(*) FROM {source}.{_quote(table)}").fetchone()
                b = con.execute(f"SELECT count(*) FROM netaudit_fresh.{_quote(table)}"
                                ).fetchone()
                if a != b:
                    raise db.Error(f"the copy of {table} has {b} rows, not {a}")
        finally:
            con.execute("DETACH netaudit_fresh")  # checkpoints it: no WAL is left
        os.chmod(fresh, mode)
        with contextlib.suppress(PermissionError):
            if (uid, gid) != (os.getuid(), os.getgid()):
                os.chown(fresh, uid, gid)
        _fsync(fresh)
        stale_wal = path.with_name(path.name + ".wal")
        # Ours was checkpointed and nobody else can have the file open: any WAL here is stale
        # and would hold what was deleted.
        for wal in {stale_wal, real.with_name(real.name + ".wal")}:
            wal.unlink(missing_ok=True)
        os.replace(fresh, real)
        _fsync(real.parent)
    except BaseException:
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        os.umask(old_umask)
    return Rewritten(real, before, real.stat().st_size)


# Address columns a backup of any schema version may have, by table
_ADDRESS_COLUMNS = {
    "participants": ("address",), "messages": ("from_addr",), "attendees": ("address",),
    "bounces": ("recipient",), "identities": ("address",),
    "identity_links": ("previous", "current"), "me_addresses": ("address",),
    "interaction_rows": ("email",),
}


def _holds_forgotten(path: Path, hashes: frozenset[str]) -> bool | None:
    """Whether a database file (with its WAL, if any) stores a forgotten address; None when
    it cannot be read, so nothing shows that it does not."""
    try:
        con = db.connect_bare(path)
    except db.Error:
        return None
    try:
        present = {(t, c) for t, c in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND database_name = current_database()").fetchall()}
        for table, columns in _ADDRESS_COLUMNS.items():
            for column in columns:
                if (table, column) not in present:
                    continue
                row = con.execute(
                    f"SELECT count(*) FROM {table} WHERE "
                    f"{SQL_HASH.format(_quote(column))} IN (SELECT unnest(?::VARCHAR[]))",
                    [sorted(hashes)]).fetchone()
                if row and row[0]:
                    return True
        return False
    except db.Error:
        return None
    finally:
        con.close()


def _siblings(path: Path) -> Iterator[Path]:
    """Files netaudit writes beside the database under its name: migration backups
    (``.bak-N``), rebuild backups (``.bak-rebuild-*``), an unfinished rebuild
    (``.rebuild``) and their WALs. Not the database's own WAL, and nothing else."""
    seen: set[Path] = set()
    for base in dict.fromkeys((path, path.resolve())):
        prefix = base.name + "."
        try:
            entries = list(os.scandir(base.parent))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not name.startswith(prefix) or name == base.name + ".wal":
                continue
            rest = name[len(prefix):]
            if not (rest.startswith("bak-") or rest.startswith("rebuild")):
                continue
            candidate = Path(entry.path)
            if candidate not in seen and entry.is_file(follow_symlinks=False):
                seen.add(candidate)
                yield candidate


@dataclass(frozen=True)
class BackupCheck:
    removed: list[Path]  # they held a forgotten address
    unreadable: list[Path]  # removed too: damaged, or a WAL without its file
    kept: list[Path]  # they hold none


def drop_backups(path: Path, hashes: Iterable[str]) -> BackupCheck:
    """Remove every backup beside the database that stores a forgotten address.

    A backup that stores none of them is kept (it predates them). One that cannot be read
    is removed, since nothing shows it does not hold them, and so is a WAL whose file is
    removed or gone (a WAL alone cannot be checked).
    """
    wanted = frozenset(hashes)
    files = sorted(_siblings(path))
    check = BackupCheck([], [], [])
    for base in (f for f in files if not f.name.endswith(".wal")):
        holds = _holds_forgotten(base, wanted)
        if holds is False:
            check.kept.append(base)
            continue
        base.unlink(missing_ok=True)
        (check.removed if holds else check.unreadable).append(base)
    for wal in (f for f in files if f.name.endswith(".wal")):
        base = wal.with_name(wal.name[:-4])
        if not base.exists():
            wal.unlink(missing_ok=True)
            (check.removed if base in check.removed else check.unreadable).append(wal)
    for directory in {p.parent for p in check.removed + check.unreadable}:
        _fsync(directory)
    return check
