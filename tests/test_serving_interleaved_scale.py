"""ReuseCost against ExactCost where sub-batch interleaving runs at scale: every channel's
PIM busy for most of the weight stream beside it, several decodes' K/V writes per channel.

A GPT3-7B decode iteration of batch 256 was 10.9 % short (issue #5): the composed stream
slowed down by what a PIM load in step on all channels costs it (2.1 %; decodes of
different lengths, whose commands do not line up across channels, cost it 8.6 %), and a
channel's decode writes were taken as n times the second one's increment (4.2k cycles for
four, while their acceptance waits for full bank queues to drain in some position patterns:
up to 12k, and the phase waits for the slowest channel). This is the same situation on a
model small enough for the suite.
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


def test_interleaved_batch_256_with_busy_pim_on_every_channel():
    """256 decodes (KV 32-299 tokens, seeded), channels round robin, the neupims preset
    (two sub-batches from 256). Measured: ReuseCost -1.0 % against ExactCost (before the
    mixed-load slowdown and the decode-write acceptance: -6.9 %; its interleaved phases
    34.4k cycles against the engine's 36.1-37.3k)."""
    rng = np.random.default_rng(0)
    kv = rng.integers(32, 300, 256)
    batch = [BatchEntry(i, 1, int(kv[i]), i % 32) for i in range(256)]
    hw = hw_for("neupims")
    got = {}
    for cls in (ReuseCost, ExactCost):
        cost = cls(hw, SMALL)
        for e in batch:
            cost.admit(e.req, e.channel, e.kv_len + 1)
        r = cost.iteration_cycles(batch)
        assert r.sub_batches == 2
        got[cls.name] = r.cycles
    diff = got["reuse"] / got["exact"] - 1
    assert abs(diff) < 0.03, got
