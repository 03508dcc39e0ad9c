"""The pipelined UID FETCH reader (ingest/imap_fetch.py) against a real Dovecot.

Dovecot runs pipelined FETCH commands side by side and sends a command's tagged OK only
after part of the next one's data, so these tests check what a pipelined reader must get
right on a real server: every message lands in its own window exactly once, the answers read
the same as imapclient's, unsolicited responses from another client are skipped, and a
refused command or a killed server surfaces as the errors the sync already handles.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any

import imapclient
import pytest
from imapclient.response_parser import parse_fetch_response

from ingest import imap_fetch
from ingest.imap_fetch import FetchPipeline, fetch_message_number, literal_size
from ingest.imap_parse import (
    FETCH_ITEMS,
    HEADER_ITEM,
    header_literal,
    internal_dates,
    parse_fetch,
)
from tests.dovecot import DovecotServer, ImapAccount, sample_messages

ITEMS = list(FETCH_ITEMS)


def append(account: ImapAccount, folder: str, count: int, **kwargs: object) -> list[int]:
    uids = []
    with account.client() as conn:
        for raw in sample_messages(count, **kwargs):  # type: ignore[arg-type]
            response = conn.append(folder, raw)
            uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", response).group(1)))
    return uids


def fetch_all(conn: imapclient.IMAPClient, spans: list[tuple[int, int]],
              depth: int, fast: list[int] | None = None
              ) -> dict[tuple[int, int], dict[int, dict[bytes, object]]]:
    """Every span through one pipeline, ``depth`` commands in flight; ``fast`` collects the
    UIDs read on arrival rather than through the general parser."""
    pipeline = FetchPipeline.on(conn, ITEMS)
    out = {}
    queue = list(spans)
    while queue or len(pipeline):
        while queue and len(pipeline) < depth:
            pipeline.send(*queue.pop(0))
        window = pipeline.read()
        out[(window.lo, window.hi)] = window.response()
        if fast is not None:
            fast += window.items
    return out


def test_pipelined_windows_get_exactly_their_own_messages(imap_account: ImapAccount) -> None:
    uids = append(imap_account, "INBOX", 40)
    spans = [(lo, lo + 4) for lo in range(uids[0], uids[-1] + 1, 5)]
    with imap_account.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        fast: list[int] = []
        windows = fetch_all(conn, spans, depth=4, fast=fast)
        # what imapclient reads for the same messages, one command at a time
        conn.normalise_times = False  # aware datetimes, as netaudit reads them
        reference = conn.fetch(uids, ["INTERNALDATE", "RFC822.SIZE", HEADER_ITEM])
        # the connection is in a clean state afterwards: an ordinary command works
        assert conn.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == len(uids)
    assert list(windows) == spans
    for (lo, hi), got in windows.items():
        assert sorted(got) == list(range(lo, hi + 1))
    merged = {uid: item for got in windows.values() for uid, item in got.items()}
    assert sorted(merged) == uids
    assert sorted(fast) == uids  # Dovecot's answers all take the fast path
    for uid in uids:
        ours, theirs = merged[uid], reference[uid]
        assert ours[b"RFC822.SIZE"] == theirs[b"RFC822.SIZE"]
        assert next(internal_dates(ours[b"INTERNALDATE"]))[1] == theirs[b"INTERNALDATE"]
        assert header_literal(ours) == header_literal(theirs)
        assert header_literal(ours).startswith(b"From: ")


def test_answers_whole_in_the_read_buffer_are_taken_at_once(
        imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch) -> None:
    """Most answers are taken from the connection's buffer in bulk; those cut by the
    buffer's end go through the line reader; every one equals imapclient's reading."""
    long_to = ", ".join(f"Person {i} <person{i}@example.org>" for i in range(60))
    raws = [raw.replace(b"To: bob@example.org", f"To: {long_to}".encode()) if i % 3 == 0
            else raw for i, raw in enumerate(sample_messages(120))]
    with imap_account.client() as conn:
        for raw in raws:
            conn.append("INBOX", raw)
    counts = {"bulk": 0, "line": 0}

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            counts[name] += 1
            return real(*args)
        return call

    monkeypatch.setattr(imap_fetch, "atoms_item", counted("bulk", imap_fetch.atoms_item))
    monkeypatch.setattr(imap_fetch, "fast_item", counted("line", imap_fetch.fast_item))
    with imap_account.client() as conn:
        info = conn.select_folder("INBOX", readonly=True)
        top = int(info[b"UIDNEXT"]) - 1
        windows = fetch_all(conn, [(lo, min(top, lo + 39)) for lo in range(1, top + 1, 40)],
                            depth=3)
        conn.normalise_times = False
        reference = conn.fetch(list(range(1, top + 1)), ITEMS)
    merged = {uid: item for got in windows.values() for uid, item in got.items()}
    assert sorted(merged) == list(range(1, 121))
    assert counts["bulk"] + counts["line"] == 120
    assert counts["bulk"] >= 80 and counts["line"] >= 1  # both readers were used
    for uid, ours in merged.items():
        theirs = reference[uid]
        assert header_literal(ours) == header_literal(theirs)
        assert ours[b"RFC822.SIZE"] == theirs[b"RFC822.SIZE"]
        assert next(internal_dates(ours[b"INTERNALDATE"]))[1] == theirs[b"INTERNALDATE"]


def test_sparse_windows_and_empty_ranges(imap_account: ImapAccount) -> None:
    uids = append(imap_account, "INBOX", 12)
    with imap_account.client() as conn:
        conn.select_folder("INBOX")
        gone = uids[2:9]
        conn.delete_messages(gone)
        conn.expunge()
        conn.select_folder("INBOX", readonly=True)
        spans = [(uids[0], uids[1]), (uids[2], uids[8]), (uids[9], uids[11])]
        windows = fetch_all(conn, spans, depth=3)
    assert sorted(windows[spans[0]]) == uids[:2]
    assert windows[spans[1]] == {}  # every message of the window was expunged
    assert sorted(windows[spans[2]]) == uids[9:]


def test_unsolicited_responses_from_another_client_are_skipped(
        dovecot: DovecotServer) -> None:
    account = dovecot.add_account()
    uids = append(account, "INBOX", 10)
    with account.client() as conn, account.client() as other:
        conn.select_folder("INBOX", readonly=True)
        other.select_folder("INBOX")
        other.add_flags(uids[:3], [b"\\Flagged"])  # Dovecot tells `conn` with FETCH FLAGS
        later = other.append("INBOX", sample_messages(1)[0])  # ... and EXISTS
        new_uid = int(re.search(rb"APPENDUID \d+ (\d+)", later).group(1))
        windows = fetch_all(conn, [(uids[0], uids[4]), (uids[5], uids[9])], depth=2)
    first, second = windows.values()
    assert sorted(first) == uids[:5] and sorted(second) == uids[5:]
    assert all(header_literal(item) for got in windows.values() for item in got.values())
    assert new_uid not in first and new_uid not in second
    # Dovecot really did interleave them with the FETCH answers of `conn`'s session
    assert dovecot.rawlog_dir is not None
    sent = b"".join(p.read_bytes() for p in (dovecot.rawlog_dir / account.user).glob("*.out"))
    assert re.search(rb"\* \d+ FETCH \(UID \d+ FLAGS \([^)]*\\Flagged", sent) or \
        re.search(rb"\* \d+ FETCH \(FLAGS \([^)]*\\Flagged", sent)
    assert re.search(rb"\* 11 EXISTS", sent)


def test_a_refused_fetch_raises_the_servers_words(imap_account: ImapAccount) -> None:
    append(imap_account, "INBOX", 2)
    with imap_account.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        pipeline = FetchPipeline.on(conn, ["BODY.PEEK[HEADER.FIELDS"])  # unbalanced: BAD
        pipeline.send(1, 2)
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="UID FETCH failed"):
            pipeline.read()


def test_a_killed_server_is_a_lost_connection(dovecot_factory: object) -> None:
    server: DovecotServer = dovecot_factory(tls=False)  # type: ignore[operator]
    append(server.account, "INBOX", 30)
    conn = server.account.client()
    conn.select_folder("INBOX", readonly=True)
    pipeline = FetchPipeline.on(conn, ITEMS)
    pipeline.send(1, 10)
    assert sorted(pipeline.read().response()) == list(range(1, 11))
    server.stop()
    with pytest.raises((OSError, imaplib.IMAP4.abort)):
        pipeline.send(11, 20)
        pipeline.send(21, 30)
        pipeline.read()
        pipeline.read()
    assert len(pipeline) == 0  # nothing left that could be read as a later answer


def test_drain_frees_the_connection_for_other_commands(imap_account: ImapAccount) -> None:
    uids = append(imap_account, "INBOX", 9)
    with imap_account.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        pipeline = FetchPipeline.on(conn, ITEMS)
        for lo in range(uids[0], uids[-1] + 1, 3):
            pipeline.send(lo, lo + 2)
        first = pipeline.read()
        pipeline.drain()
        flags = conn.get_flags(uids)  # an imapclient command between two windows
        rest = [pipeline.read(), pipeline.read()]
    assert sorted(flags) == uids
    got = [sorted(w.response()) for w in (first, *rest)]
    assert got == [uids[0:3], uids[3:6], uids[6:9]]


def test_line_helpers() -> None:
    assert literal_size(b"1 (UID 5 BODY[HEADER.FIELDS (FROM)] {332}") == 332
    assert literal_size(b"1 (UID 5 FLAGS ())") is None
    assert literal_size(b"weird {x}") is None
    assert literal_size(b"}") is None
    line = b"* 12 FETCH (UID 5)"
    space = fetch_message_number(line)
    assert space is not None and line[2:space] + line[space + 6:] == b"12 (UID 5)"
    assert fetch_message_number(b"* 3 EXISTS") is None
    assert fetch_message_number(b"* OK [ALERT] hello") is None
    assert fetch_message_number(b"* 7 fetch (UID 1)") == 3
    # the imaplib shape parse_fetch expects, checked against imapclient's own parser
    data = [(b"12 (UID 5 RFC822.SIZE 9 BODY[HEADER.FIELDS (FROM)] {7}", b"From: a"), b")"]
    assert parse_fetch(data)[5][b"RFC822.SIZE"] == \
        parse_fetch_response(data, uid_is_key=True)[5][b"RFC822.SIZE"] == 9
