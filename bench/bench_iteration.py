"""One GPT3-7B decode iteration on the NeuPIMs preset: simulation speed with reuse and exact,
and the cycles of the three systems.

Batches are NeuPIMs request snapshots of ShareGPT lengths (50-600 tokens, channels
round-robin over 32), made by `traces/batches/make_snapshot.py --seed 0` (its first 64
requests are the shipped `traces/batches/neupims-snapshot-64.csv`).

- `test_speed[steady|fast|exact]`: wall time of the whole 32-layer iteration of 256 requests
  (sub-batch interleaving on: the preset's threshold is 256) with each reuse level
  (compiler/iteration.py: steady, the default, is exact's result to the cycle; fast is an
  estimate) and with every layer simulated, one round each (exact takes minutes);
  `extra_info` has the simulated cycles, the layers simulated and cycles per wall-second.
- `test_modes[...]`: each system's cycles per iteration (reuse) at 256 and 512 requests, in
  `extra_info` and printed (run with `-s` to see them).
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.compiler.cli import read_batch
from neupims_py.config import load_hw
from neupims_py.model import load_model

MAKE_SNAPSHOT = Path(__file__).resolve().parents[1] / "traces" / "batches" / "make_snapshot.py"
PRESETS = {"npu-only": "npu-only", "npu+pim": "npu-pim", "neupims": "neupims"}


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> dict[int, list[BatchEntry]]:
    out = tmp_path_factory.mktemp("batches")
    result = {}
    for n in (256, 512):
        path = out / f"snapshot-{n}.csv"
        subprocess.run([sys.executable, str(MAKE_SNAPSHOT), "--n", str(n), "--seed", "0",
                        "--out", str(path)], check=True)
        result[n] = read_batch(path, 32)
    return result


@pytest.fixture(scope="module")
def model():
    m = load_model("gpt3-7b")
    # load (or compile) the engine for both PIM and plain-DRAM phases, outside the figures
    start = time.perf_counter()
    for preset in ("neupims", "npu-only"):
        IterationSimulator(load_hw(preset), m).simulate([BatchEntry(0, 1, 10, 0)], layers=1)
    print(f"\nengine load/compile and a warm-up layer: {time.perf_counter() - start:.1f} s")
    return m


def fresh(hw, model):
    """A new simulator per round: the engine state (open rows, refresh, KV rows) from zero."""
    return (IterationSimulator(hw, model),), {}


def timed(out: dict, batch, exact: bool = False, reuse: str = "steady"):
    """The round: simulate, keeping the result and its wall and CPU seconds in `out`."""

    def run(sim):
        wall, cpu = time.perf_counter(), time.process_time()
        out["r"] = sim.simulate(batch, exact=exact, reuse=reuse)
        out["wall"] = time.perf_counter() - wall
        out["cpu"] = time.process_time() - cpu

    return run


def record(benchmark, out: dict) -> None:
    r, wall, cpu = out["r"], out["wall"], out["cpu"]
    benchmark.extra_info.update(cycles=r.cycles, layers_simulated=r.layers_simulated, reuse=r.reuse,
                                sub_batches=r.sub_batches, wall_s=round(wall, 2),
                                cpu_s=round(cpu, 2), cycles_per_wall_s=round(r.cycles / wall),
                                cycles_per_cpu_s=round(r.cycles / cpu))


@pytest.mark.parametrize("level", ["steady", "fast", "exact"])
def test_speed(benchmark, batches, model, level):
    hw = load_hw("neupims")
    batch = batches[256]
    out = {}
    exact = level == "exact"
    benchmark.pedantic(timed(out, batch, exact, "steady" if exact else level),
                       setup=lambda: fresh(hw, model), rounds=1, iterations=1)
    r = out["r"]
    assert r.layers == 32 and r.sub_batches == 2
    record(benchmark, out)
    print(f"\n256 requests, {level} ({r.layers_simulated} layers simulated): {r.cycles:,} cycles in "
          f"{out['wall']:.1f} s wall, {out['cpu']:.1f} s CPU "
          f"({r.cycles / out['wall']:,.0f} cycles per wall-second)")


@pytest.mark.parametrize("n", [256, 512])
@pytest.mark.parametrize("mode", list(PRESETS))
def test_modes(benchmark, batches, model, mode, n):
    hw = load_hw(PRESETS[mode])
    batch = batches[n]
    out = {}
    benchmark.pedantic(timed(out, batch), setup=lambda: fresh(hw, model), rounds=1,
                       iterations=1)
    r = out["r"]
    assert r.mode == mode
    record(benchmark, out)
    print(f"\n{mode}, {n} requests: {r.cycles:,} cycles per iteration "
          f"({r.cycles // r.layers:,} per layer), {r.sub_batches} sub-batch(es), "
          f"{out['wall']:.1f} s wall, {out['cpu']:.1f} s CPU")
