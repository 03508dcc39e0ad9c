"""Time `netaudit sync` of an IMAP account against a local Dovecot, and a no-op re-sync.

    python benchmarks/bench_imap.py [--messages 25000 45000] [--chunk 500] [--repeat 3]

Starts a private Dovecot on 127.0.0.1 (tests.dovecot.DovecotServer, rawlog off), APPENDs the
generated messages of netaudit.sample (relay and DKIM headers, 1.5-8 KB bodies, 75 % bulk
mail) through IMAP as a mail client would (my own to Sent, the rest to INBOX), then measures:

- a warm-up pass of (b): Dovecot builds its index and header cache on the first FETCH, and
  the measured runs should not differ by who came first;
- (a) `netaudit sync` end to end, as its own process, into a fresh database; peak RSS of
  its whole process tree (the child writer included);
- (b) a bare imapclient loop fetching the same header fields in the same UID windows and
  parsing nothing beyond imapclient's own response parser;
- (c) `mbsync` pulling the same folders into a Maildir, when isync is installed;
- a no-op re-sync: the CLI end to end, and the sync itself in-process (no interpreter start).

Every measured step runs ``--repeat`` times, in turn, and the median is reported with the
range: on a shared machine one run can be a third slower than the next, and mbsync, which
fsyncs each message it writes, varies as much.

Prints a markdown table per mailbox size, and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import timed_run  # noqa: E402  (benchmarks/ is the script's own directory)

from ingest.imap import CHUNK_UIDS  # noqa: E402
from ingest.imap_parse import HEADER_ITEM  # noqa: E402
from netaudit import sample  # noqa: E402
from tests.dovecot import DovecotServer  # noqa: E402

ME = "robin@example.org"


def fill(server: DovecotServer, count: int, batch: int = 500) -> dict[str, int]:
    """APPEND ``count`` generated messages (MULTIAPPEND, RFC 3502, in batches: one APPEND per
    message slows down as a Maildir grows); returns messages per folder."""
    pending: dict[str, list[dict]] = {"INBOX": [], "Sent": []}
    per_folder = {"INBOX": 0, "Sent": 0}
    started = time.perf_counter()
    with server.client() as conn:
        def flush(folder: str) -> None:
            if pending[folder]:
                conn.multiappend(folder, pending[folder])
                per_folder[folder] += len(pending[folder])
                pending[folder] = []

        for when, seen, raw in sample.messages(count, me=ME):
            raw = raw.replace(b"\n", b"\r\n")
            folder = "Sent" if f"From: Robin Example <{ME}>".encode() in raw else "INBOX"
            pending[folder].append({"msg": raw, "flags": (b"\\Seen",) if seen else (),
                                    "date": when})
            if len(pending[folder]) >= batch:
                flush(folder)
        flush("INBOX")
        flush("Sent")
    print(f"appended {count:,} messages in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    return per_folder


def write_config(workdir: Path, server: DovecotServer, chunk: int) -> Path:
    secret = workdir / "password"
    secret.write_text(server.password + "\n")
    secret.chmod(0o600)
    config = workdir / "config.toml"
    config.write_text(
        f'[netaudit]\ndatabase = "{workdir / "n.duckdb"}"\nme = ["{ME}"]\n\n'
        f'[[imap]]\nname = "bench"\nhost = "{server.host}"\nport = {server.port}\n'
        f'security = "plain"\nusername = "{server.user}"\n'
        f'password_command = ["cat", "{secret}"]\n')
    config.chmod(0o600)
    return config


def run_sync(config: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS KiB, stdout) of one `netaudit sync` process."""
    cmd = [sys.executable, "-m", "netaudit", "--config", str(config), "sync"]
    elapsed, peak, code, out, err = timed_run(cmd, REPO)
    if code != 0:
        raise SystemExit(f"sync failed: {out}{err}")
    return elapsed, peak, out.strip()


def bare_loop(server: DovecotServer, chunk: int) -> tuple[float, int]:
    """(seconds, messages) for imapclient alone: same folders, items and UID windows."""
    started = time.perf_counter()
    count = 0
    with server.client() as conn:
        for folder in ("INBOX", "Sent"):
            info = conn.select_folder(folder, readonly=True)
            top = int(info[b"UIDNEXT"]) - 1
            for lo in range(1, top + 1, chunk):
                uids = list(range(lo, min(top, lo + chunk - 1) + 1))
                count += len(conn.fetch(uids, ["INTERNALDATE", "RFC822.SIZE", HEADER_ITEM]))
    return time.perf_counter() - started, count


def noop_in_process(config: Path) -> float:
    from ingest.imap import sync_imap
    from netaudit import config as config_mod

    cfg = config_mod.load(str(config))
    started = time.perf_counter()
    sync_imap(cfg, cfg.sources[0], frozenset(cfg.me))
    return time.perf_counter() - started


def mbsync(workdir: Path, server: DovecotServer) -> float | None:
    binary = shutil.which("mbsync")
    if binary is None:
        return None
    maildir = workdir / "mbsync-maildir"
    shutil.rmtree(maildir, ignore_errors=True)
    maildir.mkdir()
    rc = workdir / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount bench\nHost {server.host}\nPort {server.port}\nUser {server.user}\n"
        f"PassCmd \"cat {workdir / 'password'}\"\nSSLType None\nAuthMechs LOGIN\n\n"
        "IMAPStore remote\nAccount bench\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        "Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX Sent\nCreate Near\n"
        "Sync Pull\nSyncState *\n")
    started = time.perf_counter()
    proc = subprocess.run([binary, "-c", str(rc), "-a", "-q"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"mbsync failed: {proc.stderr.strip()}", file=sys.stderr)
        return None
    return elapsed


def fresh_database(config: Path) -> None:
    for path in config.parent.glob("n.duckdb*"):
        path.unlink()


def measure(count: int, chunk: int, repeat: int) -> dict[str, Any]:
    """Every figure for one mailbox of ``count`` messages, all in one run."""
    workdir = Path(tempfile.mkdtemp(prefix="netaudit-bench-imap-"))
    runs: dict[str, list[float]] = {"sync": [], "bare": [], "noop": [], "noop_inproc": [],
                                    "mbsync": []}
    rss = 0
    try:
        with DovecotServer(rawlog=False) as server:
            folders = fill(server, count)
            config = write_config(workdir, server, chunk)
            # Dovecot builds its index and header cache on the first FETCH of each message;
            # whoever reads first pays for it, so a first pass warms the server for both.
            cold_seconds, _ = bare_loop(server, chunk)
            for _ in range(repeat):
                fresh_database(config)
                seconds, peak, summary = run_sync(config)
                runs["sync"].append(seconds)
                rss = max(rss, peak)
                bare_seconds, bare_count = bare_loop(server, chunk)
                runs["bare"].append(bare_seconds)
                noop_seconds, _, noop_summary = run_sync(config)
                runs["noop"].append(noop_seconds)
                runs["noop_inproc"].append(noop_in_process(config))
                mb = mbsync(workdir, server)
                if mb is not None:
                    runs["mbsync"].append(mb)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"n": count, "folders": folders, "cold": cold_seconds, "rss": rss,
            "summary": summary, "bare_count": bare_count, "noop_summary": noop_summary,
            "runs": runs,
            **{key: statistics.median(values) if values else None
               for key, values in runs.items()}}


def spread(r: dict[str, Any], key: str, digits: int = 2) -> str:
    """'3.21 (2.98-3.60)': the median and the range of the repeated runs."""
    values = r["runs"][key]
    text = f"{statistics.median(values):.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return text


def report(r: dict[str, Any]) -> None:
    n = r["n"]
    print(f"\n## {n:,} messages (INBOX {r['folders']['INBOX']:,}, Sent {r['folders']['Sent']:,})")
    print(f"# first sync: {r['summary']}")
    print(f"# no-op sync: {r['noop_summary']}")
    print("| what | seconds | messages/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    print(f"| (a) `netaudit sync`, from scratch | {spread(r, 'sync')} | {n / r['sync']:,.0f} | "
          f"{r['rss'] / 1024:.0f} |")
    print(f"| (b) bare imapclient loop ({r['bare_count']:,} messages) | {spread(r, 'bare')} | "
          f"{r['bare_count'] / r['bare']:,.0f} | |")
    print(f"| (b) on a cold server (first FETCH after APPEND; warm-up, not compared) | "
          f"{r['cold']:.2f} | {r['bare_count'] / r['cold']:,.0f} | |")
    if r["mbsync"] is not None:
        print(f"| (c) `mbsync` into a Maildir | {spread(r, 'mbsync')} | "
              f"{n / r['mbsync']:,.0f} | |")
    else:
        print("| (c) `mbsync` | not installed (apt-get install isync) | | |")
    print(f"| no-op re-sync, `netaudit sync` end to end | {spread(r, 'noop')} | | |")
    print(f"| no-op re-sync, the sync itself (in-process) | {spread(r, 'noop_inproc', 3)} | | |")
    print(f"\n(a) / (b) time ratio, medians: {r['sync'] / r['bare']:.2f} (target: at most 2)")
    if r["mbsync"] is not None:
        ratios = [m / s for m, s in zip(r["runs"]["mbsync"], r["runs"]["sync"], strict=True)]
        print(f"(c) / (a) time ratio, medians: {r['mbsync'] / r['sync']:.1f}; run by run: "
              f"{', '.join(f'{x:.1f}' for x in ratios)} (target: at least 10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[5000],
                        help="mailbox sizes; several show whether memory stays flat")
    parser.add_argument("--chunk", type=int, default=CHUNK_UIDS,
                        help="UIDs per FETCH of the bare loop (default: netaudit's)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of (a), (b) and the no-op sync; the median is reported")
    args = parser.parse_args()
    results = [measure(n, args.chunk, args.repeat) for n in args.messages]
    print(f"# {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; Dovecot on 127.0.0.1")
    for r in results:
        report(r)
    if len(results) > 1:
        small, large = results[0], results[-1]
        print(f"\npeak RSS {large['n']:,} / {small['n']:,} messages: "
              f"{large['rss'] / small['rss']:.2f}")


if __name__ == "__main__":
    main()
