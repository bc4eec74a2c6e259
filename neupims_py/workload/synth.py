"""Synthetic traces: an arrival process, prompt/output length distributions and adapter popularity.

Everything random comes from one ``numpy.random.default_rng(seed)``, drawn in a fixed order
(arrivals, prompt lengths, output lengths, adapters), so a seed names one trace.
"""

from __future__ import annotations

import json

import numpy as np

from neupims_py.errors import UserError
from neupims_py.workload.arrivals import Arrivals
from neupims_py.workload.lengths import LengthDist, sample_adapters
from neupims_py.workload.trace_file import Trace, empty_requests


def synthesize(
    arrivals: Arrivals,
    *,
    seed: int,
    n: int | None = None,
    duration_s: float | None = None,
    prompt: LengthDist | None = None,
    output: LengthDist | None = None,
    lengths_from: Trace | None = None,
    n_adapters: int = 0,
    adapter_alpha: float = 1.0,
) -> tuple[np.ndarray, dict]:
    """Requests and their attributes (without ``command``); by count ``n`` or by ``duration_s``.

    Lengths come either from ``prompt`` and ``output`` or, jointly per row (keeping the
    prompt/output correlation), from the requests of ``lengths_from``.
    """
    if (n is None) == (duration_s is None):
        raise UserError("give either --n (a count) or --duration (seconds), not both", field="--n")
    if (lengths_from is None) == (prompt is None or output is None):
        raise UserError(
            "give --prompt and --output length specs, or --lengths-from a trace",
            field="--lengths-from",
        )
    rng = np.random.default_rng(seed)
    times = (
        arrivals.times_ns(rng, n) if n is not None else arrivals.times_within_ns(rng, duration_s)
    )
    count = len(times)
    requests = empty_requests(count)
    requests["arrival_ns"] = times
    attrs = {
        "source": "synthetic",
        "tokenizer": "none",
        "arrival_process": arrivals.kind,
        "arrival_params": arrivals.params(),
        "seed": seed,
    }
    if lengths_from is None:
        requests["prompt_tokens"] = prompt.sample(rng, count)
        requests["output_tokens"] = output.sample(rng, count)
        attrs["prompt_lengths"] = prompt.describe()
        attrs["output_lengths"] = output.describe()
    else:
        rows = rng.integers(0, len(lengths_from.requests), size=count)
        requests["prompt_tokens"] = lengths_from.requests["prompt_tokens"][rows]
        requests["output_tokens"] = lengths_from.requests["output_tokens"][rows]
        attrs["lengths_from"] = json.dumps(
            {
                "source": str(lengths_from.attrs.get("source")),
                "requests": len(lengths_from.requests),
            }
        )
    requests["adapter_id"] = sample_adapters(rng, count, n_adapters, adapter_alpha)
    if n_adapters:
        attrs["adapters"] = json.dumps({"count": n_adapters, "alpha": adapter_alpha})
    return requests, attrs
