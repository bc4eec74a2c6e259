"""What `neupims-sim run` does around the loop, for one device (serving/cli.py) and for a
cluster (cluster/cli.py) alike: read the trace's rows, run the loop with a progress line
and a wall clock, and describe the trace in summary.json."""

from __future__ import annotations

import time

from neupims_py.errors import UserError
from neupims_py.outputs import ProgressLine
from neupims_py.workload import load_trace


class Progress(ProgressLine):
    """`12/100 requests done, 340 iterations, batch 9, 0.40 s simulated in 3 s` on stderr."""

    def __init__(self, clock_mhz: float, stream=None):
        super().__init__(stream)
        self.ns_per_cycle = 1000.0 / clock_mhz
        self.last = self.start  # the first line after half a second

    def __call__(self, now_cycles, done, total, iterations, batch) -> None:
        if self.due():
            sim_s = now_cycles * self.ns_per_cycle / 1e9
            self.show(f"{done}/{total} requests done, {iterations} iterations, batch {batch}, "
                      f"{sim_s:.2f} s simulated in {self.elapsed():.0f} s")


def trace_rows(args):
    """The trace file of `args.trace` and the request rows to serve (`--max-requests`)."""
    trace = load_trace(args.trace)
    rows = trace.requests
    if args.max_requests is not None:
        if args.max_requests < 1:
            raise UserError("must be at least 1", field="--max-requests")
        rows = rows[: args.max_requests]
    return trace, rows


def timed_run(loop, rows, *, quiet: bool, clock_mhz: float):
    """`loop.run(rows, progress)` with a progress line unless quiet: (result, wall seconds)."""
    progress = None if quiet else Progress(clock_mhz)
    wall = time.perf_counter()
    result = loop.run(rows, progress)
    wall = time.perf_counter() - wall
    if progress is not None:
        progress.close()
    return result, wall


def trace_meta(args, trace, rows) -> dict:
    """summary.json's `trace` entry: the file's name, where it came from, requests served."""
    return {"file": str(args.trace).replace("\\", "/").rsplit("/", 1)[-1],
            "source": trace.attrs.get("source"), "command": trace.attrs.get("command"),
            "requests_served": int(len(rows))}
