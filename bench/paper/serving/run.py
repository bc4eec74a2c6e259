"""What the NeuPIMs paper could not report: whole-trace serving (arrivals, prefills, ORCA
batching, completions) of NPU-only, NPU+PIM and NeuPIMs on the same ShareGPT trace.

    python bench/paper/serving/run.py                 # first 200 requests of the trace
    python bench/paper/serving/run.py --requests 20   # a quick look
    python bench/paper/serving/run.py --requests 300 --rate 100   # a saturated server

Runs `neupims-sim run hwconfigs/<preset>.yaml traces/sharegpt-1k-poisson.h5 --max-requests N`
(GPT3-7B, reuse cost model) for the three presets; with --rate, on a Poisson trace at that
rate whose (prompt, output) pairs are drawn from the ShareGPT trace (`neupims-sim trace synth
--lengths-from`, seed 0). Writes serving[-rateR].csv, serving[-rateR]_summary.json and
serving[-rateR].png into --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import ROOT, SHAREGPT, csv_text, pyplot, run_cli, save_figure, write_atomic  # noqa: E402

HERE = Path(__file__).resolve().parent
PRESETS = ("npu-only", "npu-pim", "neupims")
FIELDS = ("preset", "requests", "finished", "simulated_s", "output_tokens_per_s", "requests_per_s",
          "ttft_mean_ms", "ttft_p99_ms", "tpot_mean_ms", "tpot_p99_ms", "e2e_mean_ms",
          "mean_batch", "util_arrays", "util_pim", "energy_mj_per_token", "wall_s")


def run_one(preset: str, trace: Path, n: int, model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["neupims-sim", "run", str(ROOT / "hwconfigs" / f"{preset}.yaml"), str(trace),
               "--model", model, "--max-requests", str(n), "--quiet", "--out", tmp]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        s = json.loads((Path(tmp) / "summary.json").read_text())
    lat, thr = s["latency_ms"], s["throughput"]
    return {
        "preset": preset, "requests": s["requests"]["total"], "finished": s["requests"]["finished"],
        "simulated_s": s["simulated_seconds"], "output_tokens_per_s": thr["output_tokens_per_s"],
        "requests_per_s": thr["requests_per_s"], "ttft_mean_ms": lat["ttft"].get("mean"),
        "ttft_p99_ms": lat["ttft"].get("p99"), "tpot_mean_ms": lat["tpot"].get("mean"),
        "tpot_p99_ms": lat["tpot"].get("p99"), "e2e_mean_ms": lat["e2e"].get("mean"),
        "mean_batch": s["iterations"]["mean_requests"], "util_arrays": s["utilization"]["systolic_arrays"],
        "util_pim": s["utilization"]["pim"], "energy_mj_per_token": s.get("energy_mj_per_output_token"),
        "wall_s": wall,
    }


def plot(rows, path: Path, title: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    names = [r["preset"] for r in rows]
    for ax, (key, label) in zip(axes, (("output_tokens_per_s", "output tokens/s"),
                                       ("ttft_mean_ms", "mean TTFT, ms"), ("tpot_mean_ms", "mean TPOT, ms"))):
        ax.bar(names, [r[key] or 0.0 for r in rows], color=["C0", "C1", "C2"])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)
    plt.close(fig)


def title_of(requests: int, rate: float | None) -> str:
    if rate is None:
        return f"Serving the first {requests} ShareGPT requests (Poisson, 10/s)"
    return f"Serving {requests} requests of ShareGPT lengths (Poisson, {rate:g}/s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rate", type=float, help="Poisson arrivals at this rate (requests/s), "
                    "lengths drawn from the ShareGPT trace; default: the trace itself (10/s)")
    ap.add_argument("--model", default="gpt3-7b")
    ap.add_argument("--plot", action="store_true", help="only redraw the figure from the CSV")
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    stem = "serving" if a.rate is None else f"serving-rate{a.rate:g}"
    if a.plot:
        summ = json.loads((a.out / f"{stem}_summary.json").read_text())
        plot(summ["rows"], a.out / f"{stem}.png", title_of(summ["requests"], a.rate))
        print(f"wrote {a.out / stem}.png")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trace = SHAREGPT
        title = title_of(a.requests, a.rate)
        if a.rate is not None:
            trace = Path(tmp) / "trace.h5"
            subprocess.run(["neupims-sim", "trace", "synth", "--out", str(trace), "--n", str(a.requests),
                            "--rate", f"{a.rate:g}", "--lengths-from", str(SHAREGPT), "--seed", "0"],
                           check=True, stdout=subprocess.DEVNULL)
        rows = []
        for p in PRESETS:
            rows.append(run_one(p, trace, a.requests, a.model))
            r = rows[-1]
            print(f"{p:<9} {r['output_tokens_per_s']:>9,.0f} output tokens/s, TTFT {r['ttft_mean_ms']:.1f} ms, "
                  f"TPOT {r['tpot_mean_ms']:.2f} ms, mean batch {r['mean_batch']:.1f}, "
                  f"{r['simulated_s']:.1f} s simulated in {r['wall_s']:.0f} s", flush=True)
    write_atomic(a.out / f"{stem}.csv", csv_text(rows, FIELDS))
    base = rows[0]["output_tokens_per_s"]
    summ = {"requests": a.requests, "model": a.model, "rate_per_s": a.rate or 10.0,
            "trace": SHAREGPT.name if a.rate is None else f"synthetic, lengths from {SHAREGPT.name}",
            "rows": rows, "throughput_over_npu_only": {r["preset"]: r["output_tokens_per_s"] / base for r in rows}}
    write_atomic(a.out / f"{stem}_summary.json", json.dumps(summ, indent=2) + "\n")
    plot(rows, a.out / f"{stem}.png", title)
    print(f"wrote {a.out / stem}.csv, {stem}_summary.json, {stem}.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
