"""IMAP batches committed by the child writer (ingest/imap_commit.py), against a real Dovecot.

Large syncs hand each batch to a child process. These tests lower the threshold so that a
small mailbox goes the same way, and check what must not change: the stored rows are those
of an in-process sync, nothing is lost or doubled when the server dies, the disk fills up
or the parent is killed, and no child outlives its sync.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.headers import parse_headers
from ingest.imap import Options
from ingest.imap_commit import ChildWriter, CommitJob
from ingest.imap_positions import Position
from ingest.store import message_rows
from netaudit import db
from netaudit.errors import DatabaseBusy, DatabaseError, SourceError
from tests.conftest import data_path
from tests.dovecot import DovecotServer, ImapAccount, sample_messages
from tests.test_faults import _limit_file_size
from tests.test_imap import (
    BOUNCES,
    append_all,
    crlf,
    enron_files,
    fast_backoff,
    imap_config,
    in_process,
    query,
    stop_after_batches,
)

REPO = Path(__file__).resolve().parents[1]


def child_options(**kwargs: Any) -> Options:
    return Options(child_writer_uids=0, chunk_uids=10, batch_messages=10, **kwargs)


def children(pid: int | None = None) -> set[int]:
    """Live writer children of ``pid`` (default: this process), from /proc."""
    pid = pid or os.getpid()
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    alive = set()
    for child in found:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if state != "Z" and b"ingest.imap_commit" in cmdline:
            alive.add(child)
    return alive


def test_child_writer_stores_what_an_inline_sync_stores(imap_account: ImapAccount,
                                                         tmp_path: Path) -> None:
    append_all(imap_account, "INBOX", sample_messages(57))
    append_all(imap_account, "Sent", sample_messages(12, sender="robin@home.example"))
    assert not children()
    child_cfg = imap_config(tmp_path, imap_account)
    writers: set[int] = set()
    summary = in_process(child_cfg, child_options(
        on_commit=lambda folder, uid: writers.update(children())))
    assert summary == "INBOX 57 new, Sent 12 new (69 messages, 0 quarantined)"
    assert len(writers) == 1  # one child wrote every batch ...
    assert not children()  # ... and exited with the sync
    (tmp_path / "inline").mkdir()
    inline_cfg = imap_config(tmp_path / "inline", imap_account)
    assert in_process(inline_cfg, Options(chunk_uids=10, batch_messages=10)) == summary

    def rows(cfg: Path) -> list[list[tuple]]:
        return [query(cfg, "SELECT * EXCLUDE (ingested_at) FROM messages ORDER BY location"),
                query(cfg, "SELECT * FROM participants ORDER BY ALL"),
                query(cfg, "SELECT scope, last_uid FROM sync_state ORDER BY scope"),
                query(cfg, "SELECT address, origin FROM me_addresses ORDER BY ALL")]

    child, inline = rows(child_cfg), rows(inline_cfg)
    assert child == inline
    assert len(child[0]) == 69 and child[2] == [("INBOX", 57), ("Sent", 12)]
    # the Sent folder's From became mine, inside the child's transactions
    assert ("robin@home.example", "sent folder") in child[3]
    assert query(child_cfg, "SELECT direction, count(*) FROM messages GROUP BY 1 "
                            "ORDER BY 1") == [("received", 57), ("sent", 12)]


def test_server_stopped_mid_sync_with_the_child_writer(dovecot_factory: Any,
                                                       tmp_path: Path) -> None:
    server: DovecotServer = dovecot_factory(tls=False)
    append_all(server.account, "INBOX", sample_messages(80))
    cfg = imap_config(tmp_path, server.account)
    commits: list[int] = []
    with pytest.raises(SourceError):
        in_process(cfg, child_options(backoff=fast_backoff(),
                                      on_commit=stop_after_batches(server, 2, commits)))
    # every batch handed to the child before the failure was committed, whole, in order
    assert commits == list(range(10, 10 * len(commits) + 1, 10))
    stored = commits[-1]
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(stored, stored)]
    assert query(cfg, "SELECT scope, last_uid FROM sync_state") == [("INBOX", stored)]
    server.start()
    assert in_process(cfg, child_options()).startswith(f"INBOX {80 - stored} new")
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(80, 80)]


def test_the_last_folder_ends_in_smaller_batches(imap_account: ImapAccount,
                                                  tmp_path: Path) -> None:
    """What the child writer still has to commit once the fetching ends is the wait nothing
    overlaps: the last folder's final stretch goes in batches a quarter of the size."""
    append_all(imap_account, "INBOX", sample_messages(25))
    append_all(imap_account, "Sent", sample_messages(12, sender="robin@home.example"))
    cfg = imap_config(tmp_path, imap_account)
    commits: list[tuple[str, int]] = []
    summary = in_process(cfg, Options(child_writer_uids=0, chunk_uids=2, batch_messages=8,
                                      on_commit=lambda folder, uid: commits.append((folder,
                                                                                    uid))))
    assert summary == "INBOX 25 new, Sent 12 new (37 messages, 0 quarantined)"
    assert [uid for folder, uid in commits if folder == "INBOX"] == [8, 16, 24, 25]
    # Sent's last 8 UIDs (5-12) in batches of 2
    assert [uid for folder, uid in commits if folder == "Sent"] == [6, 8, 10, 12]
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(37, 37)]


def test_with_the_child_writer_batches_are_smaller(imap_account: ImapAccount,
                                                   tmp_path: Path) -> None:
    """The child keeps the file open across batches, so a batch no longer costs a checkpoint
    and can be smaller: less in flight in both processes."""
    append_all(imap_account, "INBOX", sample_messages(35))
    commits: dict[str, list[tuple[str, int]]] = {"child": [], "inline": []}
    for way, threshold in (("child", 0), ("inline", 10**9)):
        (tmp_path / way).mkdir()
        cfg = imap_config(tmp_path / way, imap_account)
        options = Options(child_writer_uids=threshold, chunk_uids=5, batch_messages=20,
                          child_batch_messages=10,
                          on_commit=lambda folder, uid, way=way: commits[way].append(
                              (folder, uid)))
        assert in_process(cfg, options) == "INBOX 35 new, Sent 0 new (35 messages, 0 quarantined)"
        assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
            [(35, 35)]
    empty_sent = ("Sent", 0)  # the empty folder's position is stored too
    assert commits["child"] == [("INBOX", 10), ("INBOX", 20), ("INBOX", 30), ("INBOX", 35),
                                empty_sent]
    assert commits["inline"] == [("INBOX", 20), ("INBOX", 35), empty_sent]


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_messages_parsed_by_the_writer_are_stored_as_the_fetcher_would(
        imap_account: ImapAccount, tmp_path: Path, share: float,
        caplog: pytest.LogCaptureFixture) -> None:
    """Real mail, bounces among it, garbage, one message twice with different recipients
    (the first copy in UID order is the one kept) and a Sent folder whose From becomes mine:
    the child writer parses its share, and every stored row is an inline sync's."""
    bounces = [crlf(data_path("email-fixtures", *parts).read_bytes()) for parts in BOUNCES]
    enron = [crlf(p.read_bytes()) for p in enron_files(30)]
    twice = (b"From: Ann <ann@x.example>\r\nTo: robin@example.org\r\n"
             b"Date: Tue, 5 Mar 2024 09:15:00 +0100\r\nMessage-ID: <same@x.example>\r\n"
             b"Subject: twice\r\n\r\nHi.\r\n")
    garbage = b"this is not a header line\r\nnor is this\r\n\r\nbody\r\n"
    inbox = [*enron[:10], bounces[0], twice, *enron[10:20], garbage, *bounces[1:],
             twice.replace(b"To: robin@", b"Cc: zoe@z.example\r\nTo: robin@"), *enron[20:]]
    append_all(imap_account, "INBOX", inbox)
    append_all(imap_account, "Sent", sample_messages(9, sender="robin@home.example"))
    child_cfg = imap_config(tmp_path, imap_account)
    caplog.set_level("DEBUG", logger="ingest.imap")
    summary = in_process(child_cfg, child_options(writer_parse_share=share))
    handed = sum(int(m.group(1)) for r in caplog.records
                 if (m := re.search(r"(\d+) parsed by the writer", r.getMessage())))
    # Windows of 10 UIDs with a whole batch (10) after them: INBOX 1-10 and 11-20; a
    # folder's last batch is parsed by the fetcher (the writer's work after the fetching is
    # what nothing overlaps). Of those, every message but the bounces can go.
    eligible = [raw for raw in inbox[:20] if raw not in bounces]
    assert len(inbox) == 38 and len(eligible) == 19
    assert handed == (len(eligible) if share == 1.0 else
                      pytest.approx(20 * share, abs=2))
    (tmp_path / "inline").mkdir()
    inline_cfg = imap_config(tmp_path / "inline", imap_account)
    assert in_process(inline_cfg, Options(chunk_uids=10, batch_messages=10)) == summary
    assert summary == f"INBOX {len(inbox) - 2} new (1 already stored), Sent 9 new " \
                      f"({len(inbox) + 7} messages, 1 quarantined, 5 bounces)"

    def rows(cfg: Path) -> list[list[tuple]]:
        return [query(cfg, "SELECT * EXCLUDE (ingested_at) FROM messages ORDER BY location"),
                query(cfg, "SELECT * FROM participants ORDER BY ALL"),
                query(cfg, "SELECT * FROM bounces ORDER BY ALL"),
                query(cfg, "SELECT source, location, reason FROM quarantine ORDER BY ALL"),
                query(cfg, "SELECT scope, last_uid FROM sync_state ORDER BY scope"),
                query(cfg, "SELECT address, origin FROM me_addresses ORDER BY ALL")]

    child, inline = rows(child_cfg), rows(inline_cfg)
    assert child == inline
    assert len(child[2]) == 5 and len(child[3]) == 1
    assert ("robin@home.example", "sent folder") in child[5]
    # the first copy of <same@x.example> is stored: no Cc
    assert query(child_cfg, "SELECT count(*) FROM participants WHERE message_key = "
                            "'same@x.example' AND role = 'cc'") == [(0,)]


# A sync in its own process, so that a test can limit its files or kill it.
SCRIPT = """
import sys, time
from pathlib import Path
from ingest.imap import Options
from netaudit import db
from netaudit.errors import NetauditError
from tests.test_imap import in_process
from tests.test_imap_commit import children

marker = Path(sys.argv[2])

def on_commit(folder, last_uid):
    if marker.name == "stall" and last_uid >= 20:
        marker.write_text(" ".join(map(str, children())))
        time.sleep(60)  # killed here by the test

try:
    print(in_process(Path(sys.argv[1]), Options(child_writer_uids=0, chunk_uids=10,
                                                batch_messages=10, on_commit=on_commit)))
except NetauditError as exc:
    print(f"Error: {exc}")
    sys.exit(1)
"""


def run_script(cfg: Path, marker: Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(cfg), str(marker)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def test_a_full_disk_in_the_child_fails_cleanly_and_a_later_run_completes(
        imap_account: ImapAccount, tmp_path: Path) -> None:
    # DuckDB keeps small commits in its WAL, which may grow as large as the file limit:
    # enough mail that the WAL reaches it part way through the sync
    total = 1500
    with imap_account.client() as conn:
        conn.multiappend("INBOX", sample_messages(total))
    cfg = imap_config(tmp_path, imap_account)
    db_path = tmp_path / "netaudit.duckdb"
    with db.writer(db_path):  # the file exists, migrated, before the disk fills
        pass
    size = db_path.stat().st_size
    proc = run_script(cfg, tmp_path / "none", preexec_fn=lambda: _limit_file_size(size + 10_000))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert out.strip().startswith("Error: cannot write the database: the disk is full"), \
        (out, err)
    assert "Traceback" not in err, err
    stored = query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages")[0]
    assert 0 < stored[0] == stored[1] < total  # it failed part way, in the child
    position = query(cfg, "SELECT last_uid FROM sync_state WHERE scope = 'INBOX'")
    assert position == ([(stored[0],)] if stored[0] else [])
    # with room again, the next sync brings exactly the rest
    assert in_process(cfg, child_options()).startswith(f"INBOX {total - stored[0]} new")
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(total, total)]


def test_killing_the_parent_kills_the_child_and_loses_nothing(imap_account: ImapAccount,
                                                              tmp_path: Path) -> None:
    append_all(imap_account, "INBOX", sample_messages(150))
    cfg = imap_config(tmp_path, imap_account)
    marker = tmp_path / "stall"
    proc = run_script(cfg, marker)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    writers = {int(p) for p in marker.read_text().split()}
    assert writers, "the sync had no child writer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in writers)  # PR_SET_PDEATHSIG
    stored = query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages")[0]
    assert stored[0] == stored[1] and 20 <= stored[0] < 150
    assert query(cfg, "SELECT last_uid FROM sync_state WHERE scope = 'INBOX'") == \
        [(stored[0],)]
    assert in_process(cfg, child_options()).startswith(f"INBOX {150 - stored[0]} new")
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(150, 150)]


def test_a_child_that_dies_is_one_clear_error(imap_account: ImapAccount,
                                              tmp_path: Path) -> None:
    """A writer killed from outside (the OOM killer, say): the sync stops with one line, and
    the next one brings what was not committed."""
    append_all(imap_account, "INBOX", sample_messages(60))
    cfg = imap_config(tmp_path, imap_account)
    killed: list[int] = []

    def kill_writer(folder: str, last_uid: int) -> None:
        if not killed:
            for pid in children():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with pytest.raises(DatabaseError, match="the process writing the database stopped"):
        in_process(cfg, child_options(on_commit=kill_writer))
    assert killed
    stored = query(cfg, "SELECT count(*) FROM messages")[0][0]
    assert query(cfg, "SELECT coalesce(max(last_uid), 0) FROM sync_state") == [(stored,)]
    assert in_process(cfg, child_options()).startswith(f"INBOX {60 - stored} new")
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(60, 60)]


def test_the_child_keeps_the_file_between_jobs_and_lets_readers_in_when_idle(
        tmp_path: Path) -> None:
    """Closing the file costs a checkpoint, so the child keeps it open from one job to the
    next; when no job comes within its hold, it closes it and a waiting reader gets in."""
    path = tmp_path / "netaudit.duckdb"
    with db.writer(path):
        pass
    records = [(f"INBOX;7;{i}", parse_headers(raw))
               for i, raw in enumerate(sample_messages(12), start=1)]

    def job(lo: int, hi: int) -> CommitJob:
        return CommitJob("work", "INBOX", Position(7, hi), message_rows(records[lo:hi]))

    new: list[int] = []
    writer = ChildWriter(path, hold=5.0)  # long enough for a loaded machine to check it
    try:
        writer.submit(job(0, 5), lambda _, done: new.append(done.result.new))
        writer.submit(job(5, 10), lambda _, done: new.append(done.result.new))
        writer.flush()
        assert new == [5, 5]
        wal = Path(f"{path}.wal")
        assert wal.stat().st_size > 0  # committed, not yet checkpointed: the file is held
        with pytest.raises(DatabaseBusy), db.reader(path, wait=0):
            pass
        with db.reader(path, wait=15) as con:  # the hold runs out with no job: it is let go
            assert con.execute("SELECT count(*) FROM messages").fetchall() == [(10,)]
            assert con.execute("SELECT last_uid FROM sync_state").fetchall() == [(10,)]
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed on closing
        writer.submit(job(10, 12), lambda _, done: new.append(done.result.new))
        writer.flush()  # a later job opens the file again
    finally:
        writer.close()
    assert new == [5, 5, 2]
    assert query_path(path, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(12, 12)]


def test_the_child_lets_the_file_go_after_its_share_of_messages(tmp_path: Path) -> None:
    """What DuckDB holds for an open file grows with what was written since: after
    ``hold_messages`` the file is closed at once, however soon the next job comes."""
    path = tmp_path / "netaudit.duckdb"
    with db.writer(path):
        pass
    records = [(f"INBOX;7;{i}", parse_headers(raw))
               for i, raw in enumerate(sample_messages(9), start=1)]
    writer = ChildWriter(path, hold=60.0, hold_messages=6)
    try:
        job = CommitJob("work", "INBOX", Position(7, 4), message_rows(records[:4]))
        writer.submit(job, lambda *_: None)
        writer.flush()
        with pytest.raises(DatabaseBusy), db.reader(path, wait=0):
            pass  # 4 of 6: held
        job = CommitJob("work", "INBOX", Position(7, 9), message_rows(records[4:]))
        writer.submit(job, lambda *_: None)
        writer.flush()
        with db.reader(path, wait=0) as con:  # 9 of 6: closed before the answer was sent
            assert con.execute("SELECT count(*) FROM messages").fetchall() == [(9,)]
    finally:
        writer.close()


def query_path(path: Path, sql: str) -> list[tuple]:
    with db.reader(path) as con:
        return con.execute(sql).fetchall()
