"""Whether a server's NO or BAD means "later" (throttling), and how much later; pure."""

from __future__ import annotations

import re

_BACKOFF = re.compile(r"suggested\s+backoff\s+time\s*:?\s*(\d+)\s*(milliseconds|ms|seconds|s)?",
                      re.IGNORECASE)
_THROTTLED = re.compile(r"throttl|\[UNAVAILABLE\]|\[INUSE\]|\[LIMIT\]|\[OVERQUOTA\]|"
                        r"authenticated but not connected|try again later", re.IGNORECASE)


def suggested_backoff(text: str | bytes) -> float | None:
    """Seconds to wait from "Suggested Backoff Time: N ms" (Microsoft 365), else None.

    A bare number is milliseconds, as Microsoft sends it.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _BACKOFF.search(text)
    if m is None:
        return None
    value = int(m.group(1))
    unit = (m.group(2) or "ms").lower()
    return float(value) if unit in ("s", "seconds") else value / 1000.0


def is_throttled(text: str | bytes) -> bool:
    """Whether a NO/BAD reply means "later", not "never" (R-IMAP-14)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return bool(_THROTTLED.search(text)) or suggested_backoff(text) is not None
