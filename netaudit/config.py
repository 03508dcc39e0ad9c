"""The config file: one schema, used to validate, to fill defaults and to write the example.

Keeping the schema in one table means ``config.example.toml`` and the validator cannot drift
apart: the example is generated from it and a test checks the checked-in copy.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import shlex
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from netaudit import paths
from netaudit.errors import ConfigError

REQUIRED = object()

# Value kinds: the TOML type and the words used in error messages.
_KIND_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "strings": "a list of strings",
    "date": "a date (YYYY-MM-DD)",
    "command": "a command (a string, or a list of strings)",
}


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, and the comment the example file shows."""

    name: str
    kind: str
    doc: str
    example: Any
    default: Any = None
    choices: tuple[str, ...] = ()
    required: bool = False
    commented: bool = False  # shown commented out in the example (an alternative)
    check: Callable[[Any], str | None] | None = None  # returns a problem or None


@dataclass(frozen=True)
class Section:
    name: str
    doc: str
    keys: tuple[Key, ...]
    array: bool = False  # [[name]] tables, one per source

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)


def _check_zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}; expected an IANA name such as 'Europe/Berlin'"
    return None


def _check_address_list(value: list[str]) -> str | None:
    bad = [v for v in value if "@" not in v]
    return f"not an email address: {bad[0]!r}" if bad else None


def _check_positive(value: int | float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _check_share(value: int | float) -> str | None:
    return None if 0 < value <= 1 else f"must be a share between 0 and 1, got {value}"


def _check_url(value: str) -> str | None:
    if value.split("://", 1)[0].lower() in ("https", "http", "webcal"):
        return None
    return "expected an https:// or webcal:// address"


def _check_port(value: int) -> str | None:
    return None if 0 < value < 65536 else f"not a TCP port: {value}"


# Calendars are expanded from history_start up to now: from year 1 a daily event has 740,000
# occurrences and time zone arithmetic runs off the calendar; after today the window is
# empty. Mail and calendar software dates nothing real before the Unix epoch.
HISTORY_START_MIN = dt.date(1970, 1, 1)
_WIDEST_UTC_OFFSET = dt.timedelta(hours=14)  # Pacific/Kiritimati


def latest_today(now: dt.datetime | None = None) -> dt.date:
    """Today where it is latest on Earth, so a date that is today in the user's zone
    (whatever the machine's zone says) is never "in the future"."""
    return ((now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) + _WIDEST_UTC_OFFSET).date()


def check_history_start(value: dt.date, now: dt.datetime | None = None) -> str | None:
    """The allowed range of history_start: the Unix epoch to today."""
    today = latest_today(now)
    if HISTORY_START_MIN <= value <= today:
        return None
    return (f"must be a date from {HISTORY_START_MIN.isoformat()} to today; "
            f"got {value.isoformat()}")


def _name(example: str) -> Key:
    return Key("name", "string", "a short name for this source, unique across the file",
               example, required=True)

SCHEMA: tuple[Section, ...] = (
    Section(
        "netaudit",
        "General settings.",
        (
            Key("database", "string", "the DuckDB file; default: the XDG data dir",
                "~/.local/share/netaudit/netaudit.duckdb"),
            Key("me", "strings", "my own addresses; account logins are added automatically",
                ["robin@example.org", "robin@family.example"], default=[],
                check=_check_address_list),
            Key("timezone", "string", "time zone for reports and floating calendar times; "
                "default: the system's", "Europe/Berlin", check=_check_zone),
            Key("store_subjects", "boolean", "keep message subjects in the database",
                False, default=False),
            Key("history_start", "date", "calendar occurrences are expanded from this date "
                "(1970-01-01 to today); default: ten years ago", dt.date(2016, 1, 1),
                check=check_history_start),
        ),
    ),
    Section(
        "imap",
        "An IMAP account (repeat [[imap]] for each). Only headers are fetched.",
        (
            _name("work"),
            Key("host", "string", "the IMAP server", "imap.example.org", required=True),
            Key("port", "integer", "default: 993 for tls, 143 for starttls and plain", 993,
                check=_check_port),
            Key("security", "string", "tls (implicit TLS), starttls (then mandatory) or plain "
                "(loopback hosts only)", "tls", default="tls",
                choices=("tls", "starttls", "plain")),
            Key("username", "string", "the login name", "robin@example.org", required=True),
            Key("password_command", "command", "prints the password on one line; run without "
                "a shell", "pass show mail/work"),
            Key("password_env", "string", "or: the environment variable holding the password",
                "NETAUDIT_WORK_PASSWORD", commented=True),
            Key("keyring", "boolean", "or: read the password from the system keyring "
                "(needs the 'keyring' extra)", True, default=False, commented=True),
            Key("auth", "string", "password (default) or xoauth2", "xoauth2",
                default="password", choices=("password", "xoauth2"), commented=True),
            Key("oauth2_token_command", "command", "with auth = xoauth2: prints an access "
                "token", "mutt_oauth2.py ~/.work.tokens", commented=True),
            Key("folders", "strings", "folders to read; default: INBOX and the \\Sent folder "
                "(Gmail: \\All)", ["INBOX", "\\Sent"]),
            Key("ca_file", "string", "an extra trust anchor; verification is never switched "
                "off", "/path/to/ca.pem", commented=True),
            Key("timeout", "integer", "seconds before a silent server counts as gone", 60,
                default=60, check=_check_positive),
        ),
        array=True,
    ),
    Section(
        "maildir",
        "A local Maildir or Maildir++ tree (repeat [[maildir]] for each).",
        (_name("archive"), Key("path", "string", "the Maildir", "~/Mail/archive", required=True)),
        array=True,
    ),
    Section(
        "mbox",
        "A local mbox file (repeat [[mbox]] for each).",
        (_name("takeout"), Key("path", "string", "the mbox file", "~/Takeout/Mail/All mail.mbox",
                    required=True)),
        array=True,
    ),
    Section(
        "calendar",
        "A calendar: a feed URL, a .ics file or a vdir (repeat [[calendar]] for each).",
        (
            _name("work-calendar"),
            Key("url", "string", "an https:// or webcal:// feed; its token is redacted in logs",
                "https://calendar.example.org/private-token/basic.ics", check=_check_url),
            Key("path", "string", "or: a .ics file or a vdir directory", "~/.calendars/work/",
                commented=True),
            Key("poll_minutes", "integer", "how often a feed is fetched (at least 15)", 15,
                default=15, check=lambda v: None if v >= 15 else "must be at least 15"),
        ),
        array=True,
    ),
    Section(
        "filters",
        "What does not count as a personal interaction.",
        (
            Key("ignore", "strings", "addresses or shell patterns never counted as people",
                ["*@noreply.example.com", "notifications@github.com"], default=[]),
            Key("max_recipients", "integer", "a message to more people than this is not "
                "personal", 10, default=10, check=_check_positive),
        ),
    ),
    Section(
        "analysis",
        "Report thresholds (the defaults follow the documented definitions).",
        (
            Key("neglect_min_days", "integer", "a neglected tie spans at least this many days",
                60, default=60, check=_check_positive),
            Key("neglect_min_interaction_days", "integer", "and has at least this many "
                "interaction days", 4, default=4, check=_check_positive),
            Key("neglect_gap_factor", "number", "overdue when silent longer than this many "
                "usual gaps", 2.0, default=2.0, check=_check_positive),
            Key("neglect_min_silence_days", "integer", "and longer than this many days", 45,
                default=45, check=_check_positive),
            Key("one_sided_min_threads", "integer", "one-sided needs at least this many "
                "threads in the last year", 4, default=4, check=_check_positive),
            Key("one_sided_share", "number", "share of threads started by one side", 0.8,
                default=0.8, check=_check_share),
            Key("one_sided_max_reply_share", "number", "at most this share of threads answered "
                "by the other side", 0.2, default=0.2, check=_check_share),
            Key("introduction_max_people", "integer", "a message to more people than this "
                "is a distribution, not an introduction", 3, default=3, check=_check_positive),
        ),
    ),
)

SECTIONS: Mapping[str, Section] = {s.name: s for s in SCHEMA}
SOURCE_KINDS = ("imap", "maildir", "mbox", "calendar")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


@dataclass(frozen=True)
class Source:
    """One configured source, with defaults filled in."""

    kind: str
    name: str
    settings: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]


@dataclass(frozen=True)
class Config:
    path: Path | None
    database: Path
    me: tuple[str, ...]
    timezone: str
    store_subjects: bool
    history_start: dt.date
    sources: tuple[Source, ...] = ()
    filters: Mapping[str, Any] = field(default_factory=dict)
    analysis: Mapping[str, Any] = field(default_factory=dict)

    def sources_named(self, name: str | None) -> tuple[Source, ...]:
        if name is None:
            return self.sources
        found = tuple(s for s in self.sources if s.name == name)
        if not found:
            known = ", ".join(s.name for s in self.sources) or "none configured"
            raise ConfigError(str(self.path or "(no config file)"), None,
                              f"no source named {name!r} (sources: {known})")
        return found


def find_config_file(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The documented lookup order: --config, $NETAUDIT_CONFIG, the XDG config dir."""
    if explicit:
        return Path(explicit).expanduser()
    if env.get("NETAUDIT_CONFIG"):
        return Path(env["NETAUDIT_CONFIG"]).expanduser()
    default = paths.config_file()
    return default if default.exists() else None


def load(explicit: str | None = None, env: Mapping[str, str] = os.environ,
         warn: Callable[[str], None] | None = None) -> Config:
    """Find, read and validate the config; no file means defaults and no sources."""
    path = find_config_file(explicit, env)
    if path is None:
        return validate({}, None, env)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from None
    if warn is not None:
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warn(f"config {path} is readable by other users; run: chmod 600 {path}")
    return parse(raw_bytes, path, env)


def parse(data: bytes, path: Path | None, env: Mapping[str, str] = os.environ) -> Config:
    name = str(path) if path else "(config)"
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(name, None, "not valid TOML: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, None, f"not valid TOML: {exc}") from None
    return validate(raw, path, env)


def _type_problem(key: Key, value: Any) -> str | None:
    ok: bool
    if key.kind == "string":
        ok = isinstance(value, str)
    elif key.kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key.kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif key.kind == "boolean":
        ok = isinstance(value, bool)
    elif key.kind == "strings":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif key.kind == "date":
        ok = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    elif key.kind == "command":
        ok = (isinstance(value, str) and bool(value.strip())) or (
            isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value))
    else:  # pragma: no cover - schema bug
        raise AssertionError(key.kind)
    if ok and key.choices and value not in key.choices:
        return f"expected one of {', '.join(key.choices)}; got {value!r}"
    if ok:
        return None
    return f"expected {_KIND_WORDS[key.kind]}, got {_describe(value)}"


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table", dt.date: "a date", dt.datetime: "a date-time"}
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def _check_table(section: Section, table: Any, label: str, file: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(file, label, f"expected a table, got {_describe(table)}")
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = section.key(name)
        if key is None:
            known = [k.name for k in section.keys]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(file, f"{label}.{name}", f"unknown key; {hint}")
        problem = _type_problem(key, value) or (key.check(value) if key.check else None)
        if problem:
            raise ConfigError(file, f"{label}.{name}", problem)
        out[name] = value
    for key in section.keys:
        if key.name not in out:
            if key.required:
                raise ConfigError(file, f"{label}.{key.name}",
                                  f"missing; expected {_KIND_WORDS[key.kind]} ({key.doc})")
            out[key.name] = key.default
    return out


def is_loopback(host: str) -> bool:
    """Loopback by name or address: where plaintext IMAP and http:// feeds are allowed."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_source(kind: str, s: dict[str, Any], label: str, file: str) -> None:
    """Rules that tie several keys of one source together."""
    if kind == "imap":
        if s["security"] == "plain" and not is_loopback(s["host"]):
            raise ConfigError(file, f"{label}.security",
                              f"plain is allowed only towards loopback hosts, not {s['host']!r}; "
                              "use tls or starttls")
        if s["port"] is None:
            s["port"] = 993 if s["security"] == "tls" else 143
        if s["auth"] == "xoauth2":
            if not s["oauth2_token_command"]:
                raise ConfigError(file, f"{label}.oauth2_token_command",
                                  "missing; auth = xoauth2 needs a command that prints a token")
        else:
            given = [k for k in ("password_command", "password_env") if s[k]] + (
                ["keyring"] if s["keyring"] else [])
            if len(given) != 1:
                raise ConfigError(file, f"{label}.password_command",
                                  "expected exactly one of password_command, password_env, "
                                  f"keyring; got {', '.join(given) or 'none'}")
        for k in ("password_command", "oauth2_token_command"):
            if isinstance(s[k], str):
                try:
                    s[k] = shlex.split(s[k])
                except ValueError as exc:
                    raise ConfigError(file, f"{label}.{k}", f"cannot split command: {exc}") \
                        from None
        if s["ca_file"]:
            s["ca_file"] = str(Path(s["ca_file"]).expanduser())
    elif kind == "calendar":
        if bool(s["url"]) == bool(s["path"]):
            raise ConfigError(file, f"{label}.url", "expected exactly one of url or path")
        if s["url"] and s["url"].lower().startswith("webcal://"):
            s["url"] = "https://" + s["url"][len("webcal://"):]
        if s["url"] and s["url"].lower().startswith("http://") and not is_loopback(
                urlsplit(s["url"]).hostname or ""):
            raise ConfigError(file, f"{label}.url", "http:// would send the feed's token in "
                              "clear; use https:// (http:// is allowed only to loopback hosts)")
    if s.get("path"):
        s["path"] = str(Path(s["path"]).expanduser())


def validate(raw: Mapping[str, Any], path: Path | None,
             env: Mapping[str, str] = os.environ) -> Config:
    """Check every key against SCHEMA and return a Config with defaults filled in."""
    file = str(path) if path else "(config)"
    for name in raw:
        if name not in SECTIONS:
            close = difflib.get_close_matches(name, list(SECTIONS), n=1)
            hint = f"did you mean [{close[0]}]?" if close else \
                f"known sections: {', '.join(SECTIONS)}"
            raise ConfigError(file, name, f"unknown section; {hint}")
    tables: dict[str, Any] = {}
    sources: list[Source] = []
    for section in SCHEMA:
        value = raw.get(section.name)
        if section.array:
            if value is None:
                continue
            if not isinstance(value, list):
                raise ConfigError(file, section.name,
                                  f"expected [[{section.name}]] tables, got {_describe(value)}")
            for i, table in enumerate(value, start=1):
                label = f"{section.name}[{i}]"
                checked = _check_table(section, table, label, file)
                _check_source(section.name, checked, label, file)
                sources.append(Source(section.name, checked["name"], checked))
        else:
            tables[section.name] = _check_table(section, value or {}, section.name, file)
    seen: set[str] = set()
    for src in sources:
        if src.name in seen:
            raise ConfigError(file, f"{src.kind}.name", f"duplicate source name {src.name!r}")
        seen.add(src.name)
    core = tables["netaudit"]
    database = Path(core["database"]).expanduser() if core["database"] else \
        paths.default_database()
    me = tuple(dict.fromkeys(a.strip().lower() for a in core["me"]))
    return Config(
        path=path,
        database=database,
        me=me,
        timezone=core["timezone"] or paths.system_timezone(),
        store_subjects=core["store_subjects"],
        history_start=core["history_start"] or dt.date.today().replace(
            year=dt.date.today().year - 10, day=1),
        sources=tuple(sources),
        filters=tables["filters"],
        analysis=tables["analysis"],
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


def render_example(sections: Sequence[Section] = SCHEMA, *, active_sources: bool = True) -> str:
    """The commented example file; ``config.example.toml`` is this text."""
    lines = [
        "# netaudit configuration: every key, with its meaning.",
        "# Looked up in this order: --config PATH, $NETAUDIT_CONFIG,",
        "# $XDG_CONFIG_HOME/netaudit/config.toml (default ~/.config/netaudit/config.toml).",
    ]
    for section in sections:
        lines.append("")
        lines.append(f"# {section.doc}")
        comment_all = section.array and not active_sources
        lines.append(("# " if comment_all else "") +
                     (f"[[{section.name}]]" if section.array else f"[{section.name}]"))
        for key in section.keys:
            doc = key.doc + (" (required)" if key.required else "")
            prefix = "# " if (key.commented or comment_all) else ""
            lines.append(f"# {doc}")
            lines.append(f"{prefix}{key.name} = {_toml_value(key.example)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m netaudit.config > config.example.toml
    print(render_example(), end="")
