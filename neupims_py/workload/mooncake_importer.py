"""Importer for Mooncake traces: JSONL with ``timestamp`` (ms), ``input_length``, ``output_length``.

``hash_ids`` (the prompt's KV blocks, shared between requests with a common prefix) is
ignored: the modelled server keeps no prefix cache, so sharing would not change the timing.
"""

from __future__ import annotations

from neupims_py.workload.table_reader import RawRequests, collect_timed, json_fields, jsonl_rows

DESCRIPTION = "Mooncake: JSONL timestamp (ms), input_length, output_length (hash_ids ignored)"
COLUMNS = ("input_length", "output_length", "timestamp")


def read(path: str) -> RawRequests:
    objects = list(jsonl_rows(path))
    saw_hashes = any("hash_ids" in obj for _, obj in objects)
    notes = ("hash_ids ignored: the modelled server has no prefix cache",) if saw_hashes else ()
    return collect_timed(json_fields(objects, path, COLUMNS), path, COLUMNS, 1_000_000, notes=notes)
