"""Side-by-side runs: `neupims-sim compare HW1.yaml HW2.yaml ... TRACE.h5`, or one
configuration in several systems with `--modes npu-only,npu+pim,neupims`.

Each run is `neupims-sim run` itself (same parser, same code), its outputs kept under
`--out DIR/runs/` (or a temporary directory). The table holds throughput, latency
percentiles and utilisations, each with its ratio to the first run; `--out DIR` also
writes compare.csv, compare.json and a bar chart of the ratios (compare.png).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import tempfile
from pathlib import Path

import numpy as np

from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.model import load_model
from neupims_py.outputs import output_path, write_json
from neupims_py.results.files import write_atomic
from neupims_py.results.report import RunData, figure_class, save_png
from neupims_py.workload import load_trace

# (key, column title, where in summary.json)
METRICS = (
    ("output_tokens_per_s", "tokens/s", ("throughput", "output_tokens_per_s")),
    ("requests_per_s", "req/s", ("throughput", "requests_per_s")),
    ("ttft_p50_ms", "TTFT p50 ms", ("latency_ms", "ttft", "p50")),
    ("ttft_p99_ms", "TTFT p99 ms", ("latency_ms", "ttft", "p99")),
    ("tbt_p50_ms", "TBT p50 ms", ("latency_ms", "inter_token", "p50")),
    ("tbt_p99_ms", "TBT p99 ms", ("latency_ms", "inter_token", "p99")),
    ("npu_util", "NPU util", ("utilization", "systolic_arrays")),
    ("pim_util", "PIM util", ("utilization", "pim")),
    ("dram_util", "DRAM util", ("utilization", "dram_bus")),
    ("row_hit_rate", "row hits", ("dram_row_hit_rate",)),
)


def run_metrics(run: RunData) -> dict[str, float | None]:
    """The METRICS of one run's outputs (None where the run has no such value)."""
    out: dict[str, float | None] = {}
    for key, _, where in METRICS:
        v = run.summary
        for k in where:
            v = v.get(k) if isinstance(v, dict) else None
        out[key] = float(v) if v is not None else None
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Each row's metrics divided by the first row's (None where the first is 0 or missing)."""
    base = rows[0]
    return [{k: (r[k] / base[k] if r[k] is not None and base[k] else None) for k, _, _ in METRICS}
            for r in rows]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def plan_runs(args) -> list[tuple[str, str, str | None]]:
    """(label, hw, mode) of each run, in table order."""
    hws, trace = args.hws, args.trace
    if not trace.endswith((".h5", ".hdf5")):
        raise UserError(f"the last argument {trace!r} should be the trace (.h5); give "
                        "HW.yaml ... TRACE.h5", field="compare")
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else [None]
    for m in modes:
        if m is not None and m not in MODE_OVERRIDES:
            raise UserError(f"unknown mode {m!r}; choose from {', '.join(MODE_OVERRIDES)}",
                            field="--modes")
    if len(hws) * len(modes) < 2:
        raise UserError("nothing to compare: give two or more configurations, or --modes "
                        "with two or more systems", field="compare")
    runs = []
    for hw in hws:
        name = Path(hw).stem if hw.endswith((".yaml", ".yml")) else hw
        for m in modes:
            runs.append((f"{name}" + (f" [{m}]" if m else ""), hw, m))
    if len({label for label, _, _ in runs}) != len(runs):
        raise UserError("two runs would have the same label; give distinct configurations",
                        field="compare")
    return runs


def run_argv(args, hw: str, mode: str | None, trace: str, out: Path) -> list[str]:
    """The `neupims-sim run` arguments of one compared run."""
    argv = [hw, trace, "--model", args.model, "--seed", str(args.seed), "--out", str(out), "--quiet"]
    if mode:
        argv += ["--mode", mode]
    for o in args.overrides:
        argv += ["-p", o]
    if args.exact:
        argv.append("--exact")
    if args.exact_tokens:
        argv.append("--exact-tokens")
    if args.max_requests is not None:
        argv += ["--max-requests", str(args.max_requests)]
    return argv


def _run_parser():
    from neupims_py.serving import cli as serving_cli
    parser = argparse.ArgumentParser(prog="neupims-sim")
    serving_cli.register(parser.add_subparsers(dest="command"))
    return parser


def compare(args) -> int:
    out = output_path(args.out, "--out", directory=True) if args.out else None
    runs = plan_runs(args)
    trace = args.trace
    # every input checked before the first (long) run
    load_trace(trace)
    load_model(args.model)
    for _, hw, mode in runs:
        load_hw(hw, [*MODE_OVERRIDES.get(mode, ()), *args.overrides])
    parser = _run_parser()
    with contextlib.ExitStack() as stack:
        if out is not None:
            out.mkdir(exist_ok=True)
            runs_dir = out / "runs"
            runs_dir.mkdir(exist_ok=True)
        else:
            runs_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="neupims-compare-")))
        rows, labels = [], []
        for k, (label, hw, mode) in enumerate(runs):
            run_dir = runs_dir / f"{k}-{_slug(label)}"
            ns = parser.parse_args(["run", *run_argv(args, hw, mode, trace, run_dir)])
            if not args.quiet:
                print(f"[{k + 1}/{len(runs)}] {label} ...", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):
                ns.func(ns)
            data = RunData(run_dir)
            rows.append(run_metrics(data))
            labels.append(f"{label}: {data.label()}")
        rel = ratios(rows)
    print(format_compare([label for label, _, _ in runs], rows, rel))
    if out is not None:
        report = {"trace": trace, "runs": [
            {"label": lab, "run": desc, "run_dir": f"runs/{k}-{_slug(lab)}", "metrics": m, "ratio_to_first": r}
            for k, ((lab, _, _), desc, m, r) in enumerate(zip(runs, labels, rows, rel))]}
        write_json(out / "compare.json", report)
        _write_csv(out / "compare.csv", [label for label, _, _ in runs], rows, rel)
        _bar_chart(out / "compare.png", [label for label, _, _ in runs], rel)
        print(f"wrote {out}/compare.json, compare.csv, compare.png, runs/")
    return 0


_PERCENT = ("npu_util", "pim_util", "dram_util")


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key in _PERCENT:
        return f"{v:.1%}"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def format_ratio(r: float | None) -> str:
    return "-" if r is None else f"x{r:.3f}"


def format_compare(labels: list[str], rows: list[dict], rel: list[dict]) -> str:
    """One table: a row per metric, a column per run, each cell `value (xratio to the
    first run)`."""
    head = ["", *labels]
    body = [[title, *(f"{_fmt(k, r[k])} ({format_ratio(q[k])})" for r, q in zip(rows, rel))]
            for k, title, _ in METRICS]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [head, *body]]
    return "\n".join(lines)


def _write_csv(path: Path, labels, rows, rel) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [k for k, _, _ in METRICS]
    w.writerow(["run", *keys, *(f"{k}_ratio" for k in keys)])
    for lab, r, q in zip(labels, rows, rel):
        w.writerow([lab, *("" if r[k] is None else repr(r[k]) for k in keys),
                    *("" if q[k] is None else repr(q[k]) for k in keys)])
    write_atomic(path, [buf.getvalue()])


def _bar_chart(path: Path, labels, rel) -> None:
    Figure = figure_class()
    fig = Figure(figsize=(11, 4.5))
    ax = fig.subplots()
    keys = [k for k, _, _ in METRICS]
    x = np.arange(len(keys))
    width = 0.8 / len(labels)
    for i, (lab, q) in enumerate(zip(labels, rel)):
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, [q[k] if q[k] is not None else 0.0 for k in keys],
               width, label=lab)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [title for _, title, _ in METRICS], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"ratio to {labels[0]}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)
