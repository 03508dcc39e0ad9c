"""The systemd user units: their text, rendered for this installation, and installing them.

The unit templates live here, in the package, so that an installed netaudit (not only a
source checkout) can write them; ``systemd/`` holds the same templates for reading and
packaging, and a test keeps the two identical (regenerate with
``python -m netaudit.service systemd/``). ``@NETAUDIT@`` stands for the command that runs
this netaudit: this Python's absolute path, ``-m netaudit``, and ``--config`` when one was
given, quoted for systemd.

Hardening (R-SYS-4): only process-level options, which work in user units everywhere. Mount
namespace options (ProtectSystem, ProtectHome, PrivateTmp...) imply PrivateUsers in user
units since systemd 254 and fail before it, so they are left to an optional drop-in.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from netaudit import paths

PLACEHOLDER = "@NETAUDIT@"
DAEMON_UNIT = "netaudit.service"
REPORT_UNIT = "netaudit-report.service"
TIMER_UNIT = "netaudit-report.timer"

_HARDENING = """\
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
"""

TEMPLATES: dict[str, str] = {
    DAEMON_UNIT: f"""\
# netaudit daemon: keeps the netaudit database current (IMAP IDLE, polling, file watching).
# Installed by `netaudit service install`, which replaces {PLACEHOLDER} with this installation's
# command. Reload the config with `systemctl --user reload netaudit`.
[Unit]
Description=netaudit: mail and calendar ingestion into the netaudit database
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={PLACEHOLDER} daemon
ExecReload=kill -HUP $MAINPID
Restart=on-failure
RestartSec=30
WatchdogSec=120
TimeoutStopSec=15
Environment=PYTHONUNBUFFERED=1
SyslogIdentifier=netaudit
{_HARDENING}
[Install]
WantedBy=default.target
""",
    REPORT_UNIT: f"""\
# netaudit monthly report: writes $XDG_DATA_HOME/netaudit/reports/YYYY-MM.html for the
# previous month. Started by netaudit-report.timer; safe to run again (same file).
[Unit]
Description=netaudit: the previous month's report as HTML

[Service]
Type=oneshot
ExecStart={PLACEHOLDER} service report-month
Environment=PYTHONUNBUFFERED=1
SyslogIdentifier=netaudit-report
Nice=10
{_HARDENING}""",
    TIMER_UNIT: """\
# Runs netaudit-report.service on the first of each month; a month missed while the machine
# was off is caught up at the next boot (Persistent=true).
[Unit]
Description=netaudit: monthly report

[Timer]
OnCalendar=monthly
Persistent=true
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
""",
}

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def quote_word(word: str) -> str:
    """One ExecStart word: quoted when needed, with ``%`` and ``$`` escaped so that systemd
    takes them literally (they start specifiers and variable expansion)."""
    word = word.replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def netaudit_command(config_path: str | os.PathLike[str] | None,
                     python: str | None = None) -> list[str]:
    """How systemd should start this netaudit: the running interpreter (a venv's python
    keeps its venv), never a name looked up on a PATH the user manager may not have."""
    argv = [python or sys.executable, "-m", "netaudit"]
    if config_path:
        argv += ["--config", str(Path(config_path).expanduser().resolve())]
    return argv


def render(name: str, command: Sequence[str]) -> str:
    return TEMPLATES[name].replace(PLACEHOLDER, " ".join(quote_word(w) for w in command))


def render_all(command: Sequence[str]) -> dict[str, str]:
    return {name: render(name, command) for name in TEMPLATES}


def user_unit_dir() -> Path:
    """$XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user)."""
    return platformdirs.user_config_path("systemd") / "user"


def write_units(units: dict[str, str], directory: Path) -> list[Path]:
    """Write (or replace) the units; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        target = directory / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, target)
        written.append(target)
    return written


ENABLE_COMMANDS = (
    "systemctl --user daemon-reload",
    f"systemctl --user enable --now {DAEMON_UNIT} {TIMER_UNIT}",
)


@dataclass(frozen=True)
class Linger:
    """Whether the user manager outlives logouts (R-SYS-5)."""

    enabled: bool | None  # None: could not be checked
    detail: str = ""


def check_linger(user: str | None = None) -> Linger:
    """``loginctl show-user USER -p Linger``; without lingering the daemon stops at logout."""
    loginctl = shutil.which("loginctl")
    if loginctl is None:
        return Linger(None, "loginctl is not installed")
    user = user or os.environ.get("USER") or _login_name()
    try:
        proc = subprocess.run([loginctl, "show-user", user, "-p", "Linger"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Linger(None, str(exc))
    value = proc.stdout.strip()
    if proc.returncode != 0 or not value.startswith("Linger="):
        reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[0]
        return Linger(None, reason)
    return Linger(value == "Linger=yes", user)


def _login_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def reports_dir() -> Path:
    """Where the monthly job writes: $XDG_DATA_HOME/netaudit/reports."""
    return paths.data_dir() / "reports"


def previous_month(today: dt.date) -> str:
    """'YYYY-MM' of the month before ``today``'s (the timer fires on the first)."""
    last = today.replace(day=1) - dt.timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def write_templates(directory: Path) -> list[Path]:
    """The checked-in copies under systemd/, placeholder and all."""
    return write_units(dict(TEMPLATES), directory)


if __name__ == "__main__":  # python -m netaudit.service systemd/
    for written in write_templates(Path(sys.argv[1] if len(sys.argv) > 1 else "systemd")):
        print(written)
