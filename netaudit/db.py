"""Opening the DuckDB file: short write windows, patient readers, and migrations.

DuckDB lets one process write or many read, never both. So writers hold the file only for one
batch and readers retry briefly; when a wait runs out the message names the other process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

try:
    # The engine itself: the `duckdb` package re-exports it, adding the relational Python API
    # netaudit does not use, and costs 90-110 ms more to import (a third of a no-op `sync`).
    import _duckdb as duckdb
except ImportError:  # pragma: no cover - a DuckDB package that is laid out differently
    import duckdb  # type: ignore[no-redef]

from netaudit import paths
from netaudit.errors import DatabaseBusy, DatabaseError
from netaudit.migrations import MIGRATIONS, Migration, compute_interactions

log = logging.getLogger(__name__)

Connection = duckdb.DuckDBPyConnection
Error = duckdb.Error

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")
_REBUILD_HINT = "run `netaudit rebuild` to re-create it from your sources"


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def lock_holder(exc: Exception) -> str:
    """'python3 (PID 1234)' from DuckDB's lock error, for messages a user can act on."""
    m = _LOCK_HOLDER.search(str(exc))
    if not m:
        return "another process"
    exe = os.path.basename(m["exe"]) or m["exe"]
    return f"{exe} (PID {m['pid']})"


# DuckDB's defaults are sized for a server: a buffer pool of 80 % of the machine's memory and a
# thread per core, each with buffers of its own. netaudit runs beside everything else a person
# has open, so every connection gets a fixed budget; queries past it spill to disk beside the
# file (a writer's temp directory; a reader's default). At 1,000,000 messages `report` peaked
# at 535 MiB with the defaults (docs/benchmarks.md, "A ten-year mailbox").
MEMORY_LIMIT = "128MB"
THREADS = 2


def settings() -> dict[str, str | bool | int | float | list[str]]:
    """The DuckDB budget of every connection ($NETAUDIT_MEMORY_LIMIT, e.g. "512MB", raises it
    for a big one-off query; $NETAUDIT_THREADS the threads)."""
    threads = os.environ.get("NETAUDIT_THREADS", "")
    return {"memory_limit": os.environ.get("NETAUDIT_MEMORY_LIMIT") or MEMORY_LIMIT,
            "threads": int(threads) if threads.isdigit() and int(threads) > 0 else THREADS}


def connect_bare(path: Path) -> Connection:
    """DuckDB's own read-only connect: no waiting, no migration, for a file that may be
    damaged."""
    return duckdb.connect(str(path), read_only=True, config=settings())


# Rows per row group of what netaudit writes. A checkpoint (every close after a write) rewrites
# each table's last, partly filled row group whole, so with DuckDB's default of 122,880 rows
# its time and memory grew with the mailbox until that group filled: closing after 10,000 more
# messages took 0.37 s and 30 MiB more at 85,000 stored, 0.67 s and 58 MiB at 130,000. With
# 16,384 rows it stays at or under 0.17 s and 20 MiB at every size (docs/benchmarks.md).
ROW_GROUP_ROWS = 16_384


def _connect_writer(path: Path) -> Connection:
    """The file attached with ROW_GROUP_ROWS, which only ATTACH can set, under the name a plain
    connect gives it (the file's stem), so that SQL reads the same through either. Spilled
    data goes beside the file, as with a plain connect, not into the working directory."""
    con = duckdb.connect(config={"temp_directory": f"{path.absolute()}.tmp", **settings()})
    try:
        con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' "
                    f"(ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        row = con.execute("SELECT database_name FROM duckdb_databases() "
                          "WHERE NOT internal AND path IS NOT NULL").fetchone()
        if row is None:  # pragma: no cover - DuckDB lists every attached file
            raise DatabaseError(f"{path} was attached but is not listed")
        con.execute(f'USE "{row[0].replace(chr(34), chr(34) * 2)}"')
        return con
    except duckdb.BinderException:
        # A stem that names one of DuckDB's own catalogs ("memory", "system", "temp"):
        # such a file is written with the default row groups.
        con.close()
        return duckdb.connect(str(path), config=settings())
    except BaseException:
        con.close()
        raise


# Where a command says that it waits for another process (the CLI: one line on stderr), for
# every open that brings no ``on_wait`` of its own: the ingest code opens writers in many
# places, and a wait of up to a minute in silence looks like a hang.
_wait_notice: Callable[[str], None] | None = None
NOTICE_AFTER = 1.0  # seconds; a shorter wait (a batch being committed) is not worth a line


def set_wait_notice(notice: Callable[[str], None] | None) -> None:
    """Call ``notice("waiting for python3 (PID 1234) to release PATH")`` once per open that
    has waited NOTICE_AFTER seconds for another process (None: stay silent)."""
    global _wait_notice
    _wait_notice = notice


def _open(path: Path, read_only: bool, wait: float,
          on_wait: Callable[[str], None] | None = None) -> Connection:
    """Connect, retrying with backoff while another process holds a conflicting lock.

    An ``on_wait`` of the caller hears of the first failed attempt; the process-wide notice
    (``set_wait_notice``) only of a wait longer than NOTICE_AFTER.
    """
    started = time.monotonic()
    deadline = started + wait
    delay = 0.02
    reported = False
    quiet_for = 0.0
    if on_wait is None and _wait_notice is not None:
        on_wait, quiet_for = _wait_notice, NOTICE_AFTER
    while True:
        try:
            if read_only:  # readers never checkpoint: the row group size is a writer's
                return duckdb.connect(str(path), read_only=True, config=settings())
            return _connect_writer(path)
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise _open_error(path, exc) from None
            if time.monotonic() >= deadline:
                what = "written" if read_only else "used"
                raise DatabaseBusy(
                    f"the database {path} is being {what} by {lock_holder(exc)}; "
                    "try again in a moment") from None
            if on_wait is not None and not reported and \
                    time.monotonic() - started >= quiet_for:
                on_wait(f"waiting for {lock_holder(exc)} to release {path}")
                reported = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


_DAMAGE = ("not a valid DuckDB database", "Corrupt", "corrupt", "checksum",
           "attempted to read", "Could not read enough bytes", "block id", "Serialization Error")


_FULL = ("No space left on device", "File too large", "Disk quota exceeded")


def explain(exc: BaseException, path: Path | None = None) -> DatabaseError | None:
    """A DuckDB error that is about the file, not a bug, as a message a user can act on.

    A full disk fails the commit (the transaction is rolled back, so the batch is simply not
    stored). Damage can surface on the first query rather than on open (a truncated file
    reads fine until a missing block is needed). The CLI asks this of any error it catches.
    """
    if not isinstance(exc, duckdb.Error):
        return None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if any(m in text for m in _FULL):
        reason = next(m for m in _FULL if m in text)
        return DatabaseError(f"cannot write the database: the disk is full ({reason}); "
                             "nothing from the failed batch was stored. Free some space and "
                             "run the command again")
    if not isinstance(exc, duckdb.IOException) and not any(m in text for m in _DAMAGE):
        return None
    where = f" {path}" if path else ""
    return DatabaseError(f"the database{where} is damaged ({text}); {_REBUILD_HINT}")


def _open_error(path: Path, exc: Exception) -> DatabaseError:
    explained = explain(exc, path)
    if explained is not None:
        return explained
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DatabaseError(f"cannot open the database {path}: {text}")


class WriteGate(Protocol):
    """Something that serializes a process's writers (the daemon's, ingest/writegate.py)."""

    def writer(self, path: Path, *, wait: float | None = None,
               on_wait: Callable[[str], None] | None = None
               ) -> contextlib.AbstractContextManager[Connection]: ...


_gate: WriteGate | None = None


def set_write_gate(gate: WriteGate | None) -> None:
    """Route every ``writer`` call of this process through ``gate`` (None: directly)."""
    global _gate
    _gate = gate


def has_write_gate() -> bool:
    """Whether this process's writers go through a gate (the daemon's threads)."""
    return _gate is not None


@contextlib.contextmanager
def writer(path: Path, *, wait: float = 60.0,
           on_wait: Callable[[str], None] | None = None) -> Iterator[Connection]:
    """The one way to write: open for a batch, migrate if needed, close right after.

    Goes through the process's write gate when one is set (the daemon's many threads).
    """
    if _gate is not None:
        with _gate.writer(path, wait=wait, on_wait=on_wait) as con:
            yield con
    else:
        with open_writer(path, wait=wait, on_wait=on_wait) as con:
            yield con


@contextlib.contextmanager
def open_writer(path: Path, *, wait: float = 60.0,
                on_wait: Callable[[str], None] | None = None) -> Iterator[Connection]:
    """Open the file for writing, bypassing any gate (the gate itself calls this).

    The file and its WAL are created private (mode 0600) whatever the caller's umask.
    """
    paths.ensure_private_dir(path.parent)
    old_umask = os.umask(0o077)
    try:
        created = not path.exists()
        con = _open(path, read_only=False, wait=wait, on_wait=on_wait)
        try:
            if created:
                os.chmod(path, 0o600)
            migrate(con, path)
            yield con
        finally:
            con.close()
    finally:
        os.umask(old_umask)


@contextlib.contextmanager
def reader(path: Path, *, wait: float | None = None) -> Iterator[Connection]:
    """A read-only connection; brings an older schema up to date first.

    While a batch is being written it retries for ``wait`` seconds ($NETAUDIT_LOCK_WAIT,
    default 10), longer than any write window, then names the process holding the file.
    """
    if wait is None:
        wait = _env_seconds("NETAUDIT_LOCK_WAIT", 10.0)
    if not path.exists():
        raise DatabaseError(
            f"no database at {path} yet; run `netaudit import PATH` or `netaudit sync` first")
    con = _open(path, read_only=True, wait=wait)
    try:
        behind = schema_version(con) < MIGRATIONS[-1].version
    except duckdb.Error as exc:
        con.close()
        raise _open_error(path, exc) from None
    if behind:
        con.close()
        with writer(path, wait=wait):
            pass
        con = _open(path, read_only=True, wait=wait)
    try:
        yield con
    finally:
        con.close()


PEOPLE_BUILT_FROM = "people_built_from"  # settings key: what identities were last built from


def people_inputs_changed(con: Connection) -> None:
    """Say, inside the writing transaction, that the people must be regrouped.

    Every write to what ``analysis/identity.py`` reads calls this, so a sync that stored nothing
    can skip the regrouping and a crash between a write and the regrouping cannot hide it.
    """
    con.execute("DELETE FROM settings WHERE key = ?", [PEOPLE_BUILT_FROM])
    # the interactions stored at the last regrouping lack what this write brings: computed
    # from the raw tables until the next regrouping stores them again
    compute_interactions(con)


def schema_version(con: Connection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_meta'"
        " AND schema_name = 'main' AND database_name = current_database()").fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_meta").fetchone()
    return int(row[0]) if row else 0


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.bak-{version}")


def migrate(con: Connection, path: Path,
            migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply pending migrations, each in its own transaction, after backing the file up.

    Returns the versions applied. A failing migration is rolled back, so the file stays at the
    last good version, and the backup taken before the first one is kept.
    """
    current = schema_version(con)
    latest = migrations[-1].version
    if current > latest:
        raise DatabaseError(
            f"the database {path} was written by a newer netaudit (schema {current}, this "
            f"version knows {latest}); upgrade netaudit")
    pending = [m for m in migrations if m.version > current]
    if not pending:
        return []
    if current > 0:
        con.execute("CHECKPOINT")
        backup = backup_path(path, current)
        shutil.copyfile(path, backup)
        os.chmod(backup, 0o600)
        log.info("backed up %s to %s before migrating", path, backup)
    else:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_meta (version INTEGER NOT NULL, name VARCHAR,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,"
            " duckdb_version VARCHAR)")
    applied = []
    for m in pending:
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in m.statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_meta (version, name, duckdb_version) VALUES (?, ?, ?)",
                        [m.version, m.name, duckdb.__version__])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise DatabaseError(
                f"migration {m.version} ({m.name}) failed: {str(exc).splitlines()[0]}; "
                f"the database was left at schema {m.version - 1}") from None
        applied.append(m.version)
    people_inputs_changed(con)  # a migration may have changed what people are built from
    con.execute("CHECKPOINT")
    return applied
