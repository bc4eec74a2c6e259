"""The `neupims-sim run` command: serve a request trace on a hardware configuration.

    neupims-sim run hwconfigs/neupims.yaml traces/sharegpt-1k-poisson.h5 --out results/

The model comes from `--model` (a shipped name such as gpt3-7b, or a YAML path); the
scheduler and its limits from the configuration's `scheduler:` section (override with
`-p scheduler.policy=chunked`). Iteration costs are composed from memoised cycle-level
pieces unless `--exact` simulates every iteration whole (slow: small traces only).
"""

from __future__ import annotations

from neupims_py import __version__
from neupims_py.cluster.cli import is_cluster_file, run_cluster
from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.config import config_hash, hw_to_dict, load_hw
from neupims_py.model import load_model
from neupims_py.serving.cost_model import ExactCost, ReuseCost
from neupims_py.outputs import add_override_option, output_path
from neupims_py.results.chrome_trace import DEFAULT_ITERATIONS, MAX_EVENTS, ChromeTrace, parse_window
from neupims_py.serving.metrics import (
    Clock,
    format_table,
    output_texts,
    summarize,
    write_outputs,
)
from neupims_py.serving.orchestrator import Orchestrator
from neupims_py.serving.serve import timed_run, trace_meta, trace_rows

DEFAULT_MODEL = "gpt3-7b"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="serve a request trace: arrivals, batching, prefill and decode on NPU + PIM",
        description="Serve the requests of a trace.h5 on a hardware configuration: "
        "iteration-level batches (scheduler: section of the configuration), KV caches "
        "placed on PIM channels, each iteration's cost from the cycle-level simulator. "
        "Prints a summary table; --out writes summary.json, requests.csv, tokens.csv and "
        "iterations.csv.",
    )
    p.add_argument("hw", metavar="HW.yaml", help="hardware configuration file or preset name; "
                   "a file with a cluster: section runs several devices (README, 'Several devices')")
    p.add_argument("trace", metavar="TRACE.h5", help="request trace (make one with `neupims-sim trace`)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model file or shipped model name (default {DEFAULT_MODEL})")
    p.add_argument("--mode", choices=tuple(MODE_OVERRIDES),
                   help="run this system on the configuration's NPU and memory (as the shipped "
                   "presets set system.mode, memory.pim.* and sub-batch interleaving)")
    add_override_option(p, "scheduler.policy=chunked (applied after --mode)")
    p.add_argument("--exact", action="store_true",
                   help="simulate every iteration whole, every layer (slow; small traces)")
    p.add_argument("--exact-tokens", action="store_true",
                   help="without --exact: simulate the weight stream at every distinct token "
                   "count above the array height instead of interpolating between grid points")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random generator (channel_policy random); default 0")
    p.add_argument("--max-requests", type=int, metavar="N",
                   help="serve only the first N requests of the trace")
    p.add_argument("--out", metavar="DIR", help="write the result files into DIR")
    p.add_argument("--chrome-trace", metavar="FILE.json",
                   help="write a Chrome trace / Perfetto file: a track per NPU unit and PIM "
                   "channel with operator spans per layer, iterations, request lifetimes")
    p.add_argument("--trace-window", metavar="START:END",
                   help="iterations [START, END) to trace (e.g. 0:200), or the iterations "
                   "overlapping simulated time START:END with a unit (s, ms, us; e.g. 10ms:20ms); "
                   f"either end may be empty. Default: the first {DEFAULT_ITERATIONS} iterations. "
                   f"The trace stops at {MAX_EVENTS} events either way")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    if is_cluster_file(args.hw):  # a `cluster:` section: several devices (neupims_py/cluster)
        return run_cluster(args)
    out = output_path(args.out, "--out", directory=True) if args.out else None
    trace_path = output_path(args.chrome_trace, "--chrome-trace") if args.chrome_trace else None
    window = parse_window(args.trace_window)
    overrides = [*MODE_OVERRIDES.get(args.mode, ()), *args.overrides]
    hw = load_hw(args.hw, overrides)
    model = load_model(args.model)
    trace, rows = trace_rows(args)
    cost = ExactCost(hw, model) if args.exact else ReuseCost(hw, model, exact_tokens=args.exact_tokens)
    tracer = None
    if trace_path is not None:
        tracer = ChromeTrace(hw, model.name, window)
        tracer.attach(cost)
    orch = Orchestrator(hw, model, cost, seed=args.seed, observer=tracer)
    result, wall = timed_run(orch, rows, quiet=args.quiet, clock_mhz=hw.npu.clock_mhz)
    meta = {
        "neupims_sim": __version__,
        "hw": hw.name,
        "hw_config_hash": config_hash(hw),
        "mode": hw.system.mode,
        "model": model.name,
        "trace": trace_meta(args, trace, rows),
        "seed": args.seed,
        "overrides": overrides,
        "scheduler": hw_to_dict(hw)["scheduler"],
        "cost_model": cost.describe(),
        "units": {"clock_mhz": hw.npu.clock_mhz, "systolic_arrays": hw.npu.systolic_arrays,
                  "channels": hw.memory.geometry.channels},
    }
    clock = Clock(hw.npu.clock_mhz)
    summary = summarize(result, clock, hw=hw, meta=meta)
    print(format_table(summary, wall))
    if out is not None:
        write_outputs(out, output_texts(result, summary, clock))
        print(f"wrote {out}/summary.json, requests.csv, tokens.csv, iterations.csv")
    if tracer is not None:
        tracer.write(trace_path, result)
        span = (f"iterations {tracer.first}..{tracer.last}" if tracer.first is not None
                else f"no iteration in the window {window.text}")
        print(f"wrote {trace_path}: {span}" + (f" ({tracer.truncated})" if tracer.truncated else ""))
    return 0

