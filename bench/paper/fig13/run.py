"""NeuPIMs (ASPLOS 2024) Figure 13: ablation on GPT3-7B, ShareGPT. From NPU+PIM (single row
buffer, round-robin channels), add dual row buffers, then greedy min-load channel
assignment, then sub-batch interleaving (forced at every batch size, threshold 2).

    python bench/paper/fig13/run.py            # batches 64..512
    python bench/paper/fig13/run.py --quick    # GPT3-7B with tp=32, batches 32 and 64
    python bench/paper/fig13/run.py --plot     # redraw fig13.png from fig13.csv

Writes fig13.csv, fig13_summary.json and fig13.png into --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Grid, compare_line, pyplot, read_rows, run_cli, save_figure, write_atomic  # noqa: E402

from neupims_py.experiments.steady_state import ABLATION_SYSTEMS  # noqa: E402

HERE = Path(__file__).resolve().parent
MODEL = "gpt3-7b"
QUICK_MODEL = "gpt3-7b:tp=32"  # one head per shard: cheap pieces
BATCHES = (64, 128, 256, 384, 512)
QUICK_BATCHES = (32, 64)
STEPS = tuple(s.name for s in ABLATION_SYSTEMS)
# NeuPIMs paper, section 7.3 (text on Figure 13): dual row buffers alone raise NPU+PIM's
# throughput by 69.7% on average over the batch sizes.
PAPER = {"+dual row buffers": 1.697}


def summary(rows, dataset: str, model: str = MODEL) -> dict:
    """Per batch: each step's throughput over NPU+PIM's and over the step before."""
    per = []
    for b in sorted({r["batch"] for r in rows if r["dataset"] == dataset}):
        t = {r["system"]: r["tokens_per_s"] for r in rows if r["batch"] == b and r["dataset"] == dataset}
        if not all(s in t for s in STEPS):
            continue
        e = {"batch": b}
        for i, s in enumerate(STEPS[1:], start=1):
            e[f"{s} / npu+pim"] = t[s] / t[STEPS[0]]
            e[f"{s} / previous"] = t[s] / t[STEPS[i - 1]]
        per.append(e)
    keys = [k for k in (per[0] if per else {}) if k != "batch"]
    mean = {k: sum(e[k] for e in per) / len(per) for k in keys} if per else {}
    return {"model": model, "dataset": dataset, "mean_over_batches": mean, "per_batch": per,
            "paper": {f"{k} / npu+pim": v for k, v in PAPER.items()}}


def report(summ: dict) -> str:
    lines = [f"Figure 13 ablation, {summ['model']} {summ['dataset']}: throughput over NPU+PIM "
             "(mean over batch sizes) and over the step before"]
    for k, v in summ["mean_over_batches"].items():
        lines.append(compare_line(f"  {k}", v, summ["paper"].get(k), "x"))
    for e in summ["per_batch"]:
        lines.append(f"  batch {e['batch']:>4}: " + ", ".join(
            f"{s} {e[f'{s} / previous']:.2f}x" for s in STEPS[1:]) + " (each over the step before)")
    return "\n".join(lines)


def plot(rows, path: Path, dataset: str, model: str = MODEL) -> None:
    plt = pyplot()
    batches = sorted({r["batch"] for r in rows if r["dataset"] == dataset})
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.2
    for k, s in enumerate(STEPS):
        y = []
        for b in batches:
            t = {r["system"]: r["tokens_per_s"] for r in rows if r["batch"] == b and r["dataset"] == dataset}
            y.append(t.get(s, 0.0) / t[STEPS[0]] if STEPS[0] in t else 0.0)
        ax.bar([x + (k - 1.5) * width for x in range(len(batches))], y, width, label=s)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput / NPU+PIM")
    ax.set_title(f"Ablation, {model} {dataset} (NeuPIMs Fig. 13 methodology)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None, costs: dict | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MODEL}, batches {QUICK_BATCHES}")
    ap.add_argument("--plot", action="store_true", help="only redraw the figure from the CSV")
    ap.add_argument("--resume", action="store_true", help="keep the points of fig13.partial.csv")
    ap.add_argument("--batches", nargs="+", type=int, default=None, help=f"default {BATCHES}")
    ap.add_argument("--dataset", choices=("sharegpt", "alpaca"), default="sharegpt")
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    if not a.out.is_dir():
        ap.error(f"--out {a.out}: no such directory")
    if a.plot:
        rows = read_rows(a.out / "fig13.csv")
        plot(rows, a.out / "fig13.png", a.dataset, rows[0]["model"])
        print(f"wrote {a.out / 'fig13.png'}")
        return 0
    grid = Grid(a.out, "fig13", resume=a.resume, costs=costs)
    model = QUICK_MODEL if a.quick else MODEL
    for b in a.batches or (QUICK_BATCHES if a.quick else BATCHES):
        for s in ABLATION_SYSTEMS:
            grid.point(model, a.dataset, b, s)
    rows = grid.finish()
    summ = summary(rows, a.dataset, model)
    write_atomic(a.out / "fig13_summary.json", json.dumps(summ, indent=2) + "\n")
    print(report(summ))
    plot(rows, a.out / "fig13.png", a.dataset, model)
    print(f"wrote {a.out / 'fig13.csv'}, fig13_summary.json, fig13.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
