"""Rows of the CSV, TSV, JSONL and JSON files that other simulators' traces come in, with line numbers.

Every parse error becomes a UserError naming the file, the line (or list item), the column
and what to fix. Numbers are parsed exactly: times as decimals, so "0.1" seconds is exactly
100,000,000 ns and an import round-trips bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterable, Iterator

import numpy as np

from neupims_py.errors import UserError

# Limits of the trace.h5 fields (int32 token counts, int64 nanoseconds).
MAX_TOKENS = 2**31 - 1
MAX_NS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RawRequests:
    """What an importer read: absolute arrival times (None when the format has none) and lengths.

    ``lines`` holds where each row came from (line or list item number) for error messages.
    """

    prompt: np.ndarray
    output: np.ndarray
    arrival_ns: np.ndarray | None
    lines: np.ndarray
    line_word: str = "line"
    notes: tuple[str, ...] = ()


def collect(
    rows: list[tuple[int, int, int, int | None]],
    *,
    line_word: str = "line",
    notes: tuple[str, ...] = (),
) -> RawRequests:
    """Build RawRequests from (line, prompt, output, arrival_ns or None) tuples."""
    lines = np.array([r[0] for r in rows], dtype=np.int64)
    prompt = np.array([r[1] for r in rows], dtype=np.int64)
    output = np.array([r[2] for r in rows], dtype=np.int64)
    times = None
    if rows and rows[0][3] is not None:
        times = np.array([r[3] for r in rows], dtype=np.int64)
    return RawRequests(
        prompt=prompt,
        output=output,
        arrival_ns=times,
        lines=lines,
        line_word=line_word,
        notes=notes,
    )


def collect_timed(
    source: Iterable[tuple[int, dict]],
    path: str,
    columns: tuple[str, str, str],
    scale_ns: int,
    *,
    notes: tuple[str, ...] = (),
) -> RawRequests:
    """RawRequests from (line, row) pairs whose ``columns`` are (prompt, output, arrival).

    The arrival column is in units of ``scale_ns`` nanoseconds; every value is checked with
    parse_count / parse_time_ns, which name the file, the line and the column on a mistake.
    """
    prompt, output, arrival = columns
    rows = [
        (
            line,
            parse_count(row[prompt], line, prompt, path),
            parse_count(row[output], line, output, path),
            parse_time_ns(row[arrival], scale_ns, line, arrival, path),
        )
        for line, row in source
    ]
    return collect(rows, notes=notes)


def json_fields(
    objects: Iterable[tuple[int, dict]], path: str, columns: tuple[str, ...]
) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) for (line, object) pairs of ``path``; a missing field is an error."""
    for line, obj in objects:
        yield line, {c: field_of(obj, c, line, path) for c in columns}


def _open_text(path: str):
    if not os.path.isfile(path):
        raise UserError("no such file; check the path", path=path)
    return open(path, encoding="utf-8", newline="")


def table_rows(path: str, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(line number, {column: text}) for each data row of a CSV or TSV file with a header.

    The delimiter is a tab when the header line has one, else a comma. Columns other than
    ``columns`` are ignored; a missing one is an error that lists the header found.
    """
    with _open_text(path) as f:
        header_line = f.readline()
        if not header_line.strip():
            raise UserError(
                f"line 1: empty; expected a header with the columns {', '.join(columns)}", path=path
            )
        delimiter = "\t" if "\t" in header_line else ","
        header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
        missing = [c for c in columns if c not in header]
        if missing:
            raise UserError(
                f"line 1: missing column(s) {', '.join(missing)} (header has {', '.join(header)}); "
                f"the header must name {', '.join(columns)}",
                path=path,
            )
        index = {c: header.index(c) for c in columns}
        reader = csv.reader(f, delimiter=delimiter)
        for fields in reader:
            line = reader.line_num + 1  # the header was read outside the csv reader
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < len(header):
                raise UserError(
                    f"line {line}: {len(fields)} fields, the header has {len(header)}; fix the row",
                    path=path,
                )
            yield line, {c: fields[i].strip() for c, i in index.items()}


def jsonl_rows(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file."""
    with _open_text(path) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"line {line}: not valid JSON ({exc.msg}); fix or remove the line", path=path
                ) from None
            if not isinstance(obj, dict):
                raise UserError(
                    f"line {line}: expected a JSON object {{...}}, found {type(obj).__name__}",
                    path=path,
                )
            yield line, obj


def first_char(path: str) -> str:
    """The first non-blank character of a text file ('' when it is empty)."""
    with _open_text(path) as f:
        for text in f:
            if text.strip():
                return text.strip()[0]
    return ""


def load_json(path: str):
    with _open_text(path) as f:
        try:
            return json.load(f, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"line {exc.lineno}: not valid JSON ({exc.msg}); fix the file", path=path
            ) from None


def field_of(obj: dict, key: str, line: int, path: str):
    if key not in obj:
        raise UserError(f"line {line}: missing key {key!r}; every line needs {key!r}", path=path)
    return obj[key]


def parse_count(value, line: int, column: str, path: str, *, line_word: str = "line") -> int:
    """A token count: a non-negative integer (an integral float such as "12.0" is accepted)."""
    number = _number(value)
    if number is None or number != number.to_integral_value():
        raise UserError(
            f"{line_word} {line}: {column}: {_shown(value)} is not a whole number of tokens",
            path=path,
        )
    if number < 0:
        raise UserError(
            f"{line_word} {line}: {column}: {_shown(value)} is negative; token counts are >= 0",
            path=path,
        )
    if number > MAX_TOKENS:
        raise UserError(
            f"{line_word} {line}: {column}: {_shown(value)} is above {MAX_TOKENS:,}, "
            "the most a trace can hold; fix the row",
            path=path,
        )
    return int(number)


def parse_time_ns(value, scale_ns: int, line: int, column: str, path: str) -> int:
    """A time in units of ``scale_ns`` nanoseconds, exactly, rounded to whole nanoseconds."""
    number = _number(value)
    if number is None:
        raise UserError(f"line {line}: {column}: {_shown(value)} is not a number", path=path)
    if number < 0:
        raise UserError(
            f"line {line}: {column}: {_shown(value)} is negative; times are >= 0", path=path
        )
    ns = int((number * scale_ns).to_integral_value())
    if ns > MAX_NS:
        raise UserError(
            f"line {line}: {column}: {_shown(value)} is beyond the int64 nanosecond range",
            path=path,
        )
    return ns


def _shown(value) -> str:
    """A field as the user wrote it: text quoted, JSON numbers as they are."""
    if isinstance(value, str):
        return repr(value)
    return str(value) if isinstance(value, Decimal) else json.dumps(value, default=str)


def _number(value) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None
