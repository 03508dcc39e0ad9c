"""How a forgotten address is remembered: by a hash, enough to refuse it, not to read it."""

from __future__ import annotations

import hashlib


def forget_hash(address: str) -> str:
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()
