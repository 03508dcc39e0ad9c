"""sd_notify(3) in-tree: one datagram to $NOTIFY_SOCKET per message.

The systemd authors call the datagram protocol the stable interface, so linking libsystemd
(or depending on the unmaintained ``sdnotify`` package) buys nothing (R-SYS-1). A leading ``@``
in the socket address means the Linux abstract namespace.

Sending never raises: a daemon must not die because its supervisor went away. Without
$NOTIFY_SOCKET (a terminal, a test, cron) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The address to connect to: a path, or an abstract name ('@x' -> '\\0x')."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not used by user services


def watchdog_seconds(env: MutableMapping[str, str], pid: int) -> float | None:
    """The watchdog period from $WATCHDOG_USEC, when it is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner.isdigit() and int(owner) != pid:
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Talks to the service manager; STATUS= lines are sent only when they change."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog  # seconds; ping at least every half of it
        self._status: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        """Read the sd_notify variables and remove them from the environment, as
        sd_notify(unset_environment=1) does: password commands and other children must not
        inherit a socket that speaks for this service."""
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        watchdog = watchdog_seconds(env, os.getpid())
        for key in _ENV_KEYS:
            env.pop(key, None)
        return cls(socket_address(raw) if raw else None, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send 'KEY=value' fields in one datagram; False when there is no manager."""
        if self.address is None:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", fields[0] if fields else "", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        fields = ["READY=1"]
        if status is not None:
            with self._lock:
                self._status = status
            fields.append(f"STATUS={status}")
        self.send(*fields)

    def status(self, text: str) -> None:
        """STATUS=text, once per change (phases change often; the manager needs no repeats)."""
        text = " ".join(text.split())
        with self._lock:
            if text == self._status:
                return
            self._status = text
        self.send(f"STATUS={text}")

    def ping(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
