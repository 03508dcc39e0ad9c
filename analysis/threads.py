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
    # Subjects are grouped by a hash of the key (a million keys held as text cost 100 MB): two
    # keys that share a hash only bring in messages that link to nothing, since a message
    # links only to an earlier one with its very key. Participants are read for the chosen
    # messages alone.
    rows = con.execute("""
        WITH repeated AS (  -- subjects with a reply or forward that has no threading headers
            SELECT hash(subject_key) AS h FROM messages
            WHERE subject_key IS NOT NULL AND sent_at IS NOT NULL
            GROUP BY 1
            HAVING count(*) > 1 AND bool_or(subject_prefix IS NOT NULL AND thread_hint IS NULL
                                            AND refs[1] IS NULL AND in_reply_to IS NULL)),
        chosen AS (
            SELECT subject_key, sent_at, message_key,
                   coalesce(thread_hint, refs[1], in_reply_to) AS own_thread, subject_prefix
            FROM messages
            WHERE subject_key IS NOT NULL AND sent_at IS NOT NULL
              AND hash(subject_key) IN (SELECT h FROM repeated)),
        people AS (
            SELECT message_key, address FROM participants
            WHERE role IN ('from', 'to', 'cc')
              AND message_key IN (SELECT message_key FROM chosen)),
        me AS (SELECT DISTINCT address FROM me_addresses UNION
               SELECT address FROM identities WHERE is_me)
        SELECT c.subject_key, c.sent_at, c.message_key, c.own_thread, c.subject_prefix,
               list(DISTINCT p.address ORDER BY p.address)
                   FILTER (WHERE p.address NOT IN (SELECT address FROM me)) AS people
        FROM chosen c LEFT JOIN people p USING (message_key)
        GROUP BY ALL
        ORDER BY c.subject_key, c.sent_at, c.message_key""").fetchall()
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
_SHIFT_US = COPY_SHIFT // dt.timedelta(microseconds=1)
_HALF_HOUR_US = dt.timedelta(minutes=30) // dt.timedelta(microseconds=1)


def _copies(con: Connection) -> list[tuple[str, str, str]]:
    """Messages stored more than once under different Message-IDs, as (copy, original, 'copy').

    Exports write one message into several folders with a new id each (Notes did, in the
    Enron mailboxes): the same sender, subject and people, at the same time to the second, or,
    in another folder, shifted by whole half hours (less than 14 hours). Each is counted once,
    as its earliest copy.
    """
    # ``near`` orders messages by a hash of sender and subject rather than by both as text
    # (a million of them sorted as text took 3 s and spilled): two pairs that share a hash only
    # let more messages through, and the groups below are compared exactly. Times are read as
    # microseconds, in batches: no datetime object per row, nor every row at once.
    cur = con.execute("""
        WITH near AS (  -- only a message with another of its sender and subject close by
            SELECT message_key FROM (
                SELECT message_key, epoch_us(sent_at) AS t,
                       lag(epoch_us(sent_at)) OVER w AS before,
                       lead(epoch_us(sent_at)) OVER w AS after
                FROM messages WHERE sent_at IS NOT NULL AND from_addr IS NOT NULL
                WINDOW w AS (PARTITION BY hash(from_addr, subject_key) ORDER BY sent_at))
            WHERE t - before < ? OR after - t < ?),
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
        SELECT grp, message_key, epoch_us(sent_at), folder FROM keyed WHERE n > 1
        ORDER BY grp, sent_at, message_key""", [_SHIFT_US, _SHIFT_US])
    out: list[tuple[str, str, str]] = []
    seen: list[tuple[int, str, str]] = []  # this group's messages: time, folder, original
    group = None
    while rows := cur.fetchmany(10_000):
        for grp, key, sent_at, folder in rows:
            if grp != group:
                group, seen = grp, []
            original = None
            for at, seen_folder, seen_original in reversed(seen):
                shift = sent_at - at
                if shift >= _SHIFT_US:
                    break
                if shift == 0 or (seen_folder != folder and not shift % _HALF_HOUR_US):
                    original = seen_original
                    break
            seen.append((sent_at, folder, original or key))
            if original is not None:
                out.append((key, original, "copy"))
    return out
