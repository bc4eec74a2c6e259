"""Shared pieces of the serving tests: small models, hardware with a scheduler, traces."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np

from neupims_py.config import load_hw
from neupims_py.model import load_model
from neupims_py.serving.cost_model import ReuseCost
from neupims_py.serving.orchestrator import Orchestrator
from neupims_py.workload import write_trace
from neupims_py.workload.trace_file import empty_requests

PRESETS = {"npu-only": "npu-only", "npu+pim": "npu-pim", "neupims": "neupims"}

# GPT-3 shapes shrunk until a layer's weights stream in a few thousand cycles, head_dim 128
# kept (the PIM KV layout depends on it).
TINY = dataclasses.replace(load_model("gpt3-7b"), name="tiny", layers=2, d_model=512, heads=4,
                           ffn_dim=2048, tp=1)
MICRO = dataclasses.replace(load_model("gpt3-7b"), name="micro", layers=2, d_model=256, heads=2,
                            ffn_dim=1024, tp=1)

TRACE_ATTRS = {"source": "test", "tokenizer": "none", "arrival_process": "given",
               "arrival_params": "{}", "seed": -1, "command": "test"}


def hw_for(mode: str = "neupims", *overrides: str):
    return load_hw(PRESETS[mode], list(overrides))


@cache
def reuse_cost(mode: str, model_name: str, overrides: tuple = ()):
    """One ReuseCost per configuration for the whole session: it keeps no request state,
    and its measurements are the slow part."""
    model = {"tiny": TINY, "micro": MICRO}[model_name]
    return ReuseCost(hw_for(mode, *overrides), model)


def requests(prompt, output, arrival_ns=0, **columns) -> np.ndarray:
    """Trace rows; scalars are broadcast, columns given by name."""
    prompt = np.atleast_1d(prompt)
    rows = empty_requests(len(prompt))
    rows["prompt_tokens"] = prompt
    rows["output_tokens"] = output
    rows["arrival_ns"] = arrival_ns
    for k, v in columns.items():
        rows[k] = v
    return rows


def serve(rows, mode="neupims", *overrides, model="micro", cost=None, seed=0):
    """Run the serving loop on `rows` with the micro model; returns (result, orchestrator)."""
    hw = hw_for(mode, *overrides)
    cost = cost or reuse_cost(mode, model, tuple(o for o in overrides if not o.startswith("scheduler.")))
    orch = Orchestrator(hw, cost.model, cost, seed=seed)
    return orch.run(rows), orch


def write_test_trace(path, rows) -> None:
    write_trace(path, rows, TRACE_ATTRS)
