"""Bounces in the SUSTAIN report: when a failure happened, and what counts as contact after it.

DESIGN.md "Changed": a `bounce` is a delivery status notification saying an address failed
after the last successful contact. The failure's time is the notification's Last-Attempt-Date,
else its own Date, never its Arrival-Date (when the bounced message itself arrived); the
message that bounced is not a successful contact.

Every test writes real mail files (a Maildir, an mbox), imports them with the real CLI into a
real DuckDB file and reads the real JSON report.
"""

from __future__ import annotations

import datetime as dt
import json
import mailbox
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from tests.conftest import Run, write_config

UTC = dt.UTC
ME = "robin@example.org"
BOB = "bob@gone.example"
AS_OF = "2026-06-30"


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=UTC)


def mail(sender: str, to: str, when: dt.datetime, n: int, *, reply_to: str | None = None) -> bytes:
    lines = [f"From: <{sender}>", f"To: <{to}>", f"Date: {format_datetime(when)}",
             f"Message-ID: <m{n}@mail.example>", "Subject: Hello"]
    if reply_to:
        lines += [f"In-Reply-To: {reply_to}", f"References: {reply_to}"]
    return ("\r\n".join(lines) + "\r\n\r\nHi.\r\n").encode()


def dsn(failed: str, when: dt.datetime, n: int, *, arrival: dt.datetime | None = None,
        last_attempt: dt.datetime | None = None, action: str = "failed",
        status: str = "5.1.1") -> bytes:
    """A delivery status notification (RFC 3464) dated ``when``, about mail to ``failed``."""
    per_message = "Reporting-MTA: dns; mx.example.org\r\n"
    if arrival is not None:
        per_message += f"Arrival-Date: {format_datetime(arrival)}\r\n"
    per_recipient = (f"Final-Recipient: rfc822; {failed}\r\nAction: {action}\r\n"
                     f"Status: {status}\r\nDiagnostic-Code: smtp; 550 {status} user unknown\r\n")
    if last_attempt is not None:
        per_recipient += f"Last-Attempt-Date: {format_datetime(last_attempt)}\r\n"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: <{ME}>\r\nDate: {format_datetime(when)}\r\nMessage-ID: <dsn{n}@mx.example.org>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="BOUNDARY"\r\n\r\n'
        "--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered."
        "\r\n\r\n--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"{per_message}\r\n{per_recipient}\r\n--BOUNDARY--\r\n").encode()


class Box:
    """Mail written as real files: a Maildir, or an mbox with ``mbox=True``."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.history()

    def add(self, raw: bytes) -> None:
        self.raw.append(raw)

    def sent(self, when: dt.datetime, to: str = BOB) -> str:
        n = len(self.raw)
        self.add(mail(ME, to, when, n))
        return f"<m{n}@mail.example>"

    def received(self, when: dt.datetime, sender: str = BOB, reply_to: str | None = None) -> None:
        self.add(mail(sender, ME, when, len(self.raw), reply_to=reply_to))

    def bounce(self, when: dt.datetime, **kwargs: Any) -> None:
        self.add(dsn(kwargs.pop("failed", BOB), when, len(self.raw), **kwargs))

    def history(self) -> None:
        """Bob is a real tie: a thread each way every three weeks from January to March."""
        for i, day in enumerate((5, 26)):
            for month in (1, 2, 3):
                when = at(month, day)
                if (i + month) % 2:
                    mid = self.sent(when)
                    self.received(when + dt.timedelta(hours=2), reply_to=mid)
                else:
                    self.received(when)
                    self.sent(when + dt.timedelta(hours=2))

    def write(self, root: Path, *, mbox: bool = False) -> Path:
        if mbox:
            path = root / "mail.mbox"
            box = mailbox.mbox(str(path))
            for raw in self.raw:
                box.add(raw)
            box.close()
            return path
        path = root / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        for n, raw in enumerate(self.raw):
            (path / "cur" / f"{n}.M{n}P1.test:2,S").write_bytes(raw)
        return path


def imported(box: Box, tmp_path: Path, run: Run, *, mbox: bool = False) -> Path:
    """The box imported through the CLI; returns the config."""
    source = box.write(tmp_path, mbox=mbox)
    cfg = write_config(tmp_path / "config.toml",
                       f'[netaudit]\ndatabase = "{tmp_path / "n.duckdb"}"\n'
                       f'me = ["{ME}"]\ntimezone = "UTC"\nhistory_start = 2025-01-01\n')
    run("--config", str(cfg), "import", str(source), check=True)
    return cfg


def report(cfg: Path, run: Run, as_of: str = AS_OF) -> dict[str, Any]:
    proc = run("--config", str(cfg), "report", "--as-of", as_of, "--format", "json", check=True)
    return json.loads(proc.stdout)


def bounces(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["previous"], e["since"]) for e in doc["changed"] if e["signal"] == "bounce"]


def stored(cfg: Path, run: Run) -> list[dict[str, Any]]:
    proc = run("--config", str(cfg), "sql", "--format", "json",
               "SELECT recipient, action, reported_at, arrival_at FROM bounces ORDER BY ALL",
               check=True)
    return json.loads(proc.stdout)


def utc(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(UTC)


def test_arrival_date_equal_to_the_bounced_message_date_is_a_bounce(tmp_path: Path,
                                                                    run: Run) -> None:
    """The common case: the MTA stamps Arrival-Date with the second the message arrived, the
    bounced message's own Date. That message is not a contact after the failure; the failure
    is the notification's Date (here the next day, just after midnight)."""
    box = Box()
    lost = at(4, 10, 23, 58)
    box.sent(lost)
    box.bounce(lost + dt.timedelta(minutes=5), arrival=lost)
    cfg = imported(box, tmp_path, run)
    doc = report(cfg, run)
    assert bounces(doc) == [(BOB, "2026-04-11")]
    entry = next(e for e in doc["changed"] if e["signal"] == "bounce")
    assert entry["reason"] == f"mail to {BOB} bounced on 2026-04-11"
    assert BOB not in {e["email"] for e in doc["neglected"]}
    [row] = stored(cfg, run)
    assert utc(row["reported_at"]) == lost + dt.timedelta(minutes=5)  # the DSN's own Date
    assert utc(row["arrival_at"]) == lost


def test_without_last_attempt_date_the_notification_date_is_the_failure(tmp_path: Path,
                                                                         run: Run) -> None:
    """Arrival-Date a day before the notification: the report names the notification's day,
    and a report as of the day in between has no bounce yet. Read from an mbox."""
    box = Box()
    lost = at(4, 10)
    box.sent(lost)
    box.bounce(at(4, 11, 9), arrival=lost + dt.timedelta(seconds=3))
    cfg = imported(box, tmp_path, run, mbox=True)
    [row] = stored(cfg, run)
    assert (row["recipient"], row["action"]) == (BOB, "failed")
    assert utc(row["reported_at"]) == at(4, 11, 9)
    assert utc(row["arrival_at"]) == lost + dt.timedelta(seconds=3)
    assert bounces(report(cfg, run, "2026-04-10")) == []
    assert bounces(report(cfg, run, "2026-04-11")) == [(BOB, "2026-04-11")]
    assert bounces(report(cfg, run)) == [(BOB, "2026-04-11")]


def test_last_attempt_date_is_the_failure(tmp_path: Path, run: Run) -> None:
    """Last-Attempt-Date wins over the notification's Date: a report that arrives late (or is
    imported late) still dates the failure when it happened."""
    box = Box()
    box.sent(at(4, 10))
    box.bounce(at(4, 20), arrival=at(4, 10), last_attempt=at(4, 14))
    cfg = imported(box, tmp_path, run)
    [row] = stored(cfg, run)
    assert utc(row["reported_at"]) == at(4, 14)
    assert bounces(report(cfg, run)) == [(BOB, "2026-04-14")]


def test_reply_after_the_bounce_clears_it(tmp_path: Path, run: Run) -> None:
    box = Box()
    box.sent(at(4, 10))
    box.bounce(at(4, 10, 10, 5), arrival=at(4, 10))
    box.received(at(4, 20))
    cfg = imported(box, tmp_path, run)
    assert bounces(report(cfg, run)) == []
    assert bounces(report(cfg, run, "2026-04-19")) == [(BOB, "2026-04-10")]  # before he wrote


def test_mail_received_while_the_server_retried_clears_it(tmp_path: Path, run: Run) -> None:
    """Sent on the 10th, retried until it failed on the 15th; Bob wrote on the 12th: his
    address works (the failure was a transient one that ran out of retries)."""
    box = Box()
    box.sent(at(4, 10))
    box.received(at(4, 12))
    box.bounce(at(4, 15), arrival=at(4, 10), status="4.4.7")
    cfg = imported(box, tmp_path, run)
    assert bounces(report(cfg, run)) == []


def test_my_mail_after_the_failure_that_did_not_bounce_clears_it(tmp_path: Path,
                                                                  run: Run) -> None:
    box = Box()
    box.sent(at(4, 10))
    box.bounce(at(4, 10, 10, 5), arrival=at(4, 10))
    box.sent(at(5, 2))
    cfg = imported(box, tmp_path, run)
    assert bounces(report(cfg, run)) == []
    assert bounces(report(cfg, run, "2026-05-01")) == [(BOB, "2026-04-10")]


def test_my_mail_before_the_failure_is_not_a_contact(tmp_path: Path, run: Run) -> None:
    """Two messages sent while the first was being retried, one notification for both at the
    end: neither message counts as contact."""
    box = Box()
    box.sent(at(4, 10))
    box.sent(at(4, 12))
    box.bounce(at(4, 15), arrival=at(4, 10), last_attempt=at(4, 15))
    cfg = imported(box, tmp_path, run)
    assert bounces(report(cfg, run)) == [(BOB, "2026-04-15")]


def test_a_later_bounce_after_a_contact_is_reported(tmp_path: Path, run: Run) -> None:
    """Bounced, then a reply (the address worked again), then bounced for good: the last
    failure is the one reported."""
    box = Box()
    box.sent(at(4, 10))
    box.bounce(at(4, 10, 10, 5), arrival=at(4, 10))
    box.received(at(4, 20))
    box.sent(at(5, 10))
    box.bounce(at(5, 10, 10, 5), arrival=at(5, 10))
    cfg = imported(box, tmp_path, run)
    assert bounces(report(cfg, run)) == [(BOB, "2026-05-10")]
    assert bounces(report(cfg, run, "2026-05-01")) == []


def test_delayed_is_not_a_bounce(tmp_path: Path, run: Run) -> None:
    box = Box()
    box.sent(at(4, 10))
    box.bounce(at(4, 11), arrival=at(4, 10), action="delayed", status="4.4.1",
               last_attempt=at(4, 11))
    cfg = imported(box, tmp_path, run)
    assert [(r["recipient"], r["action"]) for r in stored(cfg, run)] == [(BOB, "delayed")]
    assert bounces(report(cfg, run)) == []
