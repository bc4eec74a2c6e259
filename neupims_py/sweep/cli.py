"""The `neupims-sim sweep` command: run a grid (or list) of `run` configurations and gather
their results into one table.

    neupims-sim sweep sweeps/batch-size.yaml --jobs 2 --out results/batch-size
    neupims-sim sweep sweeps/batch-size.yaml --ray auto        # on a running Ray cluster
"""

from __future__ import annotations

import re
from pathlib import Path

from neupims_py.errors import UserError
from neupims_py.outputs import output_path
from neupims_py.sweep.plots import plot_metric
from neupims_py.sweep.runner import Progress, run_sweep
from neupims_py.sweep.spec import check_plot, load_sweep

# columns of the terminal table after the swept fields (results.csv has every metric)
SHOWN = (("throughput.output_tokens_per_s", "tok/s"), ("latency_ms.ttft.p50", "TTFT p50 ms"),
         ("latency_ms.tpot.p50", "TPOT p50 ms"), ("utilization.pim", "PIM util"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of configurations (hardware, model, scheduler, trace) and tabulate",
        description="Run every point of a sweep file (base: settings, grid: field -> values "
        "and/or points: list; see neupims_py/sweep/spec.py) as `neupims-sim run`, skipping "
        "points finished by an earlier call, and gather their summaries into results.csv "
        "(and results.parquet with pyarrow) under --out. A failing point is a row with its "
        "error; the others go on.",
    )
    p.add_argument("sweep", metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument("--out", metavar="DIR",
                   help="output directory, made if missing (default: SWEEP-sweep next to the "
                   "current directory, named after the file)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="points run at once in a local process pool (default 1: in this process)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the points as Ray tasks on the cluster at ADDRESS ('auto': the "
                   "running local cluster); needs the ray extra")
    p.add_argument("--plot", action="append", default=[], metavar="METRIC:FIELD",
                   help="draw METRIC (a results.csv column) against a swept FIELD into "
                   "DIR/plots/ (repeatable; adds to the file's plots:)")
    p.add_argument("--fail-on-error", action="store_true",
                   help="exit with status 1 if any point failed (default: 0, errors are in the table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.jobs < 1:
        raise UserError("must be at least 1", field="--jobs")
    sweep = load_sweep(args.sweep)
    plots = [check_plot(s, sweep.swept, "--plot") for s in args.plot]
    plots += [check_plot(s, sweep.swept, f"{args.sweep}: plots") for s in sweep.plots]
    out = output_path(args.out or f"{Path(args.sweep).stem}-sweep", "--out", directory=True)
    progress = None if args.quiet else Progress()
    try:
        results = run_sweep(sweep, out, jobs=args.jobs, ray=args.ray, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    print(format_results(results))
    written = ["results.csv"] + (["results.parquet"] if (out / "results.parquet").is_file() else [])
    if plots:
        (out / "plots").mkdir(exist_ok=True)
        for metric, field in plots:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{metric}-vs-{field}") + ".png"
            plot_metric(results, metric, field, out / "plots" / name)
            written.append(f"plots/{name}")
    print(f"{len(results.rows)} points: {results.ran} run, {results.reused} reused, "
          f"{results.failed} failed; wrote {out}/" + ", ".join(written))
    return 1 if args.fail_on_error and results.failed else 0


def format_results(results) -> str:
    shown = [(c, h) for c, h in SHOWN if c in results.columns]
    head = ["#", *results.swept, "status", *(h for _, h in shown)]
    body, errors = [], []
    for row in results.rows:
        cells = [str(row["point"]), *(_short(row.get(f)) for f in results.swept), row["status"]]
        ok = row["status"] == "ok"
        body.append(cells + ([_num(row.get(c)) for c, _ in shown] if ok else []))
        errors.append("" if ok else row["error"])
    widths = [max(len(r[i]) for r in [head, *body] if i < len(r)) for i in range(len(head))]
    numeric_from = len(results.swept) + 2
    lines = []
    for cells, error in zip([head, *body], ["", *errors]):
        fixed = [c.rjust(w) if j >= numeric_from else c.ljust(w)
                 for j, (c, w) in enumerate(zip(cells, widths))]
        lines.append("  ".join(fixed + ([error] if error else [])).rstrip())
    return "\n".join(lines)


def _short(value) -> str:
    text = "" if value is None else str(value)
    return Path(text).name if "/" in text else text


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
