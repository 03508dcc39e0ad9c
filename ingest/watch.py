"""File watching for local sources (Maildir, mbox, .ics files and vdirs), with watchdog.

Writers save through a temp file and a rename, Maildir delivery moves files from new/ to
cur/, and vdir tools delete and re-create: so created, moved, modified, closed-after-write
and deleted events all count (R-ICS-7). Reads do not: netaudit opening a file must not
trigger another sync of it, so "opened" and "closed without writing" are ignored.

One inotify instance serves every source. When the kernel's limits are reached (OSError
ENOSPC for watches, EMFILE for instances) that source is not watched: the daemon logs a
warning and relies on its timed rescans, which run whether or not watching works.
Debouncing is the workers' job (a request is due a second after the first event).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler

log = logging.getLogger(__name__)

CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})
_LIMIT_HINTS = {
    errno.ENOSPC: "the inotify watch limit is reached (sysctl fs.inotify.max_user_watches)",
    errno.EMFILE: "the inotify instance limit is reached (sysctl fs.inotify.max_user_instances)",
}

OnChange = Callable[[list[str], bool], None]  # (paths, deleted)


class ObserverLike(Protocol):
    """What the watcher needs of a watchdog observer (a test passes a failing one)."""

    def schedule(self, event_handler: FileSystemEventHandler, path: str, *,
                 recursive: bool = False) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


@dataclass(frozen=True)
class Target:
    """What to watch for one source: a directory, and which paths under it matter."""

    directory: Path
    recursive: bool
    wanted: Callable[[str], bool]


def target_for(kind: str, path: Path) -> Target:
    """Maildir trees recursively; an mbox or a single .ics file through its directory (the
    file itself is replaced on rename, which would orphan a watch on it); a vdir flat."""
    if kind == "maildir":
        return Target(path, True, _in_maildir)
    if path.is_dir():  # a vdir
        return Target(path, False, _is_ics)
    exact = os.fspath(path)
    return Target(path.parent, False, lambda p: p == exact)


def _in_maildir(path: str) -> bool:
    parent = os.path.basename(os.path.dirname(path))
    return parent in ("cur", "new") and not os.path.basename(path).startswith(".")


def _is_ics(path: str) -> bool:
    name = os.path.basename(path)
    return name.lower().endswith(".ics") and not name.startswith(".")


class _Handler(FileSystemEventHandler):
    def __init__(self, target: Target, on_change: OnChange) -> None:
        self.target = target
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGES or event.is_directory:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.event_type == "moved" and event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        wanted = [p for p in paths if self.target.wanted(p)]
        if wanted:
            self.on_change(wanted, event.event_type == "deleted")


def describe_os_error(exc: OSError) -> str:
    return _LIMIT_HINTS.get(exc.errno or 0) or exc.strerror or str(exc)


class Watcher:
    """Schedules one watch per source on a shared observer; ``add`` says whether it worked."""

    def __init__(self, observer: ObserverLike | None = None) -> None:
        if observer is None:
            from watchdog.observers import Observer

            observer = Observer()
        self._observer = observer
        self._started = False

    def start(self) -> bool:
        """Start the observer thread (with no watches yet, so a limit cannot stop it)."""
        try:
            self._observer.start()
        except OSError as exc:
            log.warning("file watching is unavailable (%s); local sources are rescanned on a "
                        "timer instead", describe_os_error(exc))
            return False
        self._started = True
        return True

    def add(self, name: str, kind: str, path: Path, on_change: OnChange) -> bool:
        """Watch ``path`` for source ``name``; False (and a warning) when it cannot be."""
        if not self._started:
            return False
        target = target_for(kind, path)
        if not target.directory.is_dir():
            log.warning("%s: cannot watch %s: no such directory; rescanning on a timer", name,
                        target.directory)
            return False
        try:
            self._observer.schedule(_Handler(target, on_change), os.fspath(target.directory),
                                    recursive=target.recursive)
        except OSError as exc:
            log.warning("%s: cannot watch %s: %s; rescanning on a timer instead", name,
                        target.directory, describe_os_error(exc))
            return False
        log.debug("%s: watching %s%s", name, target.directory,
                  " (recursively)" if target.recursive else "")
        return True

    def stop(self, timeout: float = 2.0) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout)
            self._started = False
