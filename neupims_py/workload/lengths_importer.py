"""Importer for plain length tables: CSV or TSV with columns ``input_toks``, ``output_toks``, no times."""

from __future__ import annotations

from neupims_py.workload.table_reader import RawRequests, collect, parse_count, table_rows

DESCRIPTION = "lengths: CSV/TSV input_toks, output_toks (no times: needs --rate)"


def read(path: str) -> RawRequests:
    rows = [
        (
            line,
            parse_count(row["input_toks"], line, "input_toks", path),
            parse_count(row["output_toks"], line, "output_toks", path),
            None,
        )
        for line, row in table_rows(path, ("input_toks", "output_toks"))
    ]
    return collect(rows)
