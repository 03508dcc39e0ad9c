"""Which folders of an account to sync, from its LIST answer; pure, like ingest/imap_parse.py.

Apart from the message parsing, so that a sync with nothing new (LIST and a STATUS per folder)
loads none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GMAIL_CAPABILITY = b"X-GM-EXT-1"

SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail")
SKIPPED_ATTRIBUTES = ("\\junk", "\\trash")
UNSELECTABLE = ("\\noselect", "\\nonexistent")


class FolderNotFound(Exception):
    """A configured folder is not on the server; the message lists what is."""


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder to sync; ``sent`` marks my own mail (its From addresses are mine)."""

    name: str
    sent: bool = False


ListEntry = tuple[Sequence[bytes | str], Any, str]  # (flags, delimiter, name) as imapclient lists


def _flags(entry: ListEntry) -> set[str]:
    return {(f.decode("ascii", "replace") if isinstance(f, bytes) else f).lower()
            for f in entry[0]}


def find_special(listing: Sequence[ListEntry], attribute: str,
                 names: Sequence[str] = ()) -> str | None:
    """A SPECIAL-USE folder (RFC 6154) by its LIST attribute, then by the usual names.

    Names are a fallback for servers without SPECIAL-USE; they are tried as given and below
    INBOX ("INBOX.Sent", Courier style), case-insensitively.
    """
    wanted = attribute.lower()
    for entry in listing:
        if wanted in _flags(entry) and not _flags(entry) & set(UNSELECTABLE):
            return entry[2]
    by_lower = {entry[2].lower(): entry[2] for entry in listing
                if not _flags(entry) & set(UNSELECTABLE)}
    for name in names:
        if name.lower() in by_lower:
            return by_lower[name.lower()]
    for entry in listing:
        delim = entry[1].decode() if isinstance(entry[1], bytes) else entry[1]
        if not delim:
            continue
        for name in names:
            if entry[2].lower() == f"inbox{delim}{name}".lower():
                return entry[2]
    return None


DEFAULT_FOLDERS = ("INBOX", "\\Sent")  # without a per-account list, and off Gmail


def choose_folders(listing: Sequence[ListEntry], configured: Sequence[str] | None,
                   gmail: bool = False) -> list[Folder]:
    """The folders to sync, from a LIST response.

    Default: INBOX and the \\Sent folder; on Gmail the \\All folder, found by its attribute
    because its name is localized (falling back to INBOX and \\Sent when it is hidden).
    \\Junk and \\Trash are never chosen by default. ``configured`` overrides the default; a
    value such as "\\Sent" names a special-use folder. A configured folder that does not exist
    raises FolderNotFound; a missing default \\Sent folder is simply not synced.
    """
    if configured is None and gmail:
        all_mail = find_special(listing, "\\All")
        if all_mail is not None:
            return [Folder(all_mail)]
    explicit = configured is not None
    wanted = list(configured) if configured is not None else list(DEFAULT_FOLDERS)
    flags_by_name = {entry[2]: _flags(entry) for entry in listing}
    lower_names = {name.lower(): name for name in flags_by_name}
    out: list[Folder] = []
    for value in wanted:
        if value.startswith("\\"):
            name = find_special(listing, value, SENT_NAMES if value.lower() == "\\sent" else ())
            if name is None:
                if explicit:
                    raise FolderNotFound(f"no folder with the {value} attribute on the server")
                continue
        elif value.upper() == "INBOX":
            name = lower_names.get("inbox", "INBOX")
        elif value in flags_by_name:
            name = value
        else:
            known = ", ".join(sorted(flags_by_name)) or "none"
            raise FolderNotFound(f"folder {value!r} does not exist (folders: {known})")
        flags = flags_by_name.get(name, set())
        if flags & set(UNSELECTABLE):
            raise FolderNotFound(f"folder {name!r} cannot be selected (\\Noselect)")
        if not explicit and flags & set(SKIPPED_ATTRIBUTES):
            continue
        sent = "\\sent" in flags or value.lower() == "\\sent"
        if all(f.name != name for f in out):
            out.append(Folder(name, sent))
    return out
