"""The command line. Each command parses options and calls one function elsewhere.

``main`` is the one place where errors become a message and an exit code: 0 success, 1 a
source or command failed, 2 usage or config error. A traceback means a bug.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import click

from netaudit import __version__, config, db, logs
from netaudit.errors import EXIT_FAILED, EXIT_USAGE, NetauditError, SourceError, UsageError

log = logging.getLogger("netaudit")


@dataclass
class App:
    """Per-invocation state; the config is read once, when a command first needs it."""

    config_path: str | None
    _config: config.Config | None = field(default=None, repr=False)

    @property
    def config(self) -> config.Config:
        if self._config is None:
            self._config = config.load(self.config_path, warn=log.warning)
        return self._config


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="NETAUDIT_CONFIG",
              help="Config file (default: $XDG_CONFIG_HOME/netaudit/config.toml).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="netaudit")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Audit your network from your own mail and calendar, on your own machine.

    netaudit reads mail headers and calendars into a local DuckDB file and reports which
    ties you neglect, which are one-sided, who changed jobs, how much you meet in person
    and whom you newly connected. Nothing leaves this machine.

    \b
    Examples:
      netaudit init --me you@example.org     # a config, then add your sources to it
      netaudit import ~/Mail/archive.mbox    # or sync the sources of the config
      netaudit report                        # the last twelve months
    """
    logs.setup(verbose)
    db.set_wait_notice(lambda text: click.echo(text, err=True))
    ctx.obj = App(config_path)


@cli.command()
@click.option("--me", "me", multiple=True, metavar="ADDR", help="One of your addresses.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@pass_app
def init(app: App, me: tuple[str, ...], force: bool) -> None:
    """Write a starter config and create the database."""
    from netaudit import paths

    target = Path(app.config_path).expanduser() if app.config_path else paths.config_file()
    if target.exists() and not force:
        raise UsageError(f"{target} exists; edit it, or pass --force to overwrite it")
    paths.ensure_private_dir(target.parent)
    text = config.render_example(active_sources=False)
    if me:
        text = text.replace('me = ["robin@example.org", "robin@family.example"]',
                            "me = " + json.dumps([m.lower() for m in me]))
    else:
        text = text.replace('me = ["robin@example.org"', '# me = ["robin@example.org"')
    text = text.replace('database = "~/.local/share/netaudit/netaudit.duckdb"',
                        '# database = "~/.local/share/netaudit/netaudit.duckdb"')
    text = text.replace('timezone = "Europe/Berlin"', '# timezone = "Europe/Berlin"')
    text = text.replace("history_start = 2016-01-01", "# history_start = 2016-01-01")
    target.write_text(text)
    target.chmod(0o600)
    app.config_path = str(target)
    cfg = app.config
    with db.writer(cfg.database):
        pass
    click.echo(f"Wrote {target}\nCreated {cfg.database}\n"
               "Next: add your accounts to the config, then run `netaudit sync`.")


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--me", "me", multiple=True, metavar="ADDR",
              help="One of your addresses (repeatable); remembered for later reports.")
@pass_app
def import_(app: App, paths: tuple[Path, ...], me: tuple[str, ...]) -> None:
    """Import .eml files, Maildirs, mbox files, .ics files or vdirs once.

    Directories are walked: Maildir cur/ and new/ folders, Maildir++ subfolders, and files
    that look like mail. Importing the same input again adds nothing.

    \b
    Example:
      netaudit import ~/Mail/archive.mbox ~/calendar.ics --me you@example.org
    """
    from ingest import local
    from ingest.safe_files import path_text
    from ingest.store import record_source

    cfg = app.config
    bad = [m for m in me if "@" not in m]
    if bad:
        raise UsageError(f"--me {bad[0]!r} is not an email address")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {missing[0]}")
    my_addresses = local.prepare_me(cfg.database, cfg.me, me)
    imported = local.import_paths(cfg.database, "import", list(paths), me=my_addresses,
                                  keep_subject=cfg.store_subjects)
    result = imported.mail
    with db.writer(cfg.database) as con:
        con.execute("BEGIN TRANSACTION")
        record_source(con, "import", "import", summary=f"{result.seen:,} messages from "
                      f"{len(paths)} paths")
        con.execute("INSERT INTO imported_paths (path) SELECT p FROM unnest(?::VARCHAR[]) t(p) "
                    "WHERE p NOT IN (SELECT path FROM imported_paths)",
                    [[path_text(p.resolve()) for p in paths]])
        con.execute("COMMIT")
    _refresh_people(cfg)
    if result.seen or not imported.calendars:
        click.echo(f"Imported {result.seen:,} messages: {result.new:,} new, "
                   f"{result.duplicates:,} already stored, {result.quarantined:,} quarantined.")
    unread = imported.marks.summary("import") if imported.marks is not None else ""
    if unread:  # mbox files read before: only what was appended since is read
        click.echo(f"{unread}.")
    if imported.skipped:
        click.echo(f"Skipped {imported.skipped:,} files that are not mail "
                   f"(e.g. {imported.skipped_example}).")
    if imported.calendars:
        from ingest import calendars

        cal = calendars.import_files(cfg, imported.calendars, my_addresses)
        click.echo(f"Calendars: {cal.summary()}.")


@cli.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@pass_app
def sync(app: App, source_name: str | None) -> None:
    """Pull every configured source once; the others go on when one fails.

    \b
    Example:
      netaudit sync --source work
    """
    from ingest import sources

    cfg = app.config
    chosen = cfg.sources_named(source_name)
    if not chosen:
        raise UsageError("no sources configured; add [[imap]], [[maildir]], [[mbox]] or "
                         f"[[calendar]] tables to {cfg.path or 'your config'}")
    failed = sources.sync_all(cfg, chosen, echo=click.echo, then=_regroup(cfg))
    if failed:
        raise SourceError(f"{len(failed)} of {len(chosen)} sources failed: "
                          + ", ".join(failed))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Sources, sync positions, counts, last errors and quarantined inputs."""
    from netaudit import status as status_mod

    cfg = app.config
    with db.reader(cfg.database) as con:
        doc = status_mod.collect(con, cfg)
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    _print_status(doc)


def _print_status(doc: dict[str, Any]) -> None:
    click.echo(f"Database:    {doc['database']}")
    click.echo(f"Messages:    {doc['messages']:,} ({doc['automated']:,} automated)")
    click.echo(f"Meetings:    {doc['meetings']:,}")
    click.echo(f"Quarantined: {doc['quarantined']:,}")
    click.echo(f"Me:          {', '.join(doc['me']) or '(none; set me = [...] in the config)'}")
    if doc["sources"]:
        click.echo("Sources:")
        for s in doc["sources"]:
            state = f"last success {s['last_success']}" if s["last_success"] else "never synced"
            click.echo(f"  {s['name']} ({s['kind']}): {s['messages']:,} messages, {state}")
            if s["last_error"]:
                click.echo(f"    last error {s['last_error_at']}: {s['last_error']}")
    if doc["quarantine_reasons"]:
        click.echo("Quarantine reasons:")
        for r in doc["quarantine_reasons"]:
            click.echo(f"  {r['count']:>6,}  {r['reason']}")


@cli.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@pass_app
def sql(app: App, query: str, fmt: str) -> None:
    """Run a read-only SQL query over the database (see docs/schema.md)."""
    from netaudit.output import write_rows

    def chunks(cur: db.Connection) -> Iterator[tuple[Any, ...]]:
        while batch := cur.fetchmany(10_000):
            yield from batch

    with db.reader(app.config.database) as con:
        try:
            cur = con.execute(query)
            columns = [d[0] for d in cur.description or []]
            write_rows(columns, chunks(cur) if columns else [], fmt, sys.stdout)
        except db.Error as exc:
            raise NetauditError(f"SQL: {str(exc).splitlines()[0]}") from None


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to build the sample (default: a new temporary directory).")
@click.option("--messages", default=3000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="How many sample messages to generate.")
@pass_app
def demo(app: App, directory: Path | None, messages: int) -> None:
    """Build a sample mailbox, run the real pipeline on it, and show the result."""
    import tempfile

    from ingest import sources
    from netaudit import sample
    from netaudit import status as status_mod

    root = directory or Path(tempfile.mkdtemp(prefix="netaudit-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    maildir = root / "Maildir"
    if not maildir.exists():
        click.echo(f"Writing {messages:,} sample messages to {maildir} ...")
        sample.write_maildir(maildir, messages)
    config_file = root / "config.toml"
    config_file.write_text(
        "[netaudit]\n"
        f"database = {json.dumps(str(root / 'netaudit.duckdb'))}\n"
        'me = ["robin@example.org"]\n\n'
        "[[maildir]]\n"
        'name = "sample"\n'
        f"path = {json.dumps(str(maildir))}\n")
    config_file.chmod(0o600)
    cfg = config.load(str(config_file))
    failed = sources.sync_all(cfg, cfg.sources, echo=click.echo, then=_regroup(cfg))
    with db.reader(cfg.database) as con:
        _print_status(status_mod.collect(con, cfg))
    from analysis import render, report

    with db.reader(cfg.database) as con:
        built = report.build(con, as_of=sample.END.date(), tz="UTC",
                             analysis=cfg.analysis,
                             max_recipients=cfg.filters["max_recipients"])
    click.echo()
    click.echo(render.to_text(built), nl=False)
    click.echo(f"\nExplore it: netaudit --config {config_file} sql "
               "\"SELECT from_addr, count(*) FROM messages GROUP BY 1 ORDER BY 2 DESC LIMIT 10\"")
    if failed:
        raise SourceError(f"the sample source failed: {', '.join(failed)}")


@cli.command()
@click.option("--drop-missing", is_flag=True,
              help="Rebuild even if some earlier imports are no longer on disk.")
@pass_app
def rebuild(app: App, drop_missing: bool) -> None:
    """Re-create the database from your sources, keeping your decisions about people.

    Every configured source and every earlier `netaudit import` path is read again into a
    new file, which then replaces the old one (kept as a .bak-rebuild-* backup). Stop the
    daemon first.
    """
    from ingest import rebuild as rebuild_mod

    cfg = app.config
    backup = rebuild_mod.rebuild(cfg, echo=click.echo, drop_missing=drop_missing)
    _refresh_people(cfg)
    click.echo(f"Rebuilt {cfg.database}; the previous file is {backup}")


def _regroup(cfg: config.Config) -> Callable[[db.Connection], bool]:
    """Regroup addresses into people when what they are built from changed, inside the
    caller's write transaction (see analysis/identity.py)."""
    from analysis import identity

    def run(con: db.Connection) -> bool:
        return identity.refresh_if_stale(con, ignore_patterns=cfg.filters["ignore"],
                                         max_recipients=cfg.filters["max_recipients"])
    return run


def _refresh_people(cfg: config.Config) -> None:
    """Regroup addresses into people after new events, in a write of its own."""
    with db.writer(cfg.database) as con:
        con.execute("BEGIN TRANSACTION")
        _regroup(cfg)(con)
        con.execute("COMMIT")


def _today(tz: str) -> dt.date:
    return dt.datetime.now(ZoneInfo(tz)).date()


def _parse_day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--as-of {value!r} is not a date (YYYY-MM-DD)") from None


@cli.command()
@click.option("--as-of", "as_of", metavar="DATE",
              help="Report as it would have looked on this day (YYYY-MM-DD); default today.")
@click.option("--month", metavar="YYYY-MM",
              help="The month's report: as of its last day, and what changed since the "
                   "month before.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]),
              default="text", show_default=True, help="Output format.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write to this file (mode 0600) instead of standard output.")
@pass_app
def report(app: App, as_of: str | None, month: str | None, fmt: str,
           output: Path | None) -> None:
    """The five-practice report: neglected and one-sided ties, changes, face time, new ties."""
    from analysis import render
    from analysis import report as report_mod

    cfg = app.config
    day = _parse_day(as_of)
    if month and day:
        raise UsageError("give --as-of or --month, not both")
    if month and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise UsageError(f"--month {month!r} is not a month (YYYY-MM)")
    options = {"tz": cfg.timezone, "analysis": cfg.analysis,
               "max_recipients": cfg.filters["max_recipients"]}
    with db.reader(cfg.database) as con:
        if month:
            built = report_mod.build_month(con, month, **options)
        else:
            built = report_mod.build(con, as_of=day or _today(cfg.timezone), **options)
    if fmt == "json":
        text = render.to_json(built)
    elif fmt == "markdown":
        text = render.to_markdown(built)
    elif fmt == "html":
        from analysis import render_html

        text = render_html.to_html(built)
    else:
        text = render.to_text(built)
    if output is None:
        click.echo(text, nl=False)
        return
    _write_private(output, text)
    click.echo(f"Wrote {output}", err=True)


def _write_private(path: Path, text: str) -> None:
    """Reports hold the user's social graph: created 0600, replaced atomically."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@cli.command()
@click.argument("query")
@pass_app
def person(app: App, query: str) -> None:
    """One person's addresses, metrics and timeline (QUERY: part of a name or address)."""
    from analysis import person as person_mod

    cfg = app.config
    with db.reader(cfg.database) as con:
        click.echo(person_mod.show(con, query, tz=cfg.timezone), nl=False)


@cli.group()
def people() -> None:
    """Decisions about people: merge identities, let a tie go, forget someone."""


def _decide(app: App, action: Any, *args: str) -> Any:
    cfg = app.config
    with db.writer(cfg.database) as con:
        con.execute("BEGIN TRANSACTION")
        result = action(con, *args)
        con.execute("COMMIT")
    _refresh_people(cfg)
    return result


@people.command("merge")
@click.argument("a")
@click.argument("b")
@pass_app
def people_merge(app: App, a: str, b: str) -> None:
    """Treat addresses A and B as one person from now on."""
    from analysis import people as people_mod

    _decide(app, people_mod.merge, a.strip().lower(), b.strip().lower())
    click.echo(f"{a} and {b} are now one person.")


@people.command("ignore")
@click.argument("address")
@pass_app
def people_ignore(app: App, address: str) -> None:
    """Let a tie go: left out of every list, counted under respect.ignored."""
    from analysis import people as people_mod

    _decide(app, people_mod.ignore, address.strip().lower())
    click.echo(f"{address} is left out of the reports from now on.")


@people.command("forget")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def people_forget(app: App, address: str, yes: bool) -> None:
    """Delete everything stored about the person with ADDRESS and keep them from coming back.

    Every address netaudit joined to that person is forgotten with it. The database file is
    then rewritten, and backups beside it that still hold them are removed, so that nothing
    of them can be read back from the disk.
    """
    from analysis import people as people_mod
    from netaudit import privacy

    cfg = app.config
    address = address.strip().lower()
    if not yes:
        with db.reader(cfg.database) as con:
            joined = [a for a in people_mod.person_addresses(con, address) if a != address]
        also = f" and the addresses joined to it ({', '.join(joined)})" if joined else ""
        click.confirm(f"Forget {address}{also}: delete everything stored about them?",
                      abort=True)
    with db.writer(cfg.database) as con:
        con.execute("BEGIN TRANSACTION")
        _regroup(cfg)(con)  # current identities: every address of theirs is found
        done = people_mod.forget(con, address)
        _regroup(cfg)(con)
        con.execute("COMMIT")
        forgotten = privacy.forgotten_hashes(con)  # earlier forgets' backups go too
        try:
            rewritten = privacy.rewrite(con, cfg.database)
        except (OSError, db.Error) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NetauditError(
                f"forgot {', '.join(done.addresses)}, but could not rewrite {cfg.database} "
                f"({text}), so deleted rows may still be readable in it; run `netaudit "
                f"people forget {address}` again once that is fixed") from None
    backups = privacy.drop_backups(cfg.database, forgotten)
    click.echo(people_mod.forget_report(done, rewritten, backups))


@cli.command()
@click.option("--poll-seconds", type=click.IntRange(min=10), default=300, show_default=True,
              help="How often every IMAP folder is checked (INBOX is also watched with IDLE).")
@click.option("--rescan-seconds", type=click.IntRange(min=10), default=600, show_default=True,
              help="How often Maildir, mbox and calendar paths are rescanned in full, in case "
                   "a file event was missed (they are watched in between).")
@pass_app
def daemon(app: App, poll_seconds: int, rescan_seconds: int) -> None:
    """Keep the database current until stopped: IMAP IDLE, polling and file watching.

    Syncs every source once, then stays: new mail in INBOX arrives through IMAP IDLE within
    seconds, the other folders are checked every --poll-seconds, calendar feeds every
    max(poll_minutes, 15) minutes, and Maildir, mbox and .ics paths are watched. The
    database is opened for writing only while a batch is committed, so `netaudit report`,
    `netaudit sql` and `duckdb -readonly` work at any time.

    Meant to run as the systemd user service that `netaudit service install` sets up
    (Type=notify, watchdog). SIGTERM stops it cleanly; SIGHUP reloads the config (a broken
    one is logged and the running one kept).

    \b
    Example:
      netaudit daemon --poll-seconds 120    # what the service runs, in a terminal
    """
    from ingest import daemon as daemon_mod

    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)  # a daemon's log is its only voice
    cfg = app.config
    code = daemon_mod.run(cfg, lambda: config.load(app.config_path, warn=log.warning),
                          _refresh_people, folders_seconds=poll_seconds,
                          rescan_seconds=rescan_seconds)
    if code:
        raise NetauditError("the daemon stopped after an internal error (see the log above)")


@cli.group()
def service() -> None:
    """The systemd user service: install it, and the monthly report job it runs."""


@service.command("install")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the units (default: $XDG_CONFIG_HOME/systemd/user).")
@click.option("--dry-run", "--print", "dry_run", is_flag=True,
              help="Print the units instead of writing them.")
@pass_app
def service_install(app: App, directory: Path | None, dry_run: bool) -> None:
    """Write netaudit.service and the monthly report timer for this installation.

    ExecStart runs this Python with -m netaudit (and --config, when one was given), so the
    units keep working whatever PATH the user manager has. Prints the systemctl commands
    that enable them, and warns when lingering is off (the daemon would stop at logout).
    """
    from netaudit import service as service_mod

    _ = app.config  # a broken config fails here, not later in the journal
    units = service_mod.render_all(service_mod.netaudit_command(app.config_path))
    target = directory or service_mod.user_unit_dir()
    if dry_run:
        for name, text in units.items():
            click.echo(f"# {target / name}\n{text}")
    else:
        for path in service_mod.write_units(units, target):
            click.echo(f"Wrote {path}")
    click.echo("\nEnable them with:")
    for command in service_mod.ENABLE_COMMANDS:
        click.echo(f"  {command}")
    linger = service_mod.check_linger()
    if linger.enabled is None:
        click.echo(f"\nCould not check lingering: {linger.detail.rstrip('.')}. Without it the "
                   "daemon stops when you log out; enable it with: loginctl enable-linger",
                   err=True)
    elif not linger.enabled:
        click.echo(f"\nWarning: lingering is off for {linger.detail}, so the daemon stops "
                   f"when you log out. Keep it running with: loginctl enable-linger "
                   f"{linger.detail}", err=True)


@service.command("report-month")
@click.option("--month", metavar="YYYY-MM", help="The month (default: the previous one).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Default: $XDG_DATA_HOME/netaudit/reports.")
@pass_app
def service_report_month(app: App, month: str | None, output_dir: Path | None) -> None:
    """Write the month's HTML report to reports/YYYY-MM.html (what the timer runs).

    Idempotent: running it again for the same month rewrites the same file, atomically
    (a temporary file renamed over it), mode 0600 in a 0700 directory.
    """
    from analysis import render_html
    from analysis import report as report_mod
    from netaudit import paths
    from netaudit import service as service_mod

    cfg = app.config
    month = month or service_mod.previous_month(_today(cfg.timezone))
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise UsageError(f"--month {month!r} is not a month (YYYY-MM)")
    out_dir = output_dir or service_mod.reports_dir()
    paths.ensure_private_dir(out_dir)
    out_dir.chmod(0o700)
    with db.reader(cfg.database) as con:
        built = report_mod.build_month(con, month, tz=cfg.timezone, analysis=cfg.analysis,
                                       max_recipients=cfg.filters["max_recipients"])
    target = out_dir / f"{month}.html"
    _write_private(target, render_html.to_html(built))
    click.echo(f"Wrote {target}")


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; the one place that turns errors into a message and an exit code."""
    _leave(_run(argv))


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="netaudit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_FAILED
    except NetauditError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        explained = db.explain(exc)
        if explained is None:
            raise  # a bug: keep the traceback
        click.echo(f"Error: {explained}", err=True)
        return explained.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    return 0


def _leave(code: int) -> NoReturn:
    """Exit without the interpreter's teardown when nothing else runs.

    Freeing every object and unloading DuckDB takes 30-50 ms, a tenth of a `netaudit sync`
    that finds nothing new. By now every database connection and child process is closed; the
    exit handlers still run and the output is flushed. With another thread alive (the
    daemon's) the usual exit waits for it.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # logging's flush among them
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that left, or a closed stream
        code = code or EXIT_FAILED
    os._exit(code)
