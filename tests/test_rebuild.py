"""`netaudit rebuild`: the sources are the truth; decisions survive; reports stay the same."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

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


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``directory`` (links not followed): inode, mode, mtime."""
    out = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(directory))] = (st.st_ino, st.st_mode, st.st_mtime_ns)
    return out


def _not_a_file(kind: str, path: Path) -> str:
    """Make ``path`` a ``kind`` that is not a database file; returns what rebuild calls it."""
    if kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
        return "is a directory"
    if kind == "device":
        try:  # a null device of our own: /dev/null itself must not be the test's risk
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD")
        return "is a device"
    if kind == "fifo":
        os.mkfifo(path)
        return "is a FIFO"
    if kind == "link to /dev/null":
        path.symlink_to("/dev/null")
        return "is a symlink to /dev/null, which is a device"
    if kind == "link to a directory":
        (path.parent / "elsewhere").mkdir()
        path.symlink_to(path.parent / "elsewhere")
        return f"is a symlink to {path.parent / 'elsewhere'}, which is a directory"
    assert kind == "dangling link"
    path.symlink_to(path.parent / "gone.duckdb")
    return f"is a symlink to {path.parent / 'gone.duckdb'}, which does not exist"


@pytest.mark.parametrize("kind", ["directory", "device", "fifo", "link to /dev/null",
                                  "link to a directory", "dangling link"])
def test_rebuild_never_renames_what_is_not_a_database_file(tmp_path: Path, run: Run,
                                                           kind: str) -> None:
    maildir, _ = scenario.build(tmp_path / "src")
    place = tmp_path / "db"
    place.mkdir()
    database = place / "n.duckdb"
    what = _not_a_file(kind, database)
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{database}"\nme = ["{scenario.ME}"]\n'
                       f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n')
    before = _snapshot(place)
    proc = run("--config", str(cfg), "rebuild", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (f"Error: the database {database} {what}, not a database file; "
                           "rebuild replaces only a file\n")
    assert _snapshot(place) == before  # nothing renamed, created or written


def test_rebuild_through_a_symlink_replaces_the_file_and_keeps_the_link(
        tmp_path: Path, run: Run) -> None:
    maildir, _ = scenario.build(tmp_path / "src")
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "n.duckdb"
    link.symlink_to(real / "n.duckdb")
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{link}"\nme = ["{scenario.ME}"]\n'
                       'timezone = "UTC"\nhistory_start = 2024-01-01\n'
                       f'[[maildir]]\nname = "mail"\npath = "{maildir}"\n')
    run("--config", str(cfg), "sync", check=True)
    before = report(run, cfg)
    run("--config", str(cfg), "rebuild", check=True)
    assert link.is_symlink() and link.readlink() == real / "n.duckdb"
    assert (real / "n.duckdb").is_file()
    assert len(list(real.glob("n.duckdb.bak-rebuild-*"))) == 1
    assert report(run, cfg) == before
