"""Where netaudit keeps its files: the XDG base directories, through platformdirs."""

from __future__ import annotations

import os
from pathlib import Path

APP = "netaudit"

# platformdirs is imported when a path is first asked for: a command given --config and a
# database path never needs it, and importing it costs more than some commands take.


def config_file() -> Path:
    import platformdirs

    return platformdirs.user_config_path(APP) / "config.toml"


def data_dir() -> Path:
    import platformdirs

    return platformdirs.user_data_path(APP)


def default_database() -> Path:
    return data_dir() / "netaudit.duckdb"


def system_timezone() -> str:
    """The system's IANA zone name, from $TZ or /etc/localtime; UTC when unknown."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz:
        return tz
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "UTC"


def ensure_private_dir(path: Path) -> None:
    """Create a directory (and parents) that only the user can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
