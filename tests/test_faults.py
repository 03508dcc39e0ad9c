"""Faults of the machine: a full disk during a batch."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from netaudit import db, sample
from tests.conftest import Run, write_config


def _limit_file_size(limit: int) -> None:
    """In the child: files may not grow past ``limit`` bytes, as on a full disk; the write
    fails with EFBIG instead of the process being killed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.fixture(scope="module")
def maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("full") / "Maildir"
    sample.write_maildir(root, 12000, seed=11)
    return root


def test_disk_full_fails_the_batch_cleanly_and_a_later_run_completes(
        maildir: Path, tmp_path: Path, run: Run) -> None:
    db_path = tmp_path / "n.duckdb"
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{db_path}"\n'
                       'me = ["robin@example.org"]\n')
    with db.writer(db_path):  # the file exists, migrated, before the disk fills
        pass
    size = db_path.stat().st_size
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "import",
                           str(maildir)], capture_output=True, text=True,
                          preexec_fn=lambda: _limit_file_size(size + 400_000))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and "disk" in proc.stderr
    assert "nothing from the failed batch was stored" in proc.stderr
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT message_key) FROM messages").fetchone()
    finally:
        con.close()
    assert stored == distinct < 12000  # whole batches or nothing, never doubled
    run("--config", str(cfg), "import", str(maildir), check=True)
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT message_key) FROM messages"
                           ).fetchone() == (12000, 12000)
    finally:
        con.close()
