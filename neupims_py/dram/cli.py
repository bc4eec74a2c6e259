"""The `neupims-sim dram` command: replay a DRAM request trace on a configuration's memory.

Prints per-channel counters and a total, and optionally writes them as JSON and writes every
issued command in DRAMsim3's command-trace layout (one file per channel), so a run can be
`diff`ed against DRAMsim3's. Outputs appear only when the run succeeded: each is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.dram.trace_io import FORMATS, DramTrace, read_trace
from neupims_py.errors import UserError
from neupims_py.outputs import add_override_option, output_path, write_json
from neupims_py.formats import DRAMSIM3_CMD_NAMES, NUM_CMDS

# DRAMsim3 names channel N's command trace <output_prefix>ch_<N>cmd.trace; its default
# output_prefix is "dramsim3".
CMD_TRACE_NAME = "dramsim3ch_{}cmd.trace"
# DRAMsim3's layout: `clk` left-justified in 18, then the command (left in 20), channel, rank,
# bank group and bank (right in 3), row and column as 0x-hex (right in 8), single spaces.
CMD_TRACE_LINE = "%-18d %-20s %3d %3d %3d %3d %#8x %#8x\n"
_CMD_NAMES = np.array([DRAMSIM3_CMD_NAMES[c] for c in range(NUM_CMDS)], dtype=object)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dram",
        help="replay a DRAM request trace on a configuration's memory",
        description="Replay a DRAM request trace through the memory of a hardware "
        "configuration and report cycles, commands, row-hit rate, read latency and bandwidth "
        "per channel. Trace formats: "
        + "; ".join(f"{k}: {f.description}" for k, f in FORMATS.items())
        + ". Requests must be in non-decreasing cycle order.",
    )
    p.add_argument("hw", metavar="HW.yaml", help="hardware configuration file or preset name")
    p.add_argument("trace", metavar="TRACE", help="the request trace")
    p.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="the trace's format (default: auto, a CSV when the first line has a comma)",
    )
    p.add_argument(
        "--max-inject-per-cycle",
        type=int,
        default=1,
        metavar="N",
        help="requests the front end may offer per cycle (default: 1, as DRAMsim3's trace CPU)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the counters as JSON to FILE")
    p.add_argument(
        "--cmd-trace",
        metavar="DIR",
        help="write every issued command to DIR/" + CMD_TRACE_NAME.format("<N>")
        + " per channel, in DRAMsim3's command-trace layout (files of those names are replaced)",
    )
    add_override_option(p, "memory.timing.tRCDRD=16")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.max_inject_per_cycle < 1:
        raise UserError("must be at least 1", field="--max-inject-per-cycle")
    json_path = output_path(args.json, "--json") if args.json else None
    cmd_dir = None
    if args.cmd_trace:
        cmd_dir = output_path(args.cmd_trace, "--cmd-trace", directory=True)
    hw = load_hw(args.hw, args.overrides)
    mem = hw.memory

    trace, parse_s = _timed(read_trace, args.trace, args.format)
    check_capacity(trace, mem, args.trace)
    params = lower_memory(mem)
    empty = np.zeros(0, np.int64)
    # Load (or compile) the engine first, so the replay's time is the simulation's alone.
    _, load_s = _timed(replay, params, empty, empty.astype(bool), empty)
    result, wall_s = _timed(_replay, params, mem, trace, args.max_inject_per_cycle, cmd_dir)

    summary = result.summary()
    channels = summary.pop("channels")
    n = len(trace.addr)
    report = {
        "trace": str(args.trace),
        "format": trace.format,
        "hw": hw.name,
        "overrides": list(args.overrides),
        "requests": n,
        "parse_seconds": parse_s,
        "engine_load_seconds": load_s,
        "wall_seconds": wall_s,
        "requests_per_second": n / wall_s if wall_s > 0 else 0.0,
        "total": summary,
        "channels": [{"channel": i, **c} for i, c in enumerate(channels)],
    }
    print(format_report(report, mem))
    if json_path:
        write_json(json_path, report)
        print(f"wrote {json_path}")
    if cmd_dir:
        print(f"wrote {mem.geometry.channels} command traces to {cmd_dir}/")
    return 0


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _replay(params, mem, trace: DramTrace, max_inject: int, cmd_dir: Path | None):
    """The replay, streaming the command log to `cmd_dir` when given (all or nothing)."""
    writer = CommandTraceWriter(cmd_dir, mem.geometry.channels) if cmd_dir else None
    try:
        result = replay(
            params,
            trace.addr,
            trace.is_write,
            trace.cycle,
            max_inject_per_cycle=max_inject,
            log_commands=writer is not None,
            clock_mhz=mem.clock_mhz,
            burst_bytes=mem.geometry.burst_bytes,
            on_log_chunk=writer.write if writer else None,
        )
    except BaseException:
        if writer:
            writer.discard()
        raise
    if writer:
        writer.commit()
    return result


def check_capacity(trace: DramTrace, mem, name: str) -> None:
    """Every address must fall inside the memory (the engine would silently wrap it)."""
    cap = mem.capacity_bytes
    over = np.flatnonzero(trace.addr >= cap)
    if len(over):
        i = int(over[0])
        g = mem.geometry
        raise UserError(
            f"line {trace.line[i]}: address {int(trace.addr[i]):#x} is beyond the memory's "
            f"capacity of {cap:#x} bytes ({g.channels} channels x {g.channel_size_mib} MiB); "
            "keep addresses below it, or give a larger memory (-p memory.geometry.channels=... "
            "or memory.geometry.channel_size_mib=...)",
            path=name,
        )


def format_report(report: dict, mem) -> str:
    t = report["total"]
    g = mem.geometry
    last_write = t["last_write_issue_cycle"]
    lines = [
        f"{report['trace']} ({report['format']}, {report['requests']:,} requests) "
        f"on {report['hw']}: {mem.protocol}, {g.channels} channels, {mem.clock_mhz:g} MHz",
        f"cycles {t['cycles']:,}; last buffered write issued at cycle "
        + (f"{last_write:,}" if last_write >= 0 else "- (no writes)"),
        "",
        f"{'ch':>5} {'reads':>10} {'writes':>10} {'ACT':>9} {'PRE':>9} {'REF':>6} "
        f"{'row-hit':>8} {'rd lat':>8} {'GB/s':>8}",
    ]
    rows = [(str(c["channel"]), c) for c in report["channels"]] + [("total", t)]
    for label, c in rows:
        lines.append(
            f"{label:>5} {c['reads']:>10,} {c['writes']:>10,} {c['act']:>9,} {c['pre']:>9,} "
            f"{c['ref']:>6,} {c['row_hit_rate']:>8.4f} {c['avg_read_latency']:>8.1f} "
            f"{c['bandwidth_gbps']:>8.2f}"
        )
    lines += [
        "",
        f"parse {report['parse_seconds']:.3f} s; "
        f"engine load {report['engine_load_seconds']:.3f} s; "
        f"replay {report['wall_seconds']:.3f} s wall "
        f"({report['requests_per_second']:,.0f} requests/s)",
    ]
    return "\n".join(lines)


class CommandTraceWriter:
    """Streams the engine's command log into one file per channel.

    The files fill a hidden staging directory next to the target; `commit` moves them into
    it (making it if missing) and `discard` removes them, so a failed run leaves nothing.
    """

    def __init__(self, directory: Path, channels: int):
        self.directory = directory
        self.stage = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        self.names = [CMD_TRACE_NAME.format(ch) for ch in range(channels)]
        self.files = [
            open(self.stage / n, "w", encoding="ascii", newline="\n") for n in self.names
        ]

    def write(self, log, n: int) -> None:
        ch = log.ch[:n]
        order = np.argsort(ch, kind="stable")  # keeps issue order within a channel
        bounds = np.searchsorted(ch[order], np.arange(len(self.files) + 1))
        for c, f in enumerate(self.files):
            idx = order[bounds[c] : bounds[c + 1]]
            if len(idx) == 0:
                continue
            rows = zip(
                log.cycle[idx].tolist(),
                _CMD_NAMES[log.cmd[idx]].tolist(),
                log.ch[idx].tolist(),
                log.rank[idx].tolist(),
                log.bg[idx].tolist(),
                log.ba[idx].tolist(),
                log.row[idx].tolist(),
                log.col[idx].tolist(),
            )
            f.write("".join([CMD_TRACE_LINE % r for r in rows]))

    def commit(self) -> None:
        for f in self.files:
            f.close()
        if not self.directory.exists():
            os.rename(self.stage, self.directory)
            return
        for name in self.names:
            os.replace(self.stage / name, self.directory / name)
        self.stage.rmdir()

    def discard(self) -> None:
        for f in self.files:
            f.close()
        shutil.rmtree(self.stage, ignore_errors=True)
