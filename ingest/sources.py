"""`netaudit sync`: pull each configured source once; one failing does not stop the others."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ingest import local
from ingest.store import BatchResult, record_source
from netaudit import db
from netaudit.config import Config, Source
from netaudit.errors import DatabaseError, NetauditError, SourceError

log = logging.getLogger(__name__)


def _summary(result: BatchResult) -> str:
    return (f"{result.seen:,} messages: {result.new:,} new, {result.duplicates:,} already "
            f"stored, {result.quarantined:,} quarantined")


def sync_local(cfg: Config, source: Source, me: frozenset[str]) -> str:
    """A [[maildir]] or [[mbox]] source, through the same readers as `netaudit import`."""
    path = Path(source["path"])
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if source.kind == "maildir" and not path.is_dir():
        raise SourceError(f"{path} is not a directory")
    if source.kind == "mbox" and not path.is_file():
        raise SourceError(f"{path} is not a file")
    result = local.import_paths(cfg.database, source.name, [path], me=me,
                                keep_subject=cfg.store_subjects)
    return _summary(result.mail)


def sync_one(cfg: Config, source: Source, me: frozenset[str]) -> str:
    if source.kind in ("maildir", "mbox"):
        return sync_local(cfg, source, me)
    if source.kind == "imap":
        from ingest.imap import sync_imap  # imapclient is loaded only when an account syncs

        return sync_imap(cfg, source, me)
    if source.kind == "calendar":
        from ingest.calendars import sync_calendar

        return sync_calendar(cfg, source, me)
    raise SourceError(f"{source.kind} sources are not supported by this version yet")


def sync_all(cfg: Config, sources: Sequence[Source], echo: Callable[[str], None]) -> list[str]:
    """Sync each source; print one summary line per source; return the names that failed."""
    me = local.prepare_me(cfg.database, cfg.me, ())
    failed = []
    for source in sources:
        try:
            summary = sync_one(cfg, source, me)
        except DatabaseError:
            raise
        except (NetauditError, OSError) as exc:
            message = str(exc) if isinstance(exc, NetauditError) else f"{exc.strerror}: " \
                f"{exc.filename}"
            failed.append(source.name)
            echo(f"{source.name}: failed: {message}")
            with db.writer(cfg.database) as con:
                record_source(con, source.name, source.kind, error=message)
            continue
        echo(f"{source.name}: {summary}")
        with db.writer(cfg.database) as con:
            record_source(con, source.name, source.kind, summary=summary)
    return failed
