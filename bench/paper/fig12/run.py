"""NeuPIMs (ASPLOS 2024) Figure 12: decode throughput of NPU-only, NPU+PIM and NeuPIMs for
batch sizes 64..512 on ShareGPT and Alpaca-like lengths, GPT3-7B/13B/30B.

    python bench/paper/fig12/run.py            # the full grid (see README.md for its time)
    python bench/paper/fig12/run.py --quick    # GPT3-7B with tp=32, ShareGPT, batches 32, 64
    python bench/paper/fig12/run.py --plot     # redraw fig12.png from fig12.csv

Writes fig12.csv (one row per point), fig12_summary.json (mean speedups beside the paper's)
and fig12.png into --out (default: this folder), and prints the comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Grid, compare_line, pyplot, read_rows, run_cli, save_figure, write_atomic  # noqa: E402

from neupims_py.experiments.steady_state import FIG12_SYSTEMS  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = ("gpt3-7b", "gpt3-13b", "gpt3-30b")
BATCHES = (64, 128, 256, 384, 512)
DATASETS = ("sharegpt", "alpaca")
# The reduced run: GPT3-7B split 32 ways (one head per shard: cheap pieces), ShareGPT.
QUICK = {"models": ("gpt3-7b:tp=32",), "batches": (32, 64), "datasets": ("sharegpt",)}

# NeuPIMs paper, section 7.2 (text on Figure 12): averages over models, datasets and batches.
PAPER = {
    "neupims/npu-only": 2.4,
    "neupims/npu+pim": 1.6,
    "npu+pim/npu-only": 1.5,
}
SYSTEMS = tuple(s.name for s in FIG12_SYSTEMS)


def speedups(rows) -> list[dict]:
    """Per (model, dataset, batch) with all three systems: the throughput ratios."""
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["dataset"], r["batch"]), {})[r["system"]] = r["tokens_per_s"]
    out = []
    for (m, d, b), t in sorted(by.items()):
        if all(s in t for s in SYSTEMS):
            out.append({"model": m, "dataset": d, "batch": b,
                        "neupims/npu-only": t["neupims"] / t["npu-only"],
                        "neupims/npu+pim": t["neupims"] / t["npu+pim"],
                        "npu+pim/npu-only": t["npu+pim"] / t["npu-only"]})
    return out


def summary(rows) -> dict:
    sp = speedups(rows)

    def mean(sel, k):
        v = [s[k] for s in sp if sel(s)]
        return sum(v) / len(v) if v else None

    out = {"points": len(sp), "overall": {k: mean(lambda s: True, k) for k in PAPER}, "paper": PAPER}
    for d in sorted({s["dataset"] for s in sp}):
        out[f"dataset={d}"] = {k: mean(lambda s: s["dataset"] == d, k) for k in PAPER}
    for b in sorted({s["batch"] for s in sp}):
        out[f"batch={b}"] = {k: mean(lambda s: s["batch"] == b, k) for k in PAPER}
    for m in sorted({s["model"] for s in sp}):
        out[f"model={m}"] = {k: mean(lambda s: s["model"] == m, k) for k in PAPER}
    out["per_point"] = sp
    return out


def report(summ: dict) -> str:
    lines = [f"Figure 12: mean throughput ratios over {summ['points']} (model, dataset, batch) points "
             "(arithmetic mean of per-point ratios)"]
    for k, v in summ["overall"].items():
        if v is not None:
            lines.append(compare_line(f"  {k}", v, PAPER[k], "x"))
    for group in [g for g in summ if "=" in g]:
        vals = ", ".join(f"{k} {v:.2f}x" for k, v in summ[group].items() if v is not None)
        lines.append(f"  {group:<22} {vals}")
    lines.append("per point (tokens/s ratios):")
    for s in summ["per_point"]:
        lines.append(f"  {s['model']:<9} {s['dataset']:<9} {s['batch']:>4}: neupims/npu-only "
                     f"{s['neupims/npu-only']:.2f}, neupims/npu+pim {s['neupims/npu+pim']:.2f}, "
                     f"npu+pim/npu-only {s['npu+pim/npu-only']:.2f}")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    """Bars of tokens/s per system, one panel per (model, dataset), on a common batch axis;
    points without all three systems are left out."""
    plt = pyplot()
    full = {(p["model"], p["dataset"], p["batch"]) for p in speedups(rows)}
    rows = [r for r in rows if (r["model"], r["dataset"], r["batch"]) in full]
    models = [m for m in MODELS if any(r["model"] == m for r in rows)] or sorted({r["model"] for r in rows})
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(5.5 * len(datasets), 3.0 * len(models)),
                             squeeze=False, constrained_layout=True)
    width = 0.27
    for i, m in enumerate(models):
        for j, d in enumerate(datasets):
            ax = axes[i][j]
            for k, s in enumerate(SYSTEMS):
                pts = [(batches.index(r["batch"]) + (k - 1) * width, r["tokens_per_s"] / 1e3) for r in rows
                       if (r["model"], r["dataset"], r["system"]) == (m, d, s)]
                if pts:
                    ax.bar(*zip(*pts), width, label=s, color=f"C{k}")
            ax.set_xticks(range(len(batches)), [str(b) for b in batches])
            ax.set_xlim(-0.6, len(batches) - 0.4)
            ax.set_title(f"{m}, {d}", fontsize=10)
            ax.set_xlabel("batch size")
            ax.set_ylabel("k tokens/s (one device)")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Steady-state decode throughput (NeuPIMs Fig. 12 methodology)", fontsize=11)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None, costs: dict | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced run: " + str(QUICK))
    ap.add_argument("--plot", action="store_true", help="only redraw the figure from the CSV")
    ap.add_argument("--resume", action="store_true", help="keep the points of fig12.partial.csv")
    ap.add_argument("--models", nargs="+", default=None, help=f"default {' '.join(MODELS)}")
    ap.add_argument("--batches", nargs="+", type=int, default=None, help=f"default {BATCHES}")
    ap.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    ap.add_argument("--only-batch-for", nargs="*", default=[], metavar="MODEL=BATCH",
                    help="run MODEL at BATCH only (e.g. gpt3-30b=256), to fit a time budget")
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    if not a.out.is_dir():
        ap.error(f"--out {a.out}: no such directory")
    csv_path = a.out / "fig12.csv"
    if a.plot:
        plot(read_rows(csv_path), a.out / "fig12.png")
        print(f"wrote {a.out / 'fig12.png'}")
        return 0
    models = a.models or (QUICK["models"] if a.quick else MODELS)
    batches = a.batches or (QUICK["batches"] if a.quick else BATCHES)
    datasets = a.datasets or (QUICK["datasets"] if a.quick else DATASETS)
    if any("=" not in x or not x.split("=", 1)[1].isdigit() for x in a.only_batch_for):
        ap.error("--only-batch-for takes MODEL=BATCH, e.g. gpt3-30b=256")
    only = dict(x.split("=", 1) for x in a.only_batch_for)
    grid = Grid(a.out, "fig12", resume=a.resume, costs=costs)
    for m in models:
        for d in datasets:
            for b in batches:
                if m in only and b != int(only[m]):
                    continue
                for s in FIG12_SYSTEMS:
                    grid.point(m, d, b, s)
    rows = grid.finish()
    summ = summary(rows)
    write_atomic(a.out / "fig12_summary.json", json.dumps(summ, indent=2) + "\n")
    print(report(summ))
    plot(rows, a.out / "fig12.png")
    print(f"wrote {csv_path}, fig12_summary.json, fig12.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
