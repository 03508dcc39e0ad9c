"""A synthetic but realistic mailbox, for `netaudit demo`, the benchmarks and crash tests.

Messages look like what a real mailbox holds: relay and DKIM headers, bodies of a few
kilobytes, mostly bulk mail, and conversations with a few dozen people who each have their own
rhythm, some of whom go quiet or move to a new employer.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path

END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # the sample mailbox ends here
FIRST = ["Alex", "Sam", "Maria", "Jürgen", "Aiko", "Priya", "Tomás", "Chloé", "Noah", "Lena",
         "Omar", "Zoë", "Ravi", "Ingrid", "Mateo", "Yuki", "Fatima", "Lars", "Ana", "Kwame"]
LAST = ["Okafor", "Schmidt", "Nakamura", "García", "Dubois", "Kowalski", "Singh", "Jensen",
        "Rossi", "Müller", "Haddad", "Larsen", "Silva", "Ito", "Novak", "Brown"]
COMPANIES = ["acme.example", "globex.example", "initech.example", "umbrella.example",
             "hooli.example", "vandelay.example", "stark.example", "wayne.example"]
LISTS = [("news@shop.example", "Shop News", "<offers.shop.example>"),
         ("digest@forum.example", "Forum Digest", "<digest.forum.example>"),
         ("noreply@bank.example", "Your Bank", None),
         ("updates@social.example", "Social Network", "<updates.social.example>"),
         ("notifications@code.example", "Code Host", "<notifications.code.example>")]
WORDS = ["the", "project", "meeting", "next", "week", "budget", "draft", "review", "coffee",
         "lunch", "proposal", "contract", "travel", "slides", "numbers", "quarter", "team",
         "launch", "plan", "call", "notes", "idea"]


@dataclass(frozen=True)
class Contact:
    name: str
    address: str
    every_days: float  # this tie's own rhythm
    initiates: float  # share of threads they start
    replies: float  # chance they answer me
    moved_to: str | None = None  # a new address after the middle of the period


def _contacts(rng: random.Random, count: int) -> list[Contact]:
    out = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first.lower()}.{last.lower()}".encode("ascii", "ignore").decode() or f"p{i}"
        local = "".join(c for c in local if c.isalnum() or c == ".") + (str(i) if i > 9 else "")
        domain = rng.choice(COMPANIES)
        moved = None
        if i % 11 == 3:
            moved = f"{local}@{rng.choice([c for c in COMPANIES if c != domain])}"
        out.append(Contact(f"{first} {last}", f"{local}@{domain}", rng.choice([3, 7, 14, 30, 60]),
                           rng.choice([0.1, 0.5, 0.5, 0.9]), rng.choice([0.1, 0.7, 0.9]), moved))
    return out


def _body(rng: random.Random, size: int) -> str:
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _relay(rng: random.Random, when: dt.datetime, domain: str) -> list[str]:
    hops = []
    for hop in range(rng.randint(2, 4)):
        ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        stamp = format_datetime(when + dt.timedelta(seconds=hop))
        hops.append(f"Received: from mx{hop}.{domain} (mx{hop}.{domain} [{ip}])\n"
                    f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):X}\n"
                    f"\tfor <robin@example.org>; {stamp}")
    sig = base64.b64encode(rng.randbytes(258)).decode()
    folded = "\n\t ".join(sig[i:i + 70] for i in range(0, len(sig), 70))
    hops.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1;\n"
                f"\th=from:to:subject:date:message-id; bh={sig[:44]}=;\n\tb={folded}")
    hops.append(f"Authentication-Results: mail.example.org; dkim=pass header.d={domain};"
                f"\n\tspf=pass smtp.mailfrom={domain}")
    return hops


def messages(count: int, *, seed: int = 1, me: str = "robin@example.org",
             end: dt.datetime | None = None, days: int = 730, personal_share: float = 0.25,
             contacts: int = 40) -> Iterator[tuple[dt.datetime, bool, bytes]]:
    """(date, seen, raw message) for ``count`` messages spread over ``days`` before ``end``."""
    rng = random.Random(seed)
    end = end or END
    start = end - dt.timedelta(days=days)
    people = _contacts(rng, contacts)
    threads: dict[str, list[str]] = {}
    for n in range(count):
        when = start + dt.timedelta(seconds=rng.uniform(0, days * 86400))
        mid = f"<{n}.{rng.getrandbits(48):x}@{'sample.example'}>"
        headers: list[str] = []
        if rng.random() < personal_share:
            person = rng.choice(people)
            gap = person.every_days / 30
            if rng.random() > min(1.0, gap):  # slower ties write less often
                person = people[n % len(people)]
            address = person.address
            if person.moved_to and when > start + dt.timedelta(days=days / 2):
                address = person.moved_to
            domain = address.split("@")[1]
            mine = rng.random() > person.initiates
            thread = threads.setdefault(person.address, [])
            if thread and rng.random() < (person.replies if mine else 0.7):
                headers.append(f"In-Reply-To: {thread[-1]}")
                headers.append("References: " + " ".join(thread[-5:]))
                subject = "Re: " + rng.choice(WORDS)
            else:
                thread.clear()
                subject = rng.choice(WORDS).capitalize() + " " + rng.choice(WORDS)
            thread.append(mid)
            sender = f"Robin Example <{me}>" if mine else f'"{person.name}" <{address}>'
            recipient = f'"{person.name}" <{address}>' if mine else f"Robin Example <{me}>"
            headers = [*_relay(rng, when, domain), f"From: {sender}", f"To: {recipient}",
                       *headers]
            if rng.random() < 0.2:
                other = rng.choice(people)
                cc = other.moved_to if other.moved_to and when > start + dt.timedelta(
                    days=days / 2) else other.address
                headers.append(f'Cc: "{other.name}" <{cc}>')
        else:
            sender_addr, sender_name, list_id = rng.choice(LISTS)
            domain = sender_addr.split("@")[1]
            subject = f"{sender_name}: {rng.choice(WORDS)} {rng.choice(WORDS)}"
            headers = [*_relay(rng, when, domain), f'From: "{sender_name}" <{sender_addr}>',
                       f"To: <{me}>"]
            if list_id:
                headers.append(f"List-Id: {sender_name} {list_id}")
            headers.append(f"List-Unsubscribe: <https://{domain}/u/{rng.getrandbits(32):x}>")
            headers.append(f"Feedback-ID: {rng.getrandbits(24)}:{domain}")
            headers.append("Precedence: bulk")
        headers += [f"Subject: {subject}", f"Date: {format_datetime(when)}",
                    f"Message-ID: {mid}", "MIME-Version: 1.0",
                    "Content-Type: text/plain; charset=utf-8"]
        body = _body(rng, rng.randint(1500, 8000))
        raw = ("\n".join(headers) + "\n\n" + body + "\n").encode("utf-8")
        yield when, rng.random() < 0.9, raw


def write_maildir(root: Path, count: int, **kwargs: object) -> int:
    """Write a Maildir of ``count`` messages; returns the bytes written."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    for n, (when, seen, raw) in enumerate(messages(count, **kwargs)):  # type: ignore[arg-type]
        name = f"{int(when.timestamp())}.M{n}P1.sample,S={len(raw)}"
        path = root / ("cur" if seen else "new") / (name + (":2,S" if seen else ""))
        path.write_bytes(raw)
        total += len(raw)
    return total
