"""Progress for long work: a rich bar on a terminal, a log line now and then otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

Advance = Callable[[int, int], None]  # (bytes, messages)


@contextlib.contextmanager
def track(label: str, total_bytes: int | None, *, every: float = 5.0,
          unit: str = "bytes") -> Iterator[Advance]:
    """Yield a callback that advances by work done (bytes read, or ``unit`` items such as
    IMAP UIDs) and messages handled."""
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
            task = bar.add_task(label, total=total_bytes or None, messages=0)
            count = 0

            def advance_bar(nbytes: int, messages: int) -> None:
                nonlocal count
                count += messages
                bar.update(task, advance=nbytes, messages=count)

            yield advance_bar
        return

    started = last = time.monotonic()
    done_bytes = done_messages = 0

    def advance(nbytes: int, messages: int) -> None:
        nonlocal last, done_bytes, done_messages
        done_bytes += nbytes
        done_messages += messages
        now = time.monotonic()
        if now - last >= every:
            last = now
            share = f" ({100 * done_bytes / total_bytes:.0f}%)" if total_bytes else ""
            rate = done_messages / max(now - started, 1e-6)
            print(f"{label}: {done_messages:,} messages{share}, {rate:,.0f}/s", file=sys.stderr,
                  flush=True)

    yield advance
