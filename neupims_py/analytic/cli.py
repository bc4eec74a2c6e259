"""The `neupims-sim latency` command: per-token latencies of one batch, roofline bound and
cycle-level simulation side by side.

    neupims-sim latency --model gpt3-7b hwconfigs/neupims.yaml --prompt 1024 --response 512 --batch 8
"""

from __future__ import annotations

from neupims_py.analytic.latency import latency
from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.outputs import add_override_option, output_path, write_json

DEFAULT_MODEL = "gpt3-7b"
# Responses up to this many tokens are printed in full; longer ones as head, tail and summary.
FULL_ROWS = 16
EDGE_ROWS = 4


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "latency",
        help="per-token latency of one batch: roofline bound vs cycle-level simulation",
        description="Latency of the prefill (time to first token) and of every decode step "
        "for a batch of identical requests arriving together: a roofline bound (prefill by "
        "peak FLOP/s or reading the weights, a decode step by reading weights and K/V at peak "
        "bandwidth; see neupims_py/analytic/roofline.py) beside the serving loop's cycle-level "
        "result, with their ratio. Scheduler limits that would split the batch are raised.",
    )
    p.add_argument("hw", metavar="HW.yaml", help="hardware configuration file or preset name")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model file or shipped model name (default {DEFAULT_MODEL})")
    p.add_argument("--prompt", type=int, required=True, metavar="P", help="prompt tokens per request")
    p.add_argument("--response", type=int, required=True, metavar="R",
                   help="output tokens per request (the first comes with the prefill)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="requests in the batch (default 1)")
    p.add_argument("--mode", choices=tuple(MODE_OVERRIDES),
                   help="run this system on the configuration's NPU and memory (as `run --mode`)")
    add_override_option(p, "memory.geometry.channels=16 (applied after --mode)")
    p.add_argument("--exact", action="store_true",
                   help="simulate every iteration whole (ExactCost; slow) instead of ReuseCost")
    p.add_argument("--json", metavar="FILE", help="write every token's latencies to FILE (JSON)")
    p.set_defaults(func=run)


def run(args) -> int:
    out = output_path(args.json, "--json") if args.json else None
    for flag, value in (("--prompt", args.prompt), ("--response", args.response), ("--batch", args.batch)):
        if value < 1:
            raise UserError(f"must be at least 1, got {value}", field=flag)
    hw = load_hw(args.hw, [*MODE_OVERRIDES.get(args.mode, ()), *args.overrides])
    result = latency(hw, args.model, args.prompt, args.response, args.batch, exact=args.exact)
    print(format_result(result))
    if out is not None:
        write_json(out, result.to_dict())
        print(f"wrote {out}")
    return 0


def format_result(r) -> str:
    lines = [f"{r.model} on {r.hw} ({r.mode}), batch {r.batch}, prompt {r.prompt}, "
             f"response {r.response}, {r.cost_model} costs; milliseconds per token"]
    for name, (configured, used) in r.raised.items():
        lines.append(f"scheduler.{name} raised from {configured} to {used} to run the batch together")
    lines.append(f"{'token':>7}  {'roofline':>12}  {'simulated':>12}  {'ratio':>6}")
    n = len(r.simulated)
    shown = range(n) if n <= FULL_ROWS else [*range(EDGE_ROWS), None, *range(n - EDGE_ROWS, n)]
    for i in shown:
        if i is None:
            lines.append(f"{'...':>7}")
            continue
        label = "prefill" if i == 0 else str(i)
        lines.append(f"{label:>7}  {r.roofline[i] * 1e3:12.4f}  {r.simulated[i] * 1e3:12.4f}  "
                     f"{r.ratios[i]:6.2f}")
    if n > 1:
        dec = r.ratios[1:]
        sim, roof = sum(r.simulated[1:]), sum(r.roofline[1:])
        lines.append(f"decode: {n - 1} steps, mean {sim / (n - 1) * 1e3:.4f} ms simulated vs "
                     f"{roof / (n - 1) * 1e3:.4f} ms roofline, ratio {min(dec):.2f} .. {max(dec):.2f}")
    total_s, total_r = sum(r.simulated), sum(r.roofline)
    lines.append(f"total: {total_s * 1e3:.3f} ms simulated vs {total_r * 1e3:.3f} ms roofline "
                 f"(ratio {total_s / total_r:.2f}); {r.batch * r.response / total_s:.1f} output "
                 "tokens/s simulated")
    return "\n".join(lines)
