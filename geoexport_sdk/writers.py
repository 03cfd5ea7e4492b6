"""Rows → a json array or a csv file, written streamed (one row in memory at a time)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any


@dataclass
class Rows:
    """Rows with their column names: lets an empty result still be a csv with a header row."""

    fieldnames: list[str]
    rows: Iterable[dict[str, Any]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_default)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out: IO[bytes]) -> int:
    """Write ``rows`` to the binary stream ``out`` as ``fmt`` (json | csv); returns the row count."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        if fmt == "json":
            return _json(rows, text)
        if fmt == "csv":
            return _csv(rows, text)
        raise ValueError(f"format {fmt!r} is not supported (json or csv)")
    finally:
        text.flush()
        text.detach()  # leave ``out`` open for the caller


def _json(rows: Iterable[dict[str, Any]], text: io.TextIOWrapper) -> int:
    n = 0
    text.write("[")
    for row in rows:
        text.write(",\n" if n else "\n")
        text.write(json.dumps(row, default=_json_default))
        n += 1
    text.write("\n]\n" if n else "]\n")
    return n


def _csv(rows: Iterable[dict[str, Any]], text: io.TextIOWrapper) -> int:
    fieldnames = list(rows.fieldnames) if isinstance(rows, Rows) else None
    it = iter(rows)
    first = next(it, None)
    if fieldnames is None:
        if first is None:
            raise ValueError("no rows and no column names: return Rows(fieldnames, rows) to export an empty csv")
        fieldnames = list(first)
    writer = csv.DictWriter(text, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in ([first] if first is not None else []):
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        n += 1
    for row in it:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        n += 1
    return n
