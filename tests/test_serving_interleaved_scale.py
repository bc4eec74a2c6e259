"""ReuseCost against ExactCost at batch 256 with several decodes per channel: with sub-batch
interleaving every channel's PIM busy for most of the weight stream beside it, and several
decodes' K/V writes per channel.

A GPT3-7B decode iteration of batch 256 was 10.9 % short (issue #5): the composed stream
slowed down by what a PIM load in step on all channels costs it (2.1 %; decodes of
different lengths, whose commands do not line up across channels, cost it 8.6 %), and a
channel's decode writes were taken as n times the second one's increment (4.2k cycles for
four, while their acceptance waits for full bank queues to drain in some position patterns:
up to 12k, and the phase waits for the slowest channel). This is the same situation on a
model small enough for the suite; and npu+pim's decodes, eight per channel, whose writes
add to their PIM GEMVs (single row buffer) far more than three copies' increments show
(GPT3-7B batch 256: -6.4 %).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neupims_py.compiler.iteration import BatchEntry
from neupims_py.model import load_model
from neupims_py.serving.cost_model import ExactCost, ReuseCost

from serving_common import hw_for

# GPT3-7B's shape at half the width, six layers: a layer's weights stream in about 30k
# cycles, four decodes per channel and sub-batch keep the PIM busy for most of it
SMALL = dataclasses.replace(load_model("gpt3-7b"), name="small", layers=6, d_model=2048, heads=16,
                            ffn_dim=8192, tp=4)


def _reuse_against_exact(mode: str, kv_hi: int) -> tuple[float, dict]:
    """256 decodes (KV 32 .. kv_hi - 1 tokens, seeded), channels round robin, the preset
    of `mode`: ReuseCost's cycles over ExactCost's, minus 1."""
    rng = np.random.default_rng(0)
    kv = rng.integers(32, kv_hi, 256)
    batch = [BatchEntry(i, 1, int(kv[i]), i % 32) for i in range(256)]
    hw = hw_for(mode)
    got = {}
    for cls in (ReuseCost, ExactCost):
        cost = cls(hw, SMALL)
        for e in batch:
            cost.admit(e.req, e.channel, e.kv_len + 1)
        r = cost.iteration_cycles(batch)
        assert r.sub_batches == (2 if mode == "neupims" else 1)
        got[cls.name] = r.cycles
    return got["reuse"] / got["exact"] - 1, got


def test_interleaved_batch_256_with_busy_pim_on_every_channel():
    """neupims (two sub-batches from 256), KV 32-299. Measured: ReuseCost -1.0 % against
    ExactCost (before the mixed-load slowdown and the decode-write acceptance: -6.9 %; its
    interleaved phases 34.4k cycles against the engine's 36.1-37.3k)."""
    diff, got = _reuse_against_exact("neupims", 300)
    assert abs(diff) < 0.03, got


def test_single_row_buffer_decode_writes_beside_pim():
    """npu+pim (single row buffer: a channel's decode writes and PIM GEMVs take turns at
    the banks), eight decodes per channel, KV 32-149. Measured: ReuseCost -1.3 % against
    ExactCost (with per-request write+GEMV pieces, as before: -6.8 %; pre+mha 58.7k cycles
    against the engine's 63.8-66.0k)."""
    diff, got = _reuse_against_exact("npu+pim", 150)
    assert abs(diff) < 0.03, got
