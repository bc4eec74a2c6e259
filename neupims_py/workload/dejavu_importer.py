"""Importer for DéjàVu's request lengths: a JSON list of ``[prompt_size, num_generated_tokens]`` pairs.

The file has no times: an arrival process must be given.
"""

from __future__ import annotations

from neupims_py.errors import UserError
from neupims_py.workload.table_reader import RawRequests, collect, load_json, parse_count

DESCRIPTION = "DejaVu: JSON list of [prompt_size, num_generated_tokens] (no times: needs --rate)"


def read(path: str) -> RawRequests:
    data = load_json(path)
    if not isinstance(data, list):
        raise UserError(
            f"expected a JSON list of [prompt_size, num_generated_tokens], found {type(data).__name__}",
            path=path,
        )
    rows = []
    for item, pair in enumerate(data):
        if not isinstance(pair, list) or len(pair) != 2:
            raise UserError(
                f"item {item}: {_brief(pair)} is not a pair [prompt_size, num_generated_tokens]",
                path=path,
            )
        rows.append(
            (
                item,
                parse_count(pair[0], item, "prompt_size", path, line_word="item"),
                parse_count(pair[1], item, "num_generated_tokens", path, line_word="item"),
                None,
            )
        )
    return collect(rows, line_word="item")


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
