"""Importer for Vidur's trace-replay CSV: arrived_at (seconds), num_prefill_tokens, num_decode_tokens."""

from __future__ import annotations

from neupims_py.workload.table_reader import (
    RawRequests,
    collect,
    parse_count,
    parse_time_ns,
    table_rows,
)

DESCRIPTION = "Vidur trace: CSV arrived_at (s),num_prefill_tokens,num_decode_tokens"


def read(path: str) -> RawRequests:
    rows = []
    for line, row in table_rows(path, ("arrived_at", "num_prefill_tokens", "num_decode_tokens")):
        rows.append(
            (
                line,
                parse_count(row["num_prefill_tokens"], line, "num_prefill_tokens", path),
                parse_count(row["num_decode_tokens"], line, "num_decode_tokens", path),
                parse_time_ns(row["arrived_at"], 1_000_000_000, line, "arrived_at", path),
            )
        )
    return collect(rows)
