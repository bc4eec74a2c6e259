"""The serving loop at full size: `neupims-sim run` on ShareGPT traces with GPT3-7B.

- `test_sharegpt_1k`: the acceptance run, `neupims-sim run hwconfigs/neupims.yaml
  traces/sharegpt-1k-poisson.h5` (1,000 first-turn ShareGPT requests, Poisson 10 req/s,
  GPT3-7B, ReuseCost) in a child process: wall seconds (engine load included), simulated
  seconds per wall second (target >= 1), peak resident memory of the child (ru_maxrss);
- `test_systems`: the three systems on the first 320 requests of that trace arriving at once
  (batch 256, NeuPIMs sub-batches), output tokens per simulated second, expected
  neupims > npu+pim > npu-only (the suite checks a reduced model);
- `test_exact_vs_reuse`: the first 8 requests of traces/synth-tiny.h5 with `--exact` and
  without, on GPT3-7B's shapes split 32 ways and cut to 2 layers (an exact GPT3-7B
  iteration takes minutes): the difference in simulated time and TTFT, and the speed-up.

Every figure goes to `extra_info` and is printed (run with -s):

    python -m pytest bench/ -k bench_serving --benchmark-enable -s
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from neupims_py.model import load_model
from neupims_py.workload import load_trace, write_trace

ROOT = Path(__file__).resolve().parents[1]
SHAREGPT = ROOT / "traces" / "sharegpt-1k-poisson.h5"
TINY = ROOT / "traces" / "synth-tiny.h5"


def run_cli(args: list[str], out: Path) -> dict:
    """`neupims-sim run ... --out out` in a child process; its summary, wall seconds and
    peak RSS (MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "neupims_py.cli", "run", *args, "--quiet",
                           "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    print("\n" + proc.stdout)
    return {"summary": summary, "wall": wall,
            # ru_maxrss of children is the largest child so far (KiB on Linux)
            "peak_rss_mib": max(peak, before) / 1024}


def test_sharegpt_1k(benchmark, tmp_path):
    out = {}
    benchmark.pedantic(lambda: out.update(run_cli(["hwconfigs/neupims.yaml", str(SHAREGPT)], tmp_path / "1k")),
                       rounds=1, iterations=1)
    s = out["summary"]
    rate = s["simulated_seconds"] / out["wall"]
    benchmark.extra_info.update(simulated_s=s["simulated_seconds"], wall_s=round(out["wall"], 1),
                                simulated_s_per_wall_s=round(rate, 2),
                                peak_rss_mib=round(out["peak_rss_mib"]),
                                engine_runs=s["cost_model"]["engine_runs"],
                                iterations=s["iterations"]["count"])
    print(f"1,000 ShareGPT requests, GPT3-7B, neupims: {s['simulated_seconds']:.1f} s simulated in "
          f"{out['wall']:.1f} s wall ({rate:.2f} simulated s per wall s, target >= 1), peak RSS "
          f"{out['peak_rss_mib']:.0f} MiB, {s['iterations']['count']} iterations")
    assert s["requests"]["finished"] == 1000


def test_systems(benchmark, tmp_path):
    rows = load_trace(SHAREGPT).requests[:320].copy()
    rows["arrival_ns"] = 0
    trace = tmp_path / "burst.h5"
    write_trace(trace, rows, {"source": "bench", "tokenizer": "none", "arrival_process": "burst",
                              "arrival_params": "{}", "seed": -1, "command": "bench_serving"})
    tput = {}

    def run():
        for mode in ("npu-only", "npu+pim", "neupims"):
            r = run_cli(["hwconfigs/neupims.yaml", str(trace), "--mode", mode], tmp_path / mode)
            tput[mode] = (r["summary"]["throughput"]["output_tokens_per_s"], r["wall"])

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({m: round(t) for m, (t, _) in tput.items()})
    for m, (t, w) in tput.items():
        print(f"{m}: {t:,.0f} output tokens/s ({w:.0f} s wall)")
    assert tput["neupims"][0] > tput["npu+pim"][0] > tput["npu-only"][0]


@pytest.mark.parametrize("n", [8])
def test_exact_vs_reuse(benchmark, tmp_path, n):
    model = tmp_path / "gpt3-7b-tp32-2l.yaml"
    model.write_text(yaml.safe_dump({**dataclasses.asdict(load_model("gpt3-7b")),
                                     "name": "gpt3-7b-tp32-2l", "layers": 2, "tp": 32}))
    res = {}

    def run():
        for exact in (False, True):
            args = ["hwconfigs/neupims.yaml", str(TINY), "--max-requests", str(n), "--model", str(model)]
            res[exact] = run_cli(args + (["--exact"] if exact else []), tmp_path / f"e{int(exact)}")

    benchmark.pedantic(run, rounds=1, iterations=1)
    a, b = res[False]["summary"], res[True]["summary"]
    diff = a["simulated_seconds"] / b["simulated_seconds"] - 1
    ttft = np.array([a["latency_ms"]["ttft"]["mean"], b["latency_ms"]["ttft"]["mean"]])
    busy = [s["iterations"]["mean_cycles"] * s["iterations"]["count"] for s in (a, b)]
    benchmark.extra_info.update(makespan_diff_pct=round(100 * diff, 3),
                                iteration_cycles_diff_pct=round(100 * (busy[0] / busy[1] - 1), 3),
                                ttft_diff_pct=round(100 * (ttft[0] / ttft[1] - 1), 3),
                                reuse_wall_s=round(res[False]["wall"], 1),
                                exact_wall_s=round(res[True]["wall"], 1))
    print(f"{n} requests, GPT3-7B tp 32, 2 layers: reuse vs exact simulated time {100 * diff:+.2f} % "
          f"(iteration cycles summed {100 * (busy[0] / busy[1] - 1):+.2f} %), mean TTFT "
          f"{100 * (ttft[0] / ttft[1] - 1):+.2f} %; wall {res[False]['wall']:.0f} s vs "
          f"{res[True]['wall']:.0f} s")
