"""Per-token latency of one batch of identical requests: the roofline bound beside the
cycle-level simulator.

    r = latency("neupims", "gpt3-7b", prompt=1024, response=512, batch=8)
    r.roofline[0], r.simulated[0]     # prefill: time to first token, seconds
    r.roofline[n], r.simulated[n]     # decode step n: generated token n-1 to token n

The simulated side serves ``batch`` requests (prompt P, output R), all arriving at t = 0,
through the serving loop (`neupims_py.serving`) with the default ``ReuseCost`` (or
``ExactCost`` with ``exact=True``). So that the whole batch is prefilled in the first
iteration and then decodes in lock-step, the scheduler limits that would stop it are raised
(never lowered) to fit: max_batch_size to B, max_batch_tokens to B * P, max_prompt_tokens
to P, max_request_tokens to P + R and max_total_tokens to B * (P + R) where set lower;
``LatencyResult.raised`` lists them. A batch whose K/V caches do not fit the memory is a
UserError.

Measured simulated / roofline at batch 1 (ReuseCost): gpt3-7b, prompt 1024, decode 1.84
(neupims) and 2.8 (npu-only), prefill 1.41; the 2-layer test model, prompt 64, decode 2.3
(neupims, npu+pim) and 2.6 (npu-only). For the test model on neupims a decode step is the
weight GEMMs at 77% of peak bandwidth, then PIM attention in the request's one channel
(the roofline spreads K/V over all channels and overlaps it with the weights);
tests/test_analytic_latency.py asserts a factor of at most 3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from neupims_py.analytic.roofline import Peaks, roofline_latencies
from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.config import HwConfig, load_hw
from neupims_py.errors import UserError
from neupims_py.model import ModelConfig, load_model
from neupims_py.serving.cost_model import ExactCost, ReuseCost
from neupims_py.serving.orchestrator import Orchestrator
from neupims_py.workload.trace_file import empty_requests


@dataclass(frozen=True)
class LatencyResult:
    """Per-token latencies in seconds: [prefill, decode step 1, ..., decode step R-1]."""

    roofline: list[float]
    simulated: list[float]
    hw: str
    mode: str
    model: str
    prompt: int
    response: int
    batch: int
    cost_model: str
    raised: dict  # scheduler limit -> (configured, used) where it was raised to fit the batch
    peaks: Peaks

    @property
    def ratios(self) -> list[float]:
        """simulated / roofline per token (>= 1: the roofline is a lower bound)."""
        return [s / r for s, r in zip(self.simulated, self.roofline)]

    def to_dict(self) -> dict:
        return {
            "hw": self.hw, "mode": self.mode, "model": self.model, "prompt": self.prompt,
            "response": self.response, "batch": self.batch, "cost_model": self.cost_model,
            "scheduler_limits_raised": {k: {"configured": a, "used": b}
                                        for k, (a, b) in self.raised.items()},
            "peaks": dataclasses.asdict(self.peaks),
            "latencies_s": {"roofline": self.roofline, "simulated": self.simulated,
                            "ratio": self.ratios},
        }


def latency(hw: str | Path | HwConfig, model: str | Path | ModelConfig, prompt: int,
            response: int, batch: int = 1, mode: str | None = None,
            exact: bool = False) -> LatencyResult:
    """The roofline and simulated per-token latencies (seconds) of `batch` requests of
    `prompt` tokens generating `response` tokens each, on `hw` (a file, preset name or
    HwConfig) with `model` (a file, shipped name or ModelConfig); `mode` switches the
    system as `neupims-sim run --mode` does."""
    for name, value, low in (("prompt", prompt, 1), ("response", response, 1), ("batch", batch, 1)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"must be a whole number >= {low}, got {value!r}", field=name)
    if mode is not None and mode not in MODE_OVERRIDES:
        raise UserError(f"unknown mode {mode!r}; valid: {', '.join(MODE_OVERRIDES)}", field="mode")
    if not isinstance(hw, HwConfig):
        hw = load_hw(hw, MODE_OVERRIDES.get(mode, ()))
    elif mode is not None:
        hw = _with(hw, dict(o.split("=", 1) for o in MODE_OVERRIDES[mode]))
    if not isinstance(model, ModelConfig):
        model = load_model(model)
    hw, raised = _fit_batch(hw, prompt, response, batch)
    cost = ExactCost(hw, model) if exact else ReuseCost(hw, model)
    return LatencyResult(
        roofline=roofline_latencies(hw, model, prompt, response, batch),
        simulated=_simulate(hw, model, cost, prompt, response, batch),
        hw=hw.name, mode=hw.system.mode, model=model.name, prompt=prompt, response=response,
        batch=batch, cost_model=cost.name, raised=raised, peaks=Peaks.of(hw, model),
    )


def _simulate(hw, model, cost, prompt, response, batch) -> list[float]:
    rows = empty_requests(batch)
    rows["prompt_tokens"] = prompt
    rows["output_tokens"] = response
    result = Orchestrator(hw, model, cost).run(rows)
    first = result.requests[0]
    for r in result.requests:
        if r.reason:
            raise UserError(f"a request of the batch was rejected: {r.reason}; try a smaller "
                            "batch, prompt or response", field="--batch")
        if r.token_cycles != first.token_cycles:
            # every request must run in the same iterations, else the lists are not the batch's
            raise UserError(f"the {batch} requests did not run as one batch (request {r.id} "
                            f"got its first token at cycle {r.first_token}, request {first.id} "
                            f"at {first.first_token}): their K/V caches do not fit the memory "
                            "together; try a smaller batch", field="--batch")
    ns = 1000.0 / hw.npu.clock_mhz
    t = first.token_cycles
    cycles = [t[0]] + [b - a for a, b in zip(t, t[1:])]
    return [c * ns / 1e9 for c in cycles]


def _fit_batch(hw: HwConfig, prompt: int, response: int, batch: int):
    """The configuration with the scheduler limits that would split the batch raised."""
    s = hw.scheduler
    need = {"max_batch_size": batch, "max_batch_tokens": batch * prompt}
    # these are 0 = derived (from memory) or none; only a smaller configured value is raised
    for name, value in (("max_prompt_tokens", prompt), ("max_request_tokens", prompt + response),
                        ("max_total_tokens", batch * (prompt + response))):
        if getattr(s, name):
            need[name] = value
    raised = {k: (getattr(s, k), v) for k, v in need.items() if getattr(s, k) < v}
    if not raised:
        return hw, {}
    return _with(hw, {f"scheduler.{k}": v for k, (_, v) in raised.items()}), raised


def _with(cfg, changes: dict):
    """`cfg` with dotted-key changes applied in one `dataclasses.replace` per section, so
    cross-field checks see all of them at once (a mode and the PIM it needs)."""
    here, nested = {}, {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            here[key] = _scalar(value)
    for head, sub in nested.items():
        here[head] = _with(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **here)


def _scalar(value):
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value, value)
    return value
