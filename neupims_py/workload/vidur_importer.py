"""Importer for Vidur's trace-replay CSV: arrived_at (seconds), num_prefill_tokens, num_decode_tokens."""

from __future__ import annotations

from neupims_py.workload.table_reader import RawRequests, collect_timed, table_rows

DESCRIPTION = "Vidur trace: CSV arrived_at (s),num_prefill_tokens,num_decode_tokens"
COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "arrived_at")


def read(path: str) -> RawRequests:
    return collect_timed(table_rows(path, COLUMNS), path, COLUMNS, 1_000_000_000)
