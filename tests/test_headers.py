"""The header parser: fixtures for each known trap, real files, and a property test."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ingest.headers import (
    MAX_HEADER_BYTES,
    MessageRecord,
    Rejected,
    decode_header_bytes,
    might_be_dsn,
    name_fits_address,
    names_for_addresses,
    parse_address_list,
    parse_date,
    parse_headers,
    subject_key,
    x_entries,
)
from tests.conftest import DATA, REPO, data_path

UTC = dt.UTC


def parse(text: str | bytes, **kwargs: object) -> MessageRecord:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    rec = parse_headers(raw, **kwargs)  # type: ignore[arg-type]
    assert isinstance(rec, MessageRecord), rec
    return rec


def addresses(rec: MessageRecord, role: str) -> list[tuple[str, str | None]]:
    return [(p.address, p.name) for p in rec.participants if p.role == role]


@pytest.mark.parametrize(("value", "expected"), [
    ("undisclosed-recipients:;", []),
    ("team: a@x.example, b@y.example;", [("a@x.example", None), ("b@y.example", None)]),
    ('"Doe, John" <J.Doe@X.Example>, bare@y.example',
     [("j.doe@x.example", "Doe, John"), ("bare@y.example", None)]),
    ("alice@example.com <alice@example.com>", [("alice@example.com", None)]),
    ('"=?utf-8?q?J=C3=BCrgen?=" <j@x.example>', [("j@x.example", "Jürgen")]),
    ("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>",
     [("keld@dkuug.dk", "Keld Jørn Simonsen")]),
    ("=?UTF-8?B?Rm9vLCBCYXI=?= <foo.bar@example.com>", [("foo.bar@example.com", "Foo, Bar")]),
    ("user@xn--bcher-kva.example", [("user@bücher.example", None)]),
    ("Foo <a@b.example>,", [("a@b.example", "Foo")]),
    ("a@b.example (Comment Name)", [("a@b.example", "Comment Name")]),
    ('"', []),
    ("<Undisclosed-Recipient:@mailman.enron.com;>", []),
    ("=?x-unknown?q?Bad?= <bad@charset.example>", [("bad@charset.example", "=?x-unknown?q?Bad?=")]),
])
def test_address_lists(value: str, expected: list[tuple[str, str | None]]) -> None:
    found, _ = parse_address_list([value])
    assert found == expected


def test_direction_follows_my_addresses() -> None:
    header = "From: Robin <ROBIN@Example.org>\nTo: sam@x.example\nMessage-ID: <1@x>\n"
    assert parse(header, me=frozenset({"robin@example.org"})).direction == "sent"
    assert parse(header).direction == "received"
    assert parse(header, from_sent_folder=True).direction == "sent"


def test_missing_message_id_gets_a_stable_hash_key() -> None:
    header = "From: a@x.example\nTo: b@y.example\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
    first, again = parse(header, size=100), parse(header, size=100)
    other = parse(header.replace("10:00", "10:01"), size=100)
    assert first.message_id is None
    assert first.message_key.startswith("sha256:")
    assert first.message_key == again.message_key != other.message_key


def test_date_fallbacks_are_flagged() -> None:
    internal = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    bad = parse("From: a@x.example\nDate: tomorrow-ish\nMessage-ID: <2@x>\n",
                fallback_dates=[("internaldate", internal), ("file_mtime", None)])
    assert bad.date == internal and bad.date_source == "internaldate" and bad.date_fallback
    missing = parse("From: a@x.example\nMessage-ID: <3@x>\n",
                    fallback_dates=[("internaldate", None), ("from_line", internal)])
    assert missing.date_source == "from_line"
    good = parse("From: a@x.example\nDate: Mon, 14 May 2001 16:39:00 -0700 (PDT)\n"
                 "Message-ID: <4@x>\n", fallback_dates=[("internaldate", internal)])
    assert good.date == dt.datetime(2001, 5, 14, 23, 39, tzinfo=UTC)
    assert not good.date_fallback


def test_dates() -> None:
    assert parse_date("Thu, 1 Jan 2004 10:00:00 -0000") == dt.datetime(2004, 1, 1, 10,
                                                                       tzinfo=UTC)
    assert parse_date("Sat, 20 Sep 2008 20:04:30 +0300 (ùòåï ÷éõ éøåùìéí)") == \
        dt.datetime(2008, 9, 20, 17, 4, 30, tzinfo=UTC)
    assert parse_date("") is None
    assert parse_date("Thu, 1 Jan 1970 00:00:00 +0000") is None  # a zero timestamp
    assert parse_date("not a date at all") is None


def test_far_future_date_falls_back() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    rec = parse("From: a@x.example\nDate: Fri, 1 Jan 2100 00:00:00 +0000\nMessage-ID: <5@x>\n",
                now=now, fallback_dates=[("internaldate", now)])
    assert rec.date_source == "internaldate"


def test_threading_headers() -> None:
    rec = parse("From: a@x.example\nMessage-ID: < abc@x >\nIn-Reply-To: <p@x> (comment)\n"
                "References: <r1@x>\n <r2@x> <r1@x>\n\tjunk <r3@x>\n")
    assert rec.message_id == "abc@x"
    assert rec.in_reply_to == "p@x"
    assert rec.references == ("r1@x", "r2@x", "r3@x")


@pytest.mark.parametrize(("extra", "reason"), [
    ("List-Id: Team <team.lists.example>", "mailing list (List-Id)"),
    ("List-Unsubscribe: <https://x.example/u>", "mailing list (List-Unsubscribe)"),
    ("Precedence: bulk", "Precedence: bulk"),
    ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
    ("Feedback-ID: 1:2:3", "bulk sender (feedback-id)"),
    ("X-Mailgun-Variables: {}", "bulk sender (x-mailgun-variables)"),
    ("Subject: Automatic reply: lunch", "out-of-office subject"),
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=x",
     "bounce (multipart/report)"),
])
def test_automated_mail_is_flagged_with_reason(extra: str, reason: str) -> None:
    rec = parse(f"From: a@x.example\nTo: b@y.example\nMessage-ID: <6@x>\n{extra}\n")
    assert rec.automated_reason == reason
    assert rec.is_dsn == ("delivery-status" in extra)


@pytest.mark.parametrize("extra", ["X-Auto-Response-Suppress: All", "Auto-Submitted: no",
                                   "Precedence: first-class", ""])
def test_personal_mail_is_not_flagged(extra: str) -> None:
    rec = parse(f"From: a@x.example\nTo: b@y.example\nMessage-ID: <7@x>\n{extra}\n")
    assert rec.automated_reason is None


@pytest.mark.parametrize("sender", ["noreply@x.example", "No-Reply@x.example",
                                    "MAILER-DAEMON@x.example", "postmaster@x.example",
                                    "notifications@github.com", "dev-bounces@lists.example"])
def test_role_senders_are_automated(sender: str) -> None:
    rec = parse(f"From: {sender}\nTo: b@y.example\nMessage-ID: <8@x>\n")
    assert rec.automated_reason is not None and rec.automated_reason.startswith("role sender")


def test_charset_fallbacks() -> None:
    assert decode_header_bytes("Jürgen".encode()) == "Jürgen"
    assert decode_header_bytes("Jürgen €".encode("cp1252")) == "Jürgen €"
    assert decode_header_bytes(b"J\x81rgen") == "J\x81rgen"  # undefined in cp1252 -> latin-1


def test_raw_utf8_headers_rfc6532() -> None:
    rec = parse(data_path("email-fixtures/ruby-mail/rfc6532/utf8_headers.eml").read_bytes())
    assert (rec.from_addr, rec.from_name) == ("jdöe@mächine.example", "Jöhn Doe")
    assert addresses(rec, "to") == [("märy@exämple.net", "Märy Smith")]


def test_group_syntax_from_rfc2822_appendix() -> None:
    rec = parse(data_path("email-fixtures/ruby-mail/rfc2822/example04.eml").read_bytes())
    assert addresses(rec, "to") == [("c@a.test", "Chris Jones"), ("joe@where.test", None),
                                    ("jdoe@one.test", "John")]
    assert addresses(rec, "cc") == []
    assert rec.recipient_count == 3


def test_encoded_word_inside_quotes_real_file() -> None:
    path = data_path("email-fixtures/ruby-mail/error_emails/invalid_subject_characters.eml")
    rec = parse(path.read_bytes())
    assert (rec.from_addr, rec.from_name) == ("info@formacaofrenetik.info",
                                              "Formação Frenetikpolis")


def test_delivery_status_notification_is_detected() -> None:
    rec = parse(data_path("email-fixtures/mimekit-messages/delivery-status.txt").read_bytes())
    assert rec.is_dsn and rec.from_addr == "postmaster@mm1.sprynet.com"


def test_oversized_header_is_rejected() -> None:
    raw = b"From: a@x.example\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\n\nbody"
    assert parse_headers(raw) == Rejected("header block larger than 256 KiB")


def test_not_mail_is_rejected() -> None:
    assert isinstance(parse_headers(b"just some text\nwithout fields\n"), Rejected)
    assert isinstance(parse_headers(b""), Rejected)
    assert isinstance(parse_headers(b"Subject: only a subject\n"), Rejected)


def _seed_headers() -> list[bytes]:
    names = ["ruby-mail/rfc2822/example04.eml", "ruby-mail/rfc6532/utf8_headers.eml",
             "ruby-mail/error_emails/weird_to_header.eml",
             "ruby-mail/plain_emails/raw_email_with_at_display_name.eml",
             "mimekit-messages/delivery-status.txt"]
    paths = [DATA / "email-fixtures" / name for name in names]
    return [p.read_bytes()[:4000] for p in paths if p.exists()]


_SEEDS = _seed_headers() or [b"From: a@x.example\nTo: b@y.example\n"]
_FIELD_NAMES = ["From", "To", "Cc", "Date", "Message-ID", "References", "In-Reply-To",
                "Content-Type", "List-Id", "Subject", "X-From", "Sender"]


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    seed = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        if not seed:
            break
        pos = draw(st.integers(0, len(seed) - 1))
        action = draw(st.integers(0, 2))
        if action == 0:
            seed[pos] = draw(st.integers(0, 255))
        elif action == 1:
            del seed[pos: pos + draw(st.integers(1, 40))]
        else:
            seed[pos:pos] = draw(st.binary(max_size=40))
    return bytes(seed)


@st.composite
def structured_headers(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(_FIELD_NAMES))
        value = draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
        lines.append(f"{name}: {value}")
    return "\r\n".join(lines).encode("utf-8", "surrogatepass")


@given(st.one_of(st.binary(max_size=2000), mutated_headers(), structured_headers()))
@example(b'To: "\n')
@example(b"Message-ID: <[...@microsoft.com]>\nFrom: a@x\n")
@example(b"Cc: a@x.example,\nFrom: =?x-unknown?q?x?= <a@b.c>\n")
@example(b"From: =?utf-8?b?!!!?= <a@b.c>\nDate: Mon, 32 Foo 99999 99:99:99 +9999\n")
@example(b"From: a@b.c\nSubject: =?\x80ISO8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n")
def test_parser_never_raises(raw: bytes) -> None:
    result = parse_headers(raw, fallback_dates=[("file_mtime", None)])
    assert isinstance(result, MessageRecord | Rejected)
    if isinstance(result, MessageRecord):
        assert result.message_key
        assert all(p.address == p.address.lower() for p in result.participants)


@st.composite
def report_headers(draw: st.DrawFn) -> bytes:
    """Content-Types near a bounce's: cases, folds, NULs, other encodings, other words."""
    word = "".join(c.upper() if draw(st.booleans()) else c for c in "delivery-status")
    if draw(st.booleans()):
        cut = draw(st.integers(1, len(word) - 1))
        word = word[:cut] + draw(st.sampled_from(["\x00", "\r\n ", "\n\t", " ", "\u212a"])) + \
            word[cut:]
    if draw(st.booleans()):
        word = word.replace("i", draw(st.sampled_from(["\u0130", "\u0131", "i"])))
    ctype = draw(st.sampled_from(["multipart/report", "Multipart/Report", " MULTIPART/report",
                                  "multipart/mixed"]))
    value = f"{ctype}; report-type={word};{draw(st.text(max_size=20))} boundary=x"
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "cp1252"]))
    lines = [f"From: {draw(st.sampled_from(['MAILER-DAEMON@x.example', 'a@b.example']))}",
             f"Content-Type: {value}", "To: me@x.example"]
    return "\r\n".join(lines).encode(encoding, "replace") + b"\r\n\r\n"


@given(st.one_of(report_headers(), mutated_headers(), structured_headers(),
                 st.binary(max_size=500)))
@example(b"Content-Type: multipart/report; report-type=delivery\x00-status\nFrom: a@b.c\n")
def test_might_be_dsn_is_never_false_for_a_bounce(raw: bytes) -> None:
    result = parse_headers(raw)
    if isinstance(result, MessageRecord) and result.is_dsn:
        assert might_be_dsn(raw)


def test_might_be_dsn_on_real_mail() -> None:
    """Every bounce of the shared corpora is caught; most other mail is not."""
    bounces = others = flagged_others = 0
    for path in sorted(data_path("email-fixtures").rglob("*")):
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        raw = path.read_bytes()
        result = parse_headers(raw)
        if not isinstance(result, MessageRecord):
            continue
        if result.is_dsn:
            bounces += 1
            assert might_be_dsn(raw), path
        else:
            others += 1
            flagged_others += might_be_dsn(raw)
    assert bounces >= 3 and others >= 100
    assert flagged_others < others / 10


def _stdlib_date(value: str) -> dt.datetime | None:
    """parse_date as it was before its fast path: the stdlib, then the same plausibility rules."""
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if parsed >= dt.datetime(1980, 1, 2, tzinfo=UTC) else None


@st.composite
def common_dates(draw: st.DrawFn) -> str:
    """Dates shaped like the fast path's, with values in and out of range."""
    sep = draw(st.sampled_from([" ", " ", "  ", "\t"]))
    words = []
    if draw(st.booleans()):
        words.append(draw(st.sampled_from(["Mon,", "Sun,", "Xyz,", "mon,", "Sun"])))
    words.append(str(draw(st.integers(0, 39))).zfill(draw(st.integers(1, 2))))
    words.append(draw(st.sampled_from(["Jan", "Feb", "Jun", "Dec", "jan", "Mai", "June"])))
    words.append(str(draw(st.sampled_from([0, 1, 69, 70, 99, 100, 1970, 1971, 2025, 9999])
                      )).zfill(draw(st.sampled_from([2, 4]))))
    clock = f"{draw(st.integers(0, 25))}:{draw(st.integers(0, 61)):02d}"
    if draw(st.booleans()):
        clock += f":{draw(st.integers(0, 61)):02d}"
    words.append(clock)
    words.append(draw(st.sampled_from(["+", "-"])) + f"{draw(st.integers(0, 9999)):04d}")
    if draw(st.booleans()):
        words.append(draw(st.sampled_from(["(PDT)", "(UTC)", "()", "(a (b))", "GMT", "x"])))
    return sep.join(words)


@given(common_dates())
@example("Sat, 01 Jan 0001 00:30:00 +0100")
@example("Fri, 31 Dec 9999 23:59:59 -0001")
@example("Thu, 29 Feb 2024 12:00:00 +2359")
@example("Wed, 1 Jan 2020 00:00:00 +2400")
@example("Wed, 01 Jan 70 00:00:00 -0000")
def test_date_fast_path_matches_the_stdlib(value: str) -> None:
    assert parse_date(value) == _stdlib_date(value)


@pytest.mark.parametrize(("header", "subject"), [
    ("From alice@x.example Mon Jan  1 00:00:00 2024\nSubject: mbox\nMessage-ID: <1@x>\n", "mbox"),
    ("From : a@x.example\nSubject: obsolete\n", "obsolete"),
    ("Message-ID: <1@x>\nSubject  : obsolete spacing\n", "obsolete spacing"),
    ("Message-ID: <1@x>\r\nSubject: crlf\r\n\r\nSubject: body\r\n", "crlf"),
    ("Message-ID: <1@x>\r\nSubject: folded\r\n  over\r\n\tlines\r\n", "folded over lines"),
    (" orphan continuation\nSubject: after\nMessage-ID: <1@x>\n", "after"),
    ("Message-ID: <1@x>\nSubject: first\nnot a field\nSubject: second\n", "first"),
    ("Message-ID: <1@x>\nSubject: first\n\r\nSubject: body\n", "first"),
])
def test_field_splitting(header: str, subject: str) -> None:
    assert parse(header, keep_subject=True).subject == subject


def test_repeated_address_fields_are_merged() -> None:
    rec = parse("From: a@x.example\nTo: b@y.example, c@y.example\nTo: C@y.example, d@y.example\n")
    assert addresses(rec, "to") == [("b@y.example", None), ("c@y.example", None),
                                    ("d@y.example", None)]
    assert rec.recipient_count == 3


def test_cached_reading_is_not_changed_by_x_from() -> None:
    named = parse("From: phillip.allen@enron.com\nX-From: Phillip K Allen\nMessage-ID: <a@x>\n")
    plain = parse("From: phillip.allen@enron.com\nMessage-ID: <b@x>\n")
    assert named.from_name == "Phillip K Allen" == named.participants[0].name
    assert plain.from_name is None and plain.participants[0].name is None


# ---------------------------------------------------------------------------------------------
# Dates that are placeholders


NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)
CONVERTED = dt.datetime(2022, 4, 18, 14, 23, 23, tzinfo=UTC)  # allen-p's From_ lines
MTIME = dt.datetime(2023, 6, 1, tzinfo=UTC)
INTERNAL = dt.datetime(2000, 12, 31, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("date", [
    "Mon, 31 Dec 1979 16:00:00 -0800 (PST)",  # the Outlook/PST null date (= 1980-01-01T00:00Z)
    "Thu, 1 Jan 1970 00:00:00 +0000",  # a zero timestamp
    "Wed, 31 Dec 1969 19:00:00 -0500",  # the same, in New York
    "Tue, 1 Jan 1980 23:59:59 +0000",  # still before 1980-01-02
    "Fri, 1 Jan 2100 00:00:00 +0000",  # far future
])
def test_placeholder_dates_give_no_date_and_no_file_fallback(date: str) -> None:
    """A Date header that is there but a placeholder is no date, and the From_ line (a
    converted mbox's conversion day) or the file time does not stand in for it."""
    rec = parse(f"From: a@x.example\nDate: {date}\nMessage-ID: <p@x>\n", now=NOW,
                fallback_dates=[("from_line", CONVERTED), ("file_mtime", MTIME)])
    assert (rec.date, rec.date_source) == (None, "none")
    assert any("placeholder" in problem for problem in rec.problems), rec.problems
    # the server's INTERNALDATE is when the message arrived there: still a date
    imap = parse(f"From: a@x.example\nDate: {date}\nMessage-ID: <p@x>\n", now=NOW,
                 fallback_dates=[("internaldate", INTERNAL)])
    assert (imap.date, imap.date_source) == (INTERNAL, "internaldate")


def test_the_first_real_day_is_a_date() -> None:
    rec = parse("From: a@x.example\nDate: Wed, 2 Jan 1980 00:00:00 +0000\nMessage-ID: <d@x>\n",
                fallback_dates=[("from_line", CONVERTED)])
    assert (rec.date, rec.date_source) == (dt.datetime(1980, 1, 2, tzinfo=UTC), "header")
    assert parse_date("Mon, 31 Dec 1979 16:00:00 -0800") is None
    assert parse_date("Tue, 01 Jan 1980 16:00:00 -0800") == dt.datetime(1980, 1, 2, tzinfo=UTC)


def test_missing_or_unreadable_dates_still_fall_back() -> None:
    """Only a placeholder shuts the file fallbacks out: a missing or unreadable Date keeps
    them, and a fallback that is a placeholder itself (a zero file time) is skipped."""
    missing = parse("From: a@x.example\nMessage-ID: <m@x>\n", now=NOW,
                    fallback_dates=[("from_line", CONVERTED)])
    assert (missing.date, missing.date_source) == (CONVERTED, "from_line")
    unreadable = parse("From: a@x.example\nDate: yesterday\nMessage-ID: <u@x>\n", now=NOW,
                       fallback_dates=[("file_mtime", MTIME)])
    assert (unreadable.date, unreadable.date_source) == (MTIME, "file_mtime")
    assert unreadable.problems == ("date: unparseable",)
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    zero = parse("From: a@x.example\nMessage-ID: <z@x>\n", now=NOW,
                 fallback_dates=[("file_mtime", epoch), ("internaldate", INTERNAL)])
    assert (zero.date, zero.date_source) == (INTERNAL, "internaldate")


# ---------------------------------------------------------------------------------------------
# Subject keys


@pytest.mark.parametrize(("subject", "prefix"), [
    ("Budget", None),
    ("  budget ", None),
    ("BUDGET", None),
    ("Re: Budget", "reply"),
    ("RE: RE: Budget", "reply"),
    ("Re:Re:Budget", "reply"),
    ("Re[2]: Budget", "reply"),
    ("Re(3): Budget", "reply"),
    ("RE : Budget", "reply"),
    ("AW: Budget", "reply"),
    ("SV: Budget", "reply"),
    ("Antw: Budget", "reply"),
    ("R: Budget", "reply"),
    ("RIF: Budget", "reply"),
    ("Réf : Budget", "reply"),
    ("RÉF: Budget", "reply"),
    ("Vs: Budget", "forward"),
    ("Odp: Budget", "reply"),
    ("RES: Budget", "reply"),
    ("ΑΠ: Budget", "reply"),
    ("回复：Budget", "reply"),
    ("Fwd: Budget", "forward"),
    ("FW: Budget", "forward"),
    ("Fw: Re: Budget", "forward"),
    ("WG: AW: Budget", "forward"),
    ("TR: Budget", "forward"),
    ("RV: Budget", "forward"),
    ("ENC: Budget", "forward"),
    ("Doorst: Budget", "forward"),
    ("VS: Budget", "forward"),
    ("I: Budget", "forward"),
    ("[EXTERNAL] RE: Budget", "reply"),
    ("RE: [EXTERNAL] Fwd: Budget", "reply"),
    ("[EXTERNAL] [dev] Budget", None),
    ("Budget (fwd)", "forward"),
    ("=?utf-8?q?Re=3A_Budget?=", "reply"),
    ("ＲＥ： Budget", "reply"),
])
def test_subject_key_strips_reply_and_forward_prefixes(subject: str, prefix: str | None) -> None:
    key, _ = subject_key("Budget")
    assert key is not None and len(key) == 16 and int(key, 16) >= 0
    rec = parse(f"From: a@x.example\nMessage-ID: <s@x>\nSubject: {subject}\n")
    assert (rec.subject_key, rec.subject_prefix) == (key, prefix)
    assert rec.subject is None  # not kept (store_subjects = false), and keyed all the same


@pytest.mark.parametrize("subject", [
    "Budget 2024", "Re Budget", "Fwd Budget", "Reply: Budget", "Budget: Re", "Ire: Budget",
    "Rebudget", "Vacation day tomorrow"])
def test_subject_key_keeps_what_is_not_a_prefix(subject: str) -> None:
    assert subject_key(subject)[0] != subject_key("Budget")[0]
    assert subject_key(subject)[1] is None


@pytest.mark.parametrize(("subject", "prefix"), [
    ("", None), ("   ", None), ("Re:", "reply"), ("RE: FW: ", "reply"), ("(no subject)", None),
    ("Fwd: (no subject)", "forward")])
def test_empty_subjects_have_no_key(subject: str, prefix: str | None) -> None:
    assert subject_key(subject) == (None, prefix)


def test_a_message_without_subject_has_no_key() -> None:
    rec = parse("From: a@x.example\nMessage-ID: <n@x>\n")
    assert (rec.subject_key, rec.subject_prefix) == (None, None)
    tag_only = parse("From: a@x.example\nMessage-ID: <n@x>\nSubject: [ANN]\n")
    assert tag_only.subject_key == subject_key("[ann]")[0] is not None  # a tag that is all


# ---------------------------------------------------------------------------------------------
# Names from X-To / X-cc


@pytest.mark.parametrize(("value", "expected"), [
    ("Mike Grigsby, Keith Holst", [("Mike Grigsby", None), ("Keith Holst", None)]),
    ("Allen, Phillip K. </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>, Grigsby, Mike "
     "</O=ENRON/OU=NA/CN=RECIPIENTS/CN=Mgrigsb>",
     [("Allen, Phillip K.", None), ("Grigsby, Mike", None)]),
    ('"Jeff Smith" <jsmith@austintx.com> @ ENRON', [("Jeff Smith", "jsmith@austintx.com")]),
    ("'\"Robert W. Huntley, CFP\" <wise.counsel@lpl.com>@ENRON' <IMCEANOTES-+22Robert+20W"
     "+2E+20Huntley+2C+20CFP+22+20+3Cwise+2Ecounsel+40lpl+2Ecom+3E+40ENRON@ENRON.com>",
     [("Robert W. Huntley, CFP", "wise.counsel@lpl.com")]),
    ("'Mark Whitt/DEN/ECT@ENRON' <IMCEANOTES-Mark+20Whitt_DEN_ECT+40ENRON@ENRON.com>",
     [("Mark Whitt", "imceanotes-mark+20whitt_den_ect+40enron@enron.com")]),
    ("JacquesTC@aol.com @ ENRON", [(None, "jacquestc@aol.com")]),
    ("hargr@webtv.net (Neal Hargrove) @ ENRON", [("Neal Hargrove", "hargr@webtv.net")]),
    ("Chad Landry <Chad Landry/HOU/ECT@ECT>", [("Chad Landry", None)]),
    ("O'rourke, Tim </O=ENRON/OU=NA/CN=RECIPIENTS/CN=TOROURKE>, 'Laura Harder' "
     "<??SLaura Harder/Corp/Enron@Enron>", [("O'rourke, Tim", None), ("Laura Harder", None)]),
    ("Ward, Kim S (Houston) </O=ENRON/OU=NA/CN=RECIPIENTS/CN=KWARD>",
     [("Ward, Kim S (Houston)", None)]),
    ("Jacques Craig (E-mail) <jacquestc@aol.com>", [("Jacques Craig", "jacquestc@aol.com")]),
    ("Sumey, Katrina <KSumey@ftenergy.com>", [("Sumey, Katrina", "ksumey@ftenergy.com")]),
    ("undisclosed-recipients:;@ENRON <??Sundisclosed-recipients:;@ENRON>", [(None, None)]),
    ("(undisclosed-recipients)", []),
    ("", []),
])
def test_x_entries(value: str, expected: list[tuple[str | None, str | None]]) -> None:
    assert [(e.name, e.address) for e in x_entries(value)] == expected


@pytest.mark.parametrize(("name", "address", "fits"), [
    ("Mike Grigsby", "mike.grigsby@enron.com", True),
    ("Grigsby, Mike", "mike.grigsby@enron.com", True),
    ("Allen, Phillip K.", "k..allen@enron.com", True),
    ("Phillip K Allen", "phillip.k.allen@enron.com", True),
    ("Phillip K Allen", "pallen@enron.com", True),
    ("phillip allen", "pallen70@hotmail.com", True),
    ("Jeff Smith", "jsmith@austintx.com", True),
    ("O'Rourke, Ryan", "ryan.o'rourke@enron.com", True),
    ("Tholt, Jane M.", "jane.m.tholt@enron.com", True),
    ("Cantrell, Rebecca W.", "w..cantrell@enron.com", True),
    ("Leanne", "leanne@integrityrs.com", True),
    ("Jeff Smith", "jsmyth@austintx.com", False),
    ("Keith Holst", "mike.grigsby@enron.com", False),
    ("Mike Grigsby", "mike@enron.com", False),
    ("Mike Grigsby", "m.g@enron.com", False),
    ("Al", "al@x.example", True),
    ("", "a@x.example", False),
])
def test_name_fits_address(name: str, address: str, fits: bool) -> None:
    assert name_fits_address(name, address) is fits


def names(pairs: Sequence[tuple[str, str | None]], x_value: str) -> list[str | None]:
    return [name for _, name in names_for_addresses(tuple(pairs), x_entries(x_value))]


def test_names_by_words_of_the_local_part_in_any_order() -> None:
    pairs = [("keith.holst@enron.com", None), ("mike.grigsby@enron.com", None)]
    assert names(pairs, "Mike Grigsby, Keith Holst") == ["Keith Holst", "Mike Grigsby"]


def test_names_by_position_when_nothing_contradicts() -> None:
    """cbpres@ and ll@ say nothing about their names; two names for two addresses in
    the same order, with nothing against it, is what the X- copy of To means."""
    pairs = [("cbpres@austin.rr.com", None), ("ll@austin.rr.com", None)]
    assert names(pairs, "George Richards, Lynn Lewter") == ["George Richards", "Lynn Lewter"]


@pytest.mark.parametrize(("pairs", "x_value"), [
    # counts differ: nothing by position
    ([("cbpres@austin.rr.com", None), ("ll@austin.rr.com", None)], "George Richards"),
    # a local part that reads as a name and another name at its place: the order is not To's
    ([("cbpres@austin.rr.com", None), ("mike.grigsby@enron.com", None)],
     "Keith Holst, George Richards"),
    # the name at a place fits another address (which has a name already): another order
    ([("cbpres@austin.rr.com", None), ("jsmith@x.example", "J. Smith")],
     "Jeff Smith, George Rich"),
    # an explicit address elsewhere in the list
    ([("cbpres@austin.rr.com", None), ("ll@austin.rr.com", None)],
     "George Richards, Lynn <lynn@other.example>"),
    # two names fit one address: never a guess
    ([("jsmith@x.example", None), ("abc@x.example", None), ("q@x.example", None)],
     "Jeff Smith, John Smith"),
])
def test_no_name_when_ambiguous(pairs: list[tuple[str, str | None]], x_value: str) -> None:
    assert names(pairs, x_value) == [name for _, name in pairs]


def test_a_word_match_out_of_order_stops_positions() -> None:
    pairs = [("cbpres@austin.rr.com", None), ("jsmith@x.example", None)]
    assert names(pairs, "Jeff Smith, George Richards") == [None, "Jeff Smith"]


def test_names_never_addresses_paths_or_replacing_given_names() -> None:
    pairs = [("a@x.example", "Given Name"), ("b@x.example", None), ("c@x.example", None)]
    found = names(pairs, "Someone Else, b@x.example, </O=ENRON/OU=NA/CN=RECIPIENTS/CN=C>")
    assert found == ["Given Name", None, None]
    assert names([("d@x.example", None)], "undisclosed-recipients:;") == [None]


def test_x_to_and_x_cc_name_to_and_cc() -> None:
    rec = parse("From: phillip.allen@enron.com\nMessage-ID: <x@x>\n"
                "To: mike.grigsby@enron.com, keith.holst@enron.com\n"
                "Cc: jsmith@austintx.com, k..allen@enron.com\n"
                "X-From: Phillip K Allen\nX-To: Mike Grigsby, Keith Holst\n"
                'X-cc: "Jeff Smith" <jsmith@austintx.com> @ ENRON, '
                "Allen, Phillip K. </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>\n")
    assert addresses(rec, "from") == [("phillip.allen@enron.com", "Phillip K Allen")]
    assert addresses(rec, "to") == [("mike.grigsby@enron.com", "Mike Grigsby"),
                                    ("keith.holst@enron.com", "Keith Holst")]
    assert addresses(rec, "cc") == [("jsmith@austintx.com", "Jeff Smith"),
                                    ("k..allen@enron.com", "Allen, Phillip K.")]
    # a name in To itself is kept; X-To only fills in
    kept = parse("From: a@x.example\nMessage-ID: <y@x>\nTo: Mike <mike.grigsby@enron.com>\n"
                 "X-To: Mike Grigsby\n")
    assert addresses(kept, "to") == [("mike.grigsby@enron.com", "Mike")]


# ---------------------------------------------------------------------------------------------
# Automated mail


@pytest.mark.parametrize("sender", [
    "no.address@enron.com", "announcements.enron@enron.com", "enron.announcements@enron.com",
    "announce@inbox.nytimes.com", "chairman.office@enron.com",
    "office.of.the.chairman@enron.com", "office-of-the-ceo@x.example", "info@x.example",
    "feedback@x.example", "sap.administrator@enron.com", "exchange.administrator@enron.com",
    "webmaster@earnings.com", "survey@x.example", "critical.notice@enron.com",
    "arsystem@mailman.enron.com", "customer_service@x.example", "news@prosrm.com"])
def test_role_and_broadcast_senders(sender: str) -> None:
    rec = parse(f"From: {sender}\nTo: phillip.allen@enron.com\nMessage-ID: <r@x>\n")
    assert rec.automated_reason == f"role sender ({sender.partition('@')[0]})"


@pytest.mark.parametrize("sender", [
    "mike.grigsby@enron.com", "ina.rangel@enron.com", "newsome@x.example", "ceo@x.example",
    "surveyor.jones@x.example", "information@x.example", "annie.noticeman@x.example",
    "chair@x.example", "ryan.o'rourke@enron.com"])
def test_people_are_not_role_senders(sender: str) -> None:
    rec = parse(f"From: {sender}\nTo: phillip.allen@enron.com\nMessage-ID: <r@x>\n")
    assert rec.automated_reason is None


ME = frozenset({"pallen@enron.com"})


@pytest.mark.parametrize(("header", "reason"), [
    ("From: leanne@integrityrs.com\nTo: leanne@integrityrs.com\n", "sent to the sender only"),
    ("From: Leanne <Leanne@IntegrityRS.com>\nTo: leanne@integrityrs.com\n",
     "sent to the sender only"),
    ("From: messenger@ecm.bloomberg.com\nX-To: (undisclosed-recipients)\n", "no recipients"),
    ("From: geninfo@state-bank.com\nTo: undisclosed-recipients:;\n", "no recipients"),
    ("From: a@x.example\nX-To: All Enron Houston@ENRON <??SAll Enron Houston@ENRON>\n",
     "no recipients"),
    ("From: a@x.example\n", "no recipients"),
    ("From: e-mail.center@wsj.com\nTo: TECH_ALERT@LISTSERV.DOWJONES.COM\n",
     "distribution list (tech_alert@listserv.dowjones.com)"),
    ("From: hr@enron.com\nTo: dl-ga-all_enron_worldwide2@enron.com\n",
     "distribution list (dl-ga-all_enron_worldwide2@enron.com)"),
    ("From: pr@enron.com\nTo: all.houston@enron.com, all.worldwide@enron.com\n",
     "distribution list (all.houston@enron.com)"),
])
def test_mail_addressed_to_nobody_in_particular(header: str, reason: str) -> None:
    rec = parse(f"{header}Message-ID: <b@x>\n", me=ME)
    assert rec.automated_reason == reason


@pytest.mark.parametrize("header", [
    # my address is missing from To, but that proves nothing: ``me`` may be incomplete
    "From: a@x.example\nTo: phillip.k.allen@enron.com\n",
    # a list and a person
    "From: a@x.example\nTo: all.houston@enron.com, mike.grigsby@enron.com\n",
    # no To, but X-To names real recipients (converted Notes mail that lost its To)
    "From: mery.l.brown@accenture.com\nX-To: pallen@enron.com, donald.l.barnhart@accenture.com\n",
    "From: a@x.example\nX-To: Buy, Rick </O=ENRON/OU=NA/CN=RECIPIENTS/CN=Rbuy>\n",
    # the sender and someone else
    "From: a@x.example\nTo: a@x.example, b@x.example\n",
    # my own mail: a note to myself, a sent message without recipients
    "From: pallen@enron.com\nTo: pallen@enron.com\n",
    "From: pallen@enron.com\nX-To: Circuit Provisioning@ENRON\n",
])
def test_personal_mail_is_not_addressed_to_nobody(header: str) -> None:
    assert parse(f"{header}Message-ID: <b@x>\n", me=ME).automated_reason is None


@pytest.mark.parametrize("subject", [
    "Automatic reply: Lunch", "Auto-Reply: Lunch", "AutoReply: Lunch", "Auto Response",
    "Out of Office: Lunch", "Out of Office AutoReply: Lunch", "Abwesenheitsnotiz: Treffen",
    "Automatische Antwort: Treffen", "Réponse automatique : réunion",
    "Respuesta automática: reunión", "Automatisch antwoord: Budget", "Autosvar: Budget"])
def test_out_of_office_subjects(subject: str) -> None:
    rec = parse(f"From: a@x.example\nTo: b@y.example\nMessage-ID: <o@x>\nSubject: {subject}\n")
    assert rec.automated_reason == "out-of-office subject"


@pytest.mark.parametrize("subject", [
    "Vacation day tomorrow", "Absence request for Friday", "Out of office Friday",
    "On vacation until May 5", "Phillip is out of the office", "Auto-reply settings",
    "Ferien", "Urlaub im August", "Automatic replies are broken", "Holiday Party - Canceled"])
def test_people_write_about_absence_too(subject: str) -> None:
    rec = parse(f"From: a@x.example\nTo: b@y.example\nMessage-ID: <o@x>\nSubject: {subject}\n")
    assert rec.automated_reason is None


@pytest.mark.parametrize("subject", [
    "On vacation until May 5", "Phillip is out of the office", "Out of office Friday"])
def test_absence_words_with_a_null_return_path_are_auto_replies(subject: str) -> None:
    rec = parse(f"Return-Path: <>\nFrom: a@x.example\nTo: b@y.example\nMessage-ID: <o@x>\n"
                f"Subject: {subject}\n")
    assert rec.automated_reason == "out-of-office subject (null Return-Path)"


_SEVERAL_REASONS = (b"From: a@x.example\nTo: b@y.example\nMessage-ID: <h@x>\n"
                    b"X-Mailgun-Sid: 1\nX-Autorespond: yes\nFeedback-ID: 2\nX-Campaign: 3\n"
                    b"X-Autoreply: yes\nX-SES-Outgoing: 4\n\n")
_PRINT_REASON = ("import sys; from ingest.headers import parse_headers; "
                 "print(parse_headers(sys.stdin.buffer.read()).automated_reason)")


def test_the_stored_reason_does_not_depend_on_string_hashing() -> None:
    """Six headers each give a reason: the one stored is the first in the message, whatever
    PYTHONHASHSEED is (it was the first in a set's order, which hashing decides)."""
    found = set()
    for seed in range(12):
        proc = subprocess.run([sys.executable, "-c", _PRINT_REASON], input=_SEVERAL_REASONS,
                              capture_output=True, cwd=REPO, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)})
        assert proc.returncode == 0, proc.stderr
        found.add(proc.stdout.decode().strip())
    assert found == {"bulk sender (x-mailgun-sid)"}


@given(st.text(max_size=120))
@example("(fwd)")
@example("[x] ")
@example("re:")
@example("\u0301a")
def test_a_reply_prefix_changes_the_prefix_not_the_key(subject: str) -> None:
    key, _ = subject_key(subject)
    assert key is None or (len(key) == 16 and int(key, 16) >= 0)
    assert subject_key(f"Re: {subject}") == (key, "reply")
    assert subject_key(f"FW: {subject}")[0] == key


@given(st.text(max_size=300), st.lists(st.sampled_from([
    "mike.grigsby@enron.com", "jsmith@austintx.com", "k..allen@enron.com", "a@x.example",
    "cbpres@austin.rr.com"]), max_size=5, unique=True))
@example('"a@x" <a@x.example>, \'</O=ENRON>\', (b@c)', ["a@x.example"])
@example("Allen, Phillip K. </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PALLEN>", ["k..allen@enron.com"])
def test_x_names_are_always_names(value: str, addrs: list[str]) -> None:
    """Whatever an X- value holds, a name given is one: never an address or a path, only
    where there was none, and the addresses stay as they were."""
    pairs = tuple((a, None) for a in addrs)
    out = names_for_addresses(pairs, x_entries(value))
    assert [a for a, _ in out] == addrs
    for _, name in out:
        assert name is None or (name.strip() and "@" not in name and not name.startswith("/"))


_WORDS = ["mike", "grigsby", "m", "k", "allen", "phillip", "jeff", "smith", "j", "o'rourke",
          "ryan", "jr"]


@given(st.lists(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=3), max_size=6),
       st.lists(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=3), max_size=6),
       st.sampled_from([".", "", "_", ".."]))
def test_the_name_index_finds_what_trying_every_pair_finds(
        names_: list[list[str]], locals_: list[list[str]], sep: str) -> None:
    """names_for_addresses looks names up by word (a broadcast has hundreds); it must find
    exactly the names that name_fits_address, tried on every pair, finds."""
    from ingest.headers import XEntry, _fitting

    entries = [XEntry(" ".join(words).title(), None, "") for words in names_]
    addrs = [sep.join(words) + "@x.example" for words in locals_]
    assert _fitting(addrs, entries) == [
        {j for j, e in enumerate(entries) if name_fits_address(e.name or "", a)} for a in addrs]
