"""Progress for long work: a rich bar on a terminal, a log line now and then otherwise.

The total is an estimate made before the work starts (file sizes, a UID range), and the
work can outgrow it: an mbox that is appended to during the import, Maildir names whose
``,S=`` size is not the file's, files that appear between the walk that sums the sizes and the
walk that reads them. So the total grows with the work (``Meter``), and a share is never
shown above 100 %.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

Advance = Callable[[int, int], None]  # (bytes, messages)

EVERY_SECONDS = 5.0  # between log lines when stderr is not a terminal


@dataclass(slots=True)
class Meter:
    """Work done against an estimated total that is raised whenever the work exceeds it."""

    total: int | None  # None or 0: unknown
    done: int = 0
    messages: int = 0

    def advance(self, amount: int, messages: int = 0) -> None:
        self.done += amount
        self.messages += messages
        if self.total and self.done > self.total:
            self.total = self.done

    def percent(self) -> int | None:
        """The share done, 0 to 100 (rounded down, so 100 means all of the known work);
        None when the total is unknown."""
        if not self.total:
            return None
        return min(100, max(0, self.done * 100 // self.total))


def log_line(label: str, meter: Meter, seconds: float) -> str:
    """'work/INBOX: 1,200 messages (40%), 300/s'"""
    percent = meter.percent()
    share = "" if percent is None else f" ({percent}%)"
    rate = meter.messages / max(seconds, 1e-6)
    return f"{label}: {meter.messages:,} messages{share}, {rate:,.0f}/s"


def _every(env: Mapping[str, str] = os.environ) -> float:
    """$NETAUDIT_PROGRESS_SECONDS, for a log that wants lines more or less often."""
    try:
        return max(0.0, float(env.get("NETAUDIT_PROGRESS_SECONDS", EVERY_SECONDS)))
    except ValueError:
        return EVERY_SECONDS


@contextlib.contextmanager
def track(label: str, total_bytes: int | None, *, every: float | None = None,
          unit: str = "bytes") -> Iterator[Advance]:
    """Yield a callback that advances by work done (bytes read, or ``unit`` items such as
    IMAP UIDs) and messages handled."""
    meter = Meter(total_bytes or None)
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            Task,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Task) -> Text:
                return Text(f"{task.speed or 0:,.0f} {unit}/s")

        speed = TransferSpeedColumn() if unit == "bytes" else Rate()
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                      TextColumn("{task.fields[messages]:,} messages"), speed,
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(label, total=meter.total, messages=0)

            def advance_bar(nbytes: int, messages: int) -> None:
                meter.advance(nbytes, messages)
                bar.update(task, total=meter.total, completed=meter.done,
                           messages=meter.messages)

            yield advance_bar
        return

    interval = _every() if every is None else every
    started = last = time.monotonic()

    def advance(nbytes: int, messages: int) -> None:
        nonlocal last
        meter.advance(nbytes, messages)
        now = time.monotonic()
        if now - last >= interval:
            last = now
            print(log_line(label, meter, now - started), file=sys.stderr, flush=True)

    yield advance
