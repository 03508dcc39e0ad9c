"""Where account secrets come from, and that they never leak (ingest/secrets.py).

The commands are real processes; only the optional keyring package is stood in for, since
whether a Secret Service exists is a property of the desktop session, not of netaudit.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from ingest import secrets
from ingest.secrets import Secret
from netaudit import config
from netaudit.errors import SourceError

SECRET = "s3cret-Pa55 'quoted' $HOME;|&"


def imap_source(tmp_path: Path, key_lines: str, **extra: str) -> config.Source:
    text = ("[[imap]]\nname = \"work\"\nhost = \"imap.example.org\"\n"
            "username = \"robin@example.org\"\n" + key_lines + "\n" +
            "".join(f"{k} = {v}\n" for k, v in extra.items()))
    cfg = config.parse(text.encode(), tmp_path / "config.toml")
    return cfg.sources[0]


def script(tmp_path: Path, body: str, name: str = "secret.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_password_command_runs_without_a_shell(tmp_path: Path) -> None:
    """Shell syntax in the command is passed on literally: nothing is expanded or run."""
    marker = tmp_path / "pwned"
    source = imap_source(tmp_path, f"password_command = 'printf %s pw$HOME;touch {marker}'")
    secret = secrets.password(source)
    assert secret.reveal() == f"pw$HOME;touch{marker}"
    assert not marker.exists()


def test_password_command_one_line_trailing_newline_optional(tmp_path: Path) -> None:
    for output in (SECRET, SECRET + "\n", SECRET + "\r\n"):
        path = script(tmp_path, f"import sys; sys.stdout.write({output!r})")
        source = imap_source(tmp_path, "password_command = " +
                             config._toml_value([sys.executable, str(path)]))
        assert secrets.password(source).reveal() == SECRET


@pytest.mark.parametrize(("output", "problem"), [
    ("", "printed nothing"),
    ("\n", "printed nothing"),
    (f"{SECRET}\nsecond line\n", "printed 2 lines"),
    (f"{SECRET}\n\n", "printed 2 lines"),
])
def test_password_command_must_print_exactly_one_line(tmp_path: Path, output: str,
                                                      problem: str) -> None:
    path = script(tmp_path, f"import sys; sys.stdout.write({output!r})")
    source = imap_source(tmp_path, "password_command = " +
                         config._toml_value([sys.executable, str(path)]))
    with pytest.raises(SourceError, match=problem) as info:
        secrets.password(source)
    assert SECRET not in str(info.value)


def test_failing_command_error_names_it_and_masks_what_it_printed(tmp_path: Path) -> None:
    path = script(tmp_path, f"import sys; print({SECRET!r}); "
                            f"print('pass: wrong passphrase for ' + {SECRET!r}, file=sys.stderr); "
                            "sys.exit(3)")
    source = imap_source(tmp_path, "password_command = " +
                         config._toml_value([sys.executable, str(path)]))
    with pytest.raises(SourceError) as info:
        secrets.password(source)
    message = str(info.value)
    assert "password_command of work" in message and "exited with status 3" in message
    assert "wrong passphrase" in message
    assert SECRET not in message


def test_missing_program(tmp_path: Path) -> None:
    source = imap_source(tmp_path, "password_command = 'no-such-program-netaudit --show'")
    with pytest.raises(SourceError, match="program 'no-such-program-netaudit' not found"):
        secrets.password(source)


def test_command_timeout(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="did not finish within 1 s"):
        secrets.run_command([sys.executable, "-c", "import time; time.sleep(30)"], "test",
                            timeout=1)


def test_secret_never_logged_and_masked_in_repr(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = script(tmp_path, f"print({SECRET!r})")
    source = imap_source(tmp_path, "password_command = " +
                         config._toml_value([sys.executable, str(path)]))
    secret = secrets.password(source)
    assert secret.reveal() == SECRET
    logging.getLogger("test").debug("got %s / %r", secret, secret)
    assert "running password_command of work" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(secret) and SECRET not in str(secret)
    assert secret.redact(f"x {SECRET} y") == "x ******** y"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(secret)


def test_password_env(tmp_path: Path) -> None:
    source = imap_source(tmp_path, 'password_env = "NETAUDIT_TEST_PW"')
    assert secrets.password(source, env={"NETAUDIT_TEST_PW": SECRET}).reveal() == SECRET
    with pytest.raises(SourceError, match="NETAUDIT_TEST_PW is not set"):
        secrets.password(source, env={})
    with pytest.raises(SourceError, match="NETAUDIT_TEST_PW is empty"):
        secrets.password(source, env={"NETAUDIT_TEST_PW": ""})


def test_keyring_missing_package_gives_clear_message(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # import keyring -> ImportError
    source = imap_source(tmp_path, "keyring = true")
    with pytest.raises(SourceError) as info:
        secrets.password(source)
    message = str(info.value)
    assert "needs the optional 'keyring' package" in message
    assert "pip install 'netaudit[keyring]'" in message
    assert "password_command or password_env" in message


def _fake_keyring(get_password: object) -> types.ModuleType:
    module = types.ModuleType("keyring")
    module.get_password = get_password  # type: ignore[attr-defined]
    return module


def test_keyring_without_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoKeyringError(RuntimeError):  # the name keyring.errors uses
        pass

    def get_password(service: str, user: str) -> str:
        raise NoKeyringError("No recommended backend was available.")

    monkeypatch.setitem(sys.modules, "keyring", _fake_keyring(get_password))
    source = imap_source(tmp_path, "keyring = true")
    with pytest.raises(SourceError, match="no keyring backend is available"):
        secrets.password(source)


def test_keyring_lookup_and_missing_entry(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = {("netaudit", "work"): SECRET}
    monkeypatch.setitem(sys.modules, "keyring",
                        _fake_keyring(lambda service, user: store.get((service, user))))
    source = imap_source(tmp_path, "keyring = true")
    assert secrets.password(source).reveal() == SECRET
    store.clear()
    with pytest.raises(SourceError, match="keyring set netaudit work"):
        secrets.password(source)


def test_oauth2_token_command(tmp_path: Path) -> None:
    path = script(tmp_path, "print('ya29.token-value')")
    source = imap_source(tmp_path, 'auth = "xoauth2"\noauth2_token_command = ' +
                         config._toml_value([sys.executable, str(path)]))
    assert secrets.oauth2_token(source).reveal() == "ya29.token-value"


def test_secret_class_masks_everything() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r} {[s]} {dict(a=s)}"
    assert Secret("").redact("text") == "text"
