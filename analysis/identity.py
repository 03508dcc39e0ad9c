"""Who is who: addresses grouped into people, rebuilt from the stored events.

The grouping is recomputed whole after every sync that changed what it reads (it is cheap
next to reading mail) and written to ``identities`` and ``identity_links``, which the public
views read. Rules:

* my own addresses are never a person, nor an address that carries my own name or my mailbox
  name at another of my organisation's domains (``identities.is_me``);
* ``people merge A B`` joins two addresses; ``people ignore`` marks the whole person;
  ``people forget`` removed the rows already, and only a hash of the address is kept;
* two addresses at one organisation are one person when their names are compatible
  (analysis/names.py) and one of the addresses spells that name, or when they are one mailbox
  name at two of its domains (a mail-system migration: brenda.fletcher@ and
  brenda.h.fletcher@); never two addresses that appear in one message;
* a person who moves to another domain stays one person: two addresses with the same
  display name (two words or more, not a role like "Customer Support") at different domains,
  where the old one goes silent about when the new one starts (DESIGN.md "Changed"); never
  two addresses that wrote in the same thread at the same time (two people sharing a name);
* an address counts as automated when most mail it sent was automated.

Every name the headers give an address counts (From, To, Cc, the X-From/X-To/X-cc copies
ingest reads, calendar attendees), and ``identity_links.evidence`` says in words why two
addresses were joined. Threads found by subject (analysis/threads.py) are rebuilt here too:
they compare people, not addresses.
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
from dataclasses import dataclass, field
from pathlib import Path

from analysis import names, threads
from analysis.names import (
    ROLE_WORDS,
    PersonName,
    compatible,
    name_from_address,
    org_domain,
    parse_name,
)
from netaudit.db import PEOPLE_BUILT_FROM, Connection
from netaudit.migrations import COMPUTED_INTERACTIONS, STORED_INTERACTIONS

MOVE_GRACE = dt.timedelta(days=30)  # the old address may overlap the new one this long

@dataclass(slots=True)
class Address:
    address: str
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    name: str | None  # the name it is given most often
    sent: int
    automated: int
    names: list[str] = field(default_factory=list)  # every name it is given, most used first


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
    if len(words) < 2 or "@" in name or any(w in ROLE_WORDS for w in words):
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
    """Every address but mine: when it was seen, how much it sent, and every name given it
    (From, To, Cc, their X- copies as ingest reads them, calendar attendees)."""
    rows = con.execute("""
        WITH seen AS (
            SELECT p.address, m.sent_at AS ts, p.name, p.role = 'from' AS is_sender,
                   m.automated_reason IS NOT NULL AS automated
            FROM participants p JOIN messages m USING (message_key)
            WHERE p.role IN ('from', 'to', 'cc', 'bcc')
            UNION ALL
            SELECT a.address, coalesce(mt.starts_at, mt.start_date::TIMESTAMPTZ), a.name,
                   false, false
            FROM attendees a JOIN meetings mt USING (calendar, occurrence_key)),
        mine AS (SELECT seen.* FROM seen
                 WHERE address NOT IN (SELECT address FROM me_addresses)),
        names AS (
            SELECT address, list(name ORDER BY n DESC, name) AS names FROM (
                SELECT address, name, count(*) AS n FROM mine WHERE name IS NOT NULL
                GROUP BY ALL) GROUP BY address)
        SELECT address, min(ts), max(ts), any_value(names.names)[1],
               count(*) FILTER (WHERE is_sender),
               count(*) FILTER (WHERE is_sender AND automated),
               coalesce(any_value(names.names), [])
        FROM mine LEFT JOIN names USING (address)
        GROUP BY address""").fetchall()
    return {r[0]: Address(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6])) for r in rows}


def _my_names(con: Connection) -> list[PersonName]:
    """The names I write under: From names of mail from my addresses (not every message of a
    Sent folder: a delegate's mail is there under their own name), names others give them."""
    rows = con.execute("""
        SELECT DISTINCT from_name FROM messages
        WHERE from_name IS NOT NULL AND from_addr IN (SELECT address FROM me_addresses)
        UNION
        SELECT DISTINCT p.name FROM participants p
        WHERE p.name IS NOT NULL AND p.address IN (SELECT address FROM me_addresses)
        LIMIT 200""").fetchall()
    found = [parse_name(r[0]) for r in rows]
    return sorted({n for n in found if n is not None}, key=str)


def _stage_addresses(con: Connection, addresses: Iterable[str]) -> bool:
    """The addresses as temp table ``wanted_addresses``, for a join; False when none."""
    wanted = sorted(set(addresses))
    con.execute("CREATE OR REPLACE TEMP TABLE wanted_addresses (address VARCHAR)")
    with con.appender("wanted_addresses") as app:
        app.append_rows((a,) for a in wanted)
    return bool(wanted)


def _together(con: Connection, addresses: Iterable[str]) -> set[frozenset[str]]:
    """Pairs of the given addresses that appear in one message: whoever wrote it addressed
    two people (or two people wrote to each other), so they are not one person's aliases."""
    if not _stage_addresses(con, addresses):
        return set()
    rows = con.execute("""
        WITH p AS (SELECT DISTINCT message_key, address FROM participants
                   WHERE address IN (SELECT address FROM wanted_addresses))
        SELECT DISTINCT a.address, b.address FROM p a JOIN p b
          ON a.message_key = b.message_key AND a.address < b.address""").fetchall()
    return {frozenset(r) for r in rows}


def _shared_threads(con: Connection, addresses: Iterable[str]) -> set[frozenset[str]]:
    """Pairs of the given addresses that wrote in one thread at the same time: two people.

    A person who moved may carry on an old thread from the new address; then the old address
    is done in that thread before the new one starts, and that is not a conflict.
    """
    if not _stage_addresses(con, addresses):
        return set()
    rows = con.execute("""
        WITH t AS (
            SELECT mt.thread_id, p.address, min(mt.sent_at) AS first, max(mt.sent_at) AS last
            FROM message_thread_ids mt JOIN participants p USING (message_key)
            WHERE p.address IN (SELECT address FROM wanted_addresses)
            GROUP BY ALL)
        SELECT DISTINCT a.address, b.address FROM t a JOIN t b
          ON a.thread_id = b.thread_id AND a.address < b.address
         AND a.first < b.last AND b.first < a.last""").fetchall()
    return {frozenset(r) for r in rows}


# these rules, as the files that hold them have them
_RULES = hashlib.md5(b"".join(Path(f).read_bytes() for f in (
    __file__, threads.__file__, names.__file__))).hexdigest()


def _built_from(con: Connection, ignore_patterns: Sequence[str], max_recipients: int) -> str:
    """What a grouping depends on besides the rows: these rules and the filters.

    Writers clear the stored value (``db.people_inputs_changed``); the row counts are there as
    well so that rows added or deleted by hand in DuckDB are not missed either.
    """
    return json.dumps({"rules": _RULES, "ignore": list(ignore_patterns),
                       "max_recipients": max_recipients, "rows": _row_counts(con)})


def _row_counts(con: Connection) -> list[int]:
    counts = con.execute("""
        SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM participants),
               (SELECT count(*) FROM meetings), (SELECT count(*) FROM attendees),
               (SELECT count(*) FROM me_addresses), (SELECT count(*) FROM person_decisions)
        """).fetchone()
    return list(counts or ())


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


Link = tuple[str, str, "dt.datetime | None", str, str]  # previous, current, since, reason, why


def _names_of(fact: Address) -> list[PersonName]:
    return [n for n in dict.fromkeys(parse_name(x) for x in fact.names) if n is not None]


def _same_mailbox(a: str, b: str) -> bool:
    """pallen@ect.enron.com and pallen@enron.com: one local part at one organisation."""
    org = org_domain(a)
    return (a.rpartition("@")[0] == b.rpartition("@")[0] and org is not None
            and org == org_domain(b) and a != b)


def _alias_evidence(a: Address, b: Address) -> str | None:
    """Why two addresses at one organisation are one person, or None.

    Both must carry compatible names (a display name, or the name the address spells), and
    at least one address must spell that name, so two people who share a name at a big
    company are not joined on the display name alone.
    """
    org = org_domain(a.address)
    if org is None or org != org_domain(b.address):
        return None
    if _same_mailbox(a.address, b.address):
        return f"same mailbox name at {a.address.rpartition('@')[2]} and " \
               f"{b.address.rpartition('@')[2]}"
    spelled_a, spelled_b = name_from_address(a.address), name_from_address(b.address)
    spelled = [n for n in (spelled_a, spelled_b) if n is not None]
    names_a = [*_names_of(a), *([spelled_a] if spelled_a else [])]
    names_b = [*_names_of(b), *([spelled_b] if spelled_b else [])]
    for x, y in itertools.product(names_a, names_b):
        if compatible(x, y) and any(compatible(s, x) and compatible(s, y) for s in spelled):
            longer = max((x, y), key=lambda n: (len(n.middle), len(str(n))))
            return f"same name ({longer}) at {org}"
    return None


def _my_aliases(facts: dict[str, Address], me: Sequence[str], my_names: Sequence[PersonName]
                ) -> dict[str, str]:
    """Addresses not configured as mine that are mine all the same, with the evidence: my
    mailbox name at another of my organisation's domains, or my own name on the address."""
    found: dict[str, str] = {}
    for fact in facts.values():
        if fact.sent > 0 and fact.automated * 2 >= fact.sent:
            continue
        twin = next((m for m in me if _same_mailbox(fact.address, m)), None)
        if twin is not None:
            found[fact.address] = f"same mailbox name as your {twin}"
            continue
        for name in _names_of(fact):
            mine = next((n for n in my_names if compatible(name, n)), None)
            if mine is not None:
                found[fact.address] = f"named {fact.names[0]!r}, as you are ({mine})"
                break
    return found


def refresh(con: Connection, *, ignore_patterns: Sequence[str] = (),
            max_recipients: int = 10) -> int:
    """Rebuild ``identities`` and ``identity_links``; returns the number of people.

    Runs inside the caller's write transaction.
    """
    _remember_previous(con)
    con.execute("DELETE FROM settings WHERE key = 'max_recipients'")
    con.execute("INSERT INTO settings VALUES ('max_recipients', ?)", [str(max_recipients)])
    decisions = con.execute("SELECT kind, address, other FROM person_decisions "
                            "ORDER BY decided_at, address").fetchall()
    facts = _facts(con)
    me = [r[0] for r in con.execute(
        "SELECT DISTINCT address FROM me_addresses ORDER BY address").fetchall()]
    mine = _my_aliases(facts, me, _my_names(con))
    groups = _Groups({a: f.first_seen for a, f in facts.items()})
    links: list[Link] = []

    for kind, a, b in decisions:
        if kind == "merge" and a in facts and b in facts:
            groups.union(a, b)
            links.append((a, b, None, "merge", "you merged them (people merge)"))

    def human(fact: Address) -> bool:
        return not (fact.sent > 0 and fact.automated * 2 >= fact.sent) \
            and fact.address not in mine and fact.first_seen is not None \
            and fact.last_seen is not None

    # Candidates: addresses that share a first and last name (display or spelled) or a
    # mailbox name; only those pairs are compared.
    buckets: dict[tuple[str, ...], list[Address]] = defaultdict(list)
    for fact in facts.values():
        if not human(fact):
            continue
        keys = {(n.first, n.last) for n in _names_of(fact)}
        spelled = name_from_address(fact.address)
        if spelled is not None:
            keys.add((spelled.first, spelled.last))
        keys.add(("@local", fact.address.rpartition("@")[0]))
        keys.update(("@key", k) for k in map(name_key, fact.names) if k)
        for key in keys:
            buckets[key].append(fact)
    buckets = {k: v for k, v in buckets.items() if len(v) > 1}
    candidates = {f.address for group in buckets.values() for f in group}
    in_one_thread = _shared_threads(con, candidates)
    in_one_message = _together(con, candidates)
    pairs: dict[frozenset[str], tuple[Address, Address]] = {}
    for group in buckets.values():
        group.sort(key=lambda f: (f.first_seen, f.address))
        for i, old in enumerate(group):
            for new in group[i + 1:]:
                pairs.setdefault(frozenset((old.address, new.address)), (old, new))
    for pair in sorted(pairs, key=sorted):
        old, new = pairs[pair]
        if pair in in_one_thread or groups.find(old.address) == groups.find(new.address):
            continue
        why = None if pair in in_one_message else _alias_evidence(old, new)
        if why is not None:
            groups.union(old.address, new.address)
            links.append((old.address, new.address, new.first_seen, "same_person", why))
            continue
        # A move: the same full name at another domain, the old address silent since.
        if old.address.rpartition("@")[2] == new.address.rpartition("@")[2]:
            continue
        if not {name_key(x) for x in old.names} & {name_key(x) for x in new.names} - {None}:
            continue
        assert old.last_seen and new.first_seen and new.last_seen
        silent = old.last_seen <= new.first_seen + MOVE_GRACE < new.last_seen + MOVE_GRACE
        if silent:
            groups.union(old.address, new.address)
            links.append((old.address, new.address, new.first_seen, "new_address",
                          f"same name ({new.name}); {old.address} silent since "
                          f"{old.last_seen:%Y-%m-%d}, {new.address} from "
                          f"{new.first_seen:%Y-%m-%d}"))

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
                         f.first_seen, f.last_seen, f.address in mine))
    for address, why in sorted(mine.items()):
        links.append((address, address, None, "me", why))
    con.execute("DELETE FROM identities")
    with con.appender("identities") as app:
        app.append_rows(rows)
    con.execute("DELETE FROM identity_links")
    with con.appender("identity_links") as app:
        app.append_rows((person_id_for(groups.find(a)), a, b, since, reason, why)
                        for a, b, since, reason, why in links)
    threads.refresh(con, {a: groups.find(a) for a in facts})
    store_interactions(con)
    con.execute("DELETE FROM settings WHERE key = ?", [PEOPLE_BUILT_FROM])
    con.execute("INSERT INTO settings VALUES (?, ?)",
                [PEOPLE_BUILT_FROM, _built_from(con, ignore_patterns, max_recipients)])
    return len(members)


INTERACTIONS_BUILT_FROM = "interactions_built_from"  # settings key: what interaction_rows hold


def _remember_previous(con: Connection) -> None:
    """The people and thread links as the stored interactions were built from them, for
    ``store_interactions`` to see what a regrouping changed (temp tables of this connection)."""
    con.execute("CREATE OR REPLACE TEMP TABLE previous_identities AS "
                "SELECT address, person_id, is_automated, ignored, is_me FROM identities")
    con.execute("CREATE OR REPLACE TEMP TABLE previous_thread_links AS "
                "SELECT message_key, thread_id, method FROM thread_links")


def _stored_state(con: Connection) -> dict[str, int | None]:
    """What the stored mail interactions depend on besides people and thread links (the
    schema too: a migration may change how they are computed)."""
    row = con.execute("""
        SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM participants),
               (SELECT hash(list(address ORDER BY address)) FROM me_addresses),
               (SELECT coalesce(max(try_cast(value AS INTEGER)), 10) FROM settings
                WHERE key = 'max_recipients'),
               (SELECT epoch_us(max(ingested_at)) FROM messages),
               (SELECT count(*) FROM interaction_rows),
               (SELECT max(version) FROM schema_meta)""").fetchone()
    assert row is not None
    return dict(zip(("messages", "participants", "me", "max_recipients", "ingested", "rows",
                     "schema"), row, strict=True))


def store_interactions(con: Connection) -> int:
    """Write the mail half of ``interactions`` as of these people and threads, and point the
    view at it; returns the rows written.

    Computing it orders every thread of the mailbox (a window over all mail) and joins every
    participant: 5 s and 200 MB at a million messages, on every read. Stored once here, a read
    costs a scan. When only new mail came in since the rows were stored, only the threads it
    joined are computed again, with those where a thread link or a person changed
    (``_changed_threads``); anything else (mail deleted, rows added to old mail by hand, my
    addresses or ``max_recipients`` changed, a first run) computes them all. Writers switch
    the view back to computing (db.people_inputs_changed) until the next regrouping. Runs
    inside the caller's write transaction, after ``refresh`` rebuilt people and threads.
    """
    row = con.execute("SELECT value FROM settings WHERE key = ?", [INTERACTIONS_BUILT_FROM]
                      ).fetchone()
    try:
        before = json.loads(row[0]) if row else None
    except ValueError:
        before = None
    if isinstance(before, dict) and _changed_threads(con, before, _stored_state(con)):
        con.execute("DELETE FROM interaction_rows "
                    "WHERE thread_id IN (SELECT thread_id FROM changed_threads)")
        con.execute("CREATE OR REPLACE TEMP TABLE changed_messages AS SELECT * "
                    "FROM message_thread_ids "
                    "WHERE thread_id IN (SELECT thread_id FROM changed_threads)")
        written = con.execute("INSERT INTO interaction_rows "
                              "SELECT * FROM mail_interactions_of('changed_messages')"
                              ).fetchone()
    else:
        con.execute("DELETE FROM interaction_rows")
        written = con.execute("INSERT INTO interaction_rows SELECT * FROM mail_interactions"
                              ).fetchone()
    con.execute(STORED_INTERACTIONS)
    con.execute("DELETE FROM settings WHERE key = ?", [INTERACTIONS_BUILT_FROM])
    con.execute("INSERT INTO settings VALUES (?, ?)",
                [INTERACTIONS_BUILT_FROM, json.dumps(_stored_state(con))])
    return int(written[0]) if written else 0


def _changed_threads(con: Connection, before: dict[str, int | None],
                     now: dict[str, int | None]) -> bool:
    """Temp table ``changed_threads``: the threads whose stored rows may differ from what
    computing them gives now, when only new mail can have changed them; False when more did.

    New mail is what was stored after the newest message the rows were built from; the
    counts of messages and participants must then add up, or something else was written
    (deleted, or added to old mail). A thread changes when new mail joins it, when a thread
    link moved a message into or out of it (its thread before is worked out as
    message_thread_ids does, from the links before), and when anyone in it became another
    person, automated, ignored or mine.
    """
    if any(before.get(key) != now[key] for key in ("me", "max_recipients", "rows", "schema")):
        return False
    con.execute("CREATE OR REPLACE TEMP TABLE new_messages AS SELECT message_key "
                "FROM messages WHERE ?::BIGINT IS NULL OR epoch_us(ingested_at) > ?",
                [before.get("ingested"), before.get("ingested")])
    row = con.execute("""
        SELECT (SELECT count(*) FROM new_messages),
               (SELECT count(*) FROM participants
                WHERE message_key IN (SELECT message_key FROM new_messages))""").fetchone()
    assert row is not None
    added_messages, added_participants = row
    if (before.get("messages"), before.get("participants")) != (
            (now["messages"] or 0) - added_messages,
            (now["participants"] or 0) - added_participants):
        return False
    con.execute("""
        CREATE OR REPLACE TEMP TABLE changed_threads AS
        WITH links AS (  -- messages whose thread link is not what it was
            SELECT message_key FROM (
                (SELECT message_key, thread_id, method FROM previous_thread_links
                 EXCEPT SELECT message_key, thread_id, method FROM thread_links)
                UNION ALL
                (SELECT message_key, thread_id, method FROM thread_links
                 EXCEPT SELECT message_key, thread_id, method FROM previous_thread_links))),
        people AS (  -- addresses whose person or flags are not what they were
            SELECT address FROM (
                (SELECT * FROM previous_identities
                 EXCEPT SELECT address, person_id, is_automated, ignored, is_me
                        FROM identities)
                UNION ALL
                (SELECT address, person_id, is_automated, ignored, is_me FROM identities
                 EXCEPT SELECT * FROM previous_identities))),
        touched AS (
            SELECT message_key FROM new_messages
            UNION SELECT message_key FROM links
            UNION SELECT message_key FROM participants
                  WHERE role IN ('from', 'to', 'cc', 'bcc')
                    AND address IN (SELECT address FROM people))
        SELECT thread_id FROM message_thread_ids
        WHERE message_key IN (SELECT message_key FROM touched)
        UNION
        SELECT coalesce(m.thread_hint, m.refs[1], m.in_reply_to, p.thread_id, m.message_key)
        FROM messages m LEFT JOIN previous_thread_links p USING (message_key)
        WHERE m.message_key IN (SELECT message_key FROM links)
          AND m.sent_at IS NOT NULL AND p.method IS DISTINCT FROM 'copy'""")
    return True


def current_interactions(con: Connection) -> str:
    """The relation a report reads interactions from: the view while the rows stored at the
    last regrouping are current, else the interactions computed from the raw tables.

    Rows written since (a batch whose regrouping has not run yet, rows added or deleted by
    hand) would otherwise be missing from the report until the next sync. Read-only.
    """
    row = con.execute("SELECT value FROM settings WHERE key = ?", [PEOPLE_BUILT_FROM]
                      ).fetchone()
    try:
        built = json.loads(row[0]).get("rows") if row else None
    except (ValueError, AttributeError):
        built = None
    return "interactions" if built == _row_counts(con) else f"({COMPUTED_INTERACTIONS})"
