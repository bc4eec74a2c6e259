"""Throughput of the DRAM path on 1M-request traces: parsing each trace file, and replaying it
on DRAMsim3's HBM2_8Gb_x128 (`hwconfigs/hbm2-8gb-x128.yaml`).

Targets (reported, not asserted): parsing under 1 s per million lines; replay at least 3M
requests/s on the streams and 1M requests/s on the random trace.
"""

import time

import numpy as np
import pytest

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.dram.trace_io import read_trace

NAMES = ("stream_rd_1M", "stream_r8w2_1M", "random_r8w2_1M")


@pytest.fixture(scope="module")
def memory():
    mem = load_hw("hbm2-8gb-x128").memory
    params = lower_memory(mem)
    start = time.perf_counter()
    empty = np.zeros(0, np.int64)
    replay(params, empty, empty.astype(bool), empty)  # load or compile the engine first
    print(f"\nengine load/compile: {time.perf_counter() - start:.2f} s")
    return mem, params


def per_second(benchmark, n: int) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable
        best = benchmark.stats.stats.min
        benchmark.extra_info["requests"] = n
        benchmark.extra_info["requests_per_s"] = round(n / best)


@pytest.mark.parametrize("name", NAMES)
def test_parse(benchmark, traces_1m, name):
    trace = benchmark.pedantic(read_trace, args=(traces_1m[name],), rounds=3, iterations=1)
    assert len(trace.addr) == 1_000_000
    per_second(benchmark, len(trace.addr))


@pytest.mark.parametrize("name", NAMES)
def test_replay(benchmark, traces_1m, memory, name):
    mem, params = memory
    t = read_trace(traces_1m[name])
    result = benchmark.pedantic(
        replay,
        args=(params, t.addr, t.is_write, t.cycle),
        kwargs={"clock_mhz": mem.clock_mhz, "burst_bytes": mem.geometry.burst_bytes},
        rounds=3,
        iterations=1,
    )
    s = result.summary()
    assert s["reads"] + s["writes"] == len(t.addr)
    benchmark.extra_info["cycles"] = result.cycles
    benchmark.extra_info["row_hit_rate"] = round(s["row_hit_rate"], 4)
    per_second(benchmark, len(t.addr))
