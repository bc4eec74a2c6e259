"""The `neupims-sim iteration` command: simulate one iteration of a batch on a configuration.

The batch comes from a CSV file in one of two layouts, told apart by the header line:

- ``seq_len,ch_idx``: a NeuPIMs request snapshot (the artifact's ``request-traces/*.csv``);
  every request is in generation, so it has one new token over ``seq_len`` cached ones;
- ``q_len,kv_len[,ch_idx]``: ``q_len`` new tokens (1: decode; more: prefill or a prefill
  chunk) over ``kv_len`` cached ones; without ``ch_idx`` requests take the channels
  round-robin.

Prints the cycles per operator and the total, and optionally writes
``IterationResult.to_dict()`` (plus what was run) as JSON, under a temporary name renamed
into place, so a failed run leaves no file.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from neupims_py.compiler.iteration import REUSE_LEVELS, BatchEntry, IterationResult, IterationSimulator
from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.model import load_model
from neupims_py.outputs import add_override_option, output_path, write_json

MODES = ("npu-only", "npu+pim", "neupims")

# What `--mode` overrides: the system mode and the memory it needs, so that `--mode X` on any
# shipped preset gives preset X's memory and system (hwconfigs/npu-only.yaml, npu-pim.yaml,
# neupims.yaml). `-p` overrides are applied after these.
MODE_OVERRIDES = {
    "npu-only": ("system.mode=npu-only", "memory.pim.enabled=false",
                 "system.sub_batch_interleaving=false", "scheduler.channel_policy=round-robin"),
    "npu+pim": ("system.mode=npu+pim", "memory.pim.enabled=true", "memory.pim.row_buffers=single",
                "system.sub_batch_interleaving=false", "scheduler.channel_policy=round-robin"),
    "neupims": ("system.mode=neupims", "memory.pim.enabled=true", "memory.pim.row_buffers=dual",
                "system.sub_batch_interleaving=true", "scheduler.channel_policy=min-load"),
}

SNAPSHOT_COLUMNS = ("seq_len", "ch_idx")
QKV_COLUMNS = ("q_len", "kv_len")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "iteration",
        help="simulate one iteration of a batch of requests (all layers of the model)",
        description="Simulate one iteration of a model on a hardware configuration: every "
        "decoder layer of one tensor-parallel shard, for a batch of requests given as a CSV "
        "file, either a NeuPIMs request snapshot (header seq_len,ch_idx: every request "
        "decodes one token over seq_len cached ones) or q_len,kv_len[,ch_idx] rows (channels "
        "round-robin when ch_idx is absent). Prints cycles, busy cycles and bytes per "
        "operator.",
    )
    p.add_argument("hw", metavar="HW.yaml", help="hardware configuration file or preset name")
    p.add_argument("--model", required=True, help="model file or shipped model name, e.g. gpt3-7b")
    p.add_argument("--batch", required=True, metavar="FILE", help="the batch (CSV, see above)")
    p.add_argument(
        "--layers",
        type=int,
        metavar="N",
        help="simulate the first N decoder layers only (default: all of the shard's layers); "
        "--layers 1 is what the NeuPIMs simulator reports",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="simulate every layer (default: layers are simulated until they repeat, see "
        "--reuse)",
    )
    p.add_argument(
        "--reuse",
        choices=REUSE_LEVELS,
        default="steady",
        help="how layers that are not simulated are filled in (every layer has the same "
        "shapes). steady (default): layers are simulated until the engine state before a "
        "layer equals the one before a layer 1 to 4 layers earlier (cycles counted from the "
        "layer's start, each layer's weight rows renamed to the first layer's); from there "
        "the layers repeat that cycle of layers cycle for cycle, so the result is --exact's "
        "to the cycle "
        "(without such a repeat every layer is simulated). fast: two layers only, the second "
        "(and with sub-batches the second half of the first) standing for the rest; an "
        "estimate: 1.5%% under --exact for 256 ShareGPT-like requests on the neupims preset, "
        "equal for 64 (bench/README.md)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        help="run this system on the configuration's NPU and memory (overrides system.mode, "
        "memory.pim.enabled, memory.pim.row_buffers and system.sub_batch_interleaving as the "
        "shipped presets set them)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    add_override_option(p, "system.sub_batch_threshold=64 (applied after --mode)")
    p.set_defaults(func=run)


def run(args) -> int:
    json_path = output_path(args.json, "--json") if args.json else None
    overrides = [*MODE_OVERRIDES.get(args.mode, ()), *args.overrides]
    hw = load_hw(args.hw, overrides)
    model = load_model(args.model)
    if args.layers is not None and not 1 <= args.layers <= model.layers_per_stage:
        raise UserError(f"must be 1 .. {model.layers_per_stage} (the layers of {model.name} "
                        "one device runs)", field="--layers")
    entries = read_batch(args.batch, hw.memory.geometry.channels)
    sim = IterationSimulator(hw, model)
    start = time.perf_counter()
    result = sim.simulate(entries, exact=args.exact, layers=args.layers, reuse=args.reuse)
    wall = time.perf_counter() - start
    report = {
        **result.to_dict(),
        "hw": hw.name,
        "model": model.name,
        "batch": str(args.batch),
        "requests": len(entries),
        "prefill_requests": sum(1 for e in entries if e.q_len > 1),
        "tokens": sum(e.q_len for e in entries),
        "overrides": overrides,
        "wall_seconds": wall,
    }
    print(format_report(report, result, model.layers_per_stage))
    if json_path:
        write_json(json_path, report)
        print(f"wrote {json_path}")
    return 0


def read_batch(path: str | Path, channels: int) -> list[BatchEntry]:
    """The requests of a batch file (see the module docstring); request ids are row numbers."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError("no such file", path=where) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read it as a CSV file ({exc.__class__.__name__})",
                        path=where) from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if any(c.strip() for c in r)]
    if not rows:
        raise UserError("the file is empty; expected a header seq_len,ch_idx or "
                        "q_len,kv_len[,ch_idx] and one row per request", path=where)
    head_line, head = rows[0]
    header = [c.strip().lower() for c in head]
    if "seq_len" in header:
        layout, required, optional = "snapshot", SNAPSHOT_COLUMNS, ()
    elif "q_len" in header or "kv_len" in header:
        layout, required, optional = "q_len,kv_len", QKV_COLUMNS, ("ch_idx",)
    else:
        raise UserError(f"line {head_line}: header {','.join(head)!r} names neither layout; "
                        "expected seq_len,ch_idx (a NeuPIMs request snapshot) or "
                        "q_len,kv_len[,ch_idx]", path=where)
    for name in required:
        if name not in header:
            raise UserError(f"line {head_line}: the header lacks column {name!r} (a {layout} "
                            f"file needs {','.join(required)})", path=where)
    for name in header:
        if name not in required + optional:
            raise UserError(f"line {head_line}: unknown column {name!r}; a {layout} file has "
                            f"{','.join(required + optional)}", path=where)
    if len(set(header)) != len(header):
        raise UserError(f"line {head_line}: a column is named twice", path=where)
    col = {name: i for i, name in enumerate(header)}
    if len(rows) == 1:
        raise UserError("the file has a header but no requests", path=where)

    def value(line: int, cells: list[str], name: str, minimum: int) -> int:
        text = cells[col[name]].strip()
        try:
            v = int(text)
        except ValueError:
            raise UserError(f"line {line}: {name} {text!r} is not an integer",
                            path=where) from None
        if v < minimum:
            raise UserError(f"line {line}: {name} = {v}; it must be at least {minimum}",
                            path=where)
        return v

    entries = []
    for req, (line, cells) in enumerate(rows[1:]):
        if len(cells) != len(header):
            raise UserError(f"line {line}: {len(cells)} values for the {len(header)} columns "
                            f"{','.join(header)}", path=where)
        if layout == "snapshot":
            # a request in generation: its one new token attends over seq_len cached ones
            q_len, kv_len = 1, value(line, cells, "seq_len", 1)
        else:
            q_len, kv_len = value(line, cells, "q_len", 1), value(line, cells, "kv_len", 0)
        ch = value(line, cells, "ch_idx", 0) if "ch_idx" in col else req % channels
        if ch >= channels:
            raise UserError(f"line {line}: ch_idx = {ch} is not a channel of the "
                            f"configuration (0 .. {channels - 1})", path=where)
        entries.append(BatchEntry(req, q_len, kv_len, ch))
    return entries


def format_report(report: dict, result: IterationResult, model_layers: int) -> str:
    n, toks, pre = report["requests"], report["tokens"], report["prefill_requests"]
    lines = [
        f"{report['batch']}: {n:,} requests ({n - pre:,} decode, {pre:,} prefill), "
        f"{toks:,} tokens; {report['model']} on "
        f"{report['hw']} (mode {result.mode}, {result.sub_batches} sub-batch"
        f"{'es' if result.sub_batches > 1 else ''})",
    ]
    if result.layers == 1 and model_layers > 1:
        lines.append(f"one decoder layer simulated (--layers 1), as the NeuPIMs simulator "
                     f"does: the cycles are one layer's, not the {model_layers}-layer "
                     "iteration's")
    elif result.layers < model_layers:
        lines.append(f"the first {result.layers} of {model_layers} decoder layers simulated "
                     "(--layers): not a whole iteration")
    if result.layers > 1:
        how = {
            "none": "every layer simulated",
            "steady": f"{result.layers_simulated} layers simulated, then the engine state "
                      "repeated: the rest repeat the steady layer cycle for cycle (exact)",
            "fast": f"{result.layers_simulated} layers simulated, the steady one repeated for "
                    "the rest (--reuse fast: an estimate)",
        }[result.reuse]
        lines.append(f"layers {result.layers}: {how}")
    lines += ["", f"{'op':<16} {'unit':<7} {'cycles':>14} {'busy':>14} {'bytes':>16}"]
    for name, o in result.ops.items():
        # the engine counts PIM busy cycles per channel, not per operator
        busy = "-" if o["unit"] == "pim" else f"{o['busy']:,}"
        lines.append(f"{name:<16} {o['unit']:<7} {o['cycles']:>14,} {busy:>14} "
                     f"{o['bytes']:>16,}")
    d = report
    lines += [
        "",
        f"total cycles {result.cycles:,}"
        + (f" ({result.cycles / result.layers:,.0f} per layer)" if result.layers > 1 else ""),
        f"utilization: systolic arrays {d['npu_array_utilization']:.3f}, vector units "
        f"{d['vector_utilization']:.3f}, PIM {d['pim_utilization']:.3f} (busy cycles per "
        "unit over the total)",
        "cycles: an operator's first start to its last end, summed over layers (operators "
        "overlap); busy: cycles its tasks occupy NPU units, summed over the arrays; bytes: "
        "DRAM reads feeding it",
        f"simulated in {report['wall_seconds']:.2f} s wall",
    ]
    return "\n".join(lines)
