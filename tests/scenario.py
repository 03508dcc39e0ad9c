"""A scenario builder: a mailbox and a calendar with planted roles, written as real files.

Each planted person has a known story (a steady tie, one that went quiet, one who never
answers...). Tests import the files with the real CLI and check where each lands in the report.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path

ME = "robin@example.org"
ME_NAME = "Robin Example"
UTC = dt.UTC


def days(start: dt.date, end: dt.date, every: int) -> Iterator[dt.datetime]:
    day = start
    while day <= end:
        yield dt.datetime.combine(day, dt.time(10, 0), UTC)
        day += dt.timedelta(days=every)


@dataclass
class Mailbox:
    """Messages written into a Maildir, one file each, threaded the way clients do."""

    root: Path
    counter: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def write(self, *, sender: tuple[str, str], to: list[tuple[str, str]], when: dt.datetime,
              subject: str = "Hello", reply_to: str | None = None,
              refs: list[str] | None = None, extra: str = "", body: str = "Hi.\n") -> str:
        n = next(self.counter)
        mid = f"<scenario-{n}@mail.example>"
        fmt = lambda a: f'"{a[1]}" <{a[0]}>' if a[1] else f"<{a[0]}>"  # noqa: E731
        lines = [f"From: {fmt(sender)}", "To: " + ", ".join(fmt(a) for a in to),
                 f"Date: {format_datetime(when)}", f"Message-ID: {mid}",
                 f"Subject: {subject}"]
        if reply_to:
            lines.append(f"In-Reply-To: {reply_to}")
            lines.append("References: " + " ".join([*(refs or []), reply_to]))
        if extra:
            lines.append(extra.rstrip("\n"))
        raw = "\r\n".join(lines) + "\r\n\r\n" + body
        name = f"{int(when.timestamp())}.M{n}P1.scenario:2,S"
        (self.root / "cur" / name).write_bytes(raw.encode())
        return mid

    def exchange(self, person: tuple[str, str], when: dt.datetime, *, i_start: bool,
                 reply: bool = True, reply_after: dt.timedelta = dt.timedelta(hours=3)) -> None:
        """One thread: a first message, and optionally an answer from the other side."""
        me = (ME, ME_NAME)
        first, second = (me, person) if i_start else (person, me)
        mid = self.write(sender=first, to=[second], when=when)
        if reply:
            self.write(sender=second, to=[first], when=when + reply_after, subject="Re: Hello",
                       reply_to=mid)

    def bounce(self, failed: str, when: dt.datetime) -> None:
        """A delivery status notification (RFC 3464) saying mail to ``failed`` failed."""
        n = next(self.counter)
        stamp = format_datetime(when)
        raw = (
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
            f"To: <{ME}>\r\nDate: {stamp}\r\nMessage-ID: <dsn-{n}@mx.example.org>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status;\r\n"
            '\tboundary="BOUNDARY"\r\n\r\n'
            "--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nYour message could not be "
            "delivered.\r\n\r\n"
            "--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.example.org\r\nArrival-Date: {stamp}\r\n\r\n"
            f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
            "--BOUNDARY--\r\n")
        name = f"{int(when.timestamp())}.M{n}P1.scenario:2,S"
        (self.root / "cur" / name).write_bytes(raw.encode())


def weekly_meetings(organizer: tuple[str, str], start: dt.date, count: int, *,
                    location: str) -> str:
    """An .ics with a weekly series organized by someone else, which I accepted."""
    stamp = start.strftime("%Y%m%d")
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//netaudit scenario//EN",
        "BEGIN:VEVENT", f"UID:weekly-{organizer[0]}", "DTSTAMP:20250101T000000Z",
        f"DTSTART:{stamp}T090000Z", f"DTEND:{stamp}T100000Z",
        f"RRULE:FREQ=WEEKLY;COUNT={count}",
        f"ORGANIZER;CN={organizer[1]}:mailto:{organizer[0]}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={ME_NAME}:mailto:{ME}",
        f"ATTENDEE;PARTSTAT=ACCEPTED;CN={organizer[1]}:mailto:{organizer[0]}",
        "ATTENDEE;CUTYPE=ROOM;PARTSTAT=ACCEPTED;CN=Room 3:mailto:room3@rooms.example.org",
        f"LOCATION:{location}", "SUMMARY:Catch-up", "END:VEVENT", "END:VCALENDAR", ""])


AS_OF = dt.date(2026, 6, 30)
STEADY = ("sam@steady.example", "Sam Steady")
QUIET = ("quinn@quiet.example", "Quinn Quiet")
UNANSWERED = ("uma@far.example", "Uma Unanswered")
PUSHY = ("pat@pushy.example", "Pat Pushy")
MOVED_OLD = ("maria@oldco.example", "Maria Moved")
MOVED_NEW = ("maria@newco.example", "Maria Moved")
BOUNCED = ("bob@gone.example", "Bob Bounce")
MEETING_ONLY = ("mia@meet.example", "Mia Meet")
BULK = ["news@shop.example", "notifications@github.com", "noreply@bank.example"]


def build(root: Path) -> tuple[Path, Path]:
    """Write the scenario; returns (maildir, calendar file)."""
    box = Mailbox(root / "Maildir")
    # Steady two-way: every two weeks for two years, both sides start and answer.
    for i, when in enumerate(days(dt.date(2024, 7, 1), dt.date(2026, 6, 25), 14)):
        box.exchange(STEADY, when, i_start=i % 2 == 0)
    # Went quiet: the same rhythm until December, then nothing for seven months.
    for i, when in enumerate(days(dt.date(2024, 6, 1), dt.date(2025, 12, 1), 14)):
        box.exchange(QUIET, when, i_start=i % 2 == 1)
    # I keep writing; no answer this year. We know each other: she answered once, two years
    # ago (someone who never wrote to me at all is a stranger, not a one-sided tie).
    box.exchange(UNANSWERED, dt.datetime(2024, 9, 3, 10, 0, tzinfo=UTC), i_start=True)
    for when in days(dt.date(2025, 8, 1), dt.date(2026, 6, 20), 30):
        box.exchange(UNANSWERED, when, i_start=True, reply=False)
    # They keep writing; I never answer. We know each other: I wrote once, two years ago
    # (someone I never wrote to at all is a stranger, not a one-sided tie).
    box.exchange(PUSHY, dt.datetime(2024, 9, 2, 10, 0, tzinfo=UTC), i_start=True)
    for when in days(dt.date(2025, 8, 5), dt.date(2026, 6, 20), 25):
        box.exchange(PUSHY, when, i_start=False, reply=False)
    # Moved: the old address until mid-December, the new one from mid-January.
    for i, when in enumerate(days(dt.date(2024, 7, 3), dt.date(2025, 12, 15), 14)):
        box.exchange(MOVED_OLD, when, i_start=i % 2 == 0)
    for i, when in enumerate(days(dt.date(2026, 1, 15), dt.date(2026, 6, 24), 14)):
        box.exchange(MOVED_NEW, when, i_start=i % 2 == 0)
    # Bounced: a steady tie until March; my April mail to him bounces.
    for i, when in enumerate(days(dt.date(2025, 1, 10), dt.date(2026, 3, 1), 20)):
        box.exchange(BOUNCED, when, i_start=i % 2 == 0)
    lost = dt.datetime(2026, 4, 10, 9, 0, tzinfo=UTC)
    box.write(sender=(ME, ME_NAME), to=[BOUNCED], when=lost, subject="Still there?")
    box.bounce(BOUNCED[0], lost + dt.timedelta(minutes=5))
    # Newsletters, notifications and no-reply mail: frequent, never personal.
    for when in days(dt.date(2025, 1, 1), dt.date(2026, 6, 28), 7):
        box.write(sender=(BULK[0], "Shop News"), to=[(ME, "")], when=when, subject="Deals",
                  extra="List-Id: Shop News <news.shop.example>\r\n"
                        "List-Unsubscribe: <https://shop.example/u>")
        box.write(sender=(BULK[1], "GitHub"), to=[(ME, "")], when=when, subject="[repo] PR",
                  extra="X-GitHub-Reason: subscribed")
        box.write(sender=(BULK[2], "Your Bank"), to=[(ME, "")], when=when,
                  subject="Statement")
    calendar = root / "calendar.ics"
    # Meeting-only: weekly in person from September to the end of May; never an email.
    calendar.write_text(weekly_meetings(MEETING_ONLY, dt.date(2025, 9, 1), 40,
                                        location="Room 3, Main Office"))
    return box.root, calendar
