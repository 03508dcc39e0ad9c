"""Who is who: addresses grouped into people, rebuilt from the stored events.

The grouping is recomputed whole after every sync that changed what it reads (it is cheap
next to reading mail) and written to ``identities`` and ``identity_links``, which the public
views read. Rules:

* my own addresses are never a person;
* ``people merge A B`` joins two addresses; ``people ignore`` marks the whole person;
  ``people forget`` removed the rows already, and only a hash of the address is kept;
* a person who moves to another domain stays one person: two addresses with the same
  display name (two words or more, not a role like "Customer Support") at different domains,
  where the old one goes silent about when the new one starts (DESIGN.md "Changed"); never
  two addresses that wrote in the same thread at the same time (two people sharing a name);
* an address counts as automated when most mail it sent was automated.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import itertools
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netaudit.db import PEOPLE_BUILT_FROM, Connection

MOVE_GRACE = dt.timedelta(days=30)  # the old address may overlap the new one this long
_ROLE_WORDS = {"support", "team", "info", "noreply", "no-reply", "notifications", "newsletter",
               "admin", "service", "services", "sales", "billing", "help", "news", "office",
               "customer", "the", "mailer", "daemon", "postmaster", "updates", "alerts",
               "delivery", "subsystem", "system", "calendar", "reply", "notification"}


@dataclass(slots=True)
class Address:
    address: str
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    name: str | None
    sent: int
    automated: int


def person_id_for(address: str) -> str:
    """Stable id of the person whose earliest address this is (the views use the same)."""
    return "p" + hashlib.md5(address.encode()).hexdigest()[:10]


def name_key(name: str | None) -> str | None:
    """'Allen, Phillip K.' and 'Phillip K Allen' give the same key; None when the name cannot
    identify a person (one word, or a role)."""
    if not name:
        return None
    text = unicodedata.normalize("NFKC", name).casefold()
    words = [w for w in re.split(r"[^\w'-]+", text) if w]
    if len(words) < 2 or "@" in name or any(w in _ROLE_WORDS for w in words):
        return None
    return " ".join(sorted(words))


class _Groups:
    """Union-find over addresses; the earliest address of a group is its root."""

    def __init__(self, first_seen: dict[str, dt.datetime | None]) -> None:
        self.parent: dict[str, str] = {}
        self.first_seen = first_seen

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        if (self.first_seen.get(rb) or far, rb) < (self.first_seen.get(ra) or far, ra):
            ra, rb = rb, ra
        self.parent[rb] = ra


def _facts(con: Connection) -> dict[str, Address]:
    rows = con.execute("""
        WITH seen AS (
            SELECT p.address, m.sent_at AS ts, p.name, p.role = 'from' AS is_sender,
                   m.automated_reason IS NOT NULL AS automated
            FROM participants p JOIN messages m USING (message_key)
            WHERE p.role IN ('from', 'to', 'cc', 'bcc')
            UNION ALL
            SELECT a.address, coalesce(mt.starts_at, mt.start_date::TIMESTAMPTZ), a.name,
                   false, false
            FROM attendees a JOIN meetings mt USING (calendar, occurrence_key))
        SELECT address, min(ts), max(ts), mode(name) FILTER (WHERE name IS NOT NULL),
               count(*) FILTER (WHERE is_sender),
               count(*) FILTER (WHERE is_sender AND automated)
        FROM seen
        WHERE address NOT IN (SELECT address FROM me_addresses)
        GROUP BY address""").fetchall()
    return {r[0]: Address(*r) for r in rows}


def _shared_threads(con: Connection, addresses: Iterable[str]) -> set[frozenset[str]]:
    """Pairs of the given addresses that wrote in one thread at the same time: two people.

    A person who moved may carry on an old thread from the new address; then the old address
    is done in that thread before the new one starts, and that is not a conflict.
    """
    wanted = sorted(set(addresses))
    if not wanted:
        return set()
    con.execute("CREATE OR REPLACE TEMP TABLE wanted_addresses (address VARCHAR)")
    with con.appender("wanted_addresses") as app:
        app.append_rows((a,) for a in wanted)
    rows = con.execute("""
        WITH t AS (
            SELECT mt.thread_id, p.address, min(mt.sent_at) AS first, max(mt.sent_at) AS last
            FROM message_threads mt JOIN participants p USING (message_key)
            WHERE p.address IN (SELECT address FROM wanted_addresses)
            GROUP BY ALL)
        SELECT DISTINCT a.address, b.address FROM t a JOIN t b
          ON a.thread_id = b.thread_id AND a.address < b.address
         AND a.first < b.last AND b.first < a.last""").fetchall()
    return {frozenset(r) for r in rows}


_RULES = hashlib.md5(Path(__file__).read_bytes()).hexdigest()  # these rules, as this file has them


def _built_from(con: Connection, ignore_patterns: Sequence[str], max_recipients: int) -> str:
    """What a grouping depends on besides the rows: these rules and the filters.

    Writers clear the stored value (``db.people_inputs_changed``); the row counts are there as
    well so that rows added or deleted by hand in DuckDB are not missed either.
    """
    counts = con.execute("""
        SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM participants),
               (SELECT count(*) FROM meetings), (SELECT count(*) FROM attendees),
               (SELECT count(*) FROM me_addresses), (SELECT count(*) FROM person_decisions)
        """).fetchone()
    return json.dumps({"rules": _RULES, "ignore": list(ignore_patterns),
                       "max_recipients": max_recipients, "rows": list(counts or ())})


def refresh_if_stale(con: Connection, *, ignore_patterns: Sequence[str] = (),
                     max_recipients: int = 10) -> bool:
    """Regroup only when something the grouping reads changed; True when it ran.

    A sync that brought nothing new then costs no regrouping (most daemon wake-ups and monthly
    re-syncs). Runs inside the caller's write transaction.
    """
    stored = con.execute("SELECT value FROM settings WHERE key = ?",
                         [PEOPLE_BUILT_FROM]).fetchone()
    if stored and stored[0] == _built_from(con, ignore_patterns, max_recipients):
        return False
    refresh(con, ignore_patterns=ignore_patterns, max_recipients=max_recipients)
    return True


def refresh(con: Connection, *, ignore_patterns: Sequence[str] = (),
            max_recipients: int = 10) -> int:
    """Rebuild ``identities`` and ``identity_links``; returns the number of people.

    Runs inside the caller's write transaction.
    """
    con.execute("DELETE FROM settings WHERE key = 'max_recipients'")
    con.execute("INSERT INTO settings VALUES ('max_recipients', ?)", [str(max_recipients)])
    decisions = con.execute("SELECT kind, address, other FROM person_decisions "
                            "ORDER BY decided_at").fetchall()
    facts = _facts(con)
    groups = _Groups({a: f.first_seen for a, f in facts.items()})
    links: list[tuple[str, str, dt.datetime | None, str]] = []

    for kind, a, b in decisions:
        if kind == "merge" and a in facts and b in facts:
            groups.union(a, b)
            links.append((a, b, None, "merge"))

    by_name: dict[str, list[Address]] = defaultdict(list)
    for fact in facts.values():
        key = name_key(fact.name)
        human = not (fact.sent > 0 and fact.automated * 2 >= fact.sent)
        if key and human and fact.first_seen is not None and fact.last_seen is not None:
            by_name[key].append(fact)
    candidates = {f.address for group in by_name.values() if len(group) > 1 for f in group}
    together = _shared_threads(con, candidates)
    for group in by_name.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda f: (f.first_seen, f.address))
        for old, new in itertools.pairwise(group):
            if old.address.rpartition("@")[2] == new.address.rpartition("@")[2]:
                continue
            assert old.last_seen and new.first_seen and new.last_seen
            silent = old.last_seen <= new.first_seen + MOVE_GRACE < new.last_seen + MOVE_GRACE
            if silent and frozenset((old.address, new.address)) not in together:
                groups.union(old.address, new.address)
                links.append((old.address, new.address, new.first_seen, "new_address"))

    ignored_addresses = {a for kind, a, _ in decisions if kind == "ignore"}
    members: dict[str, list[Address]] = defaultdict(list)
    for fact in facts.values():
        members[groups.find(fact.address)].append(fact)

    rows = []
    for root, people in members.items():
        pid = person_id_for(root)
        far_past = dt.datetime.min.replace(tzinfo=dt.UTC)
        primary = max(people, key=lambda f: (f.last_seen or far_past, f.address))
        ignored = any(
            f.address in ignored_addresses
            or any(fnmatch.fnmatchcase(f.address, pat.lower()) for pat in ignore_patterns)
            for f in people)
        for f in people:
            automated = f.sent > 0 and f.automated * 2 >= f.sent
            rows.append((f.address, pid, f.name, f is primary, automated, ignored,
                         f.first_seen, f.last_seen))
    con.execute("DELETE FROM identities")
    with con.appender("identities") as app:
        app.append_rows(rows)
    con.execute("DELETE FROM identity_links")
    with con.appender("identity_links") as app:
        app.append_rows((person_id_for(groups.find(a)), a, b, since, reason)
                        for a, b, since, reason in links)
    con.execute("DELETE FROM settings WHERE key = ?", [PEOPLE_BUILT_FROM])
    con.execute("INSERT INTO settings VALUES (?, ?)",
                [PEOPLE_BUILT_FROM, _built_from(con, ignore_patterns, max_recipients)])
    return len(members)
