"""Pytest fixtures for a real Dovecot IMAP server (see tests/dovecot.py).

Registered for every test by ``pytest_plugins`` in tests/conftest.py.

Fixtures:
    dovecot              session-wide server: STARTTLS + implicit TLS port
    dovecot_no_starttls  session-wide server with `ssl = no` (no STARTTLS, no TLS port)
    imap_account         a fresh user with empty mailboxes on `dovecot`, per test
    dovecot_factory      call it to start private servers (e.g. to stop/restart
                         them); stopped and removed after the test

All of them skip when Dovecot is missing (and fail under CI=true).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.dovecot import DovecotServer, ImapAccount, require_dovecot

__all__ = ["dovecot", "dovecot_factory", "dovecot_no_starttls", "imap_account"]


def _started(**kwargs: Any) -> DovecotServer:
    require_dovecot()
    server = DovecotServer(**kwargs)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """Shared server; its default account is `dovecot.user`/`dovecot.password`.
    Tests that need empty mailboxes should use `imap_account` instead."""
    server = _started()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def dovecot_no_starttls() -> Iterator[DovecotServer]:
    """A server that offers no TLS at all, for "STARTTLS not offered" paths."""
    server = _started(tls=False)
    yield server
    server.cleanup()


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    """A new user on the shared server: isolation per test without paying for
    a server start per test."""
    if not dovecot.running:  # a test stopped the shared server; bring it back
        dovecot.start()
    return dovecot.add_account()


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    """`dovecot_factory(tls=..., rawlog=..., mail_debug=...)` -> started server,
    owned by the test (free to stop(), restart() or break it)."""
    servers: list[DovecotServer] = []

    def make(**kwargs: Any) -> DovecotServer:
        server = _started(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()
