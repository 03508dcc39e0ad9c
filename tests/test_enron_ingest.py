"""Ingest of a real person's whole mailbox: Phillip Allen's, from the Enron corpus.

shared/data/enron-mbox/allen-p has no threading headers (threads come from subject keys),
display names mostly only in X-From/X-To/X-cc, company broadcasts from role mailboxes, and ten
messages dated "Mon, 31 Dec 1979 16:00:00 -0800" (the Outlook/PST null date) in mbox files
whose From_ lines all carry the day of the conversion, 18 Apr 2022. Each fact below was
checked by hand against the raw headers; the message it rests on is named.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ingest.headers import MessageRecord, parse_headers, subject_key
from ingest.imap_commit import ChildWriter, CommitJob, Unparsed
from ingest.imap_folders import Folder
from ingest.imap_parse import HEADER_FIELDS, parse_message
from ingest.imap_positions import Position
from ingest.mailfiles import RawMessage, iter_mbox
from ingest.store import Rows
from netaudit import db
from tests.conftest import data_path, write_config

UTC = dt.UTC
ME = ["phillip.allen@enron.com", "k..allen@enron.com", "pallen@enron.com",
      "phillip.k.allen@enron.com"]
NULL_DATE = "Mon, 31 Dec 1979 16:00:00 -0800 (PST)"
CONVERTED = dt.datetime(2022, 4, 18, tzinfo=UTC)  # every From_ line: "Mon Apr 18 ... 2022"


@functools.cache
def raw_messages() -> tuple[RawMessage, ...]:
    folder = data_path("enron-mbox", "allen-p")
    return tuple(m for path in sorted(folder.glob("*.mbox")) for m in iter_mbox(path))


def header(raw: RawMessage, name: str) -> str | None:
    """One header's raw value (unfolded), read with a plain regex, not the parser."""
    m = re.search(rb"^" + name.encode() + rb":[ \t]*(.*(?:\r?\n[ \t].*)*)", raw.header,
                  re.MULTILINE | re.IGNORECASE)
    return None if m is None else " ".join(m.group(1).decode("latin-1").split())


@pytest.fixture(scope="module")
def enron(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """allen-p imported through the real CLI (store_subjects is off); returns the database."""
    root = tmp_path_factory.mktemp("enron")
    cfg = write_config(root / "config.toml",
                       f'[netaudit]\ndatabase = "{root / "n.duckdb"}"\n'
                       f'me = {json.dumps(ME)}\n')
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "import",
                           str(data_path("enron-mbox", "allen-p"))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return root / "n.duckdb"


def query(database: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_every_message_is_stored_once(enron: Path) -> None:
    """3,034 messages in the files; a message that sits in several folders under one
    Message-ID is stored once, and nothing goes to quarantine."""
    ids = {header(m, "Message-ID") for m in raw_messages()}
    assert len(raw_messages()) == 3034 and None not in ids
    assert query(enron, "SELECT count(*), count(DISTINCT message_key) FROM messages") == \
        [(len(ids), len(ids))]
    assert query(enron, "SELECT count(*) FROM quarantine") == [(0,)]


# ---------------------------------------------------------------------------------------------
# Dates


def test_the_null_date_is_no_date_and_not_the_conversion_day(enron: Path) -> None:
    """The ten messages dated 31 Dec 1979 (e.g. 13537630.1075855669909, "Re:" from Phillip in
    all_documents) are stored without a date: not 1980-01-01, and not 18 Apr 2022, the day on
    every From_ line of these converted mbox files."""
    null_dated = sorted((header(m, "Message-ID") or "").strip("<>") for m in raw_messages()
                        if header(m, "Date") == NULL_DATE)
    assert len(null_dated) == 10
    assert "13537630.1075855669909.JavaMail.evans@thyme" in null_dated
    stored = query(enron, "SELECT message_key, sent_at, date_source FROM messages "
                          "WHERE message_key IN (SELECT unnest(?::VARCHAR[])) "
                          "ORDER BY message_key", [null_dated])
    assert stored == [(key, None, "none") for key in null_dated]
    # every other message keeps its own Date; none is put in 1979/1980 or in 2022
    assert query(enron, "SELECT min(sent_at) >= '1999-01-01', max(sent_at) < '2003-01-01', "
                        "count(*) FILTER (WHERE sent_at IS NULL) FROM messages") == \
        [(True, True, 10)]


def test_dateless_mail_is_kept_but_is_no_contact(enron: Path) -> None:
    """Stored, but out of threads and interactions, so no tie starts or ends on it."""
    assert query(enron, "SELECT count(*) FROM message_threads t JOIN messages m "
                        "USING (message_key) WHERE m.sent_at IS NULL") == [(0,)]
    assert query(enron, "SELECT count(*) > 1000 FROM message_threads") == [(True,)]
    assert query(enron, "SELECT count(*) FROM interactions WHERE ts IS NULL "
                        "OR ts < '1999-01-01'") == [(0,)]
    first = query(enron, "SELECT min(first_contact) FROM ties")[0][0]
    assert first is not None and first >= dt.datetime(1999, 1, 1, tzinfo=UTC)


def test_placeholder_date_with_an_imap_internaldate() -> None:
    """Over IMAP the server's INTERNALDATE stands in for the null date; a From_ line does not."""
    raw = next(m for m in raw_messages() if header(m, "Date") == NULL_DATE)
    rec = parse_headers(raw.header, fallback_dates=raw.fallback_dates)
    assert isinstance(rec, MessageRecord)
    source, from_line = raw.fallback_dates[0]
    assert source == "from_line" and from_line is not None and from_line >= CONVERTED
    assert (rec.date, rec.date_source) == (None, "none")
    assert rec.problems == ("date: 1980-01-01T00:00Z is a placeholder or implausible",)
    imap = parse_message(1, imap_header(raw), b"17-Oct-2000 09:01:00 -0700", None,
                         folder=Folder("INBOX"), uidvalidity=1, me=frozenset(ME))
    assert isinstance(imap, MessageRecord)
    assert (imap.date, imap.date_source) == (dt.datetime(2000, 10, 17, 16, 1, tzinfo=UTC),
                                             "internaldate")


# ---------------------------------------------------------------------------------------------
# Subject keys


def test_subject_keys_are_stored_without_subjects(enron: Path) -> None:
    """store_subjects is off: no subject is stored, and every message whose subject has
    words besides RE:/FW: prefixes has a key (counted here with a plain regex); the seven
    "Re: (No Subject)" have none, as an empty subject."""
    first: dict[str, RawMessage] = {}
    for m in raw_messages():
        first.setdefault(header(m, "Message-ID") or "", m)
    stripped = [re.sub(r"^(\s*(re|fw|fwd)\s*:)*", "", header(m, "Subject") or "",
                       flags=re.IGNORECASE).strip().lower() for m in first.values()]
    assert stripped.count("(no subject)") == 7
    worded = sum(1 for s in stripped if s and s != "(no subject)")
    assert query(enron, "SELECT count(subject), count(subject_key) FROM messages") == \
        [(0, worded)]
    assert worded > 1900


def test_one_subject_key_for_a_thread_without_threading_headers(enron: Path) -> None:
    """"Distribution Form" from Renee Ratcliff (7617520...), Phillip's "FW: Distribution Form"
    (30059922...) and his "RE: Distribution Form" (27103629...): one key, three prefixes."""
    rows = query(enron, "SELECT message_key, subject_key, subject_prefix FROM messages "
                        "WHERE message_key IN (?, ?, ?) ORDER BY message_key",
                 ["7617520.1075858644768.JavaMail.evans@thyme",
                  "30059922.1075858644239.JavaMail.evans@thyme",
                  "27103629.1075858644283.JavaMail.evans@thyme"])
    key = subject_key("Distribution Form")[0]
    assert rows == [("27103629.1075858644283.JavaMail.evans@thyme", key, "reply"),
                    ("30059922.1075858644239.JavaMail.evans@thyme", key, "forward"),
                    ("7617520.1075858644768.JavaMail.evans@thyme", key, None)]
    # "Gas P&L by day" (Brad Jones), "FW: ..." (David Port) and "Fwd: ..." (Phillip's Hotmail)
    assert query(enron, "SELECT from_addr, subject_prefix FROM messages WHERE subject_key = ? "
                        "ORDER BY from_addr", [subject_key("gas p&l BY DAY")[0]]) == \
        [("brad.jones@enron.com", None), ("david.port@enron.com", "forward"),
         ("pallen70@hotmail.com", "forward")]


# ---------------------------------------------------------------------------------------------
# Names from X-To / X-cc


def names(database: Path, message_key: str) -> list[tuple[str, str, str | None]]:
    return query(database, "SELECT role, address, name FROM participants WHERE message_key = ? "
                           "AND role <> 'bcc' ORDER BY role DESC, position", [message_key])


@pytest.mark.parametrize(("key", "expected"), [
    # To: mike.grigsby@enron.com, keith.holst@enron.com / X-To: Mike Grigsby, Keith Holst
    ("24839265.1075855728233.JavaMail.evans@thyme",
     [("to", "mike.grigsby@enron.com", "Mike Grigsby"),
      ("to", "keith.holst@enron.com", "Keith Holst"),
      ("from", "phillip.allen@enron.com", "Phillip K Allen")]),
    # X-To: "Jeff Smith" <jsmith@austintx.com> @ ENRON
    ("11482982.1075855688356.JavaMail.evans@thyme",
     [("to", "jsmith@austintx.com", "Jeff Smith"),
      ("from", "phillip.allen@enron.com", "Phillip K Allen")]),
    # X-To: Allen, Phillip K. </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>, from ARSystem
    ("5558637.1075858635446.JavaMail.evans@thyme",
     [("to", "k..allen@enron.com", "Allen, Phillip K."),
      ("from", "arsystem@mailman.enron.com", "ARSystem")]),
    # X-To: Tim Heizenrader / X-cc: Tim Belden
    ("17488378.1075855724077.JavaMail.evans@thyme",
     [("to", "tim.heizenrader@enron.com", "Tim Heizenrader"),
      ("from", "phillip.allen@enron.com", "Phillip K Allen"),
      ("cc", "tim.belden@enron.com", "Tim Belden")]),
])
def test_recipients_get_their_names_from_x_to_and_x_cc(
        enron: Path, key: str, expected: list[tuple[str, str, str | None]]) -> None:
    assert names(enron, key) == expected


def test_no_recipient_name_is_an_address_or_a_path(enron: Path) -> None:
    """Thousands of recipients are named now (none was: Enron's To lists are bare), and no
    name given is an address, a directory path or "undisclosed-recipients"."""
    named, total = query(enron, "SELECT count(name), count(*) FROM participants "
                                "WHERE role IN ('to', 'cc')")[0]
    assert named > 0.6 * total and named > 3000
    bad = query(enron, "SELECT DISTINCT name FROM participants WHERE role IN ('to', 'cc') "
                       "AND (name LIKE '%/O=%' OR name LIKE '/%' OR name ILIKE '%undisclosed%')")
    assert bad == []


# ---------------------------------------------------------------------------------------------
# Automated mail

# Every sender whose mail is excluded, and why: read message by message (see
# ingest/headers.py for what each is). Real people's mail is never here.
EXCLUDED = {
    "arsystem@mailman.enron.com": "role sender (arsystem)",  # Remedy access requests
    "no.address@enron.com": "role sender (no.address)",  # company broadcasts
    "webmaster@earnings.com": "role sender (webmaster)",
    "critical.notice@enron.com": "role sender (critical.notice)",  # pipeline notices
    "subscriptions@intelligencepress.com": "role sender (subscriptions)",
    "announce@inbox.nytimes.com": "role sender (announce)",
    "noreply@ccomad3.uu.commissioner.com": "role sender (noreply)",
    "unsubscribe-i@networkpromotion.com": "role sender (unsubscribe-i)",
    "postmaster@glmail2.networkpromotion.com": "role sender (postmaster)",
    "owner-strawbale@crest.org": "role sender (owner-strawbale)",
    "bounce-news-932653@lists.autoweb.com": "role sender (bounce-news-932653)",
    "public.relations@enron.com": "role sender (public.relations)",
    "announcements.enron@enron.com": "role sender (announcements.enron)",
    "chairman.office@enron.com": "role sender (chairman.office)",
    "exchange.administrator@enron.com": "role sender (exchange.administrator)",
    "customer_service@pmail.feer.com": "role sender (customer_service)",
    "customerservice@tdwaterhouse.com": "role sender (customerservice)",
    "customerservice@chaseplatinum.po-1.com": "role sender (customerservice)",
    "info@open2win.roi1.net": "role sender (info)",
    "news@prosrm.com": "role sender (news)",
    "book-news@amazon.com": "role sender (book-news)",
    "store-news@amazon.com": "role sender (store-news)",
    "newsletter@pussylickingcunts.com": "role sender (newsletter)",
    # To undisclosed recipients: a bank's mailing, Bloomberg's report, a Sunday school
    # class reminder, the Exchange migration's contacts, a survey, a FERC meeting notice
    "geninfo@state-bank.com": "no recipients",
    "messenger@ecm.bloomberg.com": "no recipients",
    "richard.hash@openspirit.com": "no recipients",
    "outlook-migration-team@enron.com": "no recipients",
    "clickathome@enron.com": "no recipients",
    # From and To the same address, everyone else in Bcc
    "leanne@integrityrs.com": "sent to the sender only",
    "members@realmoney.com": "sent to the sender only",
    "dleduca714@yahoo.com": "sent to the sender only",
    "bodyshop@enron.com": "sent to the sender only",
    # To a list server or an all-employees list only
    "market-reply@listserv.dowjones.com": "distribution list (market_alert@listserv.dowjones.com)",
    "ei_editor@platts.com": "distribution list (einsighthtml@listserv.platts.com)",
    "dmallory@ftenergy.com": "distribution list (electricatlas01@listserv.ftenergy.com)",
    "resources.human@enron.com": "distribution list (dl-ga-all_enron_worldwide2@enron.com)",
    "infousa4492@telkom.net": "distribution list (undisclosed.recipients@mailman.enron.com)",
    "usatoday1430@hotmail.kg": "distribution list (undisclosed.recipients@mailman.enron.com)",
    "gousa6179@hotmail.kg": "distribution list (undisclosed.recipients@mailman.enron.com)",
}


def test_automated_senders_and_their_reasons(enron: Path) -> None:
    rows = query(enron, "SELECT from_addr, automated_reason FROM messages "
                        "WHERE automated_reason IS NOT NULL")
    found: dict[str, set[str]] = {}
    for sender, reason in rows:
        found.setdefault(sender, set()).add(reason)
    # capcon@gmu.edu sent one notice to itself and one with its list suppressed;
    # ei_editor@ftenergy.com wrote to listserv.ftenergy.com three times (ten in all; the
    # others to a list whose address does not say it is one)
    assert found.pop("capcon@gmu.edu") == {"sent to the sender only", "no recipients"}
    assert found.pop("ei_editor@ftenergy.com") == {
        "distribution list (einsighthtml@listserv.ftenergy.com)"}
    assert found.pop("e-mail.center@wsj.com") == {  # the WSJ's alerts, five of each
        "distribution list (tech_alert@listserv.dowjones.com)",
        "distribution list (business_alert@listserv.dowjones.com)"}
    assert {sender: reasons.pop() for sender, reasons in found.items()
            if len(reasons) == 1} == EXCLUDED
    assert query(enron, "SELECT count(*) FROM messages WHERE from_addr = ? "
                        "AND automated_reason IS NULL", ["arsystem@mailman.enron.com"]) == [(0,)]


@pytest.mark.parametrize("sender", [
    "phillip.allen@enron.com", "k..allen@enron.com", "ina.rangel@enron.com",
    "mike.grigsby@enron.com", "kirk.mcdaniel@enron.com", "jsmith@austintx.com",
    "mery.l.brown@accenture.com", "aod@newsdata.com", "msimpkins@winstead.com",
    "cbpres@austin.rr.com", "wise.counsel@lpl.com"])
def test_people_are_never_excluded(enron: Path, sender: str) -> None:
    """Among them Mery Brown's "Meeting Room for Tomorrow" (26764357.1075862161821), which
    lost its To in the conversion but whose X-To names Phillip and four others."""
    rows = query(enron, "SELECT count(*), count(automated_reason) FROM messages "
                        "WHERE from_addr = ?", [sender])
    assert rows[0][0] > 0 and rows[0][1] == 0


# ---------------------------------------------------------------------------------------------
# IMAP: the fields fetched carry the same facts


def imap_header(raw: RawMessage) -> bytes:
    """The header as BODY.PEEK[HEADER.FIELDS (...)] returns it: those fields only."""
    wanted = {name.lower() for name in HEADER_FIELDS}
    kept = [m.group(0) for m in _FIELD.finditer(raw.header)
            if m.group(1).decode("latin-1").lower() in wanted]
    assert kept
    return b"".join(kept) + b"\r\n"


_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n", re.MULTILINE)


def facts(rec: MessageRecord) -> tuple[Any, ...]:
    return (rec.message_key, rec.from_name, rec.participants, rec.automated_reason,
            rec.subject_key, rec.subject_prefix, rec.recipient_count)


def test_imap_fields_give_what_a_local_import_gives() -> None:
    me = frozenset(ME)
    for raw in raw_messages():
        local = parse_headers(raw.header, me=me)
        imap = parse_message(1, imap_header(raw), None, None, folder=Folder("INBOX"),
                             uidvalidity=1, me=me)
        assert isinstance(local, MessageRecord) and isinstance(imap, MessageRecord)
        assert facts(imap) == facts(local), raw.location


def test_the_child_writer_stores_subject_keys_and_names(tmp_path: Path) -> None:
    """Large IMAP syncs hand headers unparsed to a second process, which parses and writes
    them: keys, prefixes, names and reasons arrive as a local parse has them."""
    path = tmp_path / "n.duckdb"
    with db.writer(path):
        pass
    sample = [m for m in raw_messages() if b"X-cc: Tim Belden" in m.header or
              header(m, "Subject") in ("Distribution Form", "FW: Distribution Form",
                                       "RE: Distribution Form")] + list(raw_messages()[:40])
    items = tuple((i, i + 1, imap_header(m), b"01-Dec-2000 10:00:00 +0000", None)
                  for i, m in enumerate(sample))
    unparsed = Unparsed(Folder("INBOX"), 7, frozenset(ME), False, items)
    writer = ChildWriter(path)
    done: list[int] = []
    try:
        writer.submit(CommitJob("work", "INBOX", Position(7, len(items)), Rows([], []),
                                unparsed=unparsed), lambda _, c: done.append(c.result.new))
        writer.flush()
    finally:
        writer.close()
    expected = {}
    for m in sample:
        rec = parse_headers(m.header, me=frozenset(ME))
        assert isinstance(rec, MessageRecord)
        expected[rec.message_key] = (rec.subject_key, rec.subject_prefix, rec.automated_reason)
    assert done == [len(expected)]
    with db.reader(path) as con:
        stored = {key: (k, p, r) for key, k, p, r in con.execute(
            "SELECT message_key, subject_key, subject_prefix, automated_reason FROM messages"
        ).fetchall()}
        cc = con.execute("SELECT name FROM participants WHERE role = 'cc' AND message_key = "
                         "'17488378.1075855724077.JavaMail.evans@thyme'").fetchall()
    assert stored == expected
    assert cc == [("Tim Belden",)]
