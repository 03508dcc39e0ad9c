"""The delivery-status parser (ingest/dsn.py) against real bounces nobody here wrote.

The report part is cut out of each whole message with the email package here in the test;
netaudit itself fetches only that part from the server (BODY.PEEK[n]) and never the message.
"""

from __future__ import annotations

import datetime as dt
import email
from email.message import Message
from pathlib import Path

import pytest

from ingest.dsn import DsnRecipient, parse_delivery_status
from tests.conftest import data_path

UTC = dt.UTC


def report_part(path: Path) -> bytes:
    """The body of the first message/delivery-status part, as the server would send it."""
    msg = email.message_from_bytes(path.read_bytes())
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            return _body(part)
    raise AssertionError(f"no message/delivery-status part in {path}")


def _body(part: Message) -> bytes:
    text = part.as_string()
    return text.split("\n\n", 1)[1].encode() if "\n\n" in text else b""


def one(path: Path) -> DsnRecipient:
    found = parse_delivery_status(report_part(path))
    assert len(found) == 1, found
    return found[0]


MIMEKIT = ("email-fixtures", "mimekit-messages")
FLANKER = ("email-fixtures", "flanker", "messages", "bounce")


def test_rfc3464_report_with_arrival_date() -> None:
    r = one(data_path(*MIMEKIT, "delivery-status.txt"))
    assert (r.recipient, r.action) == ("newsletter-request@imusic.com", "failed")
    assert r.status is None  # only "X-LOCAL; 500 (err.nosuchuser)": no X.Y.Z code to report
    assert r.diagnostic == "X-LOCAL; 500 (err.nosuchuser)"
    # No Last-Attempt-Date: the failure's time is left to the caller (the report's own Date);
    # Arrival-Date is when the bounced message reached the reporting MTA, kept apart.
    assert r.reported_at is None
    assert r.arrival_at == dt.datetime(1996, 7, 29, 9, 12, 50, tzinfo=UTC)


def test_no_blank_line_variant_parses_the_same() -> None:
    assert one(data_path(*MIMEKIT, "delivery-status-no-blank-line.txt")) == \
        one(data_path(*MIMEKIT, "delivery-status.txt"))


def test_multiple_blank_lines_and_no_action() -> None:
    """Original-Recipient only, no Action, no space after the colons: the Status class says
    what happened."""
    r = one(data_path(*MIMEKIT, "delivery-status-multiple-blank-lines.txt"))
    assert (r.recipient, r.action, r.status) == ("orig_recip@customer.com", "failed", "5.5.0")


def test_exim_action_before_final_recipient() -> None:
    r = one(data_path(*MIMEKIT, "delivery-status2.txt"))
    assert (r.recipient, r.action, r.status) == ("source@domain.com", "failed", "5.0.0")


def test_anonymized_report_has_no_usable_address() -> None:
    assert parse_delivery_status(report_part(
        data_path(*MIMEKIT, "delivery-status.anonymized.eml"))) == []


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# reported_at: Last-Attempt-Date only; arrival_at: Arrival-Date only
@pytest.mark.parametrize(("name", "recipient", "action", "status", "reported_at", "arrival_at"), [
    ("zed.eml", "asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com", "failed",
     "5.1.1", None, utc(2009, 7, 8, 5, 47, 35)),
    ("mailbox-full.eml", "user@aol.com", "failed", "5.2.2", None, utc(2011, 7, 29, 8, 8, 56)),
    ("office365.eml", "noname@example.com", "failed", "5.1.10", None,
     utc(2017, 10, 13, 11, 10, 16)),
    ("no-mx.eml", "user@example.com", "delayed", "4.4.4", utc(2012, 7, 10, 6, 9, 18),
     utc(2012, 7, 10, 6, 9, 18)),
    ("delayed.eml", "foo@example.com", "failed", "4.0.0", utc(1994, 7, 7, 21, 15, 49), None),
    ("delayed-broken.eml", "demo@example.com", "failed", "4.2.2", None,
     utc(2011, 7, 25, 8, 14, 55)),
])
def test_flanker_bounces(name: str, recipient: str, action: str, status: str,
                         reported_at: dt.datetime | None, arrival_at: dt.datetime | None) -> None:
    r = one(data_path(*FLANKER, name))
    assert (r.recipient, r.action, r.status, r.reported_at, r.arrival_at) == \
        (recipient, action, status, reported_at, arrival_at)


def test_aol_mime_headers_inside_the_report_are_ignored() -> None:
    r = one(data_path(*FLANKER, "mailbox-full.eml"))
    assert r.diagnostic == "smtp; 552 5.2.2 E4.12 user MAILBOX FULL"


def test_folded_diagnostic_is_unfolded() -> None:
    r = one(data_path(*FLANKER, "zed.eml"))
    assert r.diagnostic is not None
    assert "does not exist. Please try" in r.diagnostic and "\n" not in r.diagnostic


def test_bounces_without_a_report_part_have_none() -> None:
    """Gmail's plain-text bounces carry no message/delivery-status part: nothing to parse."""
    for name in ("gmail-no-dns.eml", "gmail-invalid-address.eml", "broken-mime.eml"):
        msg = email.message_from_bytes(data_path(*FLANKER, name).read_bytes())
        assert all(p.get_content_type() != "message/delivery-status" for p in msg.walk())


def test_recipients_without_blank_lines_between_them() -> None:
    part = (b"Reporting-MTA: dns; mx.example.org\r\n"
            b"Final-Recipient: rfc822; A@Example.ORG\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            b"Final-Recipient: rfc822;<b@example.org>\r\nAction: delayed\r\nStatus: 4.4.1\r\n")
    found = parse_delivery_status(part)
    assert [(r.recipient, r.action, r.status) for r in found] == [
        ("a@example.org", "failed", "5.1.1"), ("b@example.org", "delayed", "4.4.1")]


def test_status_from_diagnostic_code_and_repeats_dropped() -> None:
    part = ("Final-Recipient:rfc822;c@example.org\nAction:failed\n"
            "Diagnostic-Code: smtp; 550 5.7.1 relaying denied\n\n"
            "Final-Recipient:rfc822;c@example.org\nAction:failed\n"
            "Diagnostic-Code: smtp; 550 5.7.1 relaying denied\n")
    assert [(r.recipient, r.status) for r in parse_delivery_status(part)] == \
        [("c@example.org", "5.7.1")]


@pytest.mark.parametrize("junk", [b"", b"\n\n\n", b"\xff\xfe garbage", b"Final-Recipient: ;\n",
                                  b"Action: failed\nStatus: 5.0.0\n", b":::\n \tcontinued\n"])
def test_junk_gives_nothing_and_never_raises(junk: bytes) -> None:
    assert parse_delivery_status(junk) == []


def test_size_and_recipient_count_are_bounded() -> None:
    many = "".join(f"Final-Recipient: rfc822; u{i}@example.org\nAction: failed\n\n"
                   for i in range(3000))
    found = parse_delivery_status(many)
    assert 0 < len(found) <= 1000
