"""A big mailbox is read within a fixed memory budget.

A database of 100,000 interactions (111,111 messages, filled by SQL as
benchmarks/bench_report.py fills it) is regrouped as after a sync; then every read command runs
as its own process and its peak RSS comes from wait4. The bound is 200 MiB for each (the
budget of a process beside everything else a person has open; DuckDB itself is held to
128 MB by netaudit/db.py). Counting interactions reads the rows the regrouping stored, so it
costs little more than starting the process: computing them again from every thread of the
mailbox cost 50 MiB more than a bare query here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_report import AS_OF, REGROUP, fill
from tests.conftest import write_config

INTERACTIONS = 100_000
MESSAGES = 111_111
BOUND_MIB = 200
MiB = 1024


REPO = Path(__file__).resolve().parents[1]

# Runs the command and reports its peak RSS (wait4) on its last line of stderr. A child
# started by exec counts the memory of the process it was forked from as its own peak (Linux
# keeps the old mm's high-water mark), so the command is started by this small process, not
# by pytest, which holds the filled database's DuckDB pages.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python ARGS`` from the repository as a process: its result and its peak RSS in
    MiB."""
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, sys.executable, *args],
                          capture_output=True, text=True, cwd=REPO,
                          timeout=300)  # only to detect a hang
    *err, rss = done.stderr.splitlines()
    return subprocess.CompletedProcess(args, done.returncode, done.stdout,
                                       "\n".join(err)), int(rss) / MiB


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The filled database, regrouped in a process of its own: (config, that peak in MiB)."""
    root = tmp_path_factory.mktemp("big")
    path = root / "n.duckdb"
    fill(path, INTERACTIONS)
    done, regroup_mib = peak(["-c", REGROUP, str(path)])  # the regrouping a sync ends with
    assert done.returncode == 0, done.stderr
    cfg = write_config(root / "config.toml",
                       f'[netaudit]\ndatabase = "{path}"\ntimezone = "UTC"\n')
    return cfg, regroup_mib


def netaudit(cfg: Path, *args: str) -> tuple[str, float]:
    done, mib = peak(["-m", "netaudit", "--config", str(cfg), *args])
    assert done.returncode == 0, done.stderr
    return done.stdout, mib


def test_regrouping_a_big_mailbox_stays_within_the_budget(big: tuple[Path, float]) -> None:
    cfg, regroup_mib = big
    assert regroup_mib < BOUND_MIB
    out, _ = netaudit(cfg, "sql", "SELECT count(*), count(DISTINCT person_id) "
                              "FROM interaction_rows", "--format", "csv")
    assert out.splitlines()[1] == f"{100_072},{2000}"


@pytest.mark.parametrize("fmt", ["json", "text", "html"])
def test_the_report_on_a_big_mailbox_stays_within_the_budget(big: tuple[Path, float],
                                                              fmt: str) -> None:
    out, mib = netaudit(big[0], "report", "--as-of", AS_OF, "--format", fmt)
    assert mib < BOUND_MIB
    if fmt == "json":
        assert json.loads(out)["summary"] == {
            "people": 2000, "ties": 2000, "messages": MESSAGES, "meetings": 0,
            "automated_excluded": 11_039}
    elif fmt == "text":
        assert "2000 ties among 2000 people, from \n111,111 messages (11,039 automated" in out
    else:
        assert out.count("<svg ") == 3 and "111,111 messages (11,039 automated" in out


def test_status_on_a_big_mailbox_stays_within_the_budget(big: tuple[Path, float]) -> None:
    out, mib = netaudit(big[0], "status")
    assert mib < BOUND_MIB
    assert f"Messages:    {MESSAGES:,} (11,039 automated)" in out


def test_counting_interactions_costs_about_what_a_bare_query_does(
        big: tuple[Path, float]) -> None:
    cfg = big[0]
    _, bare = netaudit(cfg, "sql", "SELECT 1")
    out, counted = netaudit(cfg, "sql", "SELECT count(*) FROM interactions", "--format", "csv")
    assert out.splitlines()[1] == "100072"
    assert counted < bare + 25  # MiB; computing them from every thread: 50 MiB more
    out, ties = netaudit(cfg, "sql", "SELECT count(*), sum(emails_sent) FROM ties",
                         "--format", "csv")
    assert out.splitlines()[1].startswith("2000,")
    assert ties < BOUND_MIB


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_query_over_every_message_streams(big: tuple[Path, float], fmt: str) -> None:
    """`sql` writes CSV and JSON row by row: listing 111,111 messages costs about what
    counting them does (at 1,000,000 messages: 614 MiB when every row was held, 132 MiB now)."""
    cfg = big[0]
    _, counted = netaudit(cfg, "sql", "SELECT count(*) FROM messages", "--format", fmt)
    out, listed = netaudit(cfg, "sql", "SELECT message_key, sent_at, from_addr, location "
                                       "FROM messages", "--format", fmt)
    if fmt == "json":
        rows = json.loads(out)
        assert len(rows) == MESSAGES and set(rows[0]) == {"message_key", "sent_at",
                                                          "from_addr", "location"}
    else:
        assert len(out.splitlines()) == MESSAGES + 1
    assert listed < counted + 40  # MiB
