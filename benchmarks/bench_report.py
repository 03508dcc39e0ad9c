"""Time and peak memory of the read commands on generated databases of 100,000 and 1,000,000
interactions, and of the regrouping that prepares them.

    python benchmarks/bench_report.py [--sizes 100000 1000000] [--repeat 3]

The database is filled directly with SQL (files would take far longer to write than the
report takes to run): 2,000 correspondents with their own rhythms over three years, one
counterpart per message, a third of the threads answered, 10 % bulk mail on top, a subject
key per thread and a few hundred repeated subjects (so that threads found by subject and copies
are looked for). People are then regrouped as after a sync, in a process of its own, and each
command runs as its own process (best of ``--repeat``; the peak is the largest seen). Peak
memory is the process's RSS (benchmarks/measure.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.measure import timed_run  # noqa: E402
from netaudit import db  # noqa: E402

AS_OF = "2026-11-01"

FILL = """
INSERT INTO me_addresses VALUES ('robin@example.org', 'config', now());
CREATE TEMP TABLE gen AS
SELECT i,
       'm' || i || '@bench.example' AS key,
       (hash(i) % 2000) AS who,
       TIMESTAMPTZ '2023-11-01 00:00:00+00'
           + to_seconds((hash(i * 7) % (3 * 365 * 86400))::BIGINT) AS ts,
       hash(i * 13) % 2 = 0 AS mine,
       hash(i * 17) % 3 = 0 AS answer,
       hash(i * 19) % 10 = 0 AS bulk
FROM range({n} * 10 // 9) t(i);  -- a tenth is bulk mail, not an interaction
INSERT INTO messages (message_key, message_id, source, location, sent_at, date_source, from_addr,
                      from_name, direction, recipient_count, in_reply_to, refs, automated_reason,
                      is_dsn, size_bytes, ingested_at, subject_key, subject_prefix)
SELECT key, key, 'bench', 'gen', ts, 'header',
       CASE WHEN mine THEN 'robin@example.org' ELSE 'p' || who || '@people.example' END,
       NULL, CASE WHEN mine THEN 'sent' ELSE 'received' END, 1,
       CASE WHEN answer THEN 'm' || (i - 1) || '@bench.example' END,
       CASE WHEN answer THEN ['m' || (i - 1) || '@bench.example'] ELSE [] END,
       CASE WHEN bulk THEN 'mailing list (List-Id)' END, false, 4000, now(),
       -- a subject per thread, and a few hundred repeated ones ("Weekly report")
       substr(md5(CASE WHEN hash(i * 23) % 20 = 0 THEN (hash(i) % 300)::VARCHAR
                       WHEN answer THEN (i - 1)::VARCHAR ELSE i::VARCHAR END), 1, 16),
       CASE WHEN answer THEN 'reply' END
FROM gen;
INSERT INTO participants
SELECT key, 'from', 0, CASE WHEN mine THEN 'robin@example.org'
                            ELSE 'p' || who || '@people.example' END, 'Person ' || who FROM gen;
INSERT INTO participants
SELECT key, 'to', 0, CASE WHEN mine THEN 'p' || who || '@people.example'
                          ELSE 'robin@example.org' END, NULL FROM gen;
DROP TABLE gen
"""

# The regrouping a sync ends with, as its own process
REGROUP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from analysis import identity
    from netaudit import db
    with db.writer(Path(sys.argv[1])) as con:
        con.execute("BEGIN TRANSACTION")
        identity.refresh(con)
        con.execute("COMMIT")
""")

FILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from benchmarks.bench_report import fill
    fill(Path(sys.argv[1]), int(sys.argv[2]))
""")

COMMANDS: dict[str, list[str]] = {
    "report --format json": ["report", "--as-of", AS_OF, "--format", "json"],
    "report --format text": ["report", "--as-of", AS_OF, "--format", "text"],
    "report --format html": ["report", "--as-of", AS_OF, "--format", "html"],
    "report --month": ["report", "--month", AS_OF[:7], "--format", "json"],
    "status": ["status"],
    "sql count(*) FROM interactions": ["sql", "SELECT count(*) FROM interactions"],
    "sql ties": ["sql", "SELECT count(*), sum(emails_sent) FROM ties"],
}


def fill(path: Path, n: int) -> None:
    """A database of about ``n`` interactions (``n`` x 10/9 messages), people not grouped."""
    with db.writer(path) as con:
        con.execute("BEGIN TRANSACTION")
        for statement in FILL.format(n=n).split(";\n"):
            if statement.strip():
                con.execute(statement)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")


def measure(cmd: list[str], repeat: int) -> tuple[float, float]:
    """Best time in seconds and largest peak in MiB of ``repeat`` runs of ``cmd``."""
    times, peaks = [], []
    for _ in range(repeat):
        seconds, kib, code, _, err = timed_run(cmd, REPO)
        if code != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
        times.append(seconds)
        peaks.append(kib / 1024)
    return min(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="netaudit-bench-report-"))
    print("| interactions | command | time (s, best) | peak RSS (MiB) |")
    print("|---:|---|---:|---:|")
    try:
        for n in args.sizes:
            # This process never opens the database: a child started by exec counts the
            # memory of its parent as its own peak (Linux keeps the old mm's high-water mark).
            path = work / f"r{n}.duckdb"
            filled, _ = measure([sys.executable, "-c", FILL_SCRIPT, str(path), str(n)], 1)
            cfg = work / f"c{n}.toml"
            cfg.write_text(f'[netaudit]\ndatabase = "{path}"\ntimezone = "UTC"\n')
            cfg.chmod(0o600)
            seconds, peak = measure([sys.executable, "-c", REGROUP, str(path)], 1)
            counted = subprocess.run(
                [sys.executable, "-m", "netaudit", "--config", str(cfg), "sql",
                 "SELECT count(*) FROM interactions", "--format", "csv"],
                capture_output=True, text=True, check=True, cwd=REPO).stdout
            count = int(counted.split()[-1])
            print(f"| {count:,} | fill by SQL | {filled:.1f} | |")
            print(f"| {count:,} | regroup (as after a sync) | {seconds:.2f} | {peak:.0f} |")
            for label, command in COMMANDS.items():
                seconds, peak = measure(
                    [sys.executable, "-m", "netaudit", "--config", str(cfg), *command],
                    args.repeat)
                print(f"| {count:,} | {label} | {seconds:.2f} | {peak:.0f} |", flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
