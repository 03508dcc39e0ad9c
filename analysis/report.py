"""The five-practice report, computed in SQL over the public views as of a given day.

Everything is filtered to ``ts <= as_of`` so a report for a past day is the report as it
would have looked then (identities are the one exception: they are today's grouping).
The numbers per tie come from the ``tie_metrics`` macro that also defines the ``ties`` view,
so the report and a user's own SQL agree.

Definitions (DESIGN.md "Definitions"; thresholds from ``[analysis]`` in the config):

* strength: sum over interactions of weight (email 1, meeting 3) x 0.5^(age in days / 180),
  times reciprocity (1 when we met, else 2 x min(sent, received) / (sent + received));
* layers: ties ranked by strength, Dunbar-style: top 5, 15, 50, 150;
* neglected: a tie with enough interaction days over enough time whose silence exceeds
  max(gap factor x usual gap, minimum days); ranked by overdue factor x log(1 + interactions);
* one-sided: over the last year, enough threads, most started by one side, few answered by
  the other;
* draining: ties where I send at least twice what I receive and start at least 70 % of the
  threads, without being one-sided (they do answer, I carry the effort);
* email-only: close ties (the 50 strongest) you met before the last year but not in it, and
  only emailed this year: contact that has become email-only;
* new ties and introductions: in the recent period (the month with ``--month``, else 30 days).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from analysis.identity import current_interactions
from analysis.names import org_domain
from netaudit.db import Connection

REPORT_VERSION = 1
RECENT_DAYS = 30  # a monthly habit: what is new since last time
HALF_LIFE_DAYS = 180.0
LAYERS = (5, 15, 50, 150)
DRAIN_MIN_MESSAGES = 6
EMAIL_ONLY_TOP = 50
EMAIL_ONLY_MIN_EMAILS = 4

DEFAULTS = {
    "neglect_min_days": 60, "neglect_min_interaction_days": 4, "neglect_gap_factor": 2.0,
    "neglect_min_silence_days": 45, "one_sided_min_threads": 4, "one_sided_share": 0.8,
    "one_sided_max_reply_share": 0.2, "introduction_max_people": 3,
}


@dataclass
class Tie:
    """One person's numbers as of the report day."""

    person_id: str
    name: str | None
    email: str
    addresses: list[str]
    first_contact: dt.datetime
    last_contact: dt.datetime
    emails_sent: int
    emails_received: int
    meetings: int
    threads_by_me: int
    threads_by_them: int
    replies_by_me: int
    replies_by_them: int
    interaction_days: int
    usual_gap_days: float | None
    is_tie: bool
    strength: float = 0.0
    layer: int | None = None
    name_shared: bool = False  # another person has the same name: show the address too

    def who(self) -> dict[str, Any]:
        person = self.name or self.email
        if self.name and self.name_shared:
            person = f"{self.name} <{self.email}>"
        return {"person": person, "email": self.email, "addresses": self.addresses}


@dataclass
class Report:
    """The document (`as_json`) plus what the charts need, which the JSON does not carry."""

    doc: dict[str, Any]
    monthly_volume: list[tuple[str, int, int, int]] = field(default_factory=list)
    ties: list[Tie] = field(default_factory=list)


def span(days: float) -> str:
    """'3 days', '4 weeks', '7 months': how a person says a gap."""
    if days < 14:
        n = round(days)
        return f"{n} day{'s' if n != 1 else ''}"
    if days < 90:
        return f"{round(days / 7)} weeks"
    if days < 730:
        return f"{round(days / 30.4)} months"
    return f"{days / 365.25:.1f} years"


def end_of_day(day: dt.date, tz: str) -> dt.datetime:
    """The last instant of ``day`` in the report's zone: nothing after it counts."""
    start_next = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), ZoneInfo(tz))
    return (start_next - dt.timedelta(microseconds=1)).astimezone(dt.UTC)


def _ties(con: Connection, as_of: dt.datetime) -> dict[str, Tie]:
    rows = con.execute("""
        SELECT t.person_id, p.name, coalesce(p.email, t.last_email),
               coalesce(p.addresses, [t.last_email]), t.first_contact, t.last_contact,
               t.emails_sent, t.emails_received, t.meetings, t.threads_started_by_me,
               t.threads_started_by_them, t.replies_by_me, t.replies_by_them,
               t.interaction_days, t.usual_gap_days, t.is_tie
        FROM tie_metrics(?::TIMESTAMPTZ, src := 'report_interactions') t
        LEFT JOIN people p USING (person_id)""",
                       [as_of]).fetchall()
    ties = {r[0]: Tie(*r) for r in rows}
    def same(name: str | None) -> str | None:
        return " ".join(name.casefold().split()) if name else None

    names = Counter(same(t.name) for t in ties.values())
    for one in ties.values():
        one.name_shared = bool(one.name) and names[same(one.name)] > 1
    weights = con.execute("""
        SELECT person_id, sum(CASE channel WHEN 'meeting' THEN 3.0 ELSE 1.0 END
                              * pow(0.5, date_diff('second', ts, ?::TIMESTAMPTZ)
                                         / 86400.0 / ?))
        FROM report_interactions WHERE ts <= ?::TIMESTAMPTZ GROUP BY person_id""",
                          [as_of, HALF_LIFE_DAYS, as_of]).fetchall()
    for pid, raw in weights:
        tie = ties.get(pid)
        if tie is None:
            continue
        s, r = tie.emails_sent, tie.emails_received
        reciprocity = 1.0 if tie.meetings else (2 * min(s, r) / (s + r) if s + r else 0.0)
        tie.strength = round(float(raw) * reciprocity, 3)
    ranked = sorted((t for t in ties.values() if t.is_tie), key=lambda t: -t.strength)
    for rank, tie in enumerate(ranked, start=1):
        tie.layer = next((size for size in LAYERS if rank <= size), None)
    return ties


def _threads(con: Connection, start: dt.datetime, as_of: dt.datetime
             ) -> dict[str, tuple[int, int, int, int, int]]:
    """Per person over the window: threads, started by me, by them, answered by me, by them."""
    rows = con.execute("""
        WITH th AS (
            SELECT person_id, thread_id,
                   bool_or(starts_thread AND direction = 'sent') AS by_me,
                   bool_or(starts_thread AND direction = 'received') AS by_them,
                   bool_or(is_reply AND direction = 'sent') AS me_replied,
                   bool_or(is_reply AND direction = 'received') AS they_replied
            FROM report_interactions
            WHERE channel = 'email' AND ts > ?::TIMESTAMPTZ AND ts <= ?::TIMESTAMPTZ
            GROUP BY person_id, thread_id)
        SELECT person_id, count(*), count(*) FILTER (WHERE by_me),
               count(*) FILTER (WHERE by_them), count(*) FILTER (WHERE me_replied),
               count(*) FILTER (WHERE they_replied)
        FROM th GROUP BY person_id""", [start, as_of]).fetchall()
    return {r[0]: tuple(int(x) for x in r[1:]) for r in rows}  # type: ignore[misc]


def _window_counts(con: Connection, start: dt.datetime, as_of: dt.datetime
                   ) -> dict[str, tuple[int, int, int]]:
    rows = con.execute("""
        SELECT person_id,
               count(*) FILTER (WHERE channel = 'email' AND direction = 'sent'),
               count(*) FILTER (WHERE channel = 'email' AND direction = 'received'),
               count(*) FILTER (WHERE channel = 'meeting')
        FROM report_interactions WHERE ts > ?::TIMESTAMPTZ AND ts <= ?::TIMESTAMPTZ
        GROUP BY person_id""", [start, as_of]).fetchall()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def _bounced(con: Connection, as_of: dt.datetime) -> dict[str, tuple[str, dt.datetime]]:
    """Addresses whose failure was reported by ``as_of`` with no successful contact after it.

    A bounce row's failure time is its Last-Attempt-Date, else the notification's own Date
    (the DSN message), else its Arrival-Date. The message that bounced was sent at about its
    Arrival-Date (else at about the failure time). A successful contact is any interaction
    with the address after the failure, or a message received from it after the bounced
    message was sent. What I sent between the two is the bounced message itself (or more mail
    bouncing), not a contact. Per person: the address with the latest such failure.
    """
    rows = con.execute("""
        WITH b AS (
            SELECT b.recipient,
                   coalesce(b.reported_at, m.sent_at, b.arrival_at) AS failed_at,
                   coalesce(b.arrival_at, b.reported_at, m.sent_at) AS sent_at
            FROM bounces b LEFT JOIN messages m USING (message_key)
            WHERE coalesce(b.action, 'failed') = 'failed'),
        reported AS (SELECT * FROM b WHERE failed_at <= ?::TIMESTAMPTZ),
        last AS (
            SELECT email, max(ts) AS last_ts,
                   max(ts) FILTER (WHERE direction = 'received') AS last_received
            FROM report_interactions
            WHERE email IN (SELECT recipient FROM reported) GROUP BY email),
        dead AS (
            SELECT r.recipient, max(r.failed_at) AS failed_at
            FROM reported r LEFT JOIN last ON last.email = r.recipient
            WHERE coalesce(last.last_ts <= greatest(r.failed_at, r.sent_at), true)
              AND coalesce(last.last_received <= r.sent_at, true)
            GROUP BY r.recipient)
        SELECT i.person_id, d.recipient, d.failed_at
        FROM dead d JOIN identities i ON i.address = d.recipient
        ORDER BY d.failed_at, d.recipient""", [as_of]).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _introductions(con: Connection, start: dt.datetime, as_of: dt.datetime,
                   max_recipients: int, max_people: int) -> list[dict[str, Any]]:
    """Conversations I started that put people together who had never been in one.

    Not an introduction: a reply inside an existing thread (it must start its thread), mail
    to more than ``max_people`` people (a distribution), two addresses of one person, two
    people of one organisation (colleagues know each other without my mail saying so), and
    someone only copied (Cc) for information: both people are addressed in To.
    ``between`` holds the people who met, not every recipient; one thread is one
    introduction.
    """
    # message_threads' starts_thread, for the few messages it is asked of: no message of
    # the thread comes before it (by time, then key) and it is no answer ("Re:"). The view
    # would order every thread of the mailbox to say it.
    rows = con.execute("""
        WITH mine AS (
            SELECT message_key, sent_at, thread_id FROM message_thread_ids
            WHERE direction = 'sent' AND automated_reason IS NULL AND recipient_count <= ?
              AND sent_at > ?::TIMESTAMPTZ AND sent_at <= ?::TIMESTAMPTZ
              AND coalesce(subject_prefix, '') <> 'reply'),
        starts AS (
            SELECT * FROM mine s WHERE NOT EXISTS (
                SELECT 1 FROM message_thread_ids t
                WHERE t.thread_id = s.thread_id AND (t.sent_at < s.sent_at OR
                      (t.sent_at = s.sent_at AND t.message_key < s.message_key)))),
        recip AS (
            SELECT DISTINCT t.message_key, t.sent_at, t.thread_id, i.person_id, p.address,
                   p.role = 'to' AS in_to
            FROM starts t JOIN participants p USING (message_key)
            JOIN identities i ON i.address = p.address
            WHERE p.role IN ('to', 'cc')
              AND NOT (i.is_automated OR i.ignored OR i.is_me)),  -- mine are never in it
        sized AS (SELECT message_key FROM recip GROUP BY message_key
                  HAVING count(DISTINCT person_id) BETWEEN 2 AND ?)
        SELECT r.message_key, r.sent_at, r.thread_id, r.person_id, r.address, r.in_to
        FROM recip r JOIN sized USING (message_key)
        ORDER BY r.sent_at, r.message_key, r.person_id, r.in_to DESC, r.address""",
                       [max_recipients, start, as_of, max_people]).fetchall()
    messages: dict[str, tuple[dt.datetime, str, dict[str, tuple[str, bool]]]] = {}
    for key, sent_at, thread_id, person_id, address, in_to in rows:
        messages.setdefault(key, (sent_at, thread_id, {}))[2].setdefault(
            person_id, (address, in_to))
    candidates: list[tuple[str, dt.datetime, str, str, str]] = []
    for key, (sent_at, thread_id, persons) in messages.items():
        for (p1, (a1, to1)), (p2, (a2, to2)) in itertools.combinations(
                sorted(persons.items()), 2):
            org1, org2 = org_domain(a1), org_domain(a2)
            if not (to1 and to2) or (org1 is not None and org1 == org2):
                continue  # copied for information, or colleagues
            candidates.append((key, sent_at, thread_id, p1, p2))
    if not candidates:
        return []
    con.execute("CREATE OR REPLACE TEMP TABLE intro_pairs (message_key VARCHAR, "
                "sent_at TIMESTAMPTZ, thread_id VARCHAR, x VARCHAR, y VARCHAR)")
    with con.appender("intro_pairs") as app:
        app.append_rows(candidates)
    rows = con.execute("""
        WITH persons AS (SELECT DISTINCT person_id FROM (
                SELECT x AS person_id FROM intro_pairs UNION SELECT y FROM intro_pairs)),
        seen AS (  -- every thread each of these people was in, and when they first were
            SELECT t.thread_id, i.person_id, min(t.sent_at) AS first_ts
            FROM message_thread_ids t JOIN participants p USING (message_key)
            JOIN identities i ON i.address = p.address
            WHERE p.role IN ('from', 'to', 'cc')
              AND i.person_id IN (SELECT person_id FROM persons)
            GROUP BY ALL),
        new_pairs AS (
            SELECT * FROM intro_pairs pr WHERE NOT EXISTS (
                SELECT 1 FROM seen s1 JOIN seen s2 ON s1.thread_id = s2.thread_id
                WHERE s1.person_id = pr.x AND s2.person_id = pr.y
                  AND s1.thread_id <> pr.thread_id
                  AND s1.first_ts < pr.sent_at AND s2.first_ts < pr.sent_at)),
        firsts AS (  -- one introduction per thread: its first message
            SELECT thread_id, min(sent_at) AS sent_at FROM new_pairs GROUP BY thread_id),
        met AS (
            SELECT f.thread_id, f.sent_at, unnest([n.x, n.y]) AS person_id
            FROM firsts f JOIN new_pairs n USING (thread_id, sent_at))
        SELECT met.sent_at, list(DISTINCT coalesce(pp.email, met.person_id)
                                 ORDER BY coalesce(pp.email, met.person_id)),
               list(DISTINCT coalesce(pp.name, pp.email, met.person_id)
                    ORDER BY coalesce(pp.name, pp.email, met.person_id))
        FROM met LEFT JOIN people pp USING (person_id)
        GROUP BY met.thread_id, met.sent_at ORDER BY met.sent_at, met.thread_id""").fetchall()
    return [{"date": r[0].date().isoformat(), "between": list(r[1]), "people": list(r[2]),
             "reason": "you wrote to " + ", ".join(r[2]) + ", who had never been in a "
                       "conversation together"} for r in rows]


def _meetings(con: Connection, start: dt.datetime, as_of: dt.datetime) -> tuple[int, int, int]:
    row = con.execute("""
        WITH occ AS (
            SELECT DISTINCT m.calendar, m.occurrence_key, m.mode
            FROM meetings m JOIN attendees a USING (calendar, occurrence_key)
            WHERE coalesce(m.starts_at, timezone(current_setting('TimeZone'),
                                                 m.start_date::TIMESTAMP))
                  BETWEEN ?::TIMESTAMPTZ AND ?::TIMESTAMPTZ
              AND a.address NOT IN (SELECT address FROM me_addresses))
        SELECT count(*), count(*) FILTER (WHERE mode = 'in_person'),
               count(*) FILTER (WHERE mode = 'online') FROM occ""", [start, as_of]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _summary(con: Connection, ties: Mapping[str, Tie], as_of: dt.datetime) -> dict[str, int]:
    row = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE automated_reason IS NOT NULL)
        FROM messages WHERE sent_at <= ?::TIMESTAMPTZ""", [as_of]).fetchone()
    meetings = con.execute("""
        SELECT count(*) FROM meetings WHERE coalesce(starts_at, timezone(
            current_setting('TimeZone'), start_date::TIMESTAMP)) <= ?::TIMESTAMPTZ""",
                           [as_of]).fetchone()
    assert row is not None and meetings is not None
    return {"people": len(ties), "ties": sum(t.is_tie for t in ties.values()),
            "messages": int(row[0]), "meetings": int(meetings[0]),
            "automated_excluded": int(row[1])}


def _monthly_volume(con: Connection, start: dt.datetime, as_of: dt.datetime
                    ) -> list[tuple[str, int, int, int]]:
    rows = con.execute("""
        SELECT strftime(ts, '%Y-%m') AS month,
               count(*) FILTER (WHERE direction = 'sent'),
               count(*) FILTER (WHERE direction = 'received'),
               count(*) FILTER (WHERE direction = 'met')
        FROM report_interactions WHERE ts > ?::TIMESTAMPTZ AND ts <= ?::TIMESTAMPTZ
        GROUP BY 1 ORDER BY 1""", [start, as_of]).fetchall()
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


def _neglected(ties: Mapping[str, Tie], as_of: dt.datetime, t: Mapping[str, Any],
               skip: set[str], one_sided: Mapping[str, str]
               ) -> list[tuple[float, dict[str, Any]]]:
    """Ties silent for longer than their own rhythm allows. A tie that is also one-sided
    stays in the list, marked (``also_one_sided``), so the user sees both facts."""
    out = []
    for tie in ties.values():
        if not tie.is_tie or tie.person_id in skip or not tie.usual_gap_days:
            continue
        span_days = (tie.last_contact - tie.first_contact).total_seconds() / 86400
        if tie.interaction_days < t["neglect_min_interaction_days"] or \
                span_days < t["neglect_min_days"]:
            continue
        days_since = (as_of - tie.last_contact).total_seconds() / 86400
        gap = float(tie.usual_gap_days)
        if days_since <= max(t["neglect_gap_factor"] * gap, t["neglect_min_silence_days"]):
            continue
        overdue = days_since / gap
        total = tie.emails_sent + tie.emails_received + tie.meetings
        entry = {**tie.who(), "last_contact": tie.last_contact.date().isoformat(),
                 "days_since": int(days_since), "usual_gap_days": round(gap, 1),
                 "overdue_factor": round(overdue, 1),
                 "reason": f"usually every {span(gap)}; {span(days_since)} since your last "
                           "contact"}
        pattern = one_sided.get(tie.person_id)
        if pattern:
            entry["also_one_sided"] = pattern
            entry["reason"] += ("; also one-sided: you start most threads"
                                if pattern == "you_initiate"
                                else "; also one-sided: they start most threads")
        out.append((overdue * math.log1p(total), entry))
    out.sort(key=lambda pair: (-pair[0], pair[1]["email"]))
    return out


def build(con: Connection, *, as_of: dt.date, tz: str, analysis: Mapping[str, Any] | None = None,
          max_recipients: int = 10, recent: tuple[dt.date, dt.date] | None = None) -> Report:
    """The report as of the end of ``as_of`` in zone ``tz``.

    ``recent`` is the period for new ties and introductions (default: the 30 days up to
    ``as_of``). The connection may be read-only.
    """
    t = {**DEFAULTS, **(analysis or {})}
    con.execute(f"SET TimeZone = '{ZoneInfo(tz).key}'")
    end = end_of_day(as_of, tz)
    window_start_day = as_of.replace(year=as_of.year - 1) if not (
        as_of.month == 2 and as_of.day == 29) else as_of - dt.timedelta(days=365)
    start = end_of_day(window_start_day, tz)
    recent_from, recent_to = recent or (as_of - dt.timedelta(days=RECENT_DAYS), as_of)
    recent_start, recent_end = end_of_day(recent_from, tz), end_of_day(recent_to, tz)
    if recent:
        recent_start = end_of_day(recent_from - dt.timedelta(days=1), tz)

    # One snapshot of the interactions: every query below reads it, not the view.
    # Only the columns the report reads; thread ids hashed (they are only compared).
    con.execute("CREATE OR REPLACE TEMP TABLE report_interactions AS "
                "SELECT ts, person_id, email, channel, direction, hash(thread_id) AS thread_id, "
                f"starts_thread, is_reply FROM {current_interactions(con)} "
                "WHERE ts <= ?::TIMESTAMPTZ", [end])
    ties = _ties(con, end)
    threads = _threads(con, start, end)
    window = _window_counts(con, start, end)
    bounced = _bounced(con, end)

    one_sided: list[tuple[int, dict[str, Any]]] = []
    one_sided_ids: dict[str, str] = {}
    for pid, (n, by_me, by_them, me_replied, they_replied) in threads.items():
        tie = ties.get(pid)
        # only ties: someone who never wrote to me, or whom I never wrote to nor met, is a
        # stranger or a sender of bulk mail, not a relationship
        if tie is None or not tie.is_tie or n < t["one_sided_min_threads"]:
            continue
        pattern = None
        if by_me >= t["one_sided_share"] * n and they_replied <= t["one_sided_max_reply_share"] * n:
            pattern = "you_initiate"
            reason = (f"you started {by_me} of {n} threads this year; they answered "
                      f"{they_replied or 'none'}")
        elif by_them >= t["one_sided_share"] * n and \
                me_replied <= t["one_sided_max_reply_share"] * n:
            pattern = "they_initiate"
            reason = (f"they started {by_them} of {n} threads this year; you answered "
                      f"{me_replied or 'none'}")
        if pattern:
            one_sided_ids[pid] = pattern
            one_sided.append((n, {**tie.who(), "pattern": pattern,
                                  "threads_started_by_you": by_me,
                                  "threads_started_by_them": by_them,
                                  "replies_from_you": me_replied,
                                  "replies_from_them": they_replied, "reason": reason}))
    one_sided.sort(key=lambda pair: (-pair[0], pair[1]["email"]))

    changed: list[dict[str, Any]] = []
    moved = con.execute("""
        SELECT person_id, previous, current, since FROM identity_links
        WHERE reason = 'new_address' AND since <= ?::TIMESTAMPTZ AND since > ?::TIMESTAMPTZ
        ORDER BY since DESC, person_id, current""", [end, start]).fetchall()
    for pid, previous, current, since in moved:
        tie = ties.get(pid)
        if tie is None:
            continue
        changed.append({**tie.who(), "signal": "new_address", "previous": previous,
                        "current": current, "since": since.date().isoformat(),
                        "reason": f"writes from {current} since {since.date().isoformat()}; "
                                  f"{previous} went silent"})
    for pid, (address, failed) in sorted(bounced.items(), key=lambda kv: kv[1][1],
                                         reverse=True):
        tie = ties.get(pid)
        if tie is None:
            continue
        current = tie.email if tie.email != address else None
        day = failed.date().isoformat()  # the failure's time, not when the bounced mail left
        changed.append({**tie.who(), "signal": "bounce", "previous": address,
                        "current": current, "since": day,
                        "reason": f"mail to {address} bounced on {day}"})

    neglected = _neglected(ties, end, t, skip=set(bounced), one_sided=one_sided_ids)

    meetings, in_person, online = _meetings(con, start, end)
    email_only = []
    close = sorted((x for x in ties.values() if x.is_tie), key=lambda x: (-x.strength, x.email))
    for tie in close[:EMAIL_ONLY_TOP]:
        sent, received, met = window.get(tie.person_id, (0, 0, 0))
        if tie.meetings > met == 0 and sent + received >= EMAIL_ONLY_MIN_EMAILS:
            email_only.append({**tie.who(), "reason": f"you used to meet; this year "
                               f"{sent + received} emails and no meeting"})

    new_ties = []
    for tie in sorted(ties.values(), key=lambda x: (x.first_contact, x.email)):
        if tie.is_tie and recent_start < tie.first_contact <= recent_end:
            new_ties.append({**tie.who(), "first_contact": tie.first_contact.date().isoformat(),
                             "reason": f"first contact on {tie.first_contact.date().isoformat()}"})

    draining = []
    for pid, (sent, received, _) in sorted(window.items(),
                                           key=lambda kv: (-kv[1][0], kv[0])):
        tie = ties.get(pid)
        n, by_me = threads.get(pid, (0, 0, 0, 0, 0))[:2]
        if tie is None or not tie.is_tie or pid in one_sided_ids or n == 0:
            continue
        if sent >= DRAIN_MIN_MESSAGES and sent >= 2 * received and by_me >= 0.7 * n:
            draining.append({**tie.who(), "reason": f"you sent {sent} of {sent + received} "
                             f"messages and started {by_me} of {n} threads this year"})

    ignored = con.execute("SELECT count(DISTINCT person_id) FROM identities WHERE ignored"
                          ).fetchone()
    doc = {
        "netaudit_report": REPORT_VERSION,
        "as_of": as_of.isoformat(),
        "window": {"start": window_start_day.isoformat(), "end": as_of.isoformat()},
        "summary": _summary(con, ties, end),
        "neglected": [entry for _, entry in neglected],
        "one_sided": [entry for _, entry in one_sided],
        "changed": changed,
        "socialize": {"meetings": meetings, "in_person": in_person, "online": online,
                      "email_only": email_only},
        "connect": {"new_ties": new_ties,
                    "introductions": _introductions(con, recent_start, recent_end,
                                                    max_recipients,
                                                    int(t["introduction_max_people"]))},
        "respect": {"ignored": int(ignored[0]) if ignored else 0, "draining": draining},
    }
    return Report(doc, _monthly_volume(con, start, end),
                  sorted((x for x in ties.values() if x.is_tie),
                         key=lambda x: (-x.strength, x.email)))


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """First and last day of 'YYYY-MM'."""
    first = dt.date.fromisoformat(month + "-01")
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def build_month(con: Connection, month: str, *, tz: str,
                analysis: Mapping[str, Any] | None = None, max_recipients: int = 10) -> Report:
    """The month's report: as of its last day, new ties of the month, and what changed
    since the previous month (newly neglected, revived)."""
    first, last = month_bounds(month)
    report = build(con, as_of=last, tz=tz, analysis=analysis, max_recipients=max_recipients,
                   recent=(first, last))
    previous = build(con, as_of=first - dt.timedelta(days=1), tz=tz, analysis=analysis,
                     max_recipients=max_recipients)
    before = {e["email"]: e for e in previous.doc["neglected"]}
    now = {e["email"] for e in report.doc["neglected"]}
    report.doc["month"] = {
        "month": month,
        "new_ties": report.doc["connect"]["new_ties"],
        "newly_neglected": [e for e in report.doc["neglected"] if e["email"] not in before],
        "revived": [e for email, e in before.items() if email not in now],
    }
    return report
