"""Import other simulators' and providers' traces into trace.h5: the format registry and the common options.

Each format lives in ``<format>_importer.py`` with ``read(path) -> RawRequests`` and a
one-line ``DESCRIPTION``. The options here apply to every format, in this order:
drop zero-output requests, skip ``start`` rows, keep ``limit`` rows, then times (the file's,
shifted to start at 0 and scaled, or a generated arrival process), then clip to ``max_tokens``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from neupims_py.errors import UserError
from neupims_py.workload import (
    azure_importer,
    dejavu_importer,
    lengths_importer,
    llmservingsim_importer,
    mooncake_importer,
    vidur_importer,
)
from neupims_py.workload.arrivals import Arrivals
from neupims_py.workload.table_reader import RawRequests
from neupims_py.workload.trace_file import empty_requests

FORMATS = {
    "azure": azure_importer,
    "vidur": vidur_importer,
    "llmservingsim": llmservingsim_importer,
    "mooncake": mooncake_importer,
    "dejavu": dejavu_importer,
    "lengths": lengths_importer,
}


def importer(name: str):
    """The importer module of a format; a wrong name lists the valid ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(
            f"unknown trace format {name!r}; choose one of {', '.join(FORMATS)}", field="--format"
        ) from None


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """The options every format shares (see the module docstring for the order they apply in)."""

    arrivals: Arrivals | None = None  # None: use the file's times
    seed: int = 0
    time_scale: float = 1.0  # multiplies the file's times: 0.5 replays twice as fast
    start: int = 0  # rows to skip
    limit: int | None = None  # rows to keep
    max_tokens: int | None = None  # prompt + output cap of one request
    drop_zero_output: bool = False


def clip_lengths(
    prompt: np.ndarray, output: np.ndarray, max_tokens: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Clip each request to ``max_tokens`` in all, as a model's context length would.

    The prompt is cut first, to at most max_tokens - 1 so one output token still fits;
    then the output to what is left. Returns the new lengths and how many requests changed.
    """
    new_prompt = np.minimum(prompt, max_tokens - 1)
    new_output = np.minimum(output, max_tokens - new_prompt)
    changed = int(np.count_nonzero((new_prompt != prompt) | (new_output != output)))
    return new_prompt, new_output, changed


def import_trace(path: str, fmt: str, options: ImportOptions) -> tuple[np.ndarray, dict, list[str]]:
    """Read ``path`` as ``fmt``: the requests, their attributes (without ``command``), report lines."""
    module = importer(fmt)
    raw = module.read(path)
    if len(raw.prompt) == 0:
        raise UserError("the file holds no requests", path=path)
    _check_sorted(raw, path)
    report = [f"read {len(raw.prompt):,} requests from {path} ({fmt})", *raw.notes]

    keep = np.ones(len(raw.prompt), dtype=bool)
    dropped = 0
    if options.drop_zero_output:
        keep = raw.output > 0
        dropped = int(np.count_nonzero(~keep))
        report.append(f"dropped {dropped:,} requests with no output tokens")
    rows = np.flatnonzero(keep)
    if options.start < 0:
        raise UserError(f"must be >= 0, not {options.start}", field="--start")
    rows = rows[options.start :]
    if options.limit is not None:
        if options.limit <= 0:
            raise UserError(f"must be > 0, not {options.limit}", field="--limit")
        rows = rows[: options.limit]
    if len(rows) == 0:
        raise UserError(
            f"no requests left after --start {options.start} and the filters; lower --start",
            path=path,
        )

    requests = empty_requests(len(rows))
    attrs = {
        "source": f"{fmt}:{os.path.basename(path)}",
        "tokenizer": "none",
        "rows_in_file": len(raw.prompt),
    }
    if options.arrivals is not None:
        rng = np.random.default_rng(options.seed)
        requests["arrival_ns"] = options.arrivals.times_ns(rng, len(rows))
        attrs.update(
            arrival_process=options.arrivals.kind,
            arrival_params=options.arrivals.params(),
            seed=options.seed,
        )
    elif raw.arrival_ns is None:
        raise UserError(
            f"format {fmt} has no arrival times; give an arrival process: --rate R (Poisson) "
            "or --arrival gamma --rate R --cv C, or --arrival at-once",
            path=path,
        )
    else:
        if not options.time_scale > 0:
            raise UserError(f"must be > 0, not {options.time_scale}", field="--time-scale")
        offset = int(raw.arrival_ns[rows[0]])
        relative = raw.arrival_ns[rows] - offset
        if options.time_scale != 1.0:
            relative = np.rint(relative * options.time_scale).astype(np.int64)
        requests["arrival_ns"] = relative
        params = {"time_offset_ns": offset, "time_scale": options.time_scale}
        attrs.update(
            arrival_process="file", arrival_params=json.dumps(params, sort_keys=True), seed=-1
        )

    prompt, output = raw.prompt[rows], raw.output[rows]
    clipped = 0
    if options.max_tokens is not None:
        if options.max_tokens < 2:
            raise UserError(
                f"must be >= 2 (one prompt and one output token), not {options.max_tokens}",
                field="--max-tokens",
            )
        prompt, output, clipped = clip_lengths(prompt, output, options.max_tokens)
        attrs["max_tokens"] = options.max_tokens
        report.append(f"clipped {clipped:,} requests to --max-tokens {options.max_tokens}")
    requests["prompt_tokens"] = prompt
    requests["output_tokens"] = output
    attrs.update(start=options.start, dropped_zero_output=dropped, clipped=clipped)
    if raw.notes:
        attrs["notes"] = "; ".join(raw.notes)
    return requests, attrs, report


def _check_sorted(raw: RawRequests, path: str) -> None:
    if raw.arrival_ns is None:
        return
    back = np.flatnonzero(raw.arrival_ns[1:] < raw.arrival_ns[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise UserError(
            f"{raw.line_word} {int(raw.lines[i])}: arrival time is earlier than on {raw.line_word} "
            f"{int(raw.lines[i - 1])}; sort the file by time",
            path=path,
        )
