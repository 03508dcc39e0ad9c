"""The error contract: every failure a user can cause or meet is one of these.

The CLI turns them into one ``Error: ...`` line and an exit code (``netaudit.cli.main``);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a source or a command failed
EXIT_USAGE = 2  # usage or configuration error


class NetauditError(Exception):
    """A failure to report as one readable line, never as a traceback."""

    exit_code = EXIT_FAILED


class UsageError(NetauditError):
    """The user asked for something that cannot work as asked."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A bad config file; the message names the file, the key and what was expected."""

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"config {where}: {problem}")


class DatabaseError(NetauditError):
    """The database file is missing, busy, corrupt or from a newer netaudit."""


class DatabaseBusy(DatabaseError):
    """Another process holds the write lock for longer than we are willing to wait."""


class SourceError(NetauditError):
    """One source (account, folder, calendar, file) failed; the others go on."""
