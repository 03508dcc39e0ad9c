"""User decisions: merge, ignore, forget; and `netaudit person`."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests import scenario
from tests.conftest import Run, write_config


@pytest.fixture
def imported(tmp_path: Path, run: Run) -> tuple[Path, Path, Path]:
    maildir, calendar = scenario.build(tmp_path)
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\nhistory_start = 2024-01-01\n')
    run("--config", str(cfg), "import", str(maildir), str(calendar), check=True)
    return cfg, maildir, tmp_path / "n.duckdb"


def report(run: Run, cfg: Path) -> dict:
    return json.loads(run("--config", str(cfg), "report", "--as-of", "2026-06-30", "--format",
                          "json", check=True).stdout)


def rows_mentioning(db_path: Path, needle: str) -> list[str]:
    """Every table and column where any value contains ``needle``."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        hits = []
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary"
                             ).fetchall()
        for (table,) in tables:
            cols = con.execute(f'SELECT * FROM "{table}" LIMIT 0').description or []
            for (col, *_rest) in cols:
                found = con.execute(f'SELECT count(*) FROM "{table}" WHERE '
                                    f'CAST("{col}" AS VARCHAR) ILIKE ?',
                                    [f"%{needle}%"]).fetchone()
                if found and found[0]:
                    hits.append(f"{table}.{col}")
        return hits
    finally:
        con.close()


def test_forget_leaves_no_row_and_it_does_not_come_back(imported: tuple[Path, Path, Path],
                                                        run: Run) -> None:
    cfg, maildir, db_path = imported
    address = scenario.STEADY[0]
    assert rows_mentioning(db_path, address)  # there is something to forget
    proc = run("--config", str(cfg), "people", "forget", address, "--yes", check=True)
    assert proc.stdout.startswith(f"Forgot 1 address: {address}.\nDeleted ")
    assert rows_mentioning(db_path, address) == []
    assert rows_mentioning(db_path, "Sam Steady") == []
    run("--config", str(cfg), "import", str(maildir), check=True)  # the source still has it
    assert rows_mentioning(db_path, address) == []
    doc = report(run, cfg)
    assert doc["summary"]["ties"] == 6  # Quinn, Uma, Pat, Maria, Bob, Mia


def test_ignore_lets_a_tie_go(imported: tuple[Path, Path, Path], run: Run) -> None:
    cfg, _, _ = imported
    before = report(run, cfg)
    assert [e["email"] for e in before["neglected"]] == [scenario.QUIET[0]]
    run("--config", str(cfg), "people", "ignore", scenario.QUIET[0], check=True)
    after = report(run, cfg)
    assert after["neglected"] == [] and after["respect"]["ignored"] == 1
    assert after["summary"]["ties"] == before["summary"]["ties"] - 1


def test_merge_joins_two_addresses(imported: tuple[Path, Path, Path], run: Run) -> None:
    cfg, _, _ = imported
    run("--config", str(cfg), "people", "merge", scenario.STEADY[0], scenario.QUIET[0],
        check=True)
    rows = json.loads(run("--config", str(cfg), "sql", "--format", "json",
                          "SELECT addresses FROM people WHERE list_contains(addresses, "
                          f"'{scenario.QUIET[0]}')", check=True).stdout)
    assert rows == [{"addresses": [scenario.QUIET[0], scenario.STEADY[0]]}]
    doc = report(run, cfg)
    assert doc["neglected"] == []  # one person now, and Sam wrote last week


def test_unknown_address_is_a_usage_error(imported: tuple[Path, Path, Path], run: Run) -> None:
    cfg, _, _ = imported
    proc = run("--config", str(cfg), "people", "ignore", "nobody@nowhere.example")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: no person has the address nobody@nowhere.example"


def test_person_shows_addresses_numbers_and_timeline(imported: tuple[Path, Path, Path],
                                                    run: Run) -> None:
    cfg, _, _ = imported
    out = run("--config", str(cfg), "person", "maria", check=True).stdout
    assert "Maria Moved <maria@newco.example>" in out
    assert "Addresses: maria@newco.example, maria@oldco.example" in out
    assert "Usually every 2 weeks" in out
    assert "Latest contact" in out and "2026-06-18 13:00" in out  # every 14 days from 01-15
    many = run("--config", str(cfg), "person", "example", check=True).stdout
    assert "people match 'example'" in many
    none = run("--config", str(cfg), "person", "zzz-nobody")
    assert none.returncode == 2 and "nobody matches 'zzz-nobody'" in none.stderr
