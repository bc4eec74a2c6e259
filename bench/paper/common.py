"""What the NeuPIMs reproductions (bench/paper/*/run.py) share: the datasets, a resumable
grid of steady-state iterations written to CSV, and the comparison with the paper.

A grid point is (model, dataset, batch size, system): one steady-state decode batch
(`neupims_py.experiments.steady_state`, the same requests for every system of a point)
costed with the serving loop's `ReuseCost`. Rows are appended to `<name>.partial.csv` as
they are done, so a long run can be stopped and resumed (`--resume`); the finished grid is
written to `<name>.csv` in one atomic step.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.experiments.steady_state import Lengths, measure, steady_state_kv
from neupims_py.model import load_model
from neupims_py.serving.cost_model import ReuseCost
from neupims_py.workload.lengths import parse_length_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

PRESET = ROOT / "hwconfigs" / "neupims.yaml"
SHAREGPT = ROOT / "traces" / "sharegpt-1k-poisson.h5"
MAX_CONTEXT = 2048  # GPT-3's context length: longer requests never run
# Alpaca (Taori et al. 2023) as the NeuPIMs paper describes it: 12 prompt and 56 output
# tokens on average. Its lengths are not shipped here; uniform lengths with those means
# stand in (the issue allows a synthetic trace with those statistics).
ALPACA_PROMPT = "uniform:1:23"  # mean 12
ALPACA_OUTPUT = "uniform:1:111"  # mean 56
ALPACA_REQUESTS = 10_000
BATCH_SEED = 0


def dataset(name: str) -> Lengths:
    if name == "sharegpt":
        return Lengths.from_trace(SHAREGPT, "sharegpt")
    if name == "alpaca":
        return Lengths.synthetic("alpaca", parse_length_spec(ALPACA_PROMPT, "alpaca prompt"),
                                 parse_length_spec(ALPACA_OUTPUT, "alpaca output"), ALPACA_REQUESTS, seed=0)
    raise ValueError(f"unknown dataset {name!r}")


def model_from_spec(spec: str):
    """A shipped model by name, or `NAME:key=value,...` with overrides (reduced runs, e.g.
    `gpt3-7b:tp=32`: one head per shard)."""
    name, _, rest = spec.partition(":")
    return load_model(name, [kv for kv in rest.split(",") if kv])


FIELDS = ("model", "dataset", "batch", "system", "cycles", "tokens_per_s", "util_arrays",
          "util_vector", "util_pim", "sub_batches", "mean_kv", "channel_load_max_over_mean",
          "cpu_seconds")


def csv_text(rows, fields=FIELDS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write through a temporary file in the same folder: never a half-written file."""
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("batch", "cycles", "sub_batches"):
            r[k] = int(r[k])
        for k in ("tokens_per_s", "util_arrays", "util_vector", "util_pim", "mean_kv",
                  "channel_load_max_over_mean", "cpu_seconds"):
            r[k] = float(r[k])
    return rows


class Grid:
    """Runs grid points once each, memoising one ReuseCost per (model, configuration)."""

    def __init__(self, out_dir: Path, name: str, *, resume: bool, verbose: bool = True,
                 costs: dict | None = None, known: list[dict] = ()):
        self.final = out_dir / f"{name}.csv"
        self.partial = out_dir / f"{name}.partial.csv"
        self.rows = read_rows(self.partial) if resume else []
        if not resume:
            self.partial.unlink(missing_ok=True)
        # points another run already computed the same way (same batch seed and cost model)
        self.rows += [r for r in known if self._key(r) not in {self._key(x) for x in self.rows}]
        self.done = {self._key(r) for r in self.rows}
        self.costs = {} if costs is None else costs  # shareable between grids of one process
        self.models: dict = {}
        self.datasets: dict = {}
        self.verbose = verbose

    @staticmethod
    def _key(r) -> tuple:
        return (r["model"], r["dataset"], int(r["batch"]), r["system"])

    def _cost(self, model_name: str, overrides: tuple):
        key = (model_name, overrides)
        if key not in self.costs:
            if model_name not in self.models:
                self.models[model_name] = model_from_spec(model_name)
            hw = load_hw(PRESET, overrides)
            self.costs[key] = (hw, ReuseCost(hw, self.models[model_name]))
        return self.costs[key]

    def point(self, model: str, data: str, batch: int, system) -> dict:
        key = (model, data, batch, system.name)
        if key in self.done:
            return next(r for r in self.rows if self._key(r) == key)
        if data not in self.datasets:
            self.datasets[data] = dataset(data)
        kv = steady_state_kv(self.datasets[data], batch, BATCH_SEED, MAX_CONTEXT)
        t = time.process_time()
        hw, cost = self._cost(model, system.overrides)
        m = measure(cost, hw, kv, system.channel_policy)
        row = {"model": model, "dataset": data, "batch": batch, "system": system.name, **m,
               "mean_kv": float(kv.mean()), "cpu_seconds": time.process_time() - t}
        self.rows.append(row)
        self.done.add(key)
        new = not self.partial.exists()
        with open(self.partial, "a") as f:
            f.write(csv_text([row]) if new else csv_text([row]).split("\n", 1)[1])
        if self.verbose:
            print(f"  {model} {data} batch {batch} {system.name}: {m['cycles']:,} cycles, "
                  f"{m['tokens_per_s']:,.0f} tokens/s ({row['cpu_seconds']:.1f} s CPU)", flush=True)
        return row

    def finish(self) -> list[dict]:
        write_atomic(self.final, csv_text(self.rows))
        self.partial.unlink(missing_ok=True)
        return self.rows


def lookup(rows, **where) -> dict | None:
    for r in rows:
        if all(r[k] == v for k, v in where.items()):
            return r
    return None


def compare_line(label: str, ours: float, paper: float | None, unit: str = "") -> str:
    """`label: ours (paper X, ratio ours/paper)`; a deviation above 15% is flagged."""
    if paper is None:
        return f"{label:<52} {ours:>10.3f}{unit}"
    ratio = ours / paper
    flag = "  > 15% off" if abs(ratio - 1) > 0.15 else ""
    return f"{label:<52} {ours:>10.3f}{unit}  paper {paper:>7.3f}{unit}  ratio {ratio:5.2f}{flag}"


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def run_cli(main) -> None:
    """Run a runner's main(): a UserError (a bad model name, a missing file) is one line on
    stderr and exit status 2, as with neupims-sim."""
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def pyplot():
    """matplotlib's pyplot on the file-only backend (the optional `plot` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("drawing the figure needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
