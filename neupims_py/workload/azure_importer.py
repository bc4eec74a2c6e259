"""Importer for the Azure LLM inference traces (CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``).

TIMESTAMP is a date-time string such as ``2023-11-16 18:15:46.6805900``: up to 9 (and more,
cut to 9) sub-second digits, an optional ``T`` separator and an optional UTC offset
(``Z``, ``+00:00``); without one it is taken as UTC.
"""

from __future__ import annotations

import datetime
import re

from neupims_py.errors import UserError
from neupims_py.workload.table_reader import RawRequests, collect, parse_count, table_rows

DESCRIPTION = (
    "Azure LLM inference trace: CSV TIMESTAMP,ContextTokens,GeneratedTokens (date-time strings)"
)

_STAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?"
)


_EPOCH = datetime.datetime(1970, 1, 1)


def timestamp_ns(text: str, line: int, path: str, seconds_cache: dict) -> int:
    """Nanoseconds since the Unix epoch, exact: whole seconds by date arithmetic, digits appended."""
    match = _STAMP.fullmatch(text)
    if match is None:
        raise UserError(
            f"line {line}: TIMESTAMP: {text!r} is not a date-time like 2023-11-16 18:15:46.6805900",
            path=path,
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    key = (year, month, day, hour, minute, second, zone)
    seconds = seconds_cache.get(key)
    if seconds is None:
        try:
            moment = datetime.datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second)
            )
        except ValueError as exc:
            raise UserError(f"line {line}: TIMESTAMP: {text!r}: {exc}", path=path) from None
        seconds = (moment - _EPOCH) // datetime.timedelta(seconds=1)
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        seconds_cache[key] = seconds
    nanos = int((fraction or "0")[:9].ljust(9, "0"))
    return seconds * 1_000_000_000 + nanos


def read(path: str) -> RawRequests:
    rows = []
    seconds_cache: dict = {}  # rows share their date and second: parse each once
    for line, row in table_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        rows.append(
            (
                line,
                parse_count(row["ContextTokens"], line, "ContextTokens", path),
                parse_count(row["GeneratedTokens"], line, "GeneratedTokens", path),
                timestamp_ns(row["TIMESTAMP"], line, path, seconds_cache),
            )
        )
    return collect(rows)
