"""DRAM engine against DRAMsim3's summary figures on the shipped 10k-request traces.

The figures are DRAMsim3's (HBM2_8Gb_x128, one request offered per cycle) for
``traces/dram/*.trace``: cycles run, row-buffer hit rate, ACT and REF commands and average
read latency. Cycles, ACT, REF and latency must agree within 1 %, the hit rate within 0.002.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay

TRACES = Path(__file__).resolve().parents[1] / "traces" / "dram"

# name: (cycles, row hit rate, ACT, REF, average read latency)
DRAMSIM3 = {
    "stream_rd_10k": (10171, 0.9683, 317, 16, 57.9),
    "stream_r8w2_10k": (10120, 0.9671, 328, 16, 52.9),
    "random_r8w2_10k": (10905, 0.0007, 9993, 16, 303.6),
}


def read_trace(path: Path):
    """DRAMsim3 trace lines ``0x<hex addr> READ|WRITE <cycle>`` as (addr, is_write, cycle)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    assert all(op in ("READ", "WRITE") for _, op, _ in rows)
    addr = np.array([int(a, 16) for a, _, _ in rows], np.uint64)
    is_write = np.array([op == "WRITE" for _, op, _ in rows], bool)
    cycle = np.array([int(c) for _, _, c in rows], np.int64)
    return addr, is_write, cycle


@pytest.mark.parametrize("name", sorted(DRAMSIM3))
def test_matches_dramsim3(name, hbm2_mem):
    addr, is_write, cycle = read_trace(TRACES / f"{name}.trace")
    assert len(addr) == 10_000
    s = replay(lower_memory(hbm2_mem), addr, is_write, cycle).summary()
    cycles, hit_rate, act, ref, latency = DRAMSIM3[name]
    assert s["cycles"] == pytest.approx(cycles, rel=0.01)
    assert s["row_hit_rate"] == pytest.approx(hit_rate, abs=0.002)
    assert s["act"] == pytest.approx(act, rel=0.01)
    assert s["ref"] == pytest.approx(ref, rel=0.01)
    assert s["avg_read_latency"] == pytest.approx(latency, rel=0.01)
