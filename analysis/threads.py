"""Threads for mail that carries no threading headers, found by subject and people.

Outlook and Notes exports, PST conversions and the Enron corpus have no References or
In-Reply-To: by those headers alone every message would start a thread of its own, and every
answer would look unanswered. Such a message (DESIGN.md "Thread without threading headers")
joins the thread of the latest earlier message that has the same normalised subject
(``messages.subject_key``, prefixes stripped at ingest), shares a person with it other than
me, and is at most 90 days older. Only a reply or a forward ("Re:", "AW:", "Fwd:"...) joins:
a message that repeats a subject without a prefix (the weekly "Gas report") starts a thread.

The result is ``thread_links`` (message, thread, method), rebuilt with the identities; the
``message_threads`` view prefers a server's thread id, References and In-Reply-To, and uses a
link only where those are missing. The same table names copies of one message stored under
several Message-IDs (method ``copy``), which the view leaves out.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping

from netaudit.db import Connection

WINDOW = dt.timedelta(days=90)


def refresh(con: Connection, person_of: Mapping[str, str] | None = None) -> int:
    """Rebuild ``thread_links``; returns how many messages were linked (copies included).

    ``person_of`` maps an address to its person, so that a person who answers from another
    address still shares the thread. Runs inside the caller's write transaction.
    """
    person_of = person_of or {}
    rows = con.execute("""
        WITH repeated AS (  -- subjects with a reply or forward that has no threading headers
            SELECT subject_key FROM messages
            WHERE subject_key IS NOT NULL AND sent_at IS NOT NULL
            GROUP BY subject_key
            HAVING count(*) > 1 AND bool_or(subject_prefix IS NOT NULL AND thread_hint IS NULL
                                            AND refs[1] IS NULL AND in_reply_to IS NULL)),
        me AS (SELECT DISTINCT address FROM me_addresses UNION
               SELECT address FROM identities WHERE is_me)
        SELECT m.subject_key, m.sent_at, m.message_key,
               coalesce(m.thread_hint, m.refs[1], m.in_reply_to) AS own_thread,
               m.subject_prefix,
               list(DISTINCT p.address ORDER BY p.address)
                   FILTER (WHERE p.address NOT IN (SELECT address FROM me)) AS people
        FROM messages m JOIN repeated USING (subject_key)
        LEFT JOIN participants p ON p.message_key = m.message_key
             AND p.role IN ('from', 'to', 'cc')
        WHERE m.sent_at IS NOT NULL
        GROUP BY ALL
        ORDER BY m.subject_key, m.sent_at, m.message_key""").fetchall()
    by_subject: dict[str, list[tuple[dt.datetime, str, str | None, str | None, frozenset[str]]]]
    by_subject = defaultdict(list)
    copies = _copies(con)
    copy_keys = {c[0] for c in copies}
    for subject_key, sent_at, key, own, prefix, people in rows:
        if key in copy_keys:
            continue
        who = frozenset(person_of.get(a, a) for a in people or ())
        by_subject[subject_key].append((sent_at, key, own, prefix, who))

    links: list[tuple[str, str, str]] = []
    for messages in by_subject.values():
        thread_of: dict[str, str] = {}
        for i, (sent_at, key, own, prefix, who) in enumerate(messages):
            thread_of[key] = own or key
            if own is not None or prefix is None or not who:
                continue
            for j in range(i - 1, -1, -1):
                earlier_at, earlier_key, _, _, earlier_who = messages[j]
                if sent_at - earlier_at > WINDOW:
                    break
                if who & earlier_who:
                    thread_of[key] = thread_of[earlier_key]
                    links.append((key, thread_of[key], "subject"))
                    break
    con.execute("DELETE FROM thread_links")
    links.extend(copies)
    if links:
        with con.appender("thread_links") as app:
            app.append_rows(links)
    return len(links)


# A copy in another folder may carry a shifted time: Notes wrote 00:50 for 12:50, and zones
# went wrong in conversion. Such shifts are whole half hours, and less than this.
COPY_SHIFT_HOURS = 14
COPY_SHIFT = dt.timedelta(hours=COPY_SHIFT_HOURS)
_HALF_HOUR = dt.timedelta(minutes=30)


def _copies(con: Connection) -> list[tuple[str, str, str]]:
    """Messages stored more than once under different Message-IDs, as (copy, original, 'copy').

    Exports write one message into several folders with a new id each (Notes did, in the
    Enron mailboxes): the same sender, subject and people, at the same time to the second, or,
    in another folder, shifted by whole half hours (less than 14 hours). Each is counted once,
    as its earliest copy.
    """
    rows = con.execute("""
        WITH near AS (  -- only a message with another of its sender and subject close by
            SELECT message_key FROM (
                SELECT message_key, sent_at,
                       lag(sent_at) OVER w AS before, lead(sent_at) OVER w AS after
                FROM messages WHERE sent_at IS NOT NULL AND from_addr IS NOT NULL
                WINDOW w AS (PARTITION BY from_addr, subject_key ORDER BY sent_at))
            WHERE sent_at - before < to_hours(?) OR after - sent_at < to_hours(?)),
        who AS (
            SELECT message_key, list(DISTINCT role || ':' || address
                                     ORDER BY role || ':' || address) AS people
            FROM participants WHERE role IN ('from', 'to', 'cc')
              AND message_key IN (SELECT message_key FROM near)
            GROUP BY message_key),
        keyed AS (
            SELECT m.message_key, m.sent_at,
                   CASE WHEN regexp_matches(m.location, '#[0-9]+$')  -- mbox#offset
                        THEN regexp_replace(m.location, '#[0-9]+$', '')
                        ELSE regexp_replace(m.location, '/[^/]*$', '') END AS folder,
                   count(*) OVER (PARTITION BY m.from_addr, m.subject_key, who.people) AS n,
                   dense_rank() OVER (ORDER BY m.from_addr, m.subject_key, who.people) AS grp
            FROM messages m JOIN who USING (message_key)
            WHERE m.sent_at IS NOT NULL AND m.from_addr IS NOT NULL)
        SELECT grp, message_key, sent_at, folder FROM keyed WHERE n > 1
        ORDER BY grp, sent_at, message_key""", [COPY_SHIFT_HOURS, COPY_SHIFT_HOURS]).fetchall()
    out: list[tuple[str, str, str]] = []
    seen: list[tuple[dt.datetime, str, str]] = []  # this group's messages: time, folder, original
    group = None
    for grp, key, sent_at, folder in rows:
        if grp != group:
            group, seen = grp, []
        original = None
        for at, seen_folder, seen_original in reversed(seen):
            shift = sent_at - at
            if shift >= COPY_SHIFT:
                break
            if shift == dt.timedelta(0) or (seen_folder != folder and not shift % _HALF_HOUR):
                original = seen_original
                break
        seen.append((sent_at, folder, original or key))
        if original is not None:
            out.append((key, original, "copy"))
    return out
