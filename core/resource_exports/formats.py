"""Checking a received result file is the json or csv it claims to be, without loading it whole.

JSON: a top-level array is checked element by element with the C decoder over a sliding
buffer, so a 1 GB array of rows needs only one row's worth of memory. Any other top-level
value is decoded whole up to ``WHOLE_VALUE_LIMIT`` (larger single values are accepted
unchecked). CSV: the first record must be a header row with at least one named column.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

CHUNK = 1 << 20
WHOLE_VALUE_LIMIT = 32 << 20
_WS = " \t\r\n"


class MalformedResult(ValueError):
    pass


class _Reader:
    def __init__(self, path: Path) -> None:
        self.f = path.open("rb")
        self.dec = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped from the buffer's front, for error positions
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        raw = self.f.read(CHUNK)
        try:
            text = self.dec.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise MalformedResult(f"the JSON is not valid UTF-8: {exc}") from exc
        if not raw:
            self.eof = True
        # drop what is already checked so the buffer stays small
        self.base += self.pos
        self.buf = self.buf[self.pos:] + text
        self.pos = 0
        return True

    def skip_ws(self) -> str | None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def decode_value(self, decoder: json.JSONDecoder, limit: int) -> bool:
        """Decode one value at pos; False when it is larger than ``limit`` (then left unchecked)."""
        while True:
            try:
                _, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # A string running to the buffer's end, or an error within the last chunk, may only mean
                # the value goes on in the next chunk; an error further back is real.
                incomplete = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - CHUNK
                if self.eof or not incomplete:
                    where = self.base + exc.pos
                    raise MalformedResult(f"the JSON does not parse: {exc.msg} (character {where})") from exc
                if len(self.buf) - self.pos > limit:
                    return False
                self.more()
                continue
            if end >= len(self.buf) and not self.eof and self.more():
                continue  # a number at the buffer's end may go on in the next chunk
            self.pos = end
            return True

    def close(self) -> None:
        self.f.close()


def check_json(path: Path) -> None:
    r = _Reader(path)
    decoder = json.JSONDecoder()
    try:
        first = r.skip_ws()
        if first is None:
            raise MalformedResult("the JSON is empty")
        if first == "[":
            r.pos += 1
            nxt = r.skip_ws()
            if nxt == "]":
                r.pos += 1
            else:
                while True:
                    if nxt is None:
                        raise MalformedResult("the JSON does not parse: unterminated array")
                    if not r.decode_value(decoder, WHOLE_VALUE_LIMIT):
                        return
                    nxt = r.skip_ws()
                    if nxt == ",":
                        r.pos += 1
                        nxt = r.skip_ws()
                        continue
                    if nxt == "]":
                        r.pos += 1
                        break
                    raise MalformedResult("the JSON does not parse: expected ',' or ']' in the top-level array")
        else:
            if not r.decode_value(decoder, WHOLE_VALUE_LIMIT):
                return
        if r.skip_ws() is not None:
            raise MalformedResult("the JSON does not parse: extra data after the top-level value")
    finally:
        r.close()


def check_csv(path: Path) -> None:
    with path.open("rb") as raw:
        head = raw.read(CHUNK)
    if not head.strip():
        raise MalformedResult("the CSV is empty: it needs a header row")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the chunk's end is fine; anything else is not UTF-8
        if exc.start < len(head) - 4:
            raise MalformedResult(f"the CSV is not valid UTF-8: {exc}") from exc
        text = head[: exc.start].decode("utf-8-sig")
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:
        raise MalformedResult(f"the CSV header row does not parse: {exc}") from exc
    names = [h.strip() for h in header]
    if not names or not any(names):
        raise MalformedResult("the CSV has no header row (the first line must name the columns)")
    if len(set(names)) != len(names) or not all(names):
        raise MalformedResult("the CSV has no valid header row (column names must be non-empty and unique)")


def check_result(path: Path, fmt: str) -> None:
    if fmt == "json":
        check_json(path)
    elif fmt == "csv":
        check_csv(path)
    else:  # pragma: no cover - formats are validated when the export is made
        raise MalformedResult(f"unknown format {fmt}")
