"""The report on planted scenarios, through the real import and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import scenario
from tests.conftest import Run, data_path, write_config


def people_in(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Every list of people in the report, by section name, as sets of addresses."""
    lists = {
        "neglected": doc["neglected"], "one_sided": doc["one_sided"],
        "changed": doc["changed"], "email_only": doc["socialize"]["email_only"],
        "new_ties": doc["connect"]["new_ties"], "draining": doc["respect"]["draining"],
    }
    out = {name: {a for e in entries for a in e["addresses"]} for name, entries in lists.items()}
    out["introductions"] = {a for e in doc["connect"]["introductions"] for a in e["between"]}
    return out


def sections_of(doc: dict[str, Any], address: str) -> set[str]:
    return {name for name, addresses in people_in(doc).items() if address in addresses}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The scenario imported through the real CLI; returns (config, database)."""
    root = tmp_path_factory.mktemp("scenario")
    maildir, calendar = scenario.build(root)
    cfg = write_config(root / "config.toml",
                       f'[netaudit]\ndatabase = "{root / "n.duckdb"}"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\nhistory_start = 2024-01-01\n')
    env = {**os.environ, "HOME": str(root)}
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "import",
                           str(maildir), str(calendar)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return cfg, root / "n.duckdb"


@pytest.fixture(scope="module")
def report_doc(planted: tuple[Path, Path]) -> dict[str, Any]:
    cfg, _ = planted
    proc = subprocess.run([sys.executable, "-m", "netaudit", "--config", str(cfg), "report",
                           "--as-of", scenario.AS_OF.isoformat(), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_shape(report_doc: dict[str, Any]) -> None:
    assert report_doc["netaudit_report"] == 1
    assert report_doc["as_of"] == "2026-06-30"
    assert report_doc["window"] == {"start": "2025-06-30", "end": "2026-06-30"}
    assert set(report_doc) >= {"summary", "neglected", "one_sided", "changed", "socialize",
                               "connect", "respect"}
    assert set(report_doc["summary"]) == {"people", "ties", "messages", "meetings",
                                          "automated_excluded"}
    for entry in report_doc["neglected"]:
        assert set(entry) >= {"person", "email", "addresses", "last_contact", "days_since",
                              "usual_gap_days", "overdue_factor", "reason"}


def test_steady_tie_is_in_no_list(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.STEADY[0]) == set()


def test_quiet_tie_is_neglected(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.QUIET[0]) == {"neglected"}
    entry = next(e for e in report_doc["neglected"] if e["email"] == scenario.QUIET[0])
    assert entry["person"] == "Quinn Quiet"
    # every 14 days from 2024-06-01: the last exchange is 2025-11-29, answered at 13:00
    assert entry["last_contact"] == "2025-11-29"
    assert entry["days_since"] == 213  # to the end of 2026-06-30
    assert entry["usual_gap_days"] == 14.0
    assert entry["overdue_factor"] == 15.2
    assert entry["reason"] == "usually every 2 weeks; 7 months since your last contact"


def test_one_sided_both_ways(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.UNANSWERED[0]) == {"one_sided"}
    assert sections_of(report_doc, scenario.PUSHY[0]) == {"one_sided"}
    by_email = {e["email"]: e for e in report_doc["one_sided"]}
    uma, pat = by_email[scenario.UNANSWERED[0]], by_email[scenario.PUSHY[0]]
    assert (uma["pattern"], uma["threads_started_by_you"], uma["replies_from_them"]) == \
        ("you_initiate", 11, 0)
    assert (pat["pattern"], pat["threads_started_by_them"], pat["replies_from_you"]) == \
        ("they_initiate", 13, 0)


def test_moved_person_is_changed_and_not_neglected(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.MOVED_NEW[0]) == {"changed"}
    entry = next(e for e in report_doc["changed"] if e["signal"] == "new_address")
    assert (entry["previous"], entry["current"], entry["since"]) == \
        ("maria@oldco.example", "maria@newco.example", "2026-01-15")
    assert entry["email"] == "maria@newco.example"
    assert sorted(entry["addresses"]) == ["maria@newco.example", "maria@oldco.example"]


def test_bounced_address_is_changed(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.BOUNCED[0]) == {"changed"}
    entry = next(e for e in report_doc["changed"] if e["signal"] == "bounce")
    assert (entry["previous"], entry["since"]) == ("bob@gone.example", "2026-04-10")


def test_bulk_senders_are_in_no_list(report_doc: dict[str, Any]) -> None:
    everyone = set().union(*people_in(report_doc).values())
    assert not everyone & set(scenario.BULK)
    assert report_doc["summary"]["automated_excluded"] == 3 * 78 + 1  # weekly x3, one DSN


def test_meeting_only_contact_is_a_tie_counted_in_socialize(report_doc: dict[str, Any]) -> None:
    assert sections_of(report_doc, scenario.MEETING_ONLY[0]) == set()
    social = report_doc["socialize"]
    # 40 weekly meetings from 2025-09-01; all in the window, all in person
    assert (social["meetings"], social["in_person"], social["online"]) == (40, 40, 0)
    assert report_doc["summary"]["ties"] == 7  # Sam, Quinn, Uma, Pat, Maria, Bob, Mia


def test_as_of_gives_the_report_of_that_day(planted: tuple[Path, Path], run: Run) -> None:
    cfg, _ = planted
    earlier = json.loads(run("--config", str(cfg), "report", "--as-of", "2025-12-20",
                             "--format", "json", check=True).stdout)
    assert earlier["as_of"] == "2025-12-20"
    assert sections_of(earlier, scenario.QUIET[0]) == set()  # quiet only since 1 December
    assert scenario.MOVED_NEW[0] not in people_in(earlier)["changed"]  # moves in January
    assert all(e["signal"] != "bounce" for e in earlier["changed"])
    assert earlier["socialize"]["meetings"] == 16  # weekly from 1 Sep to 15 Dec
    again = json.loads(run("--config", str(cfg), "report", "--as-of", "2025-12-20",
                           "--format", "json", check=True).stdout)
    assert again == earlier


def test_month_report_says_what_changed(planted: tuple[Path, Path], run: Run) -> None:
    cfg, _ = planted
    doc = json.loads(run("--config", str(cfg), "report", "--month", "2026-01", "--format",
                         "json", check=True).stdout)
    assert doc["as_of"] == "2026-01-31"
    assert doc["month"]["month"] == "2026-01"
    # Quinn's last contact was 2025-11-29: 32 days of silence at the end of December (not
    # yet past 45), 63 at the end of January.
    assert [e["email"] for e in doc["month"]["newly_neglected"]] == [scenario.QUIET[0]]
    assert doc["month"]["new_ties"] == []  # a new address of a known person is no new tie
    feb = json.loads(run("--config", str(cfg), "report", "--month", "2026-02", "--format",
                         "json", check=True).stdout)
    assert feb["month"]["newly_neglected"] == [] and feb["month"]["revived"] == []
    assert [e["email"] for e in feb["neglected"]] == [scenario.QUIET[0]]


def test_text_and_markdown_fit(planted: tuple[Path, Path], run: Run) -> None:
    cfg, _ = planted
    text = run("--config", str(cfg), "report", "--as-of", "2026-06-30", check=True).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Quinn Quiet" in text and "Neglected ties (ENGAGE)" in text
    md = run("--config", str(cfg), "report", "--as-of", "2026-06-30", "--format", "markdown",
             check=True).stdout
    assert md.startswith("# netaudit report, 2026-06-30")
    assert "| Quinn Quiet | 2025-11-29 | usually every 2 weeks" in md


def test_report_output_file_is_private(planted: tuple[Path, Path], run: Run,
                                       tmp_path: Path) -> None:
    cfg, _ = planted
    out = tmp_path / "reports" / "2026-06.json"
    run("--config", str(cfg), "report", "--month", "2026-06", "--format", "json",
        "--output", str(out), check=True)
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_text())["as_of"] == "2026-06-30"


def test_public_views_over_sql(planted: tuple[Path, Path], run: Run) -> None:
    cfg, _ = planted
    ties = json.loads(run("--config", str(cfg), "sql", "--format", "json",
                          "SELECT * FROM ties ORDER BY email", check=True).stdout)
    assert [t["email"] for t in ties] == ["bob@gone.example", "maria@newco.example",
                                          "mia@meet.example", "pat@pushy.example",
                                          "quinn@quiet.example", "sam@steady.example",
                                          "uma@far.example"]
    assert set(ties[0]) == {"person_id", "name", "email", "first_contact", "last_contact",
                            "emails_sent", "emails_received", "meetings",
                            "threads_started_by_me", "threads_started_by_them",
                            "replies_by_me", "replies_by_them", "usual_gap_days"}
    sam = next(t for t in ties if t["email"] == "sam@steady.example")
    assert sam["usual_gap_days"] == 14.0 and sam["meetings"] == 0
    assert sam["threads_started_by_me"] == sam["threads_started_by_them"] == 26
    people = json.loads(run("--config", str(cfg), "sql", "--format", "json",
                            "SELECT * FROM people WHERE email = 'maria@newco.example'",
                            check=True).stdout)
    assert people[0]["addresses"] == ["maria@newco.example", "maria@oldco.example"]
    assert people[0]["name"] == "Maria Moved" and people[0]["is_automated"] is False
    kinds = json.loads(run("--config", str(cfg), "sql", "--format", "json",
                           "SELECT channel, direction, count(*) AS n FROM interactions "
                           "GROUP BY ALL ORDER BY ALL", check=True).stdout)
    assert {(k["channel"], k["direction"]) for k in kinds} == {
        ("email", "sent"), ("email", "received"), ("meeting", "met")}
    bulk = run("--config", str(cfg), "sql", "--format", "csv",
               "SELECT count(*) AS n FROM interactions WHERE email LIKE '%shop.example'",
               check=True).stdout
    assert bulk == "n\n0\n"


def test_enron_gives_a_report(run: Run, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{tmp_path}/n.duckdb"\n'
                       'me = ["david.delainey@enron.com"]\n')
    run("--config", str(cfg), "import", str(data_path("enron")), check=True)
    doc = json.loads(run("--config", str(cfg), "report", "--as-of", "2002-12-31",
                         "--format", "json", check=True).stdout)
    assert doc["summary"]["messages"] == 1000  # dated 2000-04-12 to 2002-06-25
    assert doc["summary"]["people"] > 100
    text = run("--config", str(cfg), "report", "--as-of", "2002-01-31", check=True).stdout
    assert "netaudit report, 2002-01-31" in text


def test_documented_example_queries_run(planted: tuple[Path, Path], run: Run) -> None:
    """docs/schema.md's example queries work read-only on a real database."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "schema.md").read_text()
    block = text.split("### Example queries", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    queries = [q.strip() for q in block.split(";") if q.strip()]
    assert len(queries) == 5
    cfg, _ = planted
    results = []
    for query in queries:
        proc = run("--config", str(cfg), "sql", "--format", "json", "--", query)
        assert proc.returncode == 0, (query, proc.stderr)
        results.append(json.loads(proc.stdout))
    assert any(r["email"] == scenario.STEADY[0] for r in results[0])
    assert [r["previous"] for r in results[4]] == [scenario.MOVED_OLD[0]]


def test_new_ties_and_introductions(tmp_path: Path, run: Run) -> None:
    """Nina is new this month; then I write to Sam and Nina together, who never shared a
    thread: an introduction. Sam and Quinn did share one, so writing to both is not."""
    import datetime as dt

    box = scenario.Mailbox(tmp_path / "Maildir")
    for i, when in enumerate(scenario.days(dt.date(2025, 6, 1), dt.date(2026, 6, 25), 14)):
        box.exchange(scenario.STEADY, when, i_start=i % 2 == 0)
    nina = ("nina@new.example", "Nina New")
    for i, when in enumerate(scenario.days(dt.date(2026, 6, 12), dt.date(2026, 6, 26), 7)):
        box.exchange(nina, when, i_start=i % 2 == 0)
    me = (scenario.ME, scenario.ME_NAME)
    box.write(sender=me, to=[scenario.STEADY, scenario.QUIET],
              when=dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC), subject="Both of you")
    box.write(sender=me, to=[scenario.STEADY, nina],
              when=dt.datetime(2026, 6, 27, 9, tzinfo=dt.UTC), subject="Meet Nina")
    box.write(sender=me, to=[scenario.STEADY, scenario.QUIET],
              when=dt.datetime(2026, 6, 28, 9, tzinfo=dt.UTC), subject="Again, both")
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{tmp_path}/n.duckdb"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\n')
    run("--config", str(cfg), "import", str(box.root), check=True)
    doc = json.loads(run("--config", str(cfg), "report", "--as-of", "2026-06-30",
                         "--format", "json", check=True).stdout)
    assert [e["email"] for e in doc["connect"]["new_ties"]] == [nina[0]]
    assert doc["connect"]["new_ties"][0]["first_contact"] == "2026-06-12"
    assert [(e["date"], e["between"], e["people"]) for e in doc["connect"]["introductions"]] \
        == [("2026-06-27", [nina[0], scenario.STEADY[0]], ["Nina New", "Sam Steady"])]


def test_two_people_of_one_name_are_told_apart(tmp_path: Path, run: Run) -> None:
    """Two different Alex Kims, both weekly from January to April and silent since: two
    neglected ties, each shown with its address (one name alone would not say which)."""
    import datetime as dt

    box = scenario.Mailbox(tmp_path / "Maildir")
    first, second = ("alex@one.example", "Alex Kim"), ("alex@two.example", "Alex Kim")
    for i, when in enumerate(scenario.days(dt.date(2026, 1, 5), dt.date(2026, 4, 20), 7)):
        box.exchange(first, when, i_start=i % 2 == 0)
        box.exchange(second, when + dt.timedelta(hours=1), i_start=i % 2 == 1)
    cfg = write_config(tmp_path / "c.toml", f'[netaudit]\ndatabase = "{tmp_path}/n.duckdb"\n'
                       f'me = ["{scenario.ME}"]\ntimezone = "UTC"\n')
    run("--config", str(cfg), "import", str(box.root), check=True)
    doc = json.loads(run("--config", str(cfg), "report", "--as-of", "2026-06-30",
                         "--format", "json", check=True).stdout)
    assert sorted(e["person"] for e in doc["neglected"]) == [
        "Alex Kim <alex@one.example>", "Alex Kim <alex@two.example>"]
