"""Where account secrets come from, and that they never leak (ingest/secrets.py).

The commands are real processes; only the optional keyring package is stood in for, since
whether a Secret Service exists is a property of the desktop session, not of netaudit.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
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


def test_failing_command_error_names_it_and_shows_nothing_it_printed(tmp_path: Path) -> None:
    """A failing command may echo the secret on either stream: neither is quoted, whole or in
    part (the stderr line would have been a handy hint, and a leak)."""
    path = script(tmp_path, f"import sys; print({SECRET!r}); "
                            f"print('pass: wrong passphrase for ' + {SECRET!r}, file=sys.stderr); "
                            "sys.exit(3)")
    source = imap_source(tmp_path, "password_command = " +
                         config._toml_value([sys.executable, str(path)]))
    with pytest.raises(SourceError) as info:
        secrets.password(source)
    message = str(info.value)
    assert message == (f"password_command of work: {sys.executable!r} exited with status 3; "
                       "its output is not shown, as it may hold the secret (run the command "
                       "yourself to see it)")
    assert "\n" not in message


def test_command_killed_by_a_signal_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"'sh' was killed by signal SIGSEGV; its output is "
                                          r"not shown"):
        secrets.run_command(["sh", "-c", f"echo {SECRET!r}; kill -SEGV $$"], "test")


def test_command_printing_too_much_is_stopped(tmp_path: Path) -> None:
    """Reading stops at 64 KiB: a command that printed without end (`yes`) would otherwise fill
    memory. Ten MiB on one line stands in for it, so a regression fails instead of exhausting
    the machine."""
    flood = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 10_000_000)"]
    with pytest.raises(SourceError, match=r"printed more than 64 KiB; a secret is one line$"):
        secrets.run_command(flood, "test", timeout=60)


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


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_soon(pid: int) -> bool:
    """SIGKILL is delivered asynchronously: allow the process a moment to die."""
    for _ in range(200):
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def run_guarded(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread, failing the test (not hanging the suite) if it hangs."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "run_command hung"
    return outcome[0]


def test_timeout_stops_every_process_the_command_started(tmp_path: Path) -> None:
    """The shell waits on a background sleep that shares its stdout: killing the shell alone
    would leave the sleep running and the pipe open, and reading it would wait 1000 s."""
    pid_file = tmp_path / "pid"
    error = run_guarded(lambda: secrets.run_command(
        ["sh", "-c", f"sleep 1000 & echo $! > {pid_file}; wait"], "test", timeout=1))
    assert gone_soon(int(pid_file.read_text())), "the background sleep was left running"
    assert isinstance(error, SourceError)
    assert str(error) == ("test: 'sh' did not finish within 1 s; it was stopped, with every "
                          "process it started")


def test_exited_command_whose_child_holds_the_output(tmp_path: Path) -> None:
    """The command prints and exits, but its background child keeps stdout open: it is
    stopped after the grace period, long before the 120 s timeout."""
    pid_file = tmp_path / "pid"
    error = run_guarded(lambda: secrets.run_command(
        ["sh", "-c", f"sleep 1000 & echo $! > {pid_file}; echo {SECRET!r}"], "test"))
    assert gone_soon(int(pid_file.read_text())), "the background sleep was left running"
    assert isinstance(error, SourceError)
    assert str(error) == ("test: 'sh' exited, but a process it started kept its output open; "
                          "that process was stopped")


def test_background_child_that_lets_go_of_the_output_is_left_alone(tmp_path: Path) -> None:
    """An agent the command starts with its output redirected (gpg-agent, say) is not the
    command's business: the secret is read and the agent keeps running."""
    pid_file = tmp_path / "pid"
    secret = secrets.run_command(
        ["sh", "-c", f"sleep 1000 >/dev/null 2>&1 & echo $! > {pid_file}; echo pw"], "test")
    assert secret.reveal() == "pw"
    sleeper = int(pid_file.read_text())
    try:
        assert running(sleeper)
    finally:
        os.kill(sleeper, signal.SIGKILL)


def test_command_timeout_from_the_environment() -> None:
    assert secrets.command_timeout({}) == 120.0
    assert secrets.command_timeout({"NETAUDIT_COMMAND_TIMEOUT": "2.5"}) == 2.5
    for bad in ("soon", "0", "-3"):
        assert secrets.command_timeout({"NETAUDIT_COMMAND_TIMEOUT": bad}) == 120.0
