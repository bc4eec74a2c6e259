"""Importer for LLMServingSim traces: JSONL with ``input_toks``, ``output_toks``, ``arrival_time_ns``.

Extra keys are ignored. The older TSV form (a header with the same three columns) is
recognised by its first character not being ``{``.
"""

from __future__ import annotations

from neupims_py.workload.table_reader import (
    RawRequests,
    collect_timed,
    first_char,
    json_fields,
    jsonl_rows,
    table_rows,
)

DESCRIPTION = "LLMServingSim: JSONL (or the older TSV) input_toks, output_toks, arrival_time_ns"
COLUMNS = ("input_toks", "output_toks", "arrival_time_ns")


def read(path: str) -> RawRequests:
    if first_char(path) == "{":
        source = json_fields(jsonl_rows(path), path, COLUMNS)
    else:
        source = table_rows(path, COLUMNS)
    return collect_timed(source, path, COLUMNS, 1)
