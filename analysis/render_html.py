"""The report as one self-contained HTML file: every section as a table, and three charts.

The page loads nothing: no script, no font, no image, no style sheet from anywhere. A
Content-Security-Policy (``default-src 'none'``) in the page makes a browser refuse any fetch
even if something slipped in, and there is no JavaScript at all. Styles are inline, the layout
works from a phone to a laptop (tables turn into stacked cards on narrow screens), and a print
style sheet gives clean paper.

Charts: matplotlib, rendered to SVG and inlined, rather than plotly with its JavaScript inlined.

* Small and self-contained: each chart is an inline ``<svg>`` of a few tens of kilobytes;
  plotly would put megabytes of JavaScript into every monthly report, and a page that needs a
  script to show a bar chart does not print well, shows nothing with scripts off, and gives a
  page full of names from mail headers a script engine to attack.
* Vector: sharp at any zoom, on a phone and on paper, and the text in it can be searched.
* No pyplot: figures are ``matplotlib.figure.Figure`` objects drawn by the SVG canvas, so no
  GUI backend is ever selected (the head-less guarantee the Agg backend gives), no global figure
  registry grows in a long-running process, and the process-wide backend is left alone. All
  settings live in an ``rc_context`` around each chart, never in the global rcParams.
* ``svg.fonttype = 'none'``, deliberately: text stays ``<text>``, not glyph outlines. Names in
  mail headers come in every script, and the browser's font fallback renders those that
  DejaVu Sans (the font matplotlib lays out with) lacks; the files are several times smaller;
  and there are no per-glyph ``<defs>`` whose ids would repeat in all three charts. The cost,
  slightly different text widths where DejaVu Sans is not installed, is absorbed by margins.
* ``svg.hashsalt`` fixed per chart: the ids matplotlib hashes (clip paths, markers) are the same
  on every run, so the same report gives the same bytes. matplotlib also numbers its groups
  (``figure_1``, ``axes_1``...) the same in every figure, and three inline SVGs share the page's
  one id space, so every ``id`` and every reference to one is prefixed with the chart's name.
* ``text.parse_math = False``: a name such as ``$x^{$`` is text, not a mathtext formula (which
  would render as math, or fail to draw).
* The SVG's XML prologue, DOCTYPE and RDF ``<metadata>`` are dropped (``Date`` is never
  written): nothing in the file points anywhere, and output is reproducible.

Every string from the data is escaped with ``html.escape`` in the HTML (names come from mail
headers: hostile input); in the charts matplotlib's SVG writer escapes text, after control
characters are removed here.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from analysis.render import SECTIONS, _cell, _get, _headline
from analysis.report import Report, Tie

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RECIPROCITY_TOP = 20
LABEL_MAX = 24
# Every chart is drawn this wide (inches; 96 px each), so that its text is readable both in
# half of a laptop page (the charts sit in two columns there) and across a phone.
CHART_WIDTH = 4.6

# Okabe-Ito, safe for colour-blind readers. Blue is always "you", orange always "them".
YOU, THEM, MET, EMAIL_ONLY, INK, GRID = \
    "#0072B2", "#E69F00", "#009E73", "#56B4E9", "#333333", "#e3e6e8"

RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#8a949c",
    "axes.labelcolor": INK,
    "axes.axisbelow": True,
    "xtick.color": INK,
    "ytick.color": INK,
    "text.color": INK,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}

# What each section answers, in one line (keyed by the section's path in the document).
QUESTIONS: dict[tuple[str, ...], str] = {
    ("neglected",): "Real ties gone quiet for far longer than their own usual rhythm.",
    ("one_sided",): "Over the last year one side starts almost every thread and the other "
                    "rarely answers.",
    ("changed",): "A new address at another domain, or mail that bounced: update your address "
                  "book before you write.",
    ("socialize", "email_only"): "Among your closest ties, those you only ever email and "
                                 "never meet.",
    ("connect", "new_ties"): "People with whom a two-way exchange or a meeting began recently.",
    ("connect", "introductions"): "Messages in which you brought together people who had "
                                  "never been in a thread together.",
    ("respect", "draining"): "They do answer, but you send most of the messages and start "
                             "most of the threads.",
}

# Enumerated values in the document, as a person reads them.
VALUE_LABELS = {"you_initiate": "you start", "they_initiate": "they start",
                "new_address": "new address", "bounce": "bounced"}

# Cells of sentences and lists may break anywhere; names and addresses only where they would
# overflow (so a column is as wide as its longest address); other values stay on one line.
TEXT_FIELDS = {"reason", "between"}
NAME_FIELDS = {"person", "email", "previous", "current"}

MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")


def _esc(value: Any) -> str:
    """Text for HTML: control characters dropped, then escaped (quotes too, for attributes)."""
    return html.escape(_CONTROL.sub("", "" if value is None else str(value)))


def _plain(value: Any, limit: int = LABEL_MAX) -> str:
    """Text for a chart label: one line, no control characters, at most ``limit`` long."""
    text = _WHITESPACE.sub(" ", _CONTROL.sub("", "" if value is None else str(value))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# Charts


def _svg(name: str, label: str, size: tuple[float, float], draw: Callable[[Figure], None]
         ) -> str:
    """Draw a figure and return it as an ``<svg>`` element ready to inline in the page."""
    import matplotlib
    from matplotlib.figure import Figure

    rc: dict[Any, Any] = {**RC, "svg.hashsalt": f"netaudit-{name}"}
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return _inline_svg(buf.getvalue(), f"svg-{name}", label)


_TAG = re.compile(r"<[^<>]+>")
_ID = re.compile(r'(?<=\s)id="([^"]+)"')
_HREF = re.compile(r'((?:xlink:)?href=")#([^"]+)"')
_URL = re.compile(r"url\(#([^)]+)\)")


def _inline_svg(svg: str, prefix: str, label: str) -> str:
    """matplotlib's SVG document as an element of an HTML page.

    Only tags are rewritten, never text: matplotlib escapes ``<`` and ``>`` in text and in
    attribute values, so a tag cannot occur inside either, and a name reading ``id="x"`` in a
    chart label stays as it was.
    """
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    # The page's style sheet carries matplotlib's default line joins, scoped to the charts.
    svg = re.sub(r'\s*<style type="text/css">[^<]*</style>', "", svg, count=1)

    def rewrite(match: re.Match[str]) -> str:
        tag = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', match.group(0))
        tag = _HREF.sub(lambda m: f'{m.group(1)}#{prefix}-{m.group(2)}"', tag)
        return _URL.sub(lambda m: f"url(#{prefix}-{m.group(1)})", tag)

    svg = _TAG.sub(rewrite, svg)
    # A fixed size in points would not shrink on a phone: the viewBox alone sets the shape.
    return re.sub(r'<svg ([^>]*?)\s*width="[^"]*" height="[^"]*"',
                  lambda m: f'<svg role="img" aria-label="{_esc(label)}" {m.group(1)}',
                  svg, count=1)


def _months(volume: Sequence[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    """Every month from the first to the last, with zeros where nothing happened."""
    known: dict[str, tuple[int, int, int]] = {}
    for label, sent, received, met in volume:
        try:
            dt.date.fromisoformat(f"{label}-01")
        except (TypeError, ValueError):
            continue
        known[label] = (int(sent), int(received), int(met))
    if not known:
        return []
    first, last = min(known), max(known)
    year, month = int(first[:4]), int(first[5:7])
    out: list[tuple[str, int, int, int]] = []
    while f"{year:04d}-{month:02d}" <= last:
        key = f"{year:04d}-{month:02d}"
        out.append((key, *known.get(key, (0, 0, 0))))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _volume_chart(volume: Sequence[tuple[str, int, int, int]]) -> str | None:
    months = _months(volume)
    if not months or not any(sum(row[1:]) for row in months):
        return None

    def draw(fig: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = fig.add_subplot()
        n = len(months)
        width = 0.27
        series = (("Emails sent", YOU, 1), ("Emails received", THEM, 2), ("Meetings", MET, 3))
        for offset, (label, color, column) in zip((-width, 0.0, width), series, strict=True):
            ax.bar([i + offset for i in range(n)], [row[column] for row in months], width,
                   label=label, color=color)
        step = max(1, -(-n // 12))  # at most 12 month labels
        labels = []
        for i, (key, *_) in enumerate(months):
            name = MONTH_NAMES[int(key[5:7]) - 1][:3]
            if i % step:
                labels.append("")
            elif i == 0 or key.endswith("-01") or (step > 1 and i < step * 2):
                labels.append(f"{name}\n{key[:4]}")
            else:
                labels.append(name)
        ax.set_xticks(range(n), labels, fontsize=9.5)
        ax.set_xlim(-0.6, n - 0.4)
        ax.tick_params(axis="x", length=0)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_ylabel("Interactions")
        ax.grid(axis="y", color=GRID, linewidth=0.8)
        fig.legend(loc="outside upper left", ncols=3)

    return _svg("volume", "Contact volume per month: emails sent, emails received, meetings",
                (CHART_WIDTH, 3.2), draw)


def _reciprocity_chart(ties: Sequence[Tie]) -> str | None:
    top = sorted(ties, key=lambda t: -(t.strength or 0))[:RECIPROCITY_TOP]
    if not top:
        return None
    mine = [int(t.threads_by_me or 0) for t in top]
    theirs = [int(t.threads_by_them or 0) for t in top]
    names = [_plain(t.name or t.email) or "(no name)" for t in top]

    def draw(fig: Figure) -> None:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax = fig.add_subplot()
        rows = range(len(top))
        ax.barh(rows, [-m for m in mine], 0.7, color=YOU, label="Started by you")
        ax.barh(rows, theirs, 0.7, color=THEM, label="Started by them")
        most = max([*mine, *theirs, 1])
        pad = most * 0.04
        for row, (m, t) in enumerate(zip(mine, theirs, strict=True)):
            if not m and not t:  # met, or wrote only within threads neither side started
                ax.text(pad, row, "no threads", va="center", ha="left", fontsize=9.5,
                        color="#6b7680", fontstyle="italic")
                continue
            ax.text(-m - pad, row, str(m), va="center", ha="right", fontsize=9.5, color=INK)
            ax.text(t + pad, row, str(t), va="center", ha="left", fontsize=9.5, color=INK)
        ax.axvline(0, color="#8a949c", linewidth=0.8)
        ax.set_xlim(-most * 1.2, most * 1.2)
        ax.set_yticks(list(rows), names)
        ax.set_ylim(len(top) - 0.4, -0.6)  # strongest at the top
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=True,
                                               symmetric=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
        ax.set_xlabel("Threads started")
        ax.grid(axis="x", color=GRID, linewidth=0.8)
        ax.spines["left"].set_visible(False)
        fig.legend(loc="outside upper left", ncols=2)

    return _svg("reciprocity",
                "Reciprocity per tie: threads started by you and by them, strongest ties first",
                (CHART_WIDTH, 1.2 + 0.29 * len(top)), draw)


LAYER_BANDS = ((5, "Layer 5", "ranks 1–5", 5), (15, "Layer 15", "6–15", 10),
               (50, "Layer 50", "16–50", 35), (150, "Layer 150", "51–150", 100))


def _layers_chart(ties: Sequence[Tie]) -> str | None:
    if not ties:
        return None
    bands: list[tuple[int | None, str, str, int | None]] = list(LAYER_BANDS)
    if any(t.layer not in {b[0] for b in LAYER_BANDS} for t in ties):
        bands.append((None, "Beyond", "over 150", None))
    met = [sum(1 for t in ties if t.layer == band[0] and t.meetings) for band in bands]
    email = [sum(1 for t in ties if t.layer == band[0] and not t.meetings) for band in bands]

    def draw(fig: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = fig.add_subplot()
        cols = range(len(bands))
        ax.bar(cols, met, 0.6, color=MET, label="Met at least once")
        ax.bar(cols, email, 0.6, bottom=met, color=EMAIL_ONLY, label="Email only")
        top = max([m + e for m, e in zip(met, email, strict=True)] + [1])
        for col, (m, e, band) in enumerate(zip(met, email, bands, strict=True)):
            note = f"{m + e} of {band[3]}" if band[3] else str(m + e)
            ax.text(col, m + e + top * 0.03, note, ha="center", va="bottom", fontsize=10)
        ax.set_xticks(list(cols), [f"{b[1]}\n{b[2]}" for b in bands], fontsize=10)
        ax.tick_params(axis="x", length=0)
        ax.set_ylim(0, top * 1.2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("Ties")
        ax.grid(axis="y", color=GRID, linewidth=0.8)
        fig.legend(loc="outside upper left", ncols=2)

    return _svg("layers", "Ties in each Dunbar-style layer, split by whether you ever met",
                (CHART_WIDTH, 3.2), draw)


def _strongest(report: Report) -> str:
    n = min(len(report.ties), RECIPROCITY_TOP)
    return f"your {n} strongest ties" if n > 1 else "your strongest tie"


# (page anchor, title, chart or None, caption under a chart, note in place of an empty one)
CHARTS: list[tuple[str, str, Callable[[Report], str | None], Callable[[Report], str], str]] = [
    ("chart-volume", "Contact volume per month",
     lambda r: _volume_chart(r.monthly_volume),
     lambda r: "Emails you sent and received and meetings you had, per month over the "
               "report's year. A message or meeting counts once for each person in it; "
               "automated mail is not counted.",
     "No contact in the report's year yet: nothing to chart."),
    ("chart-reciprocity", "Who starts the conversation",
     lambda r: _reciprocity_chart(r.ties),
     lambda r: f"Threads you started (left) against threads they started (right), for "
               f"{_strongest(r)}, strongest at the top.",
     "No ties yet: nothing to chart."),
    ("chart-layers", "Layers of your network",
     lambda r: _layers_chart(r.ties),
     lambda r: "Ties ranked by strength (recent, two-way contact and meetings weigh most) "
               "and grouped Dunbar-style: the closest 5, then up to 15, 50 and 150.",
     "No ties yet: nothing to chart."),
]


# ---------------------------------------------------------------------------------------------
# Page


def _value(row: dict[str, Any], key: str) -> str:
    if key == "person":
        name = _cell(row.get("person")) or _cell(row.get("email"))
        email = _cell(row.get("email"))
        if email and email.lower() != name.lower():
            return f'{_esc(name)}<span class="email">{_esc(email)}</span>'
        return _esc(name)
    value = row.get(key)
    if isinstance(value, str) and value in VALUE_LABELS:
        return _esc(VALUE_LABELS[value])
    return _esc(_cell(value))


def _cell_class(key: str) -> str:
    return "text" if key in TEXT_FIELDS else "name" if key in NAME_FIELDS else "short"


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "".join(f'<th scope="col">{_esc(header)}</th>' for header, _ in columns)
    body = "\n".join(
        "<tr>" + "".join(f'<td class="{_cell_class(key)}" data-label="{_esc(header)}">'
                         f"{_value(row, key)}</td>" for header, key in columns) + "</tr>"
        for row in rows)
    return (f'<div class="table"><table>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table></div>")


def _anchor(path: tuple[str, ...]) -> str:
    return "s-" + "-".join(re.sub(r"[^a-z0-9]+", "-", part.lower()) for part in path)


def _month_title(month: Any) -> str:
    try:
        first = dt.date.fromisoformat(f"{month}-01")
    except (TypeError, ValueError):
        return f"{_esc(month)}: what changed"
    return f"{MONTH_NAMES[first.month - 1]} {first.year}: what changed"


def _people_list(entries: Any, with_reason: bool) -> str:
    rows = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    if not rows:
        return '<p class="nobody">Nobody.</p>'
    items = []
    for entry in rows:
        reason = entry.get("reason") if with_reason else None
        items.append(f"<li>{_value(entry, 'person')}"
                     + (f'<span class="reason">{_esc(reason)}</span>' if reason else "")
                     + "</li>")
    return '<ul class="people">' + "".join(items) + "</ul>"


def _month_section(month: dict[str, Any]) -> str:
    parts = [f'<section id="s-month" class="month">\n<h2>{_month_title(month.get("month"))}</h2>',
             '<div class="month-grid">']
    for key, title, with_reason in (("new_ties", "New ties", True),
                                    ("newly_neglected", "Newly neglected", True),
                                    ("revived", "Revived", False)):
        parts.append(f"<div><h3>{title}</h3>{_people_list(month.get(key), with_reason)}</div>")
    parts.append("</div>\n</section>")
    return "\n".join(parts)


def _stats(doc: dict[str, Any]) -> str:
    summary, soc = doc.get("summary", {}), doc.get("socialize", {})
    tiles = [("ties", summary.get("ties", 0)), ("people", summary.get("people", 0)),
             ("messages", summary.get("messages", 0)), ("meetings", summary.get("meetings", 0)),
             ("in person", soc.get("in_person", 0)), ("online", soc.get("online", 0))]
    cells = "".join(
        f'<div class="stat"><b>{_esc(f"{v:,}" if isinstance(v, int) else v)}</b>{_esc(k)}</div>'
        for k, v in tiles)
    return f'<div class="stats">{cells}</div>'


def to_html(report: Report) -> str:
    """The whole report as one HTML document that needs nothing but itself."""
    doc = report.doc
    window = doc.get("window", {})
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">",
        '<meta name="referrer" content="no-referrer">',
        '<meta name="color-scheme" content="light">',
        '<meta name="generator" content="netaudit">',
        f"<title>netaudit report, {_esc(doc.get('as_of'))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>Your network, as of {_esc(doc.get('as_of'))}</h1>",
        f'<p class="sub">netaudit report · the year from {_esc(window.get("start"))} '
        f"to {_esc(window.get('end'))}</p>",
        _stats(doc),
        *(f'<p class="headline">{_esc(line)}</p>' for line in _headline(doc)),
        "</header>",
    ]

    nav = ['<nav aria-label="Sections"><ul>']
    if isinstance(doc.get("month"), dict):
        nav.append('<li><a href="#s-month">This month</a></li>')
    nav.append('<li><a href="#charts">Charts</a></li>')
    for title, _, path, _ in SECTIONS:
        nav.append(f'<li><a href="#{_anchor(path)}">{_esc(title)} '
                   f'<span class="n">{len(_get(doc, path))}</span></a></li>')
    nav.append("</ul></nav>")
    out.append("".join(nav))

    if isinstance(doc.get("month"), dict):
        out.append(_month_section(doc["month"]))

    out.append('<div id="charts">')
    for anchor, title, chart, caption, empty in CHARTS:
        svg = chart(report)
        body = (f'<div class="plot">{svg}</div>\n<figcaption>{_esc(caption(report))}'
                "</figcaption>" if svg else f'<p class="nodata">{_esc(empty)}</p>')
        out.append(f'<figure class="chart" id="{anchor}">\n<h2>{_esc(title)}</h2>\n{body}\n'
                   "</figure>")
    out.append("</div>")

    for title, practice, path, columns in SECTIONS:
        rows = [row for row in _get(doc, path) if isinstance(row, dict)]
        question = QUESTIONS.get(path)
        out.append(
            f'<section id="{_anchor(path)}">\n'
            f'<h2>{_esc(title)} <span class="practice">{_esc(practice)}</span></h2>\n'
            + (f'<p class="why">{_esc(question)}</p>\n' if question else "")
            + (_table(rows, columns) if rows else '<p class="nobody">Nobody.</p>')
            + "\n</section>")

    out += [
        "<footer>Made by netaudit from your own mail headers and calendars, on your own "
        "machine. This page loads nothing from the network; keep it as private as your mail."
        "</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(out)


CSS = """
:root { --ink: #1d2329; --muted: #5b6670; --line: #dde2e6; --bg: #f4f6f8; --card: #fff;
        --accent: #0072B2; }
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
h1 { font-size: 1.7rem; line-height: 1.2; margin: 0 0 .2rem; }
h2 { font-size: 1.2rem; line-height: 1.3; margin: 0 0 .3rem; }
h3 { font-size: 1rem; margin: 0 0 .3rem; }
.sub, .why, figcaption, footer { color: var(--muted); }
.sub { margin: 0 0 1rem; }
.headline { margin: .4rem 0 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(7.5rem, 1fr));
         gap: .6rem; margin: 0 0 .8rem; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: .5rem .75rem; color: var(--muted); font-size: .85rem; }
.stat b { display: block; color: var(--ink); font-size: 1.45rem; line-height: 1.2;
          font-variant-numeric: tabular-nums; }
nav ul { list-style: none; padding: 0; margin: 1.2rem 0; display: flex; flex-wrap: wrap;
         gap: .4rem; }
nav a { display: inline-block; padding: .2rem .6rem; border: 1px solid var(--line);
        border-radius: 999px; background: var(--card); color: var(--ink);
        text-decoration: none; font-size: .85rem; }
nav a:hover { border-color: var(--accent); }
nav .n { color: var(--muted); font-variant-numeric: tabular-nums; }
section, figure.chart { background: var(--card); border: 1px solid var(--line);
                        border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }
figure.chart { margin-left: 0; margin-right: 0; }
.practice { display: inline-block; vertical-align: middle; margin-left: .4rem;
            padding: .05rem .5rem; border-radius: 999px; background: #e8f1f8;
            color: #0b4f7c; font-size: .7rem; font-weight: 600; letter-spacing: .06em; }
.why { margin: 0 0 .6rem; font-size: .92rem; }
.nobody, .nodata { margin: .2rem 0; color: var(--muted); font-style: italic; }
.table { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: .93rem; }
th, td { text-align: left; vertical-align: top; padding: .45rem .6rem;
         border-bottom: 1px solid var(--line); overflow-wrap: break-word; }
td.text { overflow-wrap: anywhere; }
td.short { white-space: nowrap; }
th { color: var(--muted); font-size: .75rem; font-weight: 600; text-transform: uppercase;
     letter-spacing: .04em; border-bottom-width: 2px; }
tbody tr:nth-child(even) { background: #f9fafb; }
.email { display: block; color: var(--muted); font-size: .82em; }
.month-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr));
              gap: 1rem; }
.people { margin: 0; padding-left: 1.1rem; }
.people li { margin: 0 0 .35rem; }
.reason { display: block; color: var(--muted); font-size: .85em; }
#charts { display: grid; grid-template-columns: minmax(0, 1fr); gap: 0 1rem;
          align-items: start; }
.plot svg { display: block; width: 100%; height: auto; }
.plot svg * { stroke-linejoin: round; stroke-linecap: butt; }
figcaption { font-size: .88rem; margin-top: .4rem; }
@media (min-width: 50rem) {
  #charts { grid-template-columns: repeat(2, minmax(0, 1fr));
            grid-template-areas: "volume reciprocity" "layers reciprocity"; }
  #chart-volume { grid-area: volume; }
  #chart-layers { grid-area: layers; }
  #chart-reciprocity { grid-area: reciprocity; }
}
footer { font-size: .85rem; margin-top: 2rem; }
@media (max-width: 40rem) {
  main { padding: 1rem .6rem 2rem; }
  section, figure.chart { padding: .75rem; }
  .table { overflow-x: visible; }
  table, thead, tbody, tr, td { display: block; }
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden;
          clip: rect(0 0 0 0); }
  tr { padding: .5rem 0; border-bottom: 1px solid var(--line); }
  tbody tr:nth-child(even) { background: none; }
  td { border: 0; padding: .1rem 0; }
  td::before { content: attr(data-label); display: block; color: var(--muted);
               font-size: .7rem; font-weight: 600; text-transform: uppercase;
               letter-spacing: .04em; }
}
@media print {
  @page { margin: 15mm; }
  body { background: #fff; font-size: 10pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  .stats { grid-template-columns: repeat(6, minmax(0, 1fr)); }
  section, figure.chart { border: 0; border-radius: 0; padding: 0; margin: 0 0 6mm; }
  figure.chart, tr, .stat { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  thead { display: table-header-group; }
  .table { overflow: visible; }
  #charts { grid-template-columns: repeat(2, minmax(0, 1fr));
            grid-template-areas: "volume reciprocity" "layers reciprocity"; }
  #chart-volume { grid-area: volume; }
  #chart-layers { grid-area: layers; }
  #chart-reciprocity { grid-area: reciprocity; }
  tbody tr:nth-child(even) { background: none; }
}
"""
