"""IMAP sync against a real Dovecot (tests/dovecot.py): security, folders, incremental sync,
UIDVALIDITY, bounces, faults; and the pure helpers, including the Gmail logic that cannot be run
against a local server.

Most tests drive `netaudit sync` as a real process with a config file; the fault tests call
``sync_imap`` in-process so they can stop the server after a known batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import re
import secrets as pysecrets
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import imapclient
import pytest
from imapclient.response_parser import parse_fetch_response

from ingest import imap_parse, local
from ingest.headers import MessageRecord
from ingest.imap import Options, log_in_ahead, sync_imap
from ingest.imap_connect import Backoff, ssl_context
from ingest.imap_folders import Folder, FolderNotFound, choose_folders
from ingest.imap_parse import (
    find_dsn_part,
    gmail_record,
    header_literal,
    internal_dates,
    parse_fetch,
    parse_item,
)
from ingest.imap_throttle import is_throttled, suggested_backoff
from netaudit import config, db
from netaudit.errors import SourceError
from tests.conftest import Run, data_path, write_config
from tests.dovecot import _RAWLOG_STAMP, DovecotServer, ImapAccount, sample_messages

UTC = dt.UTC
ME = "robin@example.org"


# ---------------------------------------------------------------------------------------------
# Helpers


def message(sender: str, to: str, subject: str, date: str, msgid: str,
            extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
            f"Message-ID: <{msgid}>\r\n{extra}\r\nHello.\r\n").encode()


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def append_all(account: ImapAccount, folder: str, messages: Iterable[bytes]) -> list[int]:
    """APPEND over one connection, as a mail client moving mail would."""
    uids = []
    with account.client() as conn:
        for raw in messages:
            response = conn.append(folder, raw)
            uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", response).group(1)))
    return uids


def enron_files(n: int) -> list[Path]:
    return sorted(data_path("enron", "palimpzest-enron-eval").glob("*.txt"))[:n]


def imap_config(tmp_path: Path, account: ImapAccount, *, security: str = "plain",
                host: str = "127.0.0.1", port: int | None = None,
                ca_file: Path | None = None, password: str | None = None,
                folders: list[str] | None = None, extra: str = "") -> Path:
    """A config with one [[imap]] source "work"; the password comes from a file via cat, so
    no argv ever holds it."""
    secret_file = tmp_path / "password"
    secret_file.write_text((password if password is not None else account.password) + "\n")
    secret_file.chmod(0o600)
    lines = [
        "[netaudit]", f'database = "{tmp_path / "netaudit.duckdb"}"', f'me = ["{ME}"]', "",
        "[[imap]]", 'name = "work"', f'host = "{host}"',
        f"port = {port if port is not None else account.port}", f'security = "{security}"',
        f'username = "{account.user}"', f'password_command = ["cat", "{secret_file}"]',
        "timeout = 20",
    ]
    if ca_file is not None:
        lines.append(f'ca_file = "{ca_file}"')
    if folders is not None:
        lines.append("folders = " + config._toml_value(folders))
    if extra:
        lines.append(extra)
    return write_config(tmp_path / "config.toml", "\n".join(lines) + "\n")


def sync(run: Run, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("--config", str(cfg), *args, "sync")


def query(cfg_path: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    cfg = config.load(str(cfg_path))
    with db.reader(cfg.database) as con:
        return con.execute(sql, params or []).fetchall()


def in_process(cfg_path: Path, options: Options | None = None) -> str:
    cfg = config.load(str(cfg_path))
    me = local.prepare_me(cfg.database, cfg.me, ())
    return sync_imap(cfg, cfg.sources[0], me, options)


def rawlog_files(server: DovecotServer, user: str) -> set[Path]:
    """Dovecot's rawlog files for `user`: one per IMAP session."""
    assert server.rawlog_dir is not None
    return set((server.rawlog_dir / user).glob("*.in"))


def fetch_lines(server: DovecotServer, user: str, skip: set[Path] = frozenset()) -> list[str]:
    """Every UID FETCH command `user` sent, from Dovecot's rawlog (what really went out);
    ``skip``: sessions to leave out (a test's earlier runs)."""
    lines = []
    for path in sorted(rawlog_files(server, user) - skip,
                       key=lambda p: (p.stat().st_mtime_ns, p.name)):
        data = _RAWLOG_STAMP.sub(b"", path.read_bytes())
        lines += [m.group(1).decode() for m in
                  re.finditer(rb"^\S+ (UID FETCH [^\r\n]*)", data, re.MULTILINE)]
    return lines


def header_fetch_ranges(lines: list[str]) -> list[str]:
    return [line.split()[2] for line in lines if "HEADER.FIELDS" in line]


def no_secret(proc: subprocess.CompletedProcess[str], *secrets_: str) -> None:
    for s in secrets_:
        assert s not in proc.stdout and s not in proc.stderr


INBOX_MAIL = [
    message('"Alice Example" <Alice@Example.COM>', f"Robin <{ME}>", "Lunch?",
            "Tue, 05 Mar 2024 09:15:00 +0100", "lunch-1@example.com"),
    message("bob@example.net", f"{ME}, carol@example.org", "Re: plan",
            "Wed, 06 Mar 2024 18:00:00 -0500", "plan-2@example.net",
            extra="In-Reply-To: <plan-1@example.org>\r\nCc: dave@example.org\r\n"),
]
SENT_MAIL = [message(f"Robin <{ME}>", "Alice@example.com", "Re: Lunch?",
                     "Tue, 05 Mar 2024 10:00:00 +0100", "lunch-2@example.org",
                     extra="In-Reply-To: <lunch-1@example.com>\r\n")]


def check_first_sync(cfg: Path) -> None:
    rows = query(cfg, "SELECT message_key, from_addr, from_name, direction, sent_at, "
                      "recipient_count, in_reply_to, date_source FROM messages "
                      "WHERE message_key IN ('lunch-1@example.com', 'plan-2@example.net', "
                      "'lunch-2@example.org') ORDER BY sent_at")
    assert rows == [
        ("lunch-1@example.com", "alice@example.com", "Alice Example", "received",
         dt.datetime(2024, 3, 5, 8, 15, tzinfo=UTC), 1, None, "header"),
        ("lunch-2@example.org", ME, "Robin", "sent",
         dt.datetime(2024, 3, 5, 9, 0, tzinfo=UTC), 1, "lunch-1@example.com", "header"),
        ("plan-2@example.net", "bob@example.net", None, "received",
         dt.datetime(2024, 3, 6, 23, 0, tzinfo=UTC), 3, "plan-1@example.org", "header"),
    ]
    parts = query(cfg, "SELECT role, address FROM participants WHERE message_key = "
                       "'plan-2@example.net' ORDER BY role, position")
    assert parts == [("cc", "dave@example.org"), ("from", "bob@example.net"),
                     ("to", ME), ("to", "carol@example.org")]
    locations = dict(query(cfg, "SELECT message_key, location FROM messages"))
    assert re.fullmatch(r"Sent;UIDVALIDITY=\d+/;UID=1", locations["lunch-2@example.org"])


# ---------------------------------------------------------------------------------------------
# Plaintext on loopback, TLS, STARTTLS


def test_plain_sync_stores_inbox_and_sent(imap_account: ImapAccount, tmp_path: Path,
                                          run: Run) -> None:
    enron = enron_files(20)
    append_all(imap_account, "INBOX", [*INBOX_MAIL, *(crlf(p.read_bytes()) for p in enron)])
    alias = message("robin@family.example", "mum@family.example", "Sunday",
                    "Sun, 10 Mar 2024 08:00:00 +0000", "sunday@family.example")
    append_all(imap_account, "Sent", [*SENT_MAIL, alias])
    append_all(imap_account, "Junk", sample_messages(2, subject="spam"))
    append_all(imap_account, "Trash", sample_messages(1, subject="gone"))
    cfg = imap_config(tmp_path, imap_account)

    proc = sync(run, cfg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "work: INBOX 22 new, Sent 2 new (24 messages, 0 quarantined)"
    check_first_sync(cfg)
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(24, 24)]
    # one known Enron message, with the facts the local import test also asserts
    enron_key = "14955894.1075855377681.JavaMail.evans@thyme"  # allen-p-inbox-10.txt
    assert query(cfg, "SELECT from_addr, from_name, sent_at, direction FROM messages "
                      "WHERE message_key = ?", [enron_key]) == [
        ("anchordesk_daily@anchordesk.zdlists.com", "AnchorDesk",
         dt.datetime(2001, 12, 31, 6, 49, 42, tzinfo=UTC), "received")]
    # Junk and Trash are not read
    assert query(cfg, "SELECT count(*) FROM messages WHERE location LIKE 'Junk%' "
                      "OR location LIKE 'Trash%'") == [(0,)]
    # the From of the Sent folder is remembered as mine
    assert sorted(query(cfg, "SELECT address, origin FROM me_addresses")) == \
        [("robin@example.org", "config"), ("robin@family.example", "sent folder")]
    positions = dict(query(cfg, "SELECT scope, last_uid FROM sync_state WHERE source = 'work'"))
    assert positions == {"INBOX": 22, "Sent": 2}


def test_tls_with_the_test_ca(dovecot: DovecotServer, imap_account: ImapAccount,
                              tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", INBOX_MAIL)
    append_all(imap_account, "Sent", SENT_MAIL)
    cfg = imap_config(tmp_path, imap_account, security="tls", host="localhost",
                      port=dovecot.tls_port, ca_file=dovecot.ca_file)
    proc = sync(run, cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "work: INBOX 2 new, Sent 1 new (3 messages, 0 quarantined)"
    check_first_sync(cfg)


def test_starttls_with_the_test_ca(dovecot: DovecotServer, imap_account: ImapAccount,
                                   tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", INBOX_MAIL)
    cfg = imap_config(tmp_path, imap_account, security="starttls", host="localhost",
                      port=dovecot.port, ca_file=dovecot.ca_file)
    proc = sync(run, cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INBOX 2 new" in proc.stdout


def test_ca_file_adds_to_the_system_store(dovecot: DovecotServer) -> None:
    system = ssl_context(None)
    extended = ssl_context(str(dovecot.ca_file))
    assert len(extended.get_ca_certs()) == len(system.get_ca_certs()) + 1
    assert extended.verify_mode == ssl.CERT_REQUIRED and extended.check_hostname
    subjects = [dict(x[0] for x in c["subject"]).get("commonName")
                for c in extended.get_ca_certs()]
    assert "netaudit test CA" in subjects


# ---------------------------------------------------------------------------------------------
# Failures: one clear line each, exit 1, no password anywhere


def test_wrong_ca_fails_clearly(dovecot: DovecotServer, imap_account: ImapAccount,
                                tmp_path: Path, run: Run) -> None:
    cfg = imap_config(tmp_path, imap_account, security="tls", port=dovecot.tls_port,
                      ca_file=dovecot.wrong_ca_file)
    proc = sync(run, cfg, "-vv")
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f"work: failed: cannot connect to 127.0.0.1:{dovecot.tls_port}: certificate verify "
        "failed: unable to get local issuer certificate")
    assert proc.stderr.strip().splitlines()[-1] == "Error: 1 of 1 sources failed: work"
    no_secret(proc, imap_account.password)


def test_wrong_password_fails_clearly(imap_account: ImapAccount, tmp_path: Path,
                                      run: Run) -> None:
    wrong = "Wrong-" + pysecrets.token_urlsafe(10)
    cfg = imap_config(tmp_path, imap_account, password=wrong)
    proc = sync(run, cfg, "-vv")
    assert proc.returncode == 1
    assert proc.stdout.strip() == \
        f"work: failed: login failed for {imap_account.user}: authentication failed"
    no_secret(proc, wrong, imap_account.password)
    assert query(cfg, "SELECT last_error FROM sources WHERE name = 'work'") == \
        [(f"login failed for {imap_account.user}: authentication failed",)]
    assert wrong.encode() not in Path(tmp_path / "netaudit.duckdb").read_bytes()


def test_login_ahead_hands_over_its_client_or_its_error(imap_account: ImapAccount,
                                                        tmp_path: Path) -> None:
    """`netaudit sync` logs in to its first account on a thread while it opens the database;
    the sync then gets that very client, or the error the login ended with."""
    good = config.load(str(imap_config(tmp_path, imap_account))).sources[0]
    session = log_in_ahead(good)
    for thread in [t for t in threading.enumerate() if t.name == "login work"]:
        thread.join(10)
    client = session.client
    assert client is not None  # logged in on the thread, before anything asked for it
    assert session.open() is client
    assert client.folder_status("INBOX", [b"MESSAGES"]) == {b"MESSAGES": 0}
    assert session.open() is client
    session.close()

    (tmp_path / "wrong").mkdir()
    wrong = "Wrong-" + pysecrets.token_urlsafe(10)
    bad = config.load(str(imap_config(tmp_path / "wrong", imap_account, password=wrong)))
    session = log_in_ahead(bad.sources[0])
    with pytest.raises(SourceError) as failed:
        session.open()
    assert str(failed.value) == f"login failed for {imap_account.user}: authentication failed"

    session = log_in_ahead(good)  # never used: dropping it waits for the login, then closes
    session.drop()
    assert session.client is None
    assert not [t for t in threading.enumerate() if t.name == "login work"]


def test_non_ascii_password_fails_clearly(dovecot: DovecotServer, tmp_path: Path,
                                         run: Run) -> None:
    account = dovecot.add_account(password="pässwörd-" + pysecrets.token_hex(4))
    cfg = imap_config(tmp_path, account)
    proc = sync(run, cfg)
    assert proc.returncode == 1
    assert proc.stdout.strip() == (f"work: failed: login failed for {account.user}: the "
                                   "password or user name has non-ASCII characters, which IMAP "
                                   "LOGIN cannot send")
    no_secret(proc, account.password, "pässwörd", "ä")


def test_unreachable_port_fails_clearly(imap_account: ImapAccount, tmp_path: Path,
                                        run: Run) -> None:
    cfg = imap_config(tmp_path, imap_account, port=1)
    proc = sync(run, cfg)
    assert proc.returncode == 1
    line = proc.stdout.strip()
    assert line.startswith("work: failed: cannot connect to 127.0.0.1:1: Connection refused")
    assert "\n" not in line
    no_secret(proc, imap_account.password)


def test_starttls_not_offered_is_refused(dovecot_no_starttls: DovecotServer, tmp_path: Path,
                                         run: Run) -> None:
    account = dovecot_no_starttls.add_account()
    cfg = imap_config(tmp_path, account, security="starttls", port=dovecot_no_starttls.port)
    proc = sync(run, cfg)
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f"work: failed: STARTTLS is not offered by 127.0.0.1:{dovecot_no_starttls.port}; "
        'refusing to log in without TLS (security = "starttls")')
    no_secret(proc, account.password)
    # and no LOGIN was ever sent in the clear
    assert "LOGIN" not in dovecot_no_starttls.rawlog_commands(account.user)


def test_one_failing_account_does_not_stop_the_others(imap_account: ImapAccount,
                                                      tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", INBOX_MAIL)
    cfg = imap_config(tmp_path, imap_account)
    text = cfg.read_text().replace('name = "work"', 'name = "broken"', 1)
    text = text.replace(f"port = {imap_account.port}", "port = 1", 1)
    text += cfg.read_text().split("\n\n", 1)[1]  # the working [[imap]] again, as "work"
    write_config(cfg, text)
    proc = sync(run, cfg)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("broken: failed: cannot connect to 127.0.0.1:1")
    assert lines[1].startswith("work: INBOX 2 new")
    assert proc.stderr.strip().splitlines()[-1] == "Error: 1 of 2 sources failed: broken"


def test_missing_configured_folder(imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    cfg = imap_config(tmp_path, imap_account, folders=["INBOX", "Archive"])
    proc = sync(run, cfg)
    assert proc.returncode == 1
    assert "folder 'Archive' does not exist (folders: INBOX, Junk, Sent, Trash)" in proc.stdout


def test_password_env(imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", INBOX_MAIL[:1])
    cfg = imap_config(tmp_path, imap_account)
    text = re.sub(r"password_command = .*", 'password_env = "NETAUDIT_TEST_IMAP_PW"',
                  cfg.read_text())
    write_config(cfg, text)
    proc = run("--config", str(cfg), "sync", env={"NETAUDIT_TEST_IMAP_PW": imap_account.password})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INBOX 1 new" in proc.stdout
    no_secret(proc, imap_account.password)


def test_login_address_is_remembered_as_mine(dovecot: DovecotServer, tmp_path: Path,
                                             run: Run) -> None:
    login = f"robin-{pysecrets.token_hex(3)}@example.org"
    account = dovecot.add_account(login)
    append_all(account, "INBOX", [message(login, "x@example.com", "Note",
                                          "Mon, 01 Apr 2024 12:00:00 +0000", "note@x")])
    cfg = imap_config(tmp_path, account)
    assert sync(run, cfg).returncode == 0
    assert (login, "login") in query(cfg, "SELECT address, origin FROM me_addresses")
    assert query(cfg, "SELECT direction FROM messages") == [("sent",)]


# ---------------------------------------------------------------------------------------------
# Incremental, read-only, UIDVALIDITY


def test_incremental_fetches_only_new_and_noop_fetches_nothing(
        dovecot: DovecotServer, imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", sample_messages(5))
    append_all(imap_account, "Sent", sample_messages(1, sender=ME))
    cfg = imap_config(tmp_path, imap_account)
    assert sync(run, cfg).returncode == 0
    user = imap_account.user
    assert header_fetch_ranges(fetch_lines(dovecot, user)) == ["1:5", "1:1"]

    append_all(imap_account, "INBOX", sample_messages(3, subject="later"))
    earlier = rawlog_files(dovecot, user)
    commands_before = len(imap_account.rawlog_commands())
    proc = sync(run, cfg)
    assert proc.stdout.strip() == "work: INBOX 3 new, Sent 0 new (3 messages, 0 quarantined)"
    assert header_fetch_ranges(fetch_lines(dovecot, user, skip=earlier)) == ["6:8"]
    # Only the folder with something new is examined; Sent costs its STATUS alone.
    assert imap_account.rawlog_commands()[commands_before:] == \
        ["STATUS", "LIST", "EXAMINE", "UID FETCH", "STATUS", "LOGOUT"]

    commands_before = len(imap_account.rawlog_commands())
    proc = sync(run, cfg)
    assert proc.stdout.strip() == "work: INBOX 0 new, Sent 0 new (0 messages, 0 quarantined)"
    noop = imap_account.rawlog_commands()[commands_before:]
    assert noop == ["STATUS", "LIST", "STATUS", "LOGOUT"]  # one round trip per folder
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == [(9, 9)]


def test_sync_never_sets_seen(imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", [*INBOX_MAIL, *sample_messages(3)])
    cfg = imap_config(tmp_path, imap_account)
    assert sync(run, cfg).returncode == 0
    with imap_account.client() as conn:
        conn.select_folder("INBOX", readonly=True)
        flags = conn.get_flags(conn.search("ALL"))
    assert len(flags) == 5
    assert all(b"\\Seen" not in f for f in flags.values()), flags


def test_only_header_fields_are_fetched(dovecot: DovecotServer, imap_account: ImapAccount,
                                        tmp_path: Path, run: Run) -> None:
    append_all(imap_account, "INBOX", INBOX_MAIL)
    cfg = imap_config(tmp_path, imap_account)
    assert sync(run, cfg).returncode == 0
    for line in fetch_lines(dovecot, imap_account.user):
        assert "BODY.PEEK[HEADER.FIELDS (FROM " in line
        assert "RFC822 " not in line + " " and "BODY[" not in line


def test_uidvalidity_change_rescans_without_duplicates_or_loss(
        imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    msgs = sample_messages(5, subject="project")
    imap_account.create_folder("Projects")
    append_all(imap_account, "Projects", msgs[:4])
    cfg = imap_config(tmp_path, imap_account, folders=["Projects"])
    assert sync(run, cfg).stdout.strip() == "work: Projects 4 new (4 messages, 0 quarantined)"
    [(old_validity,)] = query(cfg, "SELECT uidvalidity FROM sync_state")

    # The folder is recreated (as after a server migration): two old messages, one new; the
    # other two were expunged for good.
    imap_account.delete_folder("Projects")
    imap_account.create_folder("Projects")
    append_all(imap_account, "Projects", [msgs[0], msgs[1], msgs[4]])
    proc = sync(run, cfg)
    assert proc.returncode == 0
    assert proc.stdout.strip() == ("work: Projects 1 new (2 already stored, rescanned after a "
                                   "UIDVALIDITY change) (1 messages, 0 quarantined)")
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == [(5, 5)]
    [(new_validity, last_uid)] = query(cfg, "SELECT uidvalidity, last_uid FROM sync_state")
    assert new_validity != old_validity and last_uid == 3
    commands_before = len(imap_account.rawlog_commands())
    assert sync(run, cfg).stdout.strip() == "work: Projects 0 new (0 messages, 0 quarantined)"
    # INBOX is not among the folders, so it is not asked about either
    assert imap_account.rawlog_commands()[commands_before:] == ["LIST", "STATUS", "LOGOUT"]


def test_garbage_headers_are_quarantined_and_the_rest_stored(
        imap_account: ImapAccount, tmp_path: Path, run: Run) -> None:
    garbage = b"this is not a header line\r\nnor is this\r\n\r\nbody\r\n"
    uids = append_all(imap_account, "INBOX", [INBOX_MAIL[0], garbage, INBOX_MAIL[1]])
    cfg = imap_config(tmp_path, imap_account)
    proc = sync(run, cfg)
    assert proc.stdout.strip() == "work: INBOX 2 new, Sent 0 new (2 messages, 1 quarantined)"
    [(location, reason)] = query(cfg, "SELECT location, reason FROM quarantine")
    assert location.endswith(f"/;UID={uids[1]}") and location.startswith("INBOX;UIDVALIDITY=")
    assert reason == "no header fields"
    assert sync(run, cfg).stdout.strip().endswith("(0 messages, 0 quarantined)")
    assert query(cfg, "SELECT count(*) FROM quarantine") == [(1,)]


# ---------------------------------------------------------------------------------------------
# Bounces


BOUNCES = {  # file: (recipient, action, status)
    ("flanker", "messages", "bounce", "zed.eml"):
        ("asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com", "failed", "5.1.1"),
    ("flanker", "messages", "bounce", "mailbox-full.eml"): ("user@aol.com", "failed", "5.2.2"),
    ("flanker", "messages", "bounce", "office365.eml"):
        ("noname@example.com", "failed", "5.1.10"),
    ("flanker", "messages", "bounce", "no-mx.eml"): ("user@example.com", "delayed", "4.4.4"),
    ("mimekit-messages", "delivery-status.txt"):
        ("newsletter-request@imusic.com", "failed", None),
}


def test_bounces_fetch_only_the_report_part(dovecot: DovecotServer, imap_account: ImapAccount,
                                            tmp_path: Path, run: Run) -> None:
    files = [data_path("email-fixtures", *parts) for parts in BOUNCES]
    append_all(imap_account, "INBOX", [INBOX_MAIL[0], *(crlf(p.read_bytes()) for p in files)])
    cfg = imap_config(tmp_path, imap_account)
    proc = sync(run, cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("(6 messages, 0 quarantined, 5 bounces)")
    rows = query(cfg, "SELECT recipient, action, status FROM bounces ORDER BY recipient")
    assert rows == sorted(BOUNCES.values())
    reported = query(cfg, "SELECT reported_at FROM bounces WHERE recipient = 'user@aol.com'")
    assert reported == [(dt.datetime(2011, 7, 29, 8, 8, 56, tzinfo=UTC),)]
    # Each bounce row points at its stored, flagged message.
    assert query(cfg, "SELECT count(*) FROM bounces b JOIN messages m USING (message_key) "
                      "WHERE m.is_dsn") == [(5,)]

    lines = fetch_lines(dovecot, imap_account.user)
    structure = [line for line in lines if "BODYSTRUCTURE" in line]
    parts = [line for line in lines if re.search(r"BODY\.PEEK\[[\d.]+\]<0\.65536>", line)]
    assert len(structure) == 1 and structure[0].split()[2] == "2,3,4,5,6"
    # the report is part 2 of four bounces, part 1 of the one whose text is a preamble
    assert sorted((p.split()[2], p.split()[3]) for p in parts) == \
        [("2,3,4,5", "(BODY.PEEK[2]<0.65536>)"), ("6", "(BODY.PEEK[1]<0.65536>)")]
    others = [line for line in lines if line not in structure and line not in parts]
    assert all("HEADER.FIELDS" in line for line in others)  # never a whole body

    # a rescan of the same mail adds no bounce twice
    with db.writer(config.load(str(cfg)).database) as con:
        con.execute("DELETE FROM sync_state")
    assert sync(run, cfg).returncode == 0
    assert query(cfg, "SELECT count(*) FROM bounces") == [(5,)]


# ---------------------------------------------------------------------------------------------
# Local import and IMAP give the same messages


def test_imap_and_local_import_store_the_same_messages_and_bounces(imap_account: ImapAccount,
                                                       tmp_path: Path, run: Run) -> None:
    files = enron_files(40) + [data_path("email-fixtures", *parts) for parts in BOUNCES]
    append_all(imap_account, "INBOX", [crlf(p.read_bytes()) for p in files])
    cfg = imap_config(tmp_path, imap_account)
    assert sync(run, cfg).returncode == 0
    local_db = tmp_path / "local.duckdb"
    me = local.prepare_me(local_db, [ME], ())
    local.import_paths(local_db, "import", files, me=me)

    columns = ("message_key, message_id, sent_at, date_source, from_addr, from_name, direction,"
               " recipient_count, in_reply_to, refs, automated_reason, is_dsn")
    sql = f"SELECT {columns} FROM messages ORDER BY message_key"
    psql = "SELECT message_key, role, position, address, name FROM participants ORDER BY ALL"
    bsql = "SELECT * FROM bounces ORDER BY ALL"
    with db.reader(local_db) as con:
        local_rows, local_parts = con.execute(sql).fetchall(), con.execute(psql).fetchall()
        local_bounces = con.execute(bsql).fetchall()
    assert len(local_rows) == 45 and len(local_bounces) == 5
    assert query(cfg, sql) == local_rows
    assert query(cfg, psql) == local_parts
    assert query(cfg, bsql) == local_bounces


# ---------------------------------------------------------------------------------------------
# Faults: a server that goes away mid-sync


def fast_backoff(attempts: int = 2) -> Backoff:
    return Backoff(attempts=attempts, base=0.05, cap=0.2, rng=random.Random(1))


def stop_after_batches(server: DovecotServer, count: int, commits: list[int]
                       ) -> Callable[[str, int], None]:
    """An on_commit hook: record each committed position, stop the server after ``count``."""
    def hook(folder: str, last_uid: int) -> None:
        commits.append(last_uid)
        if len(commits) == count:
            server.stop()
    return hook


def test_server_stopped_mid_sync_then_next_run_completes(
        dovecot_factory: Any, tmp_path: Path) -> None:
    server: DovecotServer = dovecot_factory(tls=False)
    msgs = sample_messages(60)
    append_all(server.account, "INBOX", msgs)
    cfg = imap_config(tmp_path, server.account)
    commits: list[int] = []
    options = Options(chunk_uids=10, batch_messages=10, backoff=fast_backoff(),
                      on_commit=stop_after_batches(server, 2, commits))
    with pytest.raises(SourceError) as info:
        in_process(cfg, options)
    assert f"cannot connect to 127.0.0.1:{server.port}: Connection refused" in str(info.value)
    assert "gave up after" in str(info.value)
    # The windows already in flight when the server stopped may still be read from the
    # socket and committed; never more than those, and each whole.
    assert commits[:2] == [10, 20]
    assert commits == list(range(10, 10 * len(commits) + 1, 10))
    assert len(commits) <= 2 + options.pipeline_depth
    stored = commits[-1]
    # consistent: exactly the committed batches, and the position says so
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(stored, stored)]
    assert query(cfg, "SELECT scope, last_uid FROM sync_state") == [("INBOX", stored)]

    server.start()  # same ports, same mail
    summary = in_process(cfg, Options(chunk_uids=10, batch_messages=10))
    assert summary == f"INBOX {60 - stored} new, Sent 0 new ({60 - stored} messages, " \
        "0 quarantined)"
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == [(60, 60)]
    assert query(cfg, "SELECT scope, last_uid FROM sync_state ORDER BY scope") == \
        [("INBOX", 60), ("Sent", 0)]


def test_dropped_connection_reconnects_within_one_run(
        dovecot_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server: DovecotServer = dovecot_factory(tls=False)
    append_all(server.account, "INBOX", sample_messages(45))
    append_all(server.account, "Sent", sample_messages(3, sender=ME))
    cfg = imap_config(tmp_path, server.account)
    restarted: list[int] = []

    def restart_once(folder: str, last_uid: int) -> None:
        if folder == "INBOX" and last_uid == 20 and not restarted:
            restarted.append(last_uid)
            server.restart()  # kills every imap process: the open connection is gone

    summary = in_process(cfg, Options(chunk_uids=10, batch_messages=10,
                                      backoff=fast_backoff(4), on_commit=restart_once))
    assert restarted == [20]
    assert summary == "INBOX 45 new, Sent 3 new (48 messages, 0 quarantined)"
    assert "reconnecting in" in caplog.text
    assert server.account.password not in caplog.text
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == [(48, 48)]


def test_interrupted_fetch_loses_only_the_batch_in_flight(
        dovecot_factory: Any, tmp_path: Path) -> None:
    """The server dies while a batch is being fetched (before its commit): that batch is not
    stored, nothing else is lost, and the next run fetches from the last committed UID."""
    server: DovecotServer = dovecot_factory(tls=False)
    append_all(server.account, "INBOX", sample_messages(30))
    cfg = imap_config(tmp_path, server.account)
    seen: list[int] = []

    def stop_during_next_batch(folder: str, last_uid: int) -> None:
        seen.append(last_uid)
        if last_uid == 10:
            server.stop()

    options = Options(chunk_uids=5, batch_messages=10, backoff=fast_backoff(1),
                      on_commit=stop_during_next_batch)
    with pytest.raises(SourceError):
        in_process(cfg, options)
    # Answers already read from the socket when the server died may complete one more batch
    # (FETCH commands are pipelined); the batch whose answer was cut off is never stored.
    stored = seen[-1]
    assert seen[0] == 10 and stored in (10, 20)
    assert query(cfg, "SELECT count(*) FROM messages") == [(stored,)]
    server.start()
    earlier = rawlog_files(server, server.user)  # by session: files do not sort by time
    assert in_process(cfg).startswith(f"INBOX {30 - stored} new")
    assert header_fetch_ranges(fetch_lines(server, server.user, skip=earlier)) == \
        [f"{stored + 1}:30"]
    assert query(cfg, "SELECT count(*), count(DISTINCT message_key) FROM messages") == [(30, 30)]


# ---------------------------------------------------------------------------------------------
# Pure helpers: folders (Gmail included), FETCH parsing, throttling, backoff


GMAIL_LIST = [
    ((b"\\HasNoChildren",), b"/", "INBOX"),
    ((b"\\HasChildren", b"\\Noselect"), b"/", "[Gmail]"),
    ((b"\\All", b"\\HasNoChildren"), b"/", "[Gmail]/Alle Nachrichten"),
    ((b"\\HasNoChildren", b"\\Sent"), b"/", "[Gmail]/Gesendet"),
    ((b"\\HasNoChildren", b"\\Junk"), b"/", "[Gmail]/Spam"),
    ((b"\\HasNoChildren", b"\\Trash"), b"/", "[Gmail]/Papierkorb"),
]


def test_gmail_folder_choice_from_a_list_response() -> None:
    """Gmail cannot be run here (no local server speaks X-GM-EXT-1), so its folder choice is
    checked on a LIST response as Gmail sends it, localized: \\All by attribute, not name."""
    assert choose_folders(GMAIL_LIST, None, gmail=True) == [Folder("[Gmail]/Alle Nachrichten")]
    hidden = [e for e in GMAIL_LIST if b"\\All" not in e[0]]  # "Show in IMAP" switched off
    assert choose_folders(hidden, None, gmail=True) == \
        [Folder("INBOX"), Folder("[Gmail]/Gesendet", sent=True)]
    assert choose_folders(GMAIL_LIST, ["\\All"], gmail=True) == \
        [Folder("[Gmail]/Alle Nachrichten")]


def test_gmail_key_thread_and_direction_from_fetch_data() -> None:
    """Gmail cannot be run here either: a FETCH item as Gmail returns it (X-GM-MSGID,
    X-GM-THRID, X-GM-LABELS) keys the message by msgid, threads it by thrid, and the \\Sent
    label makes it mine."""
    header = (b"From: Robin <robin@example.org>\r\nTo: ann@example.com\r\n"
              b"Message-ID: <abc@mail.gmail.com>\r\nDate: Mon, 1 Apr 2024 10:00:00 +0000\r\n\r\n")
    item = {b"X-GM-MSGID": 1278455344230334865, b"X-GM-THRID": 1266894439832287888,
            b"X-GM-LABELS": (b"\\Important", b"\\Sent"), b"RFC822.SIZE": 1200,
            b"INTERNALDATE": dt.datetime(2024, 4, 1, 10, 0, 5, tzinfo=UTC),
            b'BODY[HEADER.FIELDS ("FROM" "TO")]': header}
    rec = parse_item(7, item, folder=Folder("[Gmail]/All Mail"), uidvalidity=11,
                     me=frozenset(), gmail=True)
    assert not isinstance(rec, imap_parse.Quarantined) and rec is not None
    assert rec.message_key == "gm:1278455344230334865"
    assert rec.thread_hint == "1266894439832287888"
    assert rec.message_id == "abc@mail.gmail.com"
    assert rec.direction == "sent"
    received = parse_item(8, {**item, b"X-GM-LABELS": (b"\\Inbox",)},
                          folder=Folder("[Gmail]/All Mail"), uidvalidity=11, me=frozenset(),
                          gmail=True)
    assert received is not None and not isinstance(received, imap_parse.Quarantined)
    assert received.direction == "received"
    # the same message seen through two labels has one key: stored once
    assert gmail_record(received, item).message_key == rec.message_key


def test_default_folders_by_attribute_name_and_courier_style() -> None:
    dovecot_list = [((b"\\HasNoChildren",), b"/", "INBOX"),
                    ((b"\\HasNoChildren", b"\\Sent"), b"/", "Gesendet"),
                    ((b"\\Junk",), b"/", "Junk"), ((b"\\Trash",), b"/", "Trash")]
    assert choose_folders(dovecot_list, None) == [Folder("INBOX"), Folder("Gesendet", True)]
    no_special_use = [((), b"/", "INBOX"), ((), b"/", "Sent Items"), ((), b"/", "Drafts")]
    assert choose_folders(no_special_use, None) == [Folder("INBOX"), Folder("Sent Items", True)]
    courier = [((), b".", "INBOX"), ((), b".", "INBOX.Sent Messages")]
    assert choose_folders(courier, None) == [Folder("INBOX"), Folder("INBOX.Sent Messages", True)]
    assert choose_folders([((), b"/", "INBOX")], None) == [Folder("INBOX")]  # no Sent at all
    assert choose_folders(dovecot_list, ["\\Sent", "Junk"]) == \
        [Folder("Gesendet", True), Folder("Junk")]  # an explicit choice is honoured
    with pytest.raises(FolderNotFound, match="folder 'Archive' does not exist"):
        choose_folders(dovecot_list, ["Archive"])
    with pytest.raises(FolderNotFound, match="no folder with the \\\\Sent attribute"):
        choose_folders([((), b"/", "INBOX")], ["\\Sent"])


def test_header_literal_found_by_key_prefix() -> None:
    for key in (b"BODY[HEADER.FIELDS (FROM TO)]", b'BODY[HEADER.FIELDS ("FROM" "TO")]',
                b"body[header.fields (from to)]"):
        assert header_literal({b"UID": 3, key: b"From: a@b.example\r\n\r\n"}) == \
            b"From: a@b.example\r\n\r\n"
    assert header_literal({b"FLAGS": (b"\\Seen",)}) is None  # an unsolicited FLAGS update
    assert header_literal({b"BODY[HEADER.FIELDS (FROM)]": None}) == b""


def test_fast_fetch_parser_matches_imapclient() -> None:
    hdr = b"From: a@b.example\r\nSubject: x\r\n\r\n"
    data: list[Any] = [
        (b'1 (UID 41 RFC822.SIZE 1234 INTERNALDATE " 5-Mar-2024 09:15:00 +0100" '
         b"BODY[HEADER.FIELDS (FROM SUBJECT)] {%d}" % len(hdr), hdr), b")",
        (b'2 (INTERNALDATE "28-Nov-2026 23:59:59 -0500" UID 42 RFC822.SIZE 99 '
         b'BODY[HEADER.FIELDS ("FROM" "SUBJECT")] {%d}' % len(hdr), hdr), b")",
        b"3 (UID 43 FLAGS (\\Seen))",  # unsolicited: goes through imapclient
        (b"4 (UID 44 BODY[HEADER.FIELDS (FROM)] {%d}" % len(hdr), hdr),
        b" X-GM-LABELS (\\Inbox \"a b\"))",  # items after the literal: imapclient too
    ]
    ours = parse_fetch(data)
    theirs = parse_fetch_response(data, normalise_times=False, uid_is_key=True)
    assert sorted(ours) == sorted(theirs) == [41, 42, 43, 44]
    for uid in ours:
        assert header_literal(ours[uid]) == header_literal(theirs[uid])
        for key in (b"RFC822.SIZE", b"FLAGS", b"X-GM-LABELS"):
            assert ours[uid].get(key) == theirs[uid].get(key), (uid, key)
        # the fast path keeps INTERNALDATE's bytes; read, they are imapclient's datetime
        assert internal_date(ours[uid]) == internal_date(theirs[uid]), uid
    assert isinstance(ours[41][b"INTERNALDATE"], bytes)
    assert internal_date(ours[41]) == dt.datetime(2024, 3, 5, 8, 15, tzinfo=UTC)
    assert internal_date(ours[42]) == dt.datetime(2026, 11, 29, 4, 59, 59, tzinfo=UTC)
    assert internal_date(ours[43]) is None


def internal_date(item: dict[bytes, Any]) -> dt.datetime | None:
    value = next(internal_dates(item.get(b"INTERNALDATE")))[1]
    return value.astimezone(UTC) if value is not None else None


def test_a_bad_internaldate_is_no_fallback_and_a_good_date_needs_none() -> None:
    good = b"From: a@b.example\r\nDate: Tue, 5 Mar 2024 09:15:00 +0100\r\n\r\n"
    bad = b"From: a@b.example\r\n\r\n"
    data: list[Any] = [
        (b'1 (UID 7 RFC822.SIZE 10 INTERNALDATE "31-Feb-2024 09:15:00 +0100" '
         b"BODY[HEADER.FIELDS (FROM DATE)] {%d}" % len(good), good), b")",
        (b'2 (UID 8 RFC822.SIZE 10 INTERNALDATE "not a date" '
         b"BODY[HEADER.FIELDS (FROM DATE)] {%d}" % len(bad), bad), b")",
        (b'3 (UID 9 RFC822.SIZE 10 INTERNALDATE " 1-Apr-2024 10:00:05 +0000" '
         b"BODY[HEADER.FIELDS (FROM DATE)] {%d}" % len(bad), bad), b")"]
    items = parse_fetch(data)
    folder = Folder("INBOX")
    recs = {uid: parse_item(uid, items[uid], folder=folder, uidvalidity=1, me=frozenset())
            for uid in items}
    assert isinstance(recs[7], MessageRecord) and recs[7].date_source == "header"
    assert recs[7].date == dt.datetime(2024, 3, 5, 8, 15, tzinfo=UTC)
    assert isinstance(recs[8], MessageRecord) and recs[8].date_source == "none"
    assert isinstance(recs[9], MessageRecord) and recs[9].date_source == "internaldate"
    assert recs[9].date == dt.datetime(2024, 4, 1, 10, 0, 5, tzinfo=UTC)


def test_suggested_backoff_time() -> None:
    m365 = ("NO [UNAVAILABLE] Request is throttled. Suggested Backoff Time: 194034 "
            "milliseconds")
    assert suggested_backoff(m365) == pytest.approx(194.034)
    assert suggested_backoff(b"BAD Request is throttled. Suggested Backoff Time: 250 ms") == \
        pytest.approx(0.25)
    assert suggested_backoff("Suggested Backoff Time: 3 seconds") == 3.0
    assert suggested_backoff("NO [AUTHENTICATIONFAILED] Authentication failed.") is None
    assert is_throttled(m365)
    assert is_throttled("BAD User is authenticated but not connected.")
    assert not is_throttled("NO [AUTHENTICATIONFAILED] Authentication failed.")


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    b = Backoff(attempts=4, base=1.0, cap=3.0, budget=100.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(5)]
    assert delays[4] is None  # attempts used up
    d = [x for x in delays if x is not None]
    assert 0.5 <= d[0] <= 1.0 and 1.0 <= d[1] <= 2.0 and 1.5 <= d[2] <= 3.0 and d[3] <= 3.0
    honour = Backoff(attempts=3, base=0.1, budget=10.0, rng=random.Random(1))
    assert honour.next_delay(suggested=2.5) == 2.5  # the server's suggestion wins
    assert honour.next_delay(suggested=60.0) is None  # beyond the budget: give up, clearly
    b.reset()
    assert b.next_delay() is not None


def test_dsn_part_found_in_a_bodystructure() -> None:
    """A BODYSTRUCTURE as Dovecot sends it for a multipart/report bounce."""
    raw = (b'1 (UID 9 BODYSTRUCTURE ((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1'
           b' NIL NIL NIL NIL) "alternative" ("boundary" "x") NIL NIL NIL)'
           b'("message" "delivery-status" NIL NIL NIL "base64" 200 NIL NIL NIL NIL)'
           b'("message" "rfc822" NIL NIL NIL "7bit" 300 (NIL NIL NIL NIL NIL NIL NIL NIL NIL '
           b'NIL) ("message" "delivery-status" NIL NIL NIL "7bit" 5 NIL NIL NIL NIL) 5 NIL NIL '
           b'NIL NIL) "report" ("report-type" "delivery-status" "boundary" "y") NIL NIL NIL))')
    structure = parse_fetch_response([raw], uid_is_key=True)[9][b"BODYSTRUCTURE"]
    assert find_dsn_part(structure) == ("2", "base64")
    single = parse_fetch_response([b'1 (UID 3 BODYSTRUCTURE ("message" "delivery-status" NIL '
                                   b'NIL NIL "7bit" 10 NIL NIL NIL NIL))'])[3][b"BODYSTRUCTURE"]
    assert find_dsn_part(single) == ("1", "7bit")
    plain = parse_fetch_response([b'1 (UID 4 BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" '
                                  b'10 1 NIL NIL NIL NIL))'])[4][b"BODYSTRUCTURE"]
    assert find_dsn_part(plain) is None
    assert imap_parse.decode_part(b"QWN0aW9uOiBmYWlsZWQ=", "base64") == b"Action: failed"


def test_quarantine_location_names_folder_uidvalidity_and_uid() -> None:
    rec = parse_item(12, {b"BODY[HEADER.FIELDS (FROM)]": b"\r\n"}, folder=Folder("INBOX"),
                     uidvalidity=99, me=frozenset())
    assert rec == imap_parse.Quarantined("INBOX;UIDVALIDITY=99/;UID=12", "no header fields")
    assert imapclient.SocketTimeout(connect=15, read=60).read == 60  # the API relied on


# ---------------------------------------------------------------------------------------------
# Servers Dovecot will not imitate: a PREAUTH downgrade, and throttling


class ScriptedServer:
    """A tiny IMAP responder on 127.0.0.1 for behaviour no real test server shows: a PREAUTH
    greeting (the STARTTLS downgrade of nostarttls.secvuln.info) and Microsoft 365's
    "Suggested Backoff Time". It records every line a client sends."""

    def __init__(self, greeting: bytes, login_reply: bytes = b"OK done") -> None:
        self.greeting = greeting
        self.login_reply = login_reply
        self.received: list[bytes] = []
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                conn.sendall(self.greeting + b"\r\n")
                for line in reader:
                    self.received.append(line)
                    tag, _, rest = line.strip().partition(b" ")
                    command = rest.split(b" ", 1)[0].upper()
                    if command == b"CAPABILITY":
                        conn.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n"
                                     + tag + b" OK done\r\n")
                    elif command == b"LOGIN":
                        conn.sendall(tag + b" " + self.login_reply + b"\r\n")
                    elif command == b"LOGOUT":
                        conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                        break
                    else:
                        conn.sendall(tag + b" BAD not scripted\r\n")

    def close(self) -> None:
        # shutdown() wakes the blocked accept(); a bare close() would leave the thread waiting
        # on a descriptor number the next server may get, and answer that server's clients.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def scripted() -> Iterable[Any]:
    servers: list[ScriptedServer] = []

    def make(greeting: bytes, login_reply: bytes = b"OK done") -> ScriptedServer:
        servers.append(ScriptedServer(greeting, login_reply))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def scripted_config(tmp_path: Path, port: int, security: str) -> Path:
    account = type("A", (), {"user": "robin@example.org", "password": "Pw-" + "x" * 12,
                             "port": port})()
    return imap_config(tmp_path, account, security=security)  # type: ignore[arg-type]


def test_preauth_greeting_is_refused_before_starttls(scripted: Any, tmp_path: Path) -> None:
    server = scripted(b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] logged in already")
    cfg = scripted_config(tmp_path, server.port, "starttls")
    with pytest.raises(SourceError, match="greeted with PREAUTH before STARTTLS; refusing"):
        in_process(cfg)
    assert not any(b"LOGIN" in line.upper() or b"x" * 12 in line for line in server.received)


def test_suggested_backoff_time_is_honoured(scripted: Any, tmp_path: Path) -> None:
    server = scripted(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
                      b"NO [UNAVAILABLE] Request is throttled. Suggested Backoff Time: "
                      b"1500 milliseconds")
    cfg = scripted_config(tmp_path, server.port, "plain")
    waits: list[float] = []
    with pytest.raises(SourceError) as info:
        in_process(cfg, Options(backoff=Backoff(attempts=3, base=0.01, rng=random.Random(3)),
                                sleep=waits.append))
    message = str(info.value)
    assert message.startswith(f"login to 127.0.0.1:{server.port} refused for now: "
                              "[UNAVAILABLE] Request is throttled.")
    assert "x" * 12 not in message
    # throttled at login: the first attempt of a run, so one retry, after the server's 1.5 s
    assert waits == [1.5] and server.connections == 2


def test_a_message_the_server_cannot_read_is_quarantined_not_fatal(
        dovecot_factory: Any, tmp_path: Path) -> None:
    """Dovecot drops the connection ("BYE Internal error") on every FETCH that includes a
    message file it cannot read. The sync narrows the window down to that one UID, quarantines
    it and goes on: one broken message must not stop an account for good."""
    server: DovecotServer = dovecot_factory(tls=False)
    msgs = sample_messages(30, subject="numbered")
    append_all(server.account, "INBOX", msgs)
    maildir = server.root / "home" / server.user / "Maildir"
    [broken] = [p for p in maildir.glob("*/*") if p.is_file()
                and re.search(rb"^Subject: numbered 12\r?$", p.read_bytes(), re.MULTILINE)]
    broken.chmod(0)
    cfg = imap_config(tmp_path, server.account)
    summary = in_process(cfg, Options(chunk_uids=10, backoff=fast_backoff(5)))
    assert summary == "INBOX 29 new, Sent 0 new (29 messages, 1 quarantined)"
    assert query(cfg, "SELECT location, reason FROM quarantine") == [
        (query(cfg, "SELECT location FROM messages LIMIT 1")[0][0].rsplit("=", 1)[0] + "=12",
         "the server fails every time it reads this message (connection lost); skipped")]
    assert query(cfg, "SELECT scope, last_uid FROM sync_state ORDER BY scope") == \
        [("INBOX", 30), ("Sent", 0)]
    assert in_process(cfg) == "INBOX 0 new, Sent 0 new (0 messages, 0 quarantined)"
