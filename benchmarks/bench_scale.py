"""A ten-year mailbox: time and peak memory of every command at 1,000,000 messages.

    python benchmarks/bench_scale.py [--messages 1000000] [--workdir /tmp/netaudit-scale]

One mbox file is generated once (netaudit.sample's headers: relays, DKIM, lists, a tie's
rhythm; bodies cut to 200-900 bytes, since netaudit reads headers only and short bodies keep the
file at a size that fits a laptop's disk). A config names it as an ``[[mbox]]`` source. Then,
each step its own process: the first sync, an unchanged sync, ten messages appended and a sync,
`import` of the same file (a second route to the same bytes), every report format, a few
`sql` queries, `status`, and the daemon for a few seconds. Peak memory is that of the whole
process tree (benchmarks/measure.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from email.utils import format_datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import timed_run, tree_rss_kib  # noqa: E402

from netaudit import sample  # noqa: E402

ME = "robin@example.org"


def _cut(raw: bytes, rng: random.Random) -> bytes:
    head, _, body = raw.partition(b"\n\n")
    return head + b"\n\n" + body[: rng.randint(200, 900)] + b"\n"


def generate(path: Path, count: int) -> None:
    """An mboxrd file of ``count`` messages over ten years (written once, then reused)."""
    marker = path.with_suffix(".complete")
    if marker.exists() and marker.read_text() == str(count):
        return
    started = time.perf_counter()
    rng = random.Random(7)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb", buffering=1 << 20) as fh:
        for when, _seen, raw in sample.messages(count, seed=11, me=ME, days=3650,
                                                contacts=600):
            stamp = when.strftime("%a %b %d %H:%M:%S %Y")
            body = _cut(raw, rng).replace(b"\nFrom ", b"\n>From ")
            fh.write(b"From sender@example.org " + stamp.encode() + b"\n" + body + b"\n")
    tmp.rename(path)
    marker.write_text(str(count))
    print(f"generated {count:,} messages ({path.stat().st_size / 1e6:,.0f} MB) in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


def append(path: Path, count: int, seed: int) -> None:
    """``count`` new personal messages at the end of the file, as a mail client appends."""
    now = dt.datetime.now(dt.UTC)
    with open(path, "ab") as fh:
        for n in range(count):
            when = now - dt.timedelta(minutes=n)
            raw = (f"From: Ada Lovelace <ada{seed}@example.net>\nTo: Robin <{ME}>\n"
                   f"Subject: appended {seed}.{n}\nDate: {format_datetime(when)}\n"
                   f"Message-ID: <appended.{seed}.{n}@example.net>\n\nhello\n").encode()
            fh.write(b"From ada@example.net " + when.strftime("%a %b %d %H:%M:%S %Y").encode()
                     + b"\n" + raw + b"\n")


def netaudit(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "netaudit", "--config", str(config), *args]


def daemon_step(config: Path, seconds: float) -> tuple[float, int, int]:
    """Run the daemon for ``seconds`` (it syncs the unchanged source), then SIGTERM it."""
    started = time.perf_counter()
    proc = subprocess.Popen(netaudit(config, "daemon"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while time.perf_counter() - started < seconds:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    return time.perf_counter() - started, peak, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/netaudit-scale"))
    parser.add_argument("--daemon-seconds", type=float, default=15)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    mbox = work / f"mail-{args.messages}.mbox"
    generate(mbox, args.messages)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    live = run_dir / "mail.mbox"  # a copy, so that appending leaves the generated file as it is
    shutil.copyfile(mbox, live)
    config = run_dir / "config.toml"
    config.write_text(f'[netaudit]\ndatabase = "{run_dir / "n.duckdb"}"\nme = ["{ME}"]\n\n'
                      f'[[mbox]]\nname = "archive"\npath = "{live}"\n')
    config.chmod(0o600)
    env_note = (f"{platform.python_implementation()} {platform.python_version()}, "
                f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(f"# {args.messages:,} messages, {live.stat().st_size / 1e6:,.0f} MB mbox; {env_note}")
    print("| step | seconds | peak RSS of the process tree (MiB) | exit |")
    print("|---|---:|---:|---:|")
    html = run_dir / "report.html"
    steps: list[tuple[str, list[str] | None]] = [
        ("sync (first read of the mbox)", netaudit(config, "sync")),
        ("sync, file unchanged", netaudit(config, "sync")),
        ("append 10 messages, sync", None),
        ("import the same file (already stored)", netaudit(config, "import", str(live))),
        ("import it again, unchanged", netaudit(config, "import", str(live))),
        ("report --format json", netaudit(config, "report", "--format", "json")),
        ("report --format text", netaudit(config, "report", "--format", "text")),
        ("report --format html", netaudit(config, "report", "--format", "html",
                                          "--output", str(html))),
        ("sql count(*) FROM interactions",
         netaudit(config, "sql", "SELECT count(*) FROM interactions")),
        ("sql people by messages",
         netaudit(config, "sql", "SELECT person_id, count(*) AS n FROM interactions "
                                 "GROUP BY ALL ORDER BY n DESC LIMIT 20")),
        ("sql every message row (json)",
         netaudit(config, "sql", "--format", "json",
                  "SELECT message_key, sent_at, from_addr FROM messages")),
        ("status", netaudit(config, "status")),
    ]
    failures = 0
    for name, cmd in steps:
        if cmd is None:
            append(live, 10, seed=1)
            cmd = netaudit(config, "sync")
        out_file = run_dir / "last.out"
        elapsed, peak, code, out, err = timed_run(cmd, REPO)
        out_file.write_text(out[-4000:] + err[-4000:])
        failures += code != 0
        print(f"| {name} | {elapsed:.2f} | {peak / 1024:.0f} | {code} |", flush=True)
        if code != 0:
            print(f"  {err.strip().splitlines()[-1] if err.strip() else out[-200:]}")
    elapsed, peak, code = daemon_step(config, args.daemon_seconds)
    print(f"| daemon for {args.daemon_seconds:.0f} s (file unchanged), SIGTERM | {elapsed:.2f} | "
          f"{peak / 1024:.0f} | {code} |")
    raise SystemExit(1 if failures or code else 0)


if __name__ == "__main__":
    main()
