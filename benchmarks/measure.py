"""Run a command as its own process and measure it: wall time and peak memory.

Output goes to temporary files, not pipes: a child that writes more than a pipe holds would
otherwise block forever while we wait for it with wait4().

Peak memory is wait4()'s ru_maxrss, the largest single process. A command that starts
helpers of its own (netaudit's child writer) holds them all at once, so ``timed_run`` also
samples the memory of the whole process tree from /proc every 0.2 s (reading
smaps_rollup costs the measured process a little; a batch lasts longer than that).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def tree_rss_kib(pid: int) -> int:
    """Memory of ``pid`` and its descendants, in KiB (0 once it is gone).

    Proportional set size (Pss, /proc/PID/smaps_rollup): pages two processes share, such as
    the Python and DuckDB libraries both map, count half in each, so the sum is what the
    tree really holds; summed RSS would count them twice.
    """
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


OUTPUT_KEPT = 1 << 20


def timed_run(cmd: Sequence[str], cwd: Path) -> tuple[float, int, int, str, str]:
    """(seconds, peak RSS in KiB, exit code, stdout, stderr) of ``cmd``.

    The peak is the sampled sum over the process tree when the command started children,
    else wait4()'s ru_maxrss (which misses nothing between samples).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, cwd=cwd)
        peak_tree = [0]
        had_children = [False]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak_tree[0] = max(peak_tree[0], tree_rss_kib(proc.pid))
                with contextlib.suppress(OSError):
                    had_children[0] |= any(
                        (task / "children").read_text().strip()
                        for task in Path(f"/proc/{proc.pid}/task").iterdir())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        peak = peak_tree[0] if had_children[0] else usage.ru_maxrss
        # Only the first MiB of each: a command that prints a million rows would otherwise
        # grow this process, and the next child, forked from it, counts that memory as its own
        # peak until it execs.
        return (elapsed, peak, os.waitstatus_to_exitcode(status),
                out.read(OUTPUT_KEPT).decode(errors="replace"),
                err.read(OUTPUT_KEPT).decode(errors="replace"))
