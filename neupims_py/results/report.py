"""Plots of a serving run: `neupims-sim report RUN_DIR` reads what `neupims-sim run --out
RUN_DIR` wrote (summary.json, requests.csv, tokens.csv, iterations.csv) and draws PNGs:

- latency_cdf.png: CDFs of the time to first token and of the time between tokens;
- throughput.png: output tokens/s and finished requests/s over simulated time;
- batch_kv.png: running requests and KV tokens of each iteration over time;
- utilization.png: systolic arrays, vector unit, PIM and DRAM data bus busy fraction of
  each iteration over time;
- op_cycles.png: cycles per operator group (stacked bars), mean per iteration over groups
  of consecutive iterations;
- prefill_decode.png: prefill vs decode tokens of each iteration, and the fraction of it
  PIM attention ran under NPU work (sub-batch interleaving).

matplotlib is an optional extra (`pip install 'neupims-py[plot]'`), imported only here and
only when drawing, with the non-interactive Agg renderer (figures, no pyplot state).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from neupims_py.errors import UserError
from neupims_py.results.files import write_atomic
from neupims_py.serving.cost_model import OP_GROUPS

RUN_FILES = ("summary.json", "requests.csv", "tokens.csv", "iterations.csv")
ITERATION_COLUMNS = ("start_ns", "end_ns", "cycles", "requests", "prefill_tokens", "decode_tokens",
                     "kv_tokens", "overlap_cycles", "array_busy", "vector_busy", "pim_busy",
                     "dram_busy", *(f"{g}_cycles" for g in OP_GROUPS))
MAX_BARS = 40  # op_cycles.png groups iterations into at most this many bars
TIME_BINS = 50  # throughput.png bins


def figure_class():
    """matplotlib's Figure, or a UserError saying how to install it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'neupims-py[plot]'") from None
    return Figure


def save_png(fig, path: Path) -> None:
    """Render `fig` and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, [buf.getvalue()], binary=True)


def read_csv(path: Path, need: tuple = ()) -> dict[str, np.ndarray]:
    """Columns of a CSV by name; numbers as float64 (empty cells NaN), text as strings.
    A column in `need` that the file lacks is a UserError naming it."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        raise UserError(f"{path}: empty file, expected a header row")
    missing = [c for c in need if c not in header]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; it was written by an "
                        "older neupims-sim: run it again")
    cols = {}
    for i, name in enumerate(header):
        vals = [r[i] if i < len(r) else "" for r in rows]
        try:
            cols[name] = np.array([float(v) if v != "" else math.nan for v in vals], dtype=np.float64)
        except ValueError:
            cols[name] = np.array(vals, dtype=object)
    return cols


class RunData:
    """The outputs of one `neupims-sim run --out DIR`."""

    def __init__(self, run_dir: str | Path):
        d = Path(run_dir)
        if not d.is_dir():
            raise UserError(f"{str(d)!r} is not a directory; give the --out directory of "
                            "`neupims-sim run`", field="RUN_DIR")
        missing = [n for n in RUN_FILES if not (d / n).is_file()]
        if missing:
            raise UserError(f"{d} has no {', '.join(missing)}; give the --out directory of "
                            "`neupims-sim run`", field="RUN_DIR")
        self.dir = d
        try:
            self.summary = json.loads((d / "summary.json").read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{d / 'summary.json'}: not JSON ({exc})") from None
        if "pools" in self.summary:
            raise UserError(f"{d} holds a cluster run (several devices, its iterations.csv mixes "
                            "them); report draws one device's run: run a pool's preset alone "
                            "with `neupims-sim run` to plot it", field="RUN_DIR")
        units = self.summary.get("units")
        if not isinstance(units, dict) or not {"clock_mhz", "systolic_arrays", "channels"} <= set(units):
            raise UserError(f"{d / 'summary.json'} has no 'units' (clock, arrays, channels); it was "
                            "written by an older neupims-sim: run it again")
        self.units = units
        self.requests = read_csv(d / "requests.csv", ("status", "ttft_ns", "finish_ns"))
        self.tokens = read_csv(d / "tokens.csv", ("request_id", "token", "time_ns"))
        self.iterations = read_csv(d / "iterations.csv", ITERATION_COLUMNS)

    def label(self) -> str:
        s = self.summary
        return f"{s.get('hw')} ({s.get('mode')}), {s.get('model')}"

    def time_between_tokens_ns(self) -> np.ndarray:
        """Gaps between consecutive tokens of each request (tokens.csv)."""
        t = self.tokens
        if not len(t["time_ns"]):
            return np.zeros(0)
        order = np.lexsort((t["token"], t["request_id"]))
        req, times = t["request_id"][order], t["time_ns"][order]
        same = req[1:] == req[:-1]
        return (times[1:] - times[:-1])[same]

    def utilization(self) -> dict[str, np.ndarray]:
        """Busy fraction of each iteration per unit."""
        it, u = self.iterations, self.units
        cyc = np.maximum(it["cycles"], 1.0)
        return {
            "systolic arrays": it["array_busy"] / (cyc * u["systolic_arrays"]),
            "vector unit": it["vector_busy"] / cyc,
            "PIM": it["pim_busy"] / (cyc * u["channels"]),
            "DRAM data bus": it["dram_busy"] / (cyc * u["channels"]),
        }


def _cdf(ax, values_ms, label):
    v = np.sort(values_ms[~np.isnan(values_ms)])
    if v.size:
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=label)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{label} (ms)")
    ax.set_ylabel("fraction of requests" if "first" in label else "fraction of gaps")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def plot_run(run: RunData, out: Path) -> list[Path]:
    """Draw every plot of `run` into `out`; returns the files written."""
    Figure = figure_class()
    it = run.iterations
    t_ms = it["start_ns"] / 1e6
    title = run.label()
    written = []

    def save(fig, name):
        fig.suptitle(title, fontsize=9)
        save_png(fig, out / name)
        written.append(out / name)

    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    _cdf(a, run.requests["ttft_ns"] / 1e6, "time to first token")
    _cdf(b, run.time_between_tokens_ns() / 1e6, "time between tokens")
    save(fig, "latency_cdf.png")

    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    end_ns = max(float(np.nanmax(it["end_ns"])) if len(it["end_ns"]) else 0.0, 1.0)
    edges = np.linspace(0.0, end_ns, TIME_BINS + 1)
    width_s = (edges[1] - edges[0]) / 1e9
    tok, _ = np.histogram(run.tokens["time_ns"], bins=edges)
    fin = run.requests["finish_ns"][run.requests["status"] == "finished"].astype(np.float64)
    done, _ = np.histogram(fin, bins=edges)
    mid_ms = (edges[:-1] + edges[1:]) / 2e6
    ax.plot(mid_ms, tok / width_s, drawstyle="steps-mid", label="output tokens/s")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("output tokens/s")
    ax2 = ax.twinx()
    ax2.plot(mid_ms, done / width_s, drawstyle="steps-mid", color="tab:orange", label="finished requests/s")
    ax2.set_ylabel("finished requests/s")
    fig.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "throughput.png")

    fig = Figure(figsize=(10, 5))
    a, b = fig.subplots(2, 1, sharex=True)
    a.step(t_ms, it["requests"], where="post")
    a.set_ylabel("running requests")
    b.step(t_ms, it["kv_tokens"], where="post", color="tab:green")
    b.set_ylabel("KV tokens")
    b.set_xlabel("simulated time (ms)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    save(fig, "batch_kv.png")

    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    for name, u in run.utilization().items():
        ax.step(t_ms, u, where="post", label=name)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("busy fraction of the iteration")
    ax.set_xlabel("simulated time (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "utilization.png")

    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    n = len(it["cycles"])
    groups = np.array_split(np.arange(n), min(n, MAX_BARS)) if n else []
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for g in OP_GROUPS:
        v = np.array([it[f"{g}_cycles"][idx].mean() for idx in groups])  # groups differ in size
        ax.bar(x, v, bottom=bottom, label=g)
        bottom += v
    ax.set_xticks(x, [f"{idx[0]}" if len(idx) == 1 else f"{idx[0]}-{idx[-1]}" for idx in groups],
                  rotation=90, fontsize=7)
    ax.set_xlabel("iterations")
    ax.set_ylabel("cycles per iteration (mean of the bar's iterations;\n"
                  "spans summed over layers; groups overlap in time)", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, "op_cycles.png")

    fig = Figure(figsize=(10, 5))
    a, b = fig.subplots(2, 1, sharex=True)
    idx = np.arange(n)
    # filled steps, not bars: a long run has tens of thousands of iterations
    a.fill_between(idx, 0, it["prefill_tokens"], step="mid", label="prefill tokens")
    a.fill_between(idx, it["prefill_tokens"], it["prefill_tokens"] + it["decode_tokens"], step="mid",
                   label="decode tokens")
    a.set_ylabel("tokens in the iteration")
    a.legend(fontsize=8)
    b.plot(idx, it["overlap_cycles"] / np.maximum(it["cycles"], 1.0), drawstyle="steps-mid")
    b.set_ylim(0, 1.05)
    b.set_ylabel("PIM under NPU (fraction)")
    b.set_xlabel("iteration")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    save(fig, "prefill_decode.png")
    return written
