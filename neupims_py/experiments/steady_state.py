"""Steady-state decode batches and their throughput, as the NeuPIMs paper evaluates its
systems (ASPLOS 2024, section 7): every request of the batch is in generation at some point
of its output, one decode iteration of the batch is timed, and throughput is the batch's
tokens over that time.

- Lengths are (prompt, output) pairs of a dataset: the requests of a trace.h5 (ShareGPT), or
  a synthetic length distribution (`neupims_py.workload.lengths`, e.g. Alpaca-like).
- A running batch holds a request for each of its decode steps, so a request with k decode
  steps (output - 1: the first output token comes from the prefill) is found in it k times
  as often as a request with one. A batch is drawn as a running batch holds it: requests
  with probability proportional to their decode steps, then the step uniformly. At decode
  step s (1 .. output - 1) a request's one new token attends over prompt + s - 1 cached ones.
- Channels: `round-robin` (request i on channel i mod C) or `min-load` (each request in turn
  on the channel with the least estimated attention work so far, ties to the lowest: the
  serving loop's policy of the same name, `serving/kv_placement.py`, on the batch's
  lengths). The work is NeuPIMs' own estimate, `kv_placement.mha_estimate` (the artifact's
  Scheduler::estimate_mha_latency), summed over a channel's requests at their KV lengths,
  with the dimensions of the simulator's KV layout (heads per shard x head_dim, row
  elements, banks per channel); it has a fixed part per request, so short requests are not
  all piled onto one channel.

`measure` costs one iteration with a serving cost model (`ReuseCost`: memoised cycle-level
pieces; `ExactCost`: the whole iteration on the engine) and reports throughput and the
serving metrics' utilizations (`serving/metrics.py`): systolic arrays = busy cycles summed
over arrays / (cycles x arrays); PIM = busy cycles summed over channels / (cycles x
channels); vector units = busy / cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.compiler.iteration import BatchEntry
from neupims_py.compiler.layout import KvLayout
from neupims_py.errors import UserError
from neupims_py.serving.kv_placement import mha_estimate
from neupims_py.workload.lengths import LengthDist
from neupims_py.workload.trace_file import load_trace

CHANNEL_POLICIES = ("round-robin", "min-load")


@dataclass(frozen=True)
class Lengths:
    """A dataset's (prompt, output) token counts, one pair per request."""

    name: str
    prompt: np.ndarray
    output: np.ndarray

    def __post_init__(self):
        if len(self.prompt) != len(self.output) or len(self.prompt) == 0:
            raise UserError(f"dataset {self.name}: needs as many prompt as output lengths, at least one")

    @classmethod
    def from_trace(cls, path, name: str | None = None) -> "Lengths":
        r = load_trace(path).requests
        return cls(name or str(path), np.asarray(r["prompt_tokens"], np.int64),
                   np.asarray(r["output_tokens"], np.int64))

    @classmethod
    def synthetic(cls, name: str, prompt: LengthDist, output: LengthDist, n: int, seed: int) -> "Lengths":
        """`n` requests drawn from two length distributions (prompt first, from one seed)."""
        rng = np.random.default_rng(seed)
        return cls(name, prompt.sample(rng, n).astype(np.int64), output.sample(rng, n).astype(np.int64))


def steady_state_kv(lengths: Lengths, n: int, seed: int, max_context: int) -> np.ndarray:
    """KV lengths (cached tokens) of `n` decoding requests, drawn as a running batch holds
    them (see the module docstring); requests whose prompt + output exceed `max_context`
    never run, so they are left out."""
    if n < 1:
        raise UserError(f"a batch needs at least one request, not {n}", field="batch")
    steps = lengths.output - 1
    ok = (steps >= 1) & (lengths.prompt + lengths.output <= max_context)
    if not ok.any():
        raise UserError(f"dataset {lengths.name}: no request decodes (output >= 2 tokens) within "
                        f"{max_context} tokens of context")
    w = np.where(ok, steps, 0).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(w), size=n, p=w / w.sum())
    step = rng.integers(1, steps[idx] + 1)  # 1 .. output - 1
    return lengths.prompt[idx] + step - 1


def assign_channels(kv_lens, channels: int, policy: str, kv: KvLayout | None = None) -> np.ndarray:
    """Channel of each request (see the module docstring). `min-load` needs `kv`, the
    simulator's KV layout (`IterationSimulator.kv`), for the dimensions of its estimate."""
    kv_lens = np.asarray(kv_lens, np.int64)
    if policy == "round-robin":
        return np.arange(len(kv_lens), dtype=np.int64) % channels
    if policy != "min-load":
        raise UserError(f"unknown channel policy {policy!r}; valid: {', '.join(CHANNEL_POLICIES)}")
    if kv is None:
        raise ValueError("min-load channel assignment needs the KV layout (kv=sim.kv)")
    load = [0] * channels
    out = np.empty(len(kv_lens), np.int64)
    for i, n in enumerate(kv_lens):
        c = min(range(channels), key=lambda ch: (load[ch], ch))  # ties go to the lowest channel
        out[i] = c
        load[c] += mha_estimate(int(n), kv.e, kv.head_dim, kv.L.elems_per_row, kv.L.banks)
    return out


def batch_entries(kv_lens, channels) -> list[BatchEntry]:
    """One decode (q_len 1) per request over its cached tokens, on its channel."""
    return [BatchEntry(i, 1, int(k), int(c)) for i, (k, c) in enumerate(zip(kv_lens, channels))]


@dataclass(frozen=True)
class System:
    """A system of the comparison: configuration overrides on a preset, and how the
    batch's requests are placed on channels."""

    name: str
    overrides: tuple[str, ...]
    channel_policy: str


# Figure 12's systems, on hwconfigs/neupims.yaml. The baselines place KV round-robin (they
# have no channel-balancing algorithm); NeuPIMs balances by load (paper section 5.3).
FIG12_SYSTEMS = (
    System("npu-only", MODE_OVERRIDES["npu-only"], "round-robin"),
    System("npu+pim", MODE_OVERRIDES["npu+pim"], "round-robin"),
    System("neupims", MODE_OVERRIDES["neupims"], "min-load"),
)

# Figure 13's ablation: NPU+PIM, then one NeuPIMs technique added at a time. Sub-batch
# interleaving is forced at every batch size (threshold 2), to show where it hurts.
ABLATION_SYSTEMS = (
    System("npu+pim", MODE_OVERRIDES["npu+pim"], "round-robin"),
    System("+dual row buffers", (*MODE_OVERRIDES["npu+pim"], "memory.pim.row_buffers=dual"), "round-robin"),
    System("+min-load channels", (*MODE_OVERRIDES["npu+pim"], "memory.pim.row_buffers=dual"), "min-load"),
    System("+sub-batch interleaving", (*MODE_OVERRIDES["neupims"], "system.sub_batch_threshold=2"), "min-load"),
)


def measure(cost, hw, kv_lens, channel_policy: str) -> dict:
    """One decode iteration of the batch under `cost` (a serving CostModel for `hw`):
    cycles, tokens per second and utilizations (module docstring)."""
    channels = assign_channels(kv_lens, hw.memory.geometry.channels, channel_policy, cost.sim.kv)
    entries = batch_entries(kv_lens, channels)
    r = cost.iteration_cycles(entries)
    seconds = r.cycles / (hw.npu.clock_mhz * 1e6)
    load = np.bincount(channels, weights=np.asarray(kv_lens, np.float64), minlength=hw.memory.geometry.channels)
    return {
        "cycles": int(r.cycles),
        "tokens_per_s": len(entries) / seconds,
        "util_arrays": r.array_busy / (r.cycles * hw.npu.systolic_arrays),
        "util_vector": r.vector_busy / r.cycles,
        "util_pim": r.pim_busy / (r.cycles * hw.memory.geometry.channels),
        "sub_batches": int(r.sub_batches),
        "channel_load_max_over_mean": float(load.max() / load.mean()),
    }
