"""The header parser: fixtures for each known trap, real files, and a property test."""

from __future__ import annotations

import datetime as dt
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
    parse_address_list,
    parse_date,
    parse_headers,
)
from tests.conftest import DATA, data_path

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
    return parsed if parsed >= dt.datetime(1971, 1, 1, tzinfo=UTC) else None


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
