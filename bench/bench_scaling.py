"""How the cost of simulating one decode layer grows with batch size, sequence length and
model size, on the NeuPIMs preset.

What is timed, per point: `IterationSimulator(hw, model).simulate(batch, layers=1)`, one
decoder layer of one decode iteration (every request: 1 new token over `kv_len` cached
ones, channels round-robin over 32), on a fresh simulator made outside the timing, after
the engine has been loaded (or compiled) once; two rounds, the faster one kept. Batches
are uniform (every request has the same `kv_len`) so that each sweep changes one thing:

- `test_batch_size`: GPT3-7B, kv_len 512, 64, 128, 256, 384, 512 requests (from 256 on the
  preset interleaves two sub-batches);
- `test_seq_len`: GPT3-7B, 64 requests, kv_len 256, 512, 1024, 2048, 4096;
- `test_model_size`: GPT3-7B, 13B, 30B, 175B (each as its preset shards it: one
  tensor-parallel shard's layer), 64 requests, kv_len 512.

Each sweep fits t ~ x^b by least squares on log-log, for CPU seconds (the figure to trust
on a shared machine) and wall seconds, and, for comparison, simulated cycles ~ x^b (how
much more work the modelled hardware does). Model size is fitted against the models'
total parameter counts and against the weights of the simulated shard's layer (what one
layer streams). `extra_info` holds the points and exponents; run with -s to see them:

    python -m pytest bench/ -k bench_scaling --benchmark-enable -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.config import load_hw
from neupims_py.model import load_model

CHANNELS = 32
BATCHES = (64, 128, 256, 384, 512)
SEQ_LENS = (256, 512, 1024, 2048, 4096)
MODELS = ("gpt3-7b", "gpt3-13b", "gpt3-30b", "gpt3-175b")
BASE_BATCH, BASE_SEQ, BASE_MODEL = 64, 512, "gpt3-7b"
ROUNDS = 2  # CPU times of one point vary by ~15% on a shared machine: the faster round


def growth_exponent(x, y) -> float:
    """b of the least-squares line log y = a + b log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def decode_batch(n: int, kv_len: int) -> list[BatchEntry]:
    return [BatchEntry(req=i, q_len=1, kv_len=kv_len, channel=i % CHANNELS) for i in range(n)]


@pytest.fixture(scope="module")
def hw():
    hw = load_hw("neupims")
    start = time.perf_counter()
    IterationSimulator(hw, load_model(BASE_MODEL)).simulate(decode_batch(1, 10), layers=1)
    print(f"\nengine load/compile and a warm-up layer: {time.perf_counter() - start:.1f} s")
    return hw


def one_layer(hw, model_name: str, n: int, kv_len: int) -> dict:
    model = load_model(model_name)
    sim = IterationSimulator(hw, model)
    batch = decode_batch(n, kv_len)
    wall, cpu = time.perf_counter(), time.process_time()
    r = sim.simulate(batch, layers=1)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    assert r.layers_simulated == 1
    return {"model": model_name, "batch": n, "kv_len": kv_len, "cycles": int(r.cycles),
            "sub_batches": r.sub_batches, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "total_params": model.total_params(),
            "layer_shard_params": model.params_per_shard_per_layer()}


def sweep(benchmark, hw, axis: str, points: list[tuple[str, int, int]], xs: dict[str, list]):
    """Time every point, ROUNDS rounds, keeping each point's fastest (CPU) round; fit and
    record the exponents against each x in xs (name -> values, or None to take them from
    the points' `axis` field)."""
    rounds: list[list[dict]] = []
    benchmark.pedantic(lambda: rounds.append([one_layer(hw, *p) for p in points]),
                       rounds=ROUNDS, iterations=1)
    rows = [min(runs, key=lambda r: r["cpu_s"]) for runs in zip(*rounds)]
    for runs in zip(*rounds):
        assert len({r["cycles"] for r in runs}) == 1, "a fresh simulator must repeat its cycles"
    fits = {}
    for name, x in xs.items():
        x = x if x is not None else [r[axis] for r in rows]
        fits[name] = {k: round(growth_exponent(x, [r[k] for r in rows]), 3)
                      for k in ("cpu_s", "wall_s", "cycles")}
    benchmark.extra_info.update(points=rows, exponents=fits,
                                cpu_s_all_rounds=[[r["cpu_s"] for r in runs] for runs in zip(*rounds)])
    print()
    for r, runs in zip(rows, zip(*rounds)):
        each = ", ".join(f"{q['cpu_s']:.2f}" for q in runs)
        print(f"{r['model']}, {r['batch']} requests, kv_len {r['kv_len']}: {r['cycles']:,} cycles "
              f"({r['sub_batches']} sub-batch(es)), {r['cpu_s']:.2f} s CPU, {r['wall_s']:.2f} s wall "
              f"(CPU of the rounds: {each})")
    for name, f in fits.items():
        print(f"growth against {name}: CPU t ~ x^{f['cpu_s']:.2f}, wall t ~ x^{f['wall_s']:.2f}, "
              f"simulated cycles ~ x^{f['cycles']:.2f}")
    return rows, fits


def test_batch_size(benchmark, hw):
    points = [(BASE_MODEL, n, BASE_SEQ) for n in BATCHES]
    rows, fits = sweep(benchmark, hw, "batch", points, {"batch size": None})
    assert [r["sub_batches"] for r in rows] == [1 if n < 256 else 2 for n in BATCHES]
    assert rows[-1]["cycles"] > rows[0]["cycles"]


def test_seq_len(benchmark, hw):
    points = [(BASE_MODEL, BASE_BATCH, s) for s in SEQ_LENS]
    rows, fits = sweep(benchmark, hw, "kv_len", points, {"sequence length": None})
    assert rows[-1]["cycles"] > rows[0]["cycles"]


def test_model_size(benchmark, hw):
    points = [(m, BASE_BATCH, BASE_SEQ) for m in MODELS]
    models = [load_model(m) for m in MODELS]
    xs = {"total parameters": [m.total_params() for m in models],
          "weights of the shard's layer": [m.params_per_shard_per_layer() for m in models]}
    rows, fits = sweep(benchmark, hw, "model", points, xs)
    assert rows[-1]["cycles"] > rows[0]["cycles"]
