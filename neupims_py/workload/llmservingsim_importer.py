"""Importer for LLMServingSim traces: JSONL with ``input_toks``, ``output_toks``, ``arrival_time_ns``.

Extra keys are ignored. The older TSV form (a header with the same three columns) is
recognised by its first character not being ``{``.
"""

from __future__ import annotations

from neupims_py.workload.table_reader import (
    RawRequests,
    collect,
    field_of,
    first_char,
    jsonl_rows,
    parse_count,
    parse_time_ns,
    table_rows,
)

DESCRIPTION = "LLMServingSim: JSONL (or the older TSV) input_toks, output_toks, arrival_time_ns"
COLUMNS = ("input_toks", "output_toks", "arrival_time_ns")


def read(path: str) -> RawRequests:
    if first_char(path) == "{":
        source = (
            (line, {c: field_of(obj, c, line, path) for c in COLUMNS})
            for line, obj in jsonl_rows(path)
        )
    else:
        source = table_rows(path, COLUMNS)
    rows = []
    for line, row in source:
        rows.append(
            (
                line,
                parse_count(row["input_toks"], line, "input_toks", path),
                parse_count(row["output_toks"], line, "output_toks", path),
                parse_time_ns(row["arrival_time_ns"], 1, line, "arrival_time_ns", path),
            )
        )
    return collect(rows)
