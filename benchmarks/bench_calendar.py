"""Time calendar ingestion: the largest real calendar, and an unchanged feed.

    python benchmarks/bench_calendar.py [--repeat 3]

1. `netaudit import issue42.ics` (1.6 MB, a real export) into a fresh database, as its own
   process: wall time including start-up.
2. The same file served by a local HTTP server with an ETag: the first sync parses it, the
   second gets 304 and parses nothing. Reports requests made and time per sync.
"""

from __future__ import annotations

import argparse
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ISSUE42 = REPO.parent / "shared/data/ics/recurring-ical-events/benchmark/issue42.ics"

from ingest import calendars  # noqa: E402
from netaudit import config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="netaudit-bench-cal-"))
    cfg_path = work / "config.toml"
    cfg_path.write_text(f'[netaudit]\ndatabase = "{work / "n.duckdb"}"\n'
                        'history_start = 2015-01-01\n')
    cfg_path.chmod(0o600)
    times = []
    for _ in range(args.repeat):
        (work / "n.duckdb").unlink(missing_ok=True)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg_path),
                              "import", str(ISSUE42)], capture_output=True, text=True,
                             check=True).stdout
        times.append(time.perf_counter() - started)
    print(f"issue42.ics ({ISSUE42.stat().st_size / 1e6:.1f} MB): {out.strip()}")
    print(f"| import issue42.ics, whole process | best {min(times):.2f} s | "
          f"worst {max(times):.2f} s | {args.repeat} runs |")

    body = ISSUE42.read_bytes()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.headers.get("If-None-Match") or "")
            if self.headers.get("If-None-Match") == '"1"':
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", '"1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/token/basic.ics"
    (work / "n.duckdb").unlink(missing_ok=True)
    cfg = config.load(str(cfg_path))
    started = time.perf_counter()
    first = calendars.sync_feed(cfg.database, cfg, "feed", url, frozenset())
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = calendars.sync_feed(cfg.database, cfg, "feed", url, frozenset())
    second_s = time.perf_counter() - started
    server.shutdown()
    print(f"| feed, first sync | {first_s:.2f} s | {first.occurrences} occurrences |")
    print(f"| feed, unchanged (304) | {second_s * 1000:.0f} ms | {len(requests) - 1} request, "
          f"{second.files} parsed |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
