"""Personal names as mail shows them, and when two of them can be one person.

Pure functions: the identity rules (analysis/identity.py) ask them. Mail writes one name many
ways: "Allen, Phillip K." (Exchange), "Phillip K Allen" (Notes), "phillip allen" (a webmail
account), and an address such as brenda.h.fletcher@ spells one too. Two names are compatible
when first and last name agree and the middle names do not contradict ("K" fits "Kevin",
nothing fits anything); a different first name is a different person, however common the
family name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Words that make a display name a role or a team, not a person.
ROLE_WORDS = frozenset({
    "support", "team", "info", "noreply", "no-reply", "notifications", "newsletter", "admin",
    "administrator", "service", "services", "sales", "billing", "help", "news", "office",
    "customer", "the", "mailer", "daemon", "postmaster", "updates", "alerts", "delivery",
    "subsystem", "system", "calendar", "reply", "notification", "editor", "editors", "desk",
    "announcement", "announcements", "department", "group", "center", "centre", "staff",
    "committee", "hr", "it", "via", "com", "net", "org", "inc", "llc", "ltd", "corp",
})
# Titles and suffixes that say nothing about who it is.
_IGNORED_WORDS = frozenset({
    "jr", "sr", "ii", "iii", "iv", "mr", "mrs", "ms", "dr", "prof", "phd", "md", "cfp", "cpa",
    "esq", "mba",
})
# Mailbox providers: a shared domain there says nothing about two addresses being one person.
PUBLIC_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com",
    "msn.com", "aol.com", "icloud.com", "me.com", "mac.com", "gmx.de", "gmx.net", "web.de",
    "mail.ru", "yandex.ru", "protonmail.com", "proton.me", "juno.com", "earthlink.net",
    "comcast.net", "att.net", "verizon.net", "mindspring.com", "prodigy.net", "excite.com",
    "netscape.net", "compuserve.com", "rr.com", "austin.rr.com", "flash.net", "swbell.net",
    "sbcglobal.net", "bellsouth.net", "cox.net", "charter.net", "qq.com", "163.com",
    "fastmail.com", "zoho.com", "yahoo.co.uk", "hotmail.co.uk", "btinternet.com", "orange.fr",
    "free.fr", "laposte.net", "t-online.de", "libero.it", "ymail.com", "rocketmail.com",
})
_WORD = re.compile(r"[^\w'-]+")
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_LOCAL_SPLIT = re.compile(r"[._-]+")


@dataclass(frozen=True, slots=True)
class PersonName:
    first: str
    middle: tuple[str, ...]
    last: str

    def __str__(self) -> str:
        return " ".join((self.first, *self.middle, self.last))


def _words(text: str) -> list[str]:
    return [w.strip("'-") for w in _WORD.split(text) if w.strip("'-")]


def parse_name(text: str | None) -> PersonName | None:
    """First, middle and last name of a display name; None when it names no one person.

    "Last, First M." is read as Exchange writes it; "(Asset Mktg)" and "[EXT]" are dropped.
    """
    if not text or "@" in text or "/" in text:
        return None
    text = unicodedata.normalize("NFKC", text).casefold().strip(" \"'")
    text = _PARENS.sub(" ", text)
    if text.count(",") == 1:
        last_part, _, rest = text.partition(",")
        last_words = [w for w in _words(last_part) if w not in _IGNORED_WORDS]
        rest_words = [w for w in _words(rest) if w not in _IGNORED_WORDS]
        if not last_words or not rest_words:
            return None
        words = [*rest_words, *last_words]
        first, middle, last = rest_words[0], tuple(rest_words[1:]), " ".join(last_words)
    elif "," in text:
        return None  # a list of names, or "Smith, Jones, and Partners"
    else:
        words = [w for w in _words(text) if w not in _IGNORED_WORDS]
        if len(words) < 2:
            return None
        first, middle, last = words[0], tuple(words[1:-1]), words[-1]
    if any(w in ROLE_WORDS or any(c.isdigit() for c in w) for w in words):
        return None
    if len(first) < 2 or len(last) < 2 or len(middle) > 2:
        return None  # "J Smith", "K. Allen": an initial is not enough to tell people apart
    return PersonName(first, middle, last)


def name_from_address(address: str) -> PersonName | None:
    """The name an address spells, when its local part is first[.middle].last.

    "brenda.h.fletcher" and "mike.grigsby" spell one; "jsmith", "pallen70" and "k..allen"
    do not (an initial and a surname could be anyone of that surname).
    """
    local = address.rpartition("@")[0].split("+", 1)[0]
    parts = [p for p in _LOCAL_SPLIT.split(local.casefold()) if p]
    if len(parts) < 2 or len(parts) > 4 or not all(p.isalpha() for p in parts):
        return None
    first, middle, last = parts[0], tuple(parts[1:-1]), parts[-1]
    if len(first) < 2 or len(last) < 2 or first in ROLE_WORDS or last in ROLE_WORDS:
        return None
    return PersonName(first, middle, last)


def _middles_agree(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a or not b:
        return True
    if len(a) != len(b):
        return False
    return all(x == y or (len(x) == 1 and y.startswith(x)) or (len(y) == 1 and x.startswith(y))
               for x, y in zip(a, b, strict=True))


def compatible(a: PersonName, b: PersonName) -> bool:
    """Could both names be the same person's? Same first and last name, middles agreeing."""
    return a.first == b.first and a.last == b.last and _middles_agree(a.middle, b.middle)


def org_domain(address: str) -> str | None:
    """The organisation part of an address's domain, or None for a public mailbox provider.

    ect.enron.com and enron.com are one organisation; two gmail.com users are not.
    """
    domain = address.rpartition("@")[2].casefold()
    if domain in PUBLIC_DOMAINS or any(domain.endswith("." + d) for d in PUBLIC_DOMAINS):
        return None
    labels = domain.split(".")
    # example.co.uk, example.com.au: the label before a two-letter country code's second level
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:])
