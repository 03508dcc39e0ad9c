"""`netaudit rebuild`: the sources are the truth; decisions survive; reports stay the same."""

from __future__ import annotations

import json
from pathlib import Path

from tests import scenario
from tests.conftest import Run, write_config


def report(run: Run, cfg: Path, as_of: str = "2026-06-30") -> dict:
    return json.loads(run("--config", str(cfg), "report", "--as-of", as_of, "--format",
                          "json", check=True).stdout)


def setup(tmp_path: Path, run: Run, *, calendar_source: bool = False) -> Path:
    """The Maildir as a configured source; the calendar as a one-off import, or a source."""
    maildir, calendar = scenario.build(tmp_path)
    extra = f'[[calendar]]\nname = "cal"\npath = "{calendar}"\n' if calendar_source else ""
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{tmp_path / "db" / "n.duckdb"}"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\nhistory_start = 2024-01-01\n'
                       f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n{extra}')
    run("--config", str(cfg), "sync", check=True)
    if not calendar_source:
        run("--config", str(cfg), "import", str(calendar), check=True)
    return cfg


def test_rebuild_gives_the_same_report_and_keeps_decisions(tmp_path: Path, run: Run) -> None:
    cfg = setup(tmp_path, run)
    run("--config", str(cfg), "people", "ignore", scenario.PUSHY[0], check=True)
    run("--config", str(cfg), "people", "forget", scenario.UNANSWERED[0], "--yes", check=True)
    before, before_old = report(run, cfg), report(run, cfg, "2025-12-20")
    assert before["respect"]["ignored"] == 1
    proc = run("--config", str(cfg), "rebuild", check=True)
    assert "mail: " in proc.stdout and "Rebuilt " in proc.stdout
    backups = list((tmp_path / "db").glob("n.duckdb.bak-rebuild-*"))
    assert len(backups) == 1
    assert report(run, cfg) == before
    assert report(run, cfg, "2025-12-20") == before_old
    forgotten = run("--config", str(cfg), "sql", "--format", "csv",
                    "SELECT count(*) AS n FROM participants WHERE address = "
                    f"'{scenario.UNANSWERED[0]}'", check=True).stdout
    assert forgotten == "n\n0\n"  # the forget decision kept it out of the new file


def test_rebuild_replaces_a_damaged_file(tmp_path: Path, run: Run) -> None:
    """A damaged file cannot tell what was imported by hand, so here every input is a
    configured source."""
    cfg = setup(tmp_path, run, calendar_source=True)
    before = report(run, cfg)
    db_file = tmp_path / "db" / "n.duckdb"
    data = db_file.read_bytes()
    db_file.write_bytes(data[: len(data) // 3])  # truncated, as after a failing disk
    broken = run("--config", str(cfg), "report", "--as-of", "2026-06-30")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "run `netaudit rebuild`" in broken.stderr
    # Decisions cannot be read from a damaged file; the sources rebuild everything else.
    run("--config", str(cfg), "rebuild", check=True)
    assert report(run, cfg) == before


def test_rebuild_refuses_to_lose_imports(tmp_path: Path, run: Run) -> None:
    cfg = setup(tmp_path, run)
    (tmp_path / "calendar.ics").unlink()
    proc = run("--config", str(cfg), "rebuild")
    assert proc.returncode == 2
    assert "1 imported paths are gone" in proc.stderr and "--drop-missing" in proc.stderr
