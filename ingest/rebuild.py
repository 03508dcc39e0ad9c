"""`netaudit rebuild`: a fresh database from the sources, which are the truth.

Used when the file is damaged, or to apply new parsing rules to old mail. The user's own
decisions (merges, ignores, forgets, their addresses) and the list of one-off imports are
carried over; everything else is re-read from IMAP, calendars and files. The new file is
built beside the old one and swapped in with a rename; the old one is kept as a backup.
Only a database file is ever renamed: a path that names a directory, a device, a FIFO or a
link to one is refused before anything is read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ingest import local, sources
from ingest.safe_files import is_regular, kind, path_from_text
from netaudit import db, privacy
from netaudit.config import Config
from netaudit.db import Connection
from netaudit.errors import NetauditError, UsageError

log = logging.getLogger(__name__)

CARRIED = {  # table: columns carried into the new file
    "person_decisions": "kind, address, other, decided_at",
    "me_addresses": "address, origin, added_at",
    "imported_paths": "path, imported_at",
}


def _carry(old: Path) -> dict[str, list[tuple]]:
    """The user's decisions from the old file; an unreadable file gives none (and says so)."""
    out: dict[str, list[tuple]] = {table: [] for table in CARRIED}
    if not old.exists():
        return out
    try:
        con = db.connect_bare(old)
    except db.Error as exc:
        log.warning("cannot read %s (%s); your merges, ignores and forgets are not carried "
                    "over", old, str(exc).splitlines()[0])
        return out
    try:
        for table, columns in CARRIED.items():
            with contextlib.suppress(db.Error):  # an older schema without this table
                out[table] = con.execute(f"SELECT {columns} FROM {table}").fetchall()
    finally:
        con.close()
    return out


def replaceable(path: Path) -> Path:
    """The file a rebuild replaces: ``path``, or the file a symlink at ``path`` points to
    (the link stays). UsageError for anything that is not a regular file, since renaming a
    directory or a device (``/dev/null``) to a backup name would break what uses it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path  # nothing yet: the rebuild creates it
    except OSError as exc:
        raise UsageError(f"cannot rebuild {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        if is_regular(path):
            return path.resolve()
        try:
            what = f"which is {kind(os.stat(path).st_mode)}"
        except OSError:
            what = "which does not exist"
        raise UsageError(f"the database {path} is a symlink to {os.readlink(path)}, {what}, "
                         "not a database file; rebuild replaces only a file") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"the database {path} is {kind(st.st_mode)}, not a database file; "
                         "rebuild replaces only a file")
    return path


def rebuild(cfg: Config, echo: Callable[[str], None], *, drop_missing: bool = False) -> Path:
    """Build a new database from every configured source and import; returns the backup."""
    target = replaceable(cfg.database)
    carried = _carry(cfg.database)  # through a link: DuckDB finds its WAL beside the link
    paths = sorted({path_from_text(row[0]) for row in carried["imported_paths"]})
    missing = [p for p in paths if not p.exists()]
    if missing and not drop_missing:
        raise UsageError(f"{len(missing)} imported paths are gone (e.g. {missing[0]}); their "
                         "mail would be lost. Restore them, or pass --drop-missing")
    fresh = target.with_name(target.name + ".rebuild")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    with db.writer(fresh) as con:
        con.execute("BEGIN TRANSACTION")
        for table, columns in CARRIED.items():
            names = [c.strip() for c in columns.split(",")]
            with con.appender(table, columns=names) as app:
                app.append_rows(carried[table])
        con.execute("COMMIT")
    new_cfg = dataclasses.replace(cfg, database=fresh)
    failed = sources.sync_all(new_cfg, new_cfg.sources, echo=echo) if cfg.sources else []
    if failed:
        fresh.unlink(missing_ok=True)
        raise NetauditError(f"rebuild stopped: {', '.join(failed)} failed; the old database "
                            "is untouched")
    kept = [p for p in paths if p.exists()]
    if kept:
        me = local.prepare_me(fresh, cfg.me, ())
        imported = local.import_paths(fresh, "import", kept, me=me,
                                      keep_subject=cfg.store_subjects, label="imports")
        if imported.calendars:
            from ingest import calendars

            calendars.import_files(new_cfg, imported.calendars, me)
        echo(f"imports: {imported.mail.seen:,} messages from {len(kept)} paths")
    with db.writer(fresh) as con:
        con.execute("BEGIN TRANSACTION")
        changed = forget_again(con)
        con.execute("COMMIT")
        if any(changed.values()):  # what was cleared must not stay in free blocks
            privacy.rewrite(con, fresh)
        else:
            con.execute("CHECKPOINT")
    return swap(fresh, target, cfg.database)


def forget_again(con: Connection) -> dict[str, int]:
    """What the sources still say about forgotten people, out of a rebuilt file.

    The store already leaves forgotten addresses out; this clears what it cannot see: the
    subjects of mail that was with them alone, and ids that spell their address (see
    ``netaudit.privacy``). Runs inside the caller's transaction.
    """
    hashes = privacy.forgotten_hashes(con)
    if not hashes:
        return {}
    done = privacy.scrub_orphans(con)  # first: meetings are known by their original ids
    done.update(privacy.scrub_mentions(con, hashes))
    return done


def swap(fresh: Path, target: Path, link: Path | None = None) -> Path:
    """Put ``fresh`` in place of ``target``; the old file (and its WAL) becomes a backup.

    ``link`` is the symlink the database is opened through, if any: DuckDB keeps the WAL
    beside the name it was given, so that WAL is moved aside too.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    backup = target.with_name(f"{target.name}.bak-rebuild-{stamp}")
    if target.exists():
        os.replace(target, backup)
    for name in dict.fromkeys(p for p in (target, link) if p is not None):
        old_wal = name.with_name(name.name + ".wal")
        if old_wal.exists():  # a WAL must never meet a file it was not written for
            os.replace(old_wal, backup.with_name(backup.name + ".wal"))
    os.replace(fresh, target)
    return backup
