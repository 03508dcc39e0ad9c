"""Time `netaudit import` on generated Maildirs and compare peak memory across sizes.

    python benchmarks/bench_import.py [--sizes 10000 50000] [--workdir /tmp/netaudit-bench]

Each import runs as its own process, pinned to one CPU when `taskset` exists, into a fresh
database. Peak memory is the child's maximum RSS from wait4(). The Maildirs are generated
once by netaudit.sample (relay and DKIM headers, 1.5-8 KB bodies, 75 % bulk mail) and reused.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import timed_run  # noqa: E402  (benchmarks/ is the script's own directory)

from netaudit import sample  # noqa: E402


def maildir(workdir: Path, size: int) -> Path:
    root = workdir / f"maildir-{size}"
    marker = root / ".complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        written = sample.write_maildir(root, size, seed=size)
        marker.write_text(str(written))
        print(f"generated {size:,} messages ({written / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return root


def run_import(workdir: Path, source: Path, size: int) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of one `netaudit import` into a fresh database."""
    db_dir = workdir / f"db-{size}"
    shutil.rmtree(db_dir, ignore_errors=True)
    db_dir.mkdir(parents=True)
    config = db_dir / "config.toml"
    config.write_text(f'[netaudit]\ndatabase = "{db_dir / "n.duckdb"}"\n'
                      'me = ["robin@example.org"]\n')
    config.chmod(0o600)
    cmd = [sys.executable, "-m", "netaudit", "--config", str(config), "import", str(source)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    elapsed, peak, code, out, err = timed_run(cmd, REPO)
    if code != 0:
        raise SystemExit(f"import failed: {err}")
    expected = f"Imported {size:,} messages: {size:,} new"
    if not out.startswith(expected):
        raise SystemExit(f"unexpected result: {out!r}")
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/netaudit-bench"))
    parser.add_argument("--repeat", type=int, default=2, help="runs per size; best is kept")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"# {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; import pinned to one core")
    print("| messages | seconds (best) | messages/s | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|")
    peaks = {}
    for size in args.sizes:
        source = maildir(args.workdir, size)
        runs = [run_import(args.workdir, source, size) for _ in range(args.repeat)]
        best = min(r[0] for r in runs)
        peak = max(r[1] for r in runs) / 1024
        peaks[size] = peak
        print(f"| {size:,} | {best:.2f} | {size / best:,.0f} | {peak:.0f} |")
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        print(f"\npeak RSS ratio {large:,} / {small:,} messages: "
              f"{peaks[large] / peaks[small]:.2f}")


if __name__ == "__main__":
    main()
