"""Time `netaudit report --format json` on generated databases of 100,000 and 1,000,000
interactions.

    python benchmarks/bench_report.py [--sizes 100000 1000000]

The database is filled directly with SQL (files would take far longer to write than the
report takes to run): 2,000 correspondents with their own rhythms over three years, one
counterpart per message, a third of the threads answered, 10 % bulk mail on top, a subject
key per thread and a few hundred repeated subjects (so that threads found by subject and copies
are looked for). Identities are rebuilt as after a sync, then the report runs as its own
process, best of three.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis import identity  # noqa: E402
from netaudit import db  # noqa: E402

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
"""


def build(path: Path, n: int) -> float:
    started = time.perf_counter()
    with db.writer(path) as con:
        con.execute("BEGIN TRANSACTION")
        for statement in FILL.format(n=n).split(";\n"):
            if statement.strip():
                con.execute(statement)
        identity.refresh(con)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="netaudit-bench-report-"))
    print("| interactions | build + identities (s) | report --format json (s, best) |")
    print("|---:|---:|---:|")
    results = {}
    for n in args.sizes:
        path = work / f"r{n}.duckdb"
        built = build(path, n)
        cfg = work / f"c{n}.toml"
        cfg.write_text(f'[netaudit]\ndatabase = "{path}"\ntimezone = "UTC"\n')
        cfg.chmod(0o600)
        with db.reader(path) as con:
            row = con.execute("SELECT count(*) FROM interactions").fetchone()
        count = int(row[0]) if row else 0
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "report",
                            "--as-of", "2026-11-01", "--format", "json"], check=True,
                           capture_output=True)
            times.append(time.perf_counter() - started)
        results[n] = min(times)
        print(f"| {count:,} | {built:.1f} | {min(times):.2f} |")
    if len(results) > 1:
        small, large = min(results), max(results)
        print(f"\ntime ratio {large:,}/{small:,}: {results[large] / results[small]:.1f} "
              f"for {large / small:.0f}x the interactions")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
