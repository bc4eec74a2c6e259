"""Importer for Mooncake traces: JSONL with ``timestamp`` (ms), ``input_length``, ``output_length``.

``hash_ids`` (the prompt's KV blocks, shared between requests with a common prefix) is
ignored: the modelled server keeps no prefix cache, so sharing would not change the timing.
"""

from __future__ import annotations

from neupims_py.workload.table_reader import (
    RawRequests,
    collect,
    field_of,
    jsonl_rows,
    parse_count,
    parse_time_ns,
)

DESCRIPTION = "Mooncake: JSONL timestamp (ms), input_length, output_length (hash_ids ignored)"


def read(path: str) -> RawRequests:
    rows = []
    saw_hashes = False
    for line, obj in jsonl_rows(path):
        saw_hashes = saw_hashes or "hash_ids" in obj
        rows.append(
            (
                line,
                parse_count(field_of(obj, "input_length", line, path), line, "input_length", path),
                parse_count(
                    field_of(obj, "output_length", line, path), line, "output_length", path
                ),
                parse_time_ns(
                    field_of(obj, "timestamp", line, path), 1_000_000, line, "timestamp", path
                ),
            )
        )
    notes = ("hash_ids ignored: the modelled server has no prefix cache",) if saw_hashes else ()
    return collect(rows, notes=notes)
