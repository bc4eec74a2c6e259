"""NeuPIMs (ASPLOS 2024) Table 4: NPU and PIM utilization of NPU+PIM and NeuPIMs, GPT3-30B,
batch 256, ShareGPT (NPU-only alongside, for context).

    python bench/paper/table4/run.py           # GPT3-30B, batch 256
    python bench/paper/table4/run.py --quick   # GPT3-7B with tp=32, batch 64, ShareGPT

Utilizations are the serving loop's (serving/metrics.py) over one steady-state iteration:
NPU = systolic-array busy cycles summed over the arrays / (iteration cycles x arrays);
PIM = PIM busy cycles summed over the channels / (iteration cycles x channels).
Writes table4.csv, table4_summary.json and table4.png into --out (default: this folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Grid, compare_line, lookup, pyplot, read_rows, run_cli, save_figure, write_atomic  # noqa: E402

from neupims_py.experiments.steady_state import FIG12_SYSTEMS  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = ("gpt3-30b", "sharegpt", 256)
QUICK = ("gpt3-7b:tp=32", "sharegpt", 64)  # one head per shard: cheap pieces
# NeuPIMs paper, Table 4 (GPT3-30B, batch 256, ShareGPT); NPU+PIM's PIM utilization and
# NPU-only's figures are not in the excerpt of it.
PAPER = {("npu+pim", "util_arrays"): 0.280, ("neupims", "util_arrays"): 0.649,
         ("neupims", "util_pim"): 0.264}


def plot(out: dict, path: Path) -> None:
    """Bars of NPU and PIM utilization per system, the paper's values as markers."""
    plt = pyplot()
    names = list(out["systems"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (key, label) in enumerate((("util_arrays", "NPU"), ("util_pim", "PIM"))):
        xs = [i + (k - 0.5) * 0.38 for i in range(len(names))]
        ax.bar(xs, [100 * out["systems"][n][key] for n in names], 0.38, label=f"{label} (ours)")
        paper = [(x, 100 * out["paper"][f"{n}.{key}"]) for x, n in zip(xs, names) if f"{n}.{key}" in out["paper"]]
        if paper:
            ax.plot(*zip(*paper), "_", color=("navy", "darkred")[k], ms=22, mew=2.5, label=f"{label} (paper)")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("utilization, %")
    ax.set_title(f"{out['model']}, batch {out['batch']}, {out['dataset']} (NeuPIMs Table 4)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None, costs: dict | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK} instead of {FULL}")
    ap.add_argument("--from-csv", type=Path, metavar="FIG12.csv",
                    help="take the points a Figure 12 run already computed (the same batches and "
                         "cost model give the same numbers) instead of simulating them again")
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    if not a.out.is_dir():
        ap.error(f"--out {a.out}: no such directory")
    model, data, batch = QUICK if a.quick else FULL
    known = [r for r in read_rows(a.from_csv) if (r["model"], r["dataset"], r["batch"]) == (model, data, batch)
             ] if a.from_csv else []
    grid = Grid(a.out, "table4", resume=False, costs=costs, known=known)
    for s in FIG12_SYSTEMS:
        grid.point(model, data, batch, s)
    rows = grid.finish()
    lines = [f"Table 4: {model}, batch {batch}, {data}: utilization over one steady-state iteration"]
    out = {"model": model, "dataset": data, "batch": batch, "systems": {}, "paper": {}}
    for s in FIG12_SYSTEMS:
        r = lookup(rows, system=s.name)
        out["systems"][s.name] = {k: r[k] for k in ("util_arrays", "util_pim", "util_vector", "cycles")}
        for k, label in (("util_arrays", "NPU (systolic arrays)"), ("util_pim", "PIM")):
            paper = PAPER.get((s.name, k)) if not a.quick else None
            if paper is not None:
                out["paper"][f"{s.name}.{k}"] = paper
            lines.append(compare_line(f"  {s.name:<9} {label}", r[k], paper))
    write_atomic(a.out / "table4_summary.json", json.dumps(out, indent=2) + "\n")
    print("\n".join(lines))
    plot(out, a.out / "table4.png")
    print(f"wrote {a.out / 'table4.csv'}, table4_summary.json, table4.png")
    return 0


if __name__ == "__main__":
    run_cli(main)
