"""The report as JSON, Markdown or terminal text. HTML lives in ``render_html``.

Every renderer reads the same document (``Report.doc``), so the formats cannot disagree.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from analysis.report import Report

# (section title, practice, key path, columns: (header, field))
Columns = list[tuple[str, str]]
SECTIONS: list[tuple[str, str, tuple[str, ...], Columns]] = [
    ("Neglected ties", "ENGAGE", ("neglected",),
     [("Person", "person"), ("Last contact", "last_contact"), ("Why", "reason")]),
    ("One-sided relationships", "RESPECT", ("one_sided",),
     [("Person", "person"), ("Pattern", "pattern"), ("Why", "reason")]),
    ("Changed jobs or addresses", "SUSTAIN", ("changed",),
     [("Person", "person"), ("Signal", "signal"), ("Why", "reason")]),
    ("Close ties you only email", "SOCIALIZE", ("socialize", "email_only"),
     [("Person", "person"), ("Why", "reason")]),
    ("New ties", "CONNECT", ("connect", "new_ties"),
     [("Person", "person"), ("First contact", "first_contact")]),
    ("Introductions you made", "CONNECT", ("connect", "introductions"),
     [("Date", "date"), ("Between", "between")]),
    ("Ties where you carry the effort", "RESPECT", ("respect", "draining"),
     [("Person", "person"), ("Why", "reason")]),
]


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    value: Any = doc
    for key in path:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, list) else []


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def to_json(report: Report) -> str:
    return json.dumps(report.doc, indent=2, ensure_ascii=False) + "\n"


def _headline(doc: dict[str, Any]) -> list[str]:
    s, soc = doc["summary"], doc["socialize"]
    face = (f"{soc['in_person']} of {soc['meetings']} meetings in person"
            if soc["meetings"] else "no meetings in your calendars")
    return [
        f"As of {doc['as_of']} (the year since {doc['window']['start']}): {s['ties']} ties "
        f"among {s['people']} people, from {s['messages']:,} messages "
        f"({s['automated_excluded']:,} automated, not counted) and {s['meetings']:,} meetings.",
        f"Face to face: {face}; {soc['online']} online. "
        f"Ties you let go: {doc['respect']['ignored']}.",
    ]


def to_markdown(report: Report) -> str:
    doc = report.doc
    out = [f"# netaudit report, {doc['as_of']}", "", *_headline(doc), ""]
    if "month" in doc:
        m = doc["month"]
        out += [f"## {m['month']}: what changed", "",
                f"- new ties: {', '.join(e['person'] for e in m['new_ties']) or 'none'}",
                "- newly neglected: "
                f"{', '.join(e['person'] for e in m['newly_neglected']) or 'none'}",
                f"- revived: {', '.join(e['person'] for e in m['revived']) or 'none'}", ""]
    for title, practice, path, columns in SECTIONS:
        rows = _get(doc, path)
        out += [f"## {title} ({practice})", ""]
        if not rows:
            out += ["Nobody.", ""]
            continue
        out.append("| " + " | ".join(h for h, _ in columns) + " |")
        out.append("|" + "---|" * len(columns))
        for row in rows:
            cells = [_cell(row.get(f)).replace("|", "\\|") for _, f in columns]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def to_text(report: Report, width: int = 80) -> str:
    """Rich tables that fit an 80-column terminal."""
    from rich.console import Console
    from rich.table import Table

    doc = report.doc
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, highlight=False)
    console.print(f"[bold]netaudit report, {doc['as_of']}[/bold]")
    for line in _headline(doc):
        console.print(line)
    if "month" in doc:
        m = doc["month"]
        names: Callable[[str], str] = lambda k: ", ".join(e["person"] for e in m[k]) or "none"  # noqa: E731
        console.print(f"\n[bold]{m['month']}[/bold]: new ties: {names('new_ties')}; newly "
                      f"neglected: {names('newly_neglected')}; revived: {names('revived')}")
    for title, practice, path, columns in SECTIONS:
        rows = _get(doc, path)
        console.print()
        if not rows:
            console.print(f"[bold]{title}[/bold] ({practice}): nobody")
            continue
        table = Table(title=f"{title} ({practice})", title_justify="left", expand=False,
                      show_lines=False)
        for header, _ in columns:
            table.add_column(header, overflow="fold")
        for row in rows[:25]:
            table.add_row(*(_cell(row.get(f)) for _, f in columns))
        console.print(table)
        if len(rows) > 25:
            console.print(f"... and {len(rows) - 25} more (--format json shows all)")
    return buf.getvalue()
