"""`netaudit sync`: pull each configured source once; one failing does not stop the others."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.safe_files import path_text
from ingest.store import BatchResult, known_me, record_source, remember_me
from netaudit import db
from netaudit.config import Config, Source
from netaudit.db import Connection
from netaudit.errors import DatabaseError, NetauditError, SourceError

if TYPE_CHECKING:
    from ingest.imap import Session

log = logging.getLogger(__name__)


def os_error_text(exc: OSError) -> str:
    """One line for an OS error, storable: a file name that is not UTF-8 comes out escaped
    (DuckDB refuses the lone surrogates Python decodes such names to)."""
    text = exc.strerror or path_text(str(exc))
    return f"{text}: {path_text(exc.filename)}" if exc.filename is not None else text


def _summary(result: BatchResult) -> str:
    return (f"{result.seen:,} messages: {result.new:,} new, {result.duplicates:,} already "
            f"stored, {result.quarantined:,} quarantined")


def sync_local(cfg: Config, source: Source, me: frozenset[str]) -> str:
    """A [[maildir]] or [[mbox]] source, through the same readers as `netaudit import`.

    Only what changed is read: an mbox from where the last sync ended, a Maildir's folders
    and files changed since its last complete scan (both kept in sync_state).
    """
    from ingest import local  # the mail file readers are loaded only for local sources

    path = Path(source["path"])
    local.check_source_path(source.kind, path)
    if source.kind == "maildir":
        scan = local.sync_maildir(cfg.database, source.name, path, me=me,
                                  keep_subject=cfg.store_subjects)
        return _summary(scan.mail)  # whether it was a delta scan is logged (-v)
    result = local.import_paths(cfg.database, source.name, [path], me=me,
                                keep_subject=cfg.store_subjects)
    said = result.marks.summary("sync") if result.marks is not None else ""
    return _summary(result.mail) + (f"; {said}" if said else "")


def sync_one(cfg: Config, source: Source, me: frozenset[str],
             positions: dict[str, Any] | None = None, session: Session | None = None) -> str:
    """One source; ``positions`` are an IMAP account's, when the caller has read them already,
    ``session`` its login begun (``imap.log_in_ahead``)."""
    if source.kind in ("maildir", "mbox"):
        return sync_local(cfg, source, me)
    if source.kind == "imap":
        from ingest.imap import sync_imap  # imapclient is loaded only when an account syncs

        return sync_imap(cfg, source, me, positions=positions, session=session)
    if source.kind == "calendar":
        from ingest.calendars import sync_calendar

        return sync_calendar(cfg, source, me)
    raise SourceError(f"{source.kind} sources are not supported by this version yet")


def sync_all(cfg: Config, sources: Sequence[Source], echo: Callable[[str], None],
             then: Callable[[Connection], object] | None = None) -> list[str]:
    """Sync each source; print one summary line per source; return the names that failed.

    ``then`` runs in the same write as the last source's outcome (the CLI regroups people
    there). A sync with nothing new thus opens the file twice: once here for my addresses and
    the IMAP positions, once at the end. When the first source is an IMAP account, it logs in
    meanwhile.
    """
    session: Session | None = None
    if sources and sources[0].kind == "imap":
        from ingest.imap import log_in_ahead

        session = log_in_ahead(sources[0])
    try:
        return _sync_each(cfg, sources, echo, then, session)
    finally:
        if session is not None:
            session.drop()  # used and closed already, unless reading the database failed


def _sync_each(cfg: Config, sources: Sequence[Source], echo: Callable[[str], None],
               then: Callable[[Connection], object] | None,
               session: Session | None) -> list[str]:
    positions: dict[str, dict[str, Any]] = {}
    with db.writer(cfg.database) as con:
        con.execute("BEGIN TRANSACTION")
        remember_me(con, cfg.me, "config")
        me = frozenset(known_me(con))
        if any(s.kind == "imap" for s in sources):
            from ingest.imap_positions import load_positions

            positions = {s.name: load_positions(con, s.name) for s in sources if s.kind == "imap"}
        con.execute("COMMIT")
    failed = []
    for i, source in enumerate(sources):
        outcome: dict[str, str] = {}
        try:
            outcome["summary"] = sync_one(cfg, source, me, positions.get(source.name),
                                          session if i == 0 else None)
            echo(f"{source.name}: {outcome['summary']}")
        except DatabaseError:
            raise
        except (NetauditError, OSError) as exc:
            outcome["error"] = str(exc) if isinstance(exc, NetauditError) else \
                os_error_text(exc)
            failed.append(source.name)
            echo(f"{source.name}: failed: {outcome['error']}")
        last = i == len(sources) - 1
        with db.writer(cfg.database) as con:
            con.execute("BEGIN TRANSACTION")
            record_source(con, source.name, source.kind, **outcome)
            if last and then is not None:
                then(con)
            con.execute("COMMIT")
    if not sources and then is not None:
        with db.writer(cfg.database) as con:
            con.execute("BEGIN TRANSACTION")
            then(con)
            con.execute("COMMIT")
    return failed
