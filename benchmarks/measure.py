"""Run a command as its own process and measure it: wall time and peak memory.

Output goes to temporary files, not pipes: a child that writes more than a pipe holds would
otherwise block forever while we wait for it with wait4().
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def timed_run(cmd: Sequence[str], cwd: Path) -> tuple[float, int, int, str, str]:
    """(seconds, peak RSS in KiB, exit code, stdout, stderr) of ``cmd``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return (elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status),
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))
