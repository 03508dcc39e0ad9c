"""`netaudit person QUERY`: one person's addresses, numbers and timeline."""

from __future__ import annotations

import datetime as dt
import io

from analysis.report import end_of_day, span
from netaudit.db import Connection
from netaudit.errors import UsageError

TIMELINE = 15


def find(con: Connection, query: str) -> list[tuple[str, str | None, str, list[str]]]:
    like = f"%{query.strip().lower()}%"
    return con.execute("""
        SELECT person_id, name, email, addresses FROM people
        WHERE lower(coalesce(name, '')) LIKE ? OR list_contains(addresses, ?)
           OR len(list_filter(addresses, lambda a: a LIKE ?)) > 0
        ORDER BY last_seen DESC NULLS LAST LIMIT 20""",
                       [like, query.strip().lower(), like]).fetchall()


def show(con: Connection, query: str, *, tz: str) -> str:
    from rich.console import Console
    from rich.table import Table

    found = find(con, query)
    if not found:
        raise UsageError(f"nobody matches {query!r}; try part of a name or an address")
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False)
    if len(found) > 1:
        console.print(f"{len(found)} people match {query!r}; be more specific:")
        for _, name, email, _ in found:
            console.print(f"  {name or ''} <{email}>")
        return out.getvalue()
    person_id, name, email, addresses = found[0]
    con.execute(f"SET TimeZone = '{tz}'")
    now = end_of_day(dt.date.today(), tz)
    cursor = con.execute("SELECT * FROM tie_metrics(?::TIMESTAMPTZ) WHERE person_id = ?",
                         [now, person_id])
    cols = [d[0] for d in cursor.description or []]
    metrics = cursor.fetchone()
    decisions = con.execute("SELECT DISTINCT kind FROM person_decisions WHERE address IN "
                            "(SELECT unnest(?::VARCHAR[]))", [addresses]).fetchall()
    console.print(f"[bold]{name or email}[/bold] <{email}>")
    console.print("Addresses: " + ", ".join(addresses))
    if decisions:
        console.print("Your decisions: " + ", ".join(d[0] for d in decisions))
    joined = con.execute("""
        SELECT previous, current, coalesce(evidence, reason) FROM identity_links
        WHERE person_id = ? AND reason <> 'me' ORDER BY since NULLS FIRST, previous, current""",
                         [person_id]).fetchall()
    if joined:
        console.print("Why these addresses are one person:")
        for previous, current, why in joined:
            console.print(f"  {previous} = {current}: {why}")
    if metrics is None:
        console.print("No personal interactions (only automated or bulk mail).")
        return out.getvalue()
    m = dict(zip(cols, metrics, strict=True))
    days = (now - m["last_contact"]).total_seconds() / 86400
    console.print(f"First contact {m['first_contact']:%Y-%m-%d}, last {m['last_contact']:%Y-%m-%d}"
                  f" ({span(days)} ago)")
    if m["usual_gap_days"]:
        console.print(f"Usually every {span(m['usual_gap_days'])} "
                      f"({m['interaction_days']} days with contact)")
    console.print(f"Emails: {m['emails_sent']} sent, {m['emails_received']} received; "
                  f"meetings: {m['meetings']}")
    console.print(f"Threads started: {m['threads_started_by_me']} by you, "
                  f"{m['threads_started_by_them']} by them; replies: {m['replies_by_me']} "
                  f"from you, {m['replies_by_them']} from them")
    rows = con.execute("""
        SELECT ts, channel, direction, email FROM interactions WHERE person_id = ?
        ORDER BY ts DESC LIMIT ?""", [person_id, TIMELINE]).fetchall()
    table = Table("When", "What", "Address", title="Latest contact", title_justify="left")
    labels = {"sent": "you wrote", "received": "they wrote", "met": "you met"}
    for ts, _channel, direction, address in rows:
        table.add_row(f"{ts:%Y-%m-%d %H:%M}", labels.get(direction, direction), address)
    console.print(table)
    return out.getvalue()
