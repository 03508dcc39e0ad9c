"""Shared fixtures: real data from ../shared/data, an isolated home, and the CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.dovecot_fixtures"]

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NETAUDIT_TEST_DATA", REPO.parent / "shared" / "data"))

# CI runs the same 300 examples every time (derandomize), so a red build always means a
# change broke something; development runs explore new random inputs each time.
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def data_path(*parts: str) -> Path:
    """A file of the shared real-world corpus; missing data fails in CI and skips elsewhere."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        message = f"test data {path} is missing (expected the shared corpus at {DATA})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and XDG dirs, so no test can touch the user's real files."""
    h = tmp_path / "home"
    h.mkdir()
    env = {"HOME": str(h), "XDG_CONFIG_HOME": str(h / ".config"),
           "XDG_DATA_HOME": str(h / ".local/share")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NETAUDIT_CONFIG", raising=False)
    return h


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(home: Path) -> Run:
    """Run `python -m netaudit ARGS` as a real process and capture its output."""

    def _run(*args: str, check: bool | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "netaudit", *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout, cwd=home)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    return _run


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path
