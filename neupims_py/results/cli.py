"""The `neupims-sim report` and `neupims-sim compare` commands.

    neupims-sim report results/run1                      # PNGs into results/run1/plots
    neupims-sim compare hwconfigs/npu-pim.yaml hwconfigs/neupims.yaml traces/synth-tiny.h5
    neupims-sim compare hwconfigs/neupims.yaml traces/synth-tiny.h5 --modes npu-only,npu+pim,neupims
"""

from __future__ import annotations

from neupims_py.outputs import add_override_option, output_path
from neupims_py.results.compare import compare
from neupims_py.results.report import RunData, figure_class, plot_run


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="plot a serving run: latency CDFs, throughput, batch/KV, utilisation, operators",
        description="Draw PNGs of the outputs `neupims-sim run --out RUN_DIR` wrote: TTFT and "
        "time-between-tokens CDFs, throughput over time, batch size and KV tokens over time, "
        "array/vector/PIM/DRAM utilisation over time, cycles per operator group (stacked "
        "bars), prefill vs decode tokens and PIM/NPU overlap per iteration. Needs matplotlib "
        "(pip install 'neupims-py[plot]').",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of `neupims-sim run`")
    p.add_argument("--out", metavar="DIR", help="write the PNGs into DIR (default RUN_DIR/plots)")
    p.set_defaults(func=report)

    p = subparsers.add_parser(
        "compare",
        help="run several configurations (or systems) on one trace, one table with ratios",
        description="Run `neupims-sim run` for each configuration (and each --modes system) on "
        "the trace, then print one table: throughput, TTFT and time-between-tokens "
        "percentiles, NPU/PIM/DRAM utilisation, each with its ratio to the first run. "
        "--out DIR also keeps every run's outputs (DIR/runs/) and writes compare.csv, "
        "compare.json and a bar chart of the ratios (compare.png, needs matplotlib).",
    )
    p.add_argument("hws", nargs="+", metavar="HW.yaml", help="configuration files or preset names")
    p.add_argument("trace", metavar="TRACE.h5", help="the request trace")
    p.add_argument("--modes", metavar="M1,M2,...",
                   help="run each configuration as these systems (npu-only, npu+pim, neupims)")
    p.add_argument("--model", default="gpt3-7b", help="model file or shipped model name (default gpt3-7b)")
    add_override_option(p, "scheduler.max_batch_size=64 (every run; after --modes)")
    p.add_argument("--exact", action="store_true", help="simulate every iteration whole (slow)")
    p.add_argument("--exact-tokens", action="store_true", help="as `run --exact-tokens`")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    p.add_argument("--max-requests", type=int, metavar="N", help="serve only the first N requests")
    p.add_argument("--out", metavar="DIR", help="write the runs, the tables and the chart into DIR")
    p.add_argument("--quiet", action="store_true", help="no line per run started")
    p.set_defaults(func=compare)


def report(args) -> int:
    run = RunData(args.run_dir)
    figure_class()  # matplotlib missing: say so before making the directory
    if args.out:
        out = output_path(args.out, "--out", directory=True)
    else:
        out = run.dir / "plots"
    out.mkdir(exist_ok=True)
    files = plot_run(run, out)
    print(f"wrote {len(files)} plots into {out}: {', '.join(f.name for f in files)}")
    return 0
