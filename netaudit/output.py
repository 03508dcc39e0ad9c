"""Rows to the terminal, CSV or JSON: one place for every command that prints a result set."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import IO, Any

FORMATS = ("table", "csv", "json")


def jsonable(value: Any) -> Any:
    """JSON has no dates, decimals or UUIDs; render them the way DuckDB's CLI would."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | bytes):
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def write_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str,
               out: IO[str]) -> None:
    """CSV and JSON are written row by row, so a query over every message streams instead of
    holding a million rows (the JSON is what ``json.dump(..., indent=2)`` gives)."""
    if fmt == "json":
        first = True
        for row in rows:
            item = json.dumps({c: jsonable(v) for c, v in zip(columns, row, strict=True)},
                              ensure_ascii=False, indent=2)
            out.write(("[\n  " if first else ",\n  ") + item.replace("\n", "\n  "))
            first = False
        out.write("[]\n" if first else "\n]\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else jsonable(v) for v in row])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, show_lines=False)
        for row in rows:
            table.add_row(*("" if v is None else str(jsonable(v)) for v in row))
        Console(file=out).print(table)
