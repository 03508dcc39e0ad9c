"""Config: lookup order, one schema, and one readable line per mistake (exit code 2)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from netaudit import config
from tests.conftest import REPO, Run, write_config

GOOD_IMAP = """
[[imap]]
name = "work"
host = "imap.example.org"
username = "robin@example.org"
password_env = "WORK_PASSWORD"
"""


def error_line(proc_stderr: str) -> str:
    lines = [line for line in proc_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc_stderr
    assert "Traceback" not in proc_stderr
    return lines[0]


@pytest.mark.parametrize(("text", "message"), [
    (GOOD_IMAP.replace('host = "imap.example.org"\n', ""),
     "imap[1].host: missing; expected a string (the IMAP server)"),
    (GOOD_IMAP + 'port = "993"\n',
     "imap[1].port: expected an integer, got a string ('993')"),
    ('[netaudit]\ndatabse = "/tmp/x.duckdb"\n',
     "netaudit.databse: unknown key; did you mean 'database'?"),
    ('[netaudit]\nme = ["robin@example.org"\n',
     "not valid TOML: Unclosed array (at end of document)"),
    ("[netaudit]\nme = robin@example.org\n",
     "not valid TOML: Invalid value (at line 2, column 6)"),
    (GOOD_IMAP.replace('host = "imap.example.org"', 'host = "imap.example.org"\n'
                       'security = "plain"'),
     "imap[1].security: plain is allowed only towards loopback hosts, not "
     "'imap.example.org'; use tls or starttls"),
    ('[[calendar]]\nname = "c"\n',
     "calendar[1].url: expected exactly one of url or path"),
    ('[filters]\nmax_recipients = true\n',
     "filters.max_recipients: expected an integer, got a boolean (True)"),
    ('[netaudit]\ntimezone = "Mars/Olympus"\n',
     "netaudit.timezone: unknown time zone 'Mars/Olympus'; expected an IANA name such as "
     "'Europe/Berlin'"),
    ("[analysys]\n", "analysys: unknown section; did you mean [analysis]?"),
    (GOOD_IMAP + GOOD_IMAP, "imap.name: duplicate source name 'work'"),
])
def test_config_errors_are_one_line_exit_2(run: Run, tmp_path: Path, text: str,
                                           message: str) -> None:
    path = write_config(tmp_path / "config.toml", text)
    proc = run("--config", str(path), "status")
    assert proc.returncode == 2
    assert error_line(proc.stderr) == f"Error: config {path}: {message}"


def test_missing_explicit_config_file(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    proc = run("--config", str(path), "status")
    assert proc.returncode == 2
    assert error_line(proc.stderr) == f"Error: config {path}: file not found"


def test_lookup_order(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = home / ".config" / "netaudit" / "config.toml"
    xdg.parent.mkdir(parents=True)
    write_config(xdg, '[netaudit]\nme = ["xdg@example.org"]\n')
    env_file = write_config(tmp_path / "env.toml", '[netaudit]\nme = ["env@example.org"]\n')
    flag_file = write_config(tmp_path / "flag.toml", '[netaudit]\nme = ["flag@example.org"]\n')
    assert config.load(None).me == ("xdg@example.org",)
    monkeypatch.setenv("NETAUDIT_CONFIG", str(env_file))
    assert config.load(None).me == ("env@example.org",)
    assert config.load(str(flag_file)).me == ("flag@example.org",)


def test_no_config_means_defaults(home: Path) -> None:
    cfg = config.load(None)
    assert cfg.sources == ()
    assert cfg.database == home / ".local/share/netaudit/netaudit.duckdb"
    assert cfg.filters["max_recipients"] == 10


def test_defaults_and_normalisation(tmp_path: Path) -> None:
    cfg = config.parse(
        b'[netaudit]\nme = ["Robin@Example.ORG"]\n'
        b'[[imap]]\nname = "w"\nhost = "127.0.0.1"\nsecurity = "plain"\nusername = "u"\n'
        b'password_command = "pass show \'mail/my work\'"\n'
        b'[[calendar]]\nname = "c"\nurl = "webcal://cal.example.org/t0ken/basic.ics"\n',
        tmp_path / "c.toml")
    imap, cal = cfg.sources
    assert cfg.me == ("robin@example.org",)
    assert imap["port"] == 143 and imap["password_command"] == ["pass", "show", "mail/my work"]
    assert cal["url"] == "https://cal.example.org/t0ken/basic.ics"


def test_example_file_is_generated_from_the_schema() -> None:
    text = (REPO / "config.example.toml").read_text()
    # regenerate with: python -m netaudit.config > config.example.toml
    assert text == config.render_example()
    cfg = config.parse(text.encode(), REPO / "config.example.toml")
    assert {s.kind for s in cfg.sources} == {"imap", "maildir", "mbox", "calendar"}


def test_example_file_covers_every_key() -> None:
    text = (REPO / "config.example.toml").read_text()
    parsed = tomllib.loads(text)
    commented = set(re.findall(r"^# (\w+) = ", text, re.MULTILINE))
    for section in config.SCHEMA:
        assert section.name in parsed, section.name
        table = parsed[section.name][0] if section.array else parsed[section.name]
        for key in section.keys:
            assert key.name in table or key.name in commented, f"{section.name}.{key.name}"
            assert f"# {key.doc}" in text, key.name


def test_world_readable_config_warns(run: Run, tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.toml", f'[netaudit]\ndatabase = "{tmp_path}/d"\n')
    path.chmod(0o644)
    proc = run("--config", str(path), "status")
    assert proc.returncode == 1  # no database yet; the warning comes first
    assert f"config {path} is readable by other users; run: chmod 600 {path}" in proc.stderr
