"""How far the reproductions' cost model (`ReuseCost`, memoised pieces) is from the
cycle-level `IterationSimulator` (every phase of the iteration on one engine state; the
first layers simulated and the steady one repeated) on a few steady-state batches.

    python bench/paper/validate.py             # GPT3-7B, ShareGPT and Alpaca-like, 64 and 256
    python bench/paper/validate.py --quick     # GPT3-7B with tp=32, ShareGPT, 32
    python bench/paper/validate.py --systems neupims   # only NeuPIMs' rows; the others of
                                                       # an existing validate.csv are kept

Writes validate.csv into --out (default: bench/paper/).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (BATCH_SEED, MAX_CONTEXT, PRESET, csv_text, dataset, model_from_spec,  # noqa: E402
                    run_cli, write_atomic)

from neupims_py.compiler.iteration import IterationSimulator  # noqa: E402
from neupims_py.config import load_hw  # noqa: E402
from neupims_py.experiments.steady_state import (FIG12_SYSTEMS, assign_channels, batch_entries,  # noqa: E402
                                                 steady_state_kv)
from neupims_py.serving.cost_model import ReuseCost  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = [("gpt3-7b", d, b) for d in ("sharegpt", "alpaca") for b in (64, 256)]
QUICK = [("gpt3-7b:tp=32", "sharegpt", 32)]
FIELDS = ("model", "dataset", "batch", "system", "reuse_cycles", "simulator_cycles", "difference",
          "reuse_cpu_s", "simulator_cpu_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE)
    names = [s.name for s in FIG12_SYSTEMS]
    ap.add_argument("--systems", nargs="+", choices=names, default=names,
                    help="re-run only these; the other systems' rows of --out's validate.csv are kept")
    a = ap.parse_args(argv)
    kept = []
    if set(a.systems) != set(names) and (a.out / "validate.csv").exists():
        with open(a.out / "validate.csv", newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["system"] not in a.systems]
    rows = []
    costs = {}
    for spec, data, batch in QUICK if a.quick else FULL:
        model = model_from_spec(spec)
        kv = steady_state_kv(dataset(data), batch, BATCH_SEED, MAX_CONTEXT)
        for s in [s for s in FIG12_SYSTEMS if s.name in a.systems]:
            hw = load_hw(PRESET, s.overrides)
            t = time.process_time()
            cost = costs.setdefault((spec, s.overrides), ReuseCost(hw, model))
            entries = batch_entries(kv, assign_channels(kv, hw.memory.geometry.channels, s.channel_policy,
                                                        cost.sim.kv))
            reuse = cost.iteration_cycles(entries).cycles
            t1 = time.process_time()
            sim = IterationSimulator(hw, model).simulate(entries).cycles
            t2 = time.process_time()
            rows.append({"model": spec, "dataset": data, "batch": batch, "system": s.name,
                         "reuse_cycles": reuse, "simulator_cycles": sim, "difference": reuse / sim - 1,
                         "reuse_cpu_s": t1 - t, "simulator_cpu_s": t2 - t1})
            print(f"{spec} {data} {batch} {s.name}: reuse {reuse:,}, simulator {sim:,} "
                  f"({reuse / sim - 1:+.2%}); CPU {t1 - t:.1f} s / {t2 - t1:.1f} s", flush=True)
            rank = {n: i for i, n in enumerate(names)}
            done = sorted(kept + rows, key=lambda r: (r["model"], r["dataset"] != "sharegpt", int(r["batch"]),
                                                      rank[r["system"]]))
            write_atomic(a.out / "validate.csv", csv_text(done, FIELDS))
    return 0


if __name__ == "__main__":
    run_cli(main)
