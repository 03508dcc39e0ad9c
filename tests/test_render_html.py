"""The HTML report: self-contained, escaped, complete, and it renders in a real browser."""

from __future__ import annotations

import datetime as dt
import html
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from analysis.render import SECTIONS
from analysis.render_html import to_html
from analysis.report import Report, Tie

HOSTILE = '<script>alert("pwned")</script> & Sons'
MATHY = "Dollar $x^{$ Bill"
UTC = dt.UTC


def person(name: str, email: str, **extra: Any) -> dict[str, Any]:
    return {"person": name, "email": email, "addresses": [email], **extra}


def tie(rank: int, name: str, email: str, *, by_me: int, by_them: int, meetings: int = 0
        ) -> Tie:
    layer = next((size for size in (5, 15, 50, 150) if rank <= size), None)
    return Tie(person_id=f"p{rank}", name=name, email=email, addresses=[email],
               first_contact=dt.datetime(2025, 3, 1, tzinfo=UTC),
               last_contact=dt.datetime(2026, 10, 20, tzinfo=UTC),
               emails_sent=3 * by_me + 2, emails_received=3 * by_them + 2, meetings=meetings,
               threads_by_me=by_me, threads_by_them=by_them, replies_by_me=by_them,
               replies_by_them=by_me, interaction_days=12, usual_gap_days=21.0, is_tie=True,
               strength=round(100.0 / rank, 3), layer=layer)


def empty_doc(as_of: str = "2026-11-01") -> dict[str, Any]:
    return {
        "netaudit_report": 1, "as_of": as_of,
        "window": {"start": "2025-11-01", "end": as_of},
        "summary": {"people": 0, "ties": 0, "messages": 0, "meetings": 0,
                    "automated_excluded": 0},
        "neglected": [], "one_sided": [], "changed": [],
        "socialize": {"meetings": 0, "in_person": 0, "online": 0, "email_only": []},
        "connect": {"new_ties": [], "introductions": []},
        "respect": {"ignored": 0, "draining": []},
    }


FIRST = ["Ana", "Ben", "Chiara", "Dmitri", "Eun-ji", "Farah", "Gustavo", "Hana", "Ivo", "Jamal",
         "Kirsten", "Lars", "Mei", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Søren"]
LAST = ["Almeida", "Becker", "Conti", "Dvořák", "Park", "Haddad", "Ortega", "Sato", "Novak",
        "Wright", "Lindqvist", "Eriksen", "Chen", "Karimi", "Berg", "Raman", "Moreau", "Vidal",
        "Kjær"]


def realistic_report(*, with_month: bool = True) -> Report:
    """About twenty ties, a year of volume, a few entries in every section."""
    names = [f"{f} {last}" for f, last in zip(FIRST, LAST, strict=True)]
    ties = []
    for rank, name in enumerate([names[0], HOSTILE, *names[1:9], MATHY, *names[9:]], start=1):
        email = {HOSTILE: "evil&co@hostile.example", MATHY: "bill@dollar.example"}.get(
            name, f"{name.split()[0].lower()}@example.org")
        by_me = (rank * 7) % 11 + (12 if rank in (4, 9) else 0)
        by_them = (rank * 5) % 9 + (1 if rank % 3 else 0)
        ties.append(tie(rank, name, email, by_me=by_me, by_them=by_them,
                        meetings=(rank * 3) % 5 if rank % 4 else 0))

    doc = empty_doc()
    doc["summary"] = {"people": 412, "ties": len(ties), "messages": 18342, "meetings": 236,
                      "automated_excluded": 15107}
    doc["neglected"] = [
        person("Gustavo Ortega", "gustavo@example.org", last_contact="2026-03-02",
               days_since=244, usual_gap_days=28.0, overdue_factor=8.7,
               reason="usually every 4 weeks; 8 months since your last contact"),
        person(HOSTILE, "evil&co@hostile.example", last_contact="2026-06-11",
               days_since=143, usual_gap_days=14.0, overdue_factor=10.2,
               reason=f"usually every 2 weeks; 5 months since {HOSTILE}"),
        person("Hana Sato", "hana.sato@university.example", last_contact="2026-07-19",
               days_since=105, usual_gap_days=30.5, overdue_factor=3.4,
               reason="usually every 4 weeks; 15 weeks since your last contact"),
    ]
    doc["one_sided"] = [
        person("Dmitri Dvořák", "dmitri@example.org", pattern="you_initiate",
               threads_started_by_you=12, threads_started_by_them=0, replies_from_you=0,
               replies_from_them=1, reason="you started 12 of 12 threads this year; they "
                                          "answered 1"),
        person("Recruiter Bot-ish Person", "jobs@agency.example", pattern="they_initiate",
               threads_started_by_you=0, threads_started_by_them=9, replies_from_you=0,
               replies_from_them=0, reason="they started 9 of 9 threads this year; you "
                                          "answered none"),
    ]
    doc["changed"] = [
        person("Priya Raman", "priya@newco.example", signal="new_address",
               previous="priya@oldco.example", current="priya@newco.example",
               since="2026-05-10", reason="writes from priya@newco.example since 2026-05-10; "
                                         "priya@oldco.example went silent"),
        person("Ivo Novak", "ivo@example.org", signal="bounce", previous="ivo@gone.example",
               current=None, since="2026-09-03",
               reason="mail to ivo@gone.example bounced on 2026-09-03"),
    ]
    doc["socialize"] = {"meetings": 236, "in_person": 88, "online": 131, "email_only": [
        person("Kirsten Lindqvist", "kirsten@example.org",
               reason="one of your closest ties; 41 emails this year and no meeting"),
        person("Lars Eriksen", "lars@example.org",
               reason="one of your closest ties; 17 emails this year and no meeting"),
    ]}
    doc["connect"] = {
        "new_ties": [person("Rosa Vidal", "rosa@example.org", first_contact="2026-08-14",
                            reason="first contact on 2026-08-14"),
                     person("Søren Kjær", "soren@example.org", first_contact="2026-10-02",
                            reason="first contact on 2026-10-02")],
        "introductions": [{"date": "2026-10-02",
                           "between": ["rosa@example.org", "soren@example.org"]},
                          {"date": "2026-09-12",
                           "between": ["ana@example.org", "ben@example.org", HOSTILE]}],
    }
    doc["respect"] = {"ignored": 3, "draining": [
        person("Jamal Wright", "jamal@example.org",
               reason="you sent 31 of 38 messages and started 11 of 13 threads this year")]}
    if with_month:
        doc["month"] = {"month": "2026-10", "new_ties": doc["connect"]["new_ties"][1:],
                        "newly_neglected": doc["neglected"][1:2],
                        "revived": [person("Mei Chen", "mei@example.org",
                                           reason="usually every 3 weeks; 3 months since")]}
    volume = []
    for i in range(12):
        year, month = (2025, 11 + i) if i < 2 else (2026, i - 1)
        volume.append((f"{year:04d}-{month:02d}", 60 + (i * 37) % 45, 85 + (i * 23) % 50,
                       14 + (i * 11) % 13))
    del volume[7]  # a month with no contact at all: shows as a gap, not a missing label
    return Report(doc, volume, ties)


def test_self_contained_no_external_resources() -> None:
    page = to_html(realistic_report())
    refs = re.findall(r"""\b(?:src|href|action|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)""",
                      page, flags=re.I)
    assert refs, "the page has in-page links (the section index)"
    assert all(ref.startswith("#") for ref in refs), [r for r in refs if not r.startswith("#")]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "@import" not in page
    assert not re.search(r"url\(\s*(?!#)", page), "url(...) may only point inside the page"
    for tag in ("<script", "<link", "<iframe", "<img", "<object", "<embed", "<base"):
        assert tag not in page.lower()
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing


def test_hostile_names_are_escaped_everywhere() -> None:
    page = to_html(realistic_report())
    assert "<script" not in page.lower()
    escaped = html.escape(HOSTILE)
    assert escaped in page  # tables, month section, introductions
    assert "evil&amp;co@hostile.example" in page
    assert "evil&co@" not in page
    # In the chart the label is shortened, and matplotlib's SVG writer escaped it.
    assert "&lt;script&gt;alert(" in page
    # Dollar signs are text, not a mathtext formula.
    assert "Dollar $x^{$ Bill" in page


def test_every_section_month_and_chart_appear() -> None:
    report = realistic_report()
    page = to_html(report)
    for title, practice, _, _ in SECTIONS:
        assert html.escape(title) in page
        assert practice in page
    assert "October 2026: what changed" in page
    assert "Newly neglected" in page and "Revived" in page and "Mei Chen" in page
    assert page.count("<svg") == 3
    assert page.count("</svg>") == 3
    assert "Nobody." not in page  # every section has entries here
    # pattern and signal values read as words
    assert "you start" in page and "new address" in page and "bounced" in page


def test_ids_are_unique_across_the_three_charts() -> None:
    page = to_html(realistic_report())
    ids = Counter(re.findall(r'\sid="([^"]+)"', page))
    assert [i for i, n in ids.items() if n > 1] == []
    for ref in re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', page):
        target = ref[0] or ref[1]
        assert target in ids, f"dangling reference #{target}"


def test_output_is_deterministic() -> None:
    assert to_html(realistic_report()) == to_html(realistic_report())


def test_empty_report_renders_with_no_data_notes() -> None:
    report = Report(empty_doc(), [], [])
    page = to_html(report)
    assert page.count("Nobody.") == len(SECTIONS)
    assert "<svg" not in page
    assert page.count('class="nodata"') == 3
    assert "what changed" not in page


def test_empty_month_and_edge_data() -> None:
    doc = empty_doc()
    doc["month"] = {"month": "2026-10", "new_ties": [], "newly_neglected": [], "revived": []}
    # months with no contact at all, and ties that never started a thread
    volume = [("2026-01", 0, 0, 0), ("2026-03", 0, 0, 0)]
    ties = [tie(1, "Only Meetings", "m@example.org", by_me=0, by_them=0, meetings=4)]
    page = to_html(Report(doc, volume, ties))
    assert "October 2026: what changed" in page
    assert page.count("Nobody.") == len(SECTIONS) + 3
    assert page.count("<svg") == 2  # reciprocity and layers; the volume is all zero
    # a tie beyond the 150 layer gets its own column rather than vanishing
    many = [tie(rank, f"P{rank}", f"p{rank}@example.org", by_me=1, by_them=1)
            for rank in range(1, 160)]
    page = to_html(Report(empty_doc(), [("2026-05", 1, 0, 0)], many))
    assert page.count("<svg") == 3
    assert "Beyond" in page and "over 150" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian package: chromium); "
                           "the HTML report is not checked in a real browser")
def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(to_html(realistic_report()), encoding="utf-8")
    png = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1200,2000", page.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), f"no screenshot; chromium said:\n{result.stderr[-2000:]}"
    assert png.stat().st_size > 50_000, "the screenshot is suspiciously small"
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1200, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the page rendered (nearly) blank"
