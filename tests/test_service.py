"""The systemd units and `netaudit service`: rendered for this installation, accepted by
`systemd-analyze verify`, installed where the user manager looks, and the monthly report job
they run (idempotent, private)."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netaudit import sample, service
from tests.conftest import REPO, Run, write_config

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze is not installed")


def rendered(tmp_path: Path, config: Path | None = None) -> dict[str, Path]:
    units = service.render_all(service.netaudit_command(config))
    return {p.name: p for p in service.write_units(units, tmp_path / "units")}


def unit_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line and not line.startswith("#")]


# ---------------------------------------------------------------------------------------------
# The unit text


def test_checked_in_templates_match_the_package() -> None:
    """systemd/ is what readers and packagers see; netaudit.service is what installs."""
    for name, text in service.TEMPLATES.items():
        assert (REPO / "systemd" / name).read_text() == text, (
            f"systemd/{name} is out of date: run python -m netaudit.service systemd/")


def test_rendered_units_say_what_the_service_needs(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "")
    units = rendered(tmp_path, config)
    daemon = unit_lines(units["netaudit.service"])
    exec_start = next(line for line in daemon if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={sys.executable} -m netaudit --config {config.resolve()} "
                          "daemon")
    assert Path(exec_start.split("=", 1)[1].split()[0]).is_absolute()
    for fact in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "RestartSec=30",
                 "WatchdogSec=120", "TimeoutStopSec=15", "UMask=0077",
                 "Environment=PYTHONUNBUFFERED=1", "SyslogIdentifier=netaudit",
                 "NoNewPrivileges=yes", "LockPersonality=yes", "RestrictRealtime=yes",
                 "SystemCallArchitectures=native",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "WantedBy=default.target"):
        assert fact in daemon, fact
    # Mount-namespace hardening needs user namespaces in user units (R-SYS-4): not by default.
    assert not [line for line in daemon if line.split("=")[0] in
                ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths",
                 "PrivateUsers", "MemoryDenyWriteExecute")]
    report = unit_lines(units["netaudit-report.service"])
    assert "Type=oneshot" in report and "UMask=0077" in report
    assert f"ExecStart={sys.executable} -m netaudit --config {config.resolve()} service " \
           "report-month" in report
    timer = unit_lines(units["netaudit-report.timer"])
    for fact in ("OnCalendar=monthly", "Persistent=true", "RandomizedDelaySec=1h",
                 "WantedBy=timers.target"):
        assert fact in timer, fact
    assert all(service.PLACEHOLDER not in p.read_text() for p in units.values())


def test_exec_start_words_are_quoted_for_systemd() -> None:
    assert service.quote_word("/usr/bin/python3") == "/usr/bin/python3"
    assert service.quote_word("/home/a b/config.toml") == '"/home/a b/config.toml"'
    assert service.quote_word("/x/100%.toml") == '"/x/100%%.toml"'  # not a specifier
    assert service.quote_word("/x/$HOME") == '"/x/$$HOME"'  # not a variable
    assert service.quote_word('/x/"q"') == '"/x/\\"q\\""'
    assert service.netaudit_command(None, python="/p/python") == ["/p/python", "-m", "netaudit"]


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_rendered_units(tmp_path: Path) -> None:
    """System-mode verify on the files (R-SYS-8: --user verify needs a user bus); ExecStart
    points at this Python, which exists, as verify checks."""
    units = rendered(tmp_path, write_config(tmp_path / "my config.toml", ""))
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, units.values())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    problems = [line for line in proc.stderr.splitlines()
                if any(name in line for name in units)]
    assert problems == []  # no unknown keys, no bad values, nothing "ignoring"


@needs_systemd_analyze
def test_systemd_analyze_parses_the_timer_schedule() -> None:
    proc = subprocess.run([SYSTEMD_ANALYZE, "calendar", "monthly"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Normalized form: *-*-01 00:00:00" in proc.stdout


# ---------------------------------------------------------------------------------------------
# netaudit service install


def test_install_writes_the_units_and_says_how_to_enable_them(run: Run, home: Path) -> None:
    config = write_config(home / "config.toml", "[netaudit]\n")
    proc = run("--config", str(config), "service", "install", check=True)
    target = home / ".config" / "systemd" / "user"  # $XDG_CONFIG_HOME/systemd/user
    assert sorted(p.name for p in target.iterdir()) == sorted(service.TEMPLATES)
    text = (target / "netaudit.service").read_text()
    assert f"ExecStart={sys.executable} -m netaudit --config {config} daemon" in text
    assert "systemctl --user daemon-reload" in proc.stdout
    assert "systemctl --user enable --now netaudit.service netaudit-report.timer" in proc.stdout
    # Lingering: the warning, or why it could not be checked; silence only when it is on.
    if service.check_linger().enabled is not True:
        assert "lingering" in proc.stderr.lower()
    again = run("--config", str(config), "service", "install", check=True)  # idempotent
    assert again.returncode == 0 and (target / "netaudit.service").read_text() == text


def test_install_dry_run_prints_and_writes_nothing(run: Run, home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    proc = run("service", "install", "--dir", str(target), "--dry-run", check=True)
    assert not target.exists()
    assert f"# {target / 'netaudit.service'}" in proc.stdout
    assert "Type=notify" in proc.stdout and "OnCalendar=monthly" in proc.stdout
    assert f"ExecStart={sys.executable} -m netaudit daemon" in proc.stdout  # no --config given


def test_install_refuses_a_broken_config(run: Run, home: Path) -> None:
    config = write_config(home / "config.toml", "[netaudit\n")
    proc = run("--config", str(config), "service", "install")
    assert proc.returncode == 2
    assert "not valid TOML" in proc.stderr
    assert not (home / ".config" / "systemd").exists()


def test_linger_check_says_when_it_cannot_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert service.check_linger("someone") == service.Linger(None, "loginctl is not installed")


# ---------------------------------------------------------------------------------------------
# The monthly report job


@pytest.fixture
def mailbox_config(run: Run, home: Path) -> Path:
    maildir = home / "Maildir"
    sample.write_maildir(maildir, 400, seed=3)
    config = write_config(home / "config.toml", f"""\
[netaudit]
database = "{home / 'netaudit.duckdb'}"
me = ["robin@example.org"]
timezone = "UTC"

[[maildir]]
name = "sample"
path = "{maildir}"
""")
    run("--config", str(config), "sync", check=True)
    return config


def test_report_month_writes_the_month_privately_and_idempotently(
        run: Run, home: Path, mailbox_config: Path) -> None:
    month = f"{sample.END.year:04d}-{sample.END.month - 1:02d}"
    proc = run("--config", str(mailbox_config), "service", "report-month", "--month", month,
               check=True)
    reports = home / ".local" / "share" / "netaudit" / "reports"  # $XDG_DATA_HOME/netaudit
    target = reports / f"{month}.html"
    assert str(target) in proc.stdout
    first = target.read_bytes()
    assert first.startswith(b"<!DOCTYPE html>") or b"<html" in first[:500]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(reports.stat().st_mode) == 0o700
    run("--config", str(mailbox_config), "service", "report-month", "--month", month,
        check=True)
    assert target.read_bytes() == first  # the same file, not a second one
    assert [p.name for p in reports.iterdir()] == [f"{month}.html"]  # no temp files left


def test_report_month_defaults_to_the_previous_month(run: Run, home: Path,
                                                     mailbox_config: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "reports"
    run("--config", str(mailbox_config), "service", "report-month", "--output-dir", str(out),
        check=True)
    expected = service.previous_month(dt.datetime.now(dt.UTC).date())
    assert [p.name for p in out.iterdir()] == [f"{expected}.html"]


def test_previous_month() -> None:
    assert service.previous_month(dt.date(2026, 1, 1)) == "2025-12"
    assert service.previous_month(dt.date(2026, 3, 31)) == "2026-02"
    assert service.previous_month(dt.date(2026, 11, 15)) == "2026-10"


def test_report_month_rejects_a_bad_month(run: Run, mailbox_config: Path) -> None:
    proc = run("--config", str(mailbox_config), "service", "report-month", "--month", "2026-13")
    assert proc.returncode == 2 and "not a month" in proc.stderr
