"""`neupims-sim run CLUSTER.yaml TRACE.h5`: a file with a top-level `cluster:` section is
served on the cluster it describes (neupims_py/serving/cli.py hands it here).

The options of `run` apply, except those that change one device's configuration
(`--mode`, `-p`: give a pool's `hw` and `params` instead) and `--chrome-trace` (one
device's tracks; not available for a cluster).
"""

from __future__ import annotations

from neupims_py import __version__
from neupims_py.cluster.config import is_cluster_file, load_cluster
from neupims_py.cluster.results import cluster_meta, output_texts, summarize_cluster
from neupims_py.cluster.runner import Cluster
from neupims_py.errors import UserError
from neupims_py.model import load_model
from neupims_py.outputs import output_path
from neupims_py.serving.metrics import Clock, write_outputs
from neupims_py.serving.serve import timed_run, trace_meta, trace_rows


def run_cluster(args) -> int:
    for flag, given in (("--mode", getattr(args, "mode", None)), ("-p", getattr(args, "overrides", None)),
                        ("--chrome-trace", getattr(args, "chrome_trace", None)),
                        ("--trace-window", getattr(args, "trace_window", None))):
        if given:
            fix = ("set each pool's hw and params in the cluster file" if flag in ("--mode", "-p")
                   else "run one device's configuration to trace it")
            raise UserError(f"not available with a cluster file ({args.hw}); {fix}", field=flag)
    out = output_path(args.out, "--out", directory=True) if args.out else None
    model = load_model(args.model)
    cfg = load_cluster(args.hw, model)
    trace, rows = trace_rows(args)
    cluster = Cluster(cfg, model, exact=args.exact, exact_tokens=args.exact_tokens, seed=args.seed)
    result, wall = timed_run(cluster, rows, quiet=args.quiet, clock_mhz=cfg.pools[0].hw.npu.clock_mhz)
    meta = {
        "neupims_sim": __version__,
        **cluster_meta(cfg),
        "model": model.name,
        "trace": trace_meta(args, trace, rows),
        "seed": args.seed,
        "cost_model": "exact" if args.exact else "reuse",
    }
    clock = Clock(cfg.pools[0].hw.npu.clock_mhz)
    summary = summarize_cluster(result, clock, cfg=cfg, meta=meta)
    print(format_cluster_table(summary, wall))
    if out is not None:
        write_outputs(out, output_texts(result, summary, clock))
        print(f"wrote {out}/summary.json, requests.csv, tokens.csv, devices.csv, iterations.csv")
    return 0


def format_cluster_table(s: dict, wall_seconds: float | None = None) -> str:
    r, t, lat, c = s["requests"], s["throughput"], s["latency_ms"], s["cost"]

    def ms(d, k):
        return f"{d[k]:.2f}" if k in d else "-"

    lines = [
        ("cluster", f"{s['cluster']}, model {s['model']}, {s['cost_model']} costs"),
        ("requests", f"{r['finished']} finished, {r['rejected']} rejected of {r['total']}"),
        ("simulated time", f"{s['simulated_seconds']:.3f} s"),
        ("throughput", f"{t['output_tokens_per_s']:.1f} output tokens/s, {t['requests_per_s']:.2f} requests/s"),
        ("TTFT ms", f"mean {ms(lat['ttft'], 'mean')}  p50 {ms(lat['ttft'], 'p50')}  p99 {ms(lat['ttft'], 'p99')}"),
        ("TPOT ms", f"mean {ms(lat['tpot'], 'mean')}  p50 {ms(lat['tpot'], 'p50')}  p99 {ms(lat['tpot'], 'p99')}"),
        ("e2e latency ms", f"mean {ms(lat['e2e'], 'mean')}  p50 {ms(lat['e2e'], 'p50')}  p99 {ms(lat['e2e'], 'p99')}"),
    ]
    if c["per_hour"]:
        lines.append(("cost", f"${c['per_hour']:.2f} per hour, "
                              f"{c['output_tokens_per_dollar']:.4g} output tokens per $"))
    for name, p in s["pools"].items():
        u = p["utilization"]
        extra = f", bubble {p['pipeline_bubble']:.1%}" if "pipeline_bubble" in p else ""
        lines.append((f"pool {name}", f"{p['devices']} x {p['hw']} ({p['role']}), busy {p['busy_fraction']:.1%}, "
                                      f"arrays {u['systolic_arrays']:.1%}, PIM {u['pim']:.1%}, "
                                      f"queue mean {ms(p['queue_delay_ms'], 'mean')} ms{extra}"))
    x = s["transfers"]
    if x["count"]:
        lines.append(("KV transfers", f"{x['count']}, {x['bytes'] / 1e6:.1f} MB, mean "
                                      f"{ms(x['transfer_ms'], 'mean')} ms + wait {ms(x['wait_ms'], 'mean')} ms"))
    for reason, n in r["rejected_reasons"].items():
        lines.append(("rejected", f"{n} x {reason}"))
    if wall_seconds is not None:
        lines.append(("wall time", f"{wall_seconds:.1f} s"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)

__all__ = ["format_cluster_table", "is_cluster_file", "run_cluster"]
