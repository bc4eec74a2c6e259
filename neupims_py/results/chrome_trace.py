"""A Chrome trace (Trace Event format, opens in Perfetto and chrome://tracing) of a serving
run: `neupims-sim run ... --chrome-trace FILE.json`.

Process "device": one track per unit — the iterations, their phases, the systolic arrays
running weight GEMMs, each array's attention, the vector unit, each channel's PIM work and
each channel's K/V writes and reads — with operator spans named by layer and operator
(`L3.qkv`, `L3.attention_pim`), plus counters of batch size and KV tokens. Process
"requests": each request's lifetime as an async span, with its time in the queue and its
time to first token nested inside. Times are microseconds of simulated time.

The spans are the cost model's own timeline (`IterationCost.timeline`): with `ReuseCost`,
per layer and phase, when each piece it composed began and ended; with `ExactCost`, the
phases only (the engine reports operator spans summed over an iteration).

Bounded: only iterations in the window are written (by default the first
DEFAULT_ITERATIONS), and writing stops at MAX_EVENTS events; the trace's `otherData` says
what was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from neupims_py.errors import UserError
from neupims_py.results.files import write_atomic
from neupims_py.serving.orchestrator import ITERATION_FIELDS
from neupims_py.serving.request_state import REJECTED

DEFAULT_ITERATIONS = 100
MAX_EVENTS = 250_000

DEVICE_PID, REQUESTS_PID = 1, 2
# Thread ids of the device's tracks (arrays and channels added to a base).
TID_ITERATIONS, TID_PHASES, TID_ARRAYS, TID_VECTOR = 1, 2, 3, 4
TID_ARRAY, TID_PIM, TID_KV = 100, 1000, 2000

_TIME_UNITS = {"s": 1e6, "ms": 1e3, "us": 1.0}


class TraceWindow(NamedTuple):
    """Iterations [start, end) (`unit` 'it'), or the iterations overlapping simulated
    microseconds [start, end) (`unit` 'us'); end None: open."""

    unit: str
    start: float
    end: float | None
    text: str


def parse_window(text: str | None) -> TraceWindow:
    """`A:B` iterations, or `A:B` with a unit (s, ms, us) on both ends for simulated time;
    either end may be empty (`:50`, `2ms:`)."""
    if text is None:
        return TraceWindow("it", 0, DEFAULT_ITERATIONS, f"0:{DEFAULT_ITERATIONS} (default)")
    how = "give START:END iterations (e.g. 0:200) or simulated time (e.g. 10ms:20ms)"
    parts = text.split(":")
    if len(parts) != 2 or not (parts[0].strip() or parts[1].strip()):
        raise UserError(f"{text!r} is not a window; {how}", field="--trace-window")
    unit = None
    values = []
    for p in parts:
        p = p.strip()
        if not p:
            values.append(None)
            continue
        u = next((u for u in ("ms", "us", "s") if p.endswith(u)), "it")
        if unit is not None and u != unit:
            raise UserError(f"{text!r} mixes units; {how}", field="--trace-window")
        unit = u
        num = p[: len(p) - len(u)] if u != "it" else p
        try:
            v = float(num) if u != "it" else int(num)
        except ValueError:
            raise UserError(f"{p!r} is not a number; {how}", field="--trace-window") from None
        if v < 0:
            raise UserError(f"{p!r} is negative; {how}", field="--trace-window")
        values.append(v * _TIME_UNITS[u] if u != "it" else v)
    start, end = values[0] or 0, values[1]
    if end is not None and end <= start:
        raise UserError(f"{text!r} ends before it starts; {how}", field="--trace-window")
    return TraceWindow("us" if unit != "it" else "it", start, end, text)


class ChromeTrace:
    """Collects the trace during a run: pass it as the Orchestrator's `observer` after
    `attach(cost)`, then `write(path, result)`."""

    def __init__(self, hw, model_name: str, window: TraceWindow, *, max_events: int = MAX_EVENTS):
        self.hw = hw
        self.model_name = model_name
        self.window = window
        self.max_events = max_events
        self.mhz = hw.npu.clock_mhz  # cycles per microsecond
        self.events: list[str] = []  # serialised events, in order
        self.first = self.last = None  # iterations written
        self.t0 = self.t1 = None  # their time range, cycles
        self.truncated = ""
        self.cost = None

    # ------------------------------------------------------------------ during the run
    def attach(self, cost) -> None:
        """Have `cost` record timelines while the window may still hold iterations."""
        self.cost = cost
        cost.trace = self._may_trace(0, 0)

    def _may_trace(self, index: int, start_cycle: int) -> bool:
        w = self.window
        if self.truncated:
            return False
        if w.unit == "it":
            return w.start <= index and (w.end is None or index < w.end)
        return w.end is None or start_cycle / self.mhz < w.end

    def _in_window(self, index: int, start: int, cycles: int) -> bool:
        w = self.window
        if w.unit == "it":
            return w.start <= index and (w.end is None or index < w.end)
        a, b = start / self.mhz, (start + cycles) / self.mhz
        return b > w.start and (w.end is None or a < w.end)

    def __call__(self, index: int, start: int, cost, entries) -> None:
        if self._in_window(index, start, cost.cycles) and not self.truncated:
            self._iteration(index, start, cost)
        if self.cost is not None:
            self.cost.trace = self._may_trace(index + 1, start + cost.cycles)

    def _iteration(self, index, start, cost) -> None:
        n = 2 + sum(b.repeat * sum(1 + len(p.spans) for p in b.phases) for b in cost.timeline)
        if len(self.events) + n > self.max_events:
            self.truncated = (f"stopped before iteration {index}: the trace holds at most "
                              f"{self.max_events} events; narrow --trace-window")
            return
        if self.first is None:
            self.first, self.t0 = index, start
        self.last, self.t1 = index, start + cost.cycles
        ev = self.events
        t = float(start)
        for block in cost.timeline:
            for k in range(block.repeat):
                layer = block.first_layer + k
                for ph in block.phases:
                    name = ph.label if ph.layer is None else f"L{layer + ph.layer}.{ph.label}"
                    ev.append(self._span(TID_PHASES, name, "phase", t, t + ph.cycles, {"iteration": index}))
                    for track, op, a, b, dl, sb in ph.spans:
                        args = {"iteration": index, "sub_batch": sb} if sb else {"iteration": index}
                        ev.append(self._span(self._tid(track), f"L{layer + dl}.{op}", op, t + a, t + b, args))
                    t += ph.cycles

    @staticmethod
    def _tid(track: str) -> int:
        if track == "arrays":
            return TID_ARRAYS
        if track == "vector":
            return TID_VECTOR
        for prefix, base in (("array", TID_ARRAY), ("pim", TID_PIM), ("kv", TID_KV)):
            if track.startswith(prefix):
                return base + int(track[len(prefix):])
        raise ValueError(f"unknown trace track {track!r}")  # pragma: no cover - cost_model's names

    def _us(self, cycles: float) -> float:
        return round(cycles / self.mhz, 3)

    def _span(self, tid, name, cat, a, b, args, pid=DEVICE_PID) -> str:
        ts = self._us(a)
        return json.dumps({"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid, "ts": ts,
                           "dur": round(self._us(b) - ts, 3), "args": args})

    # ------------------------------------------------------------------ after the run
    def _metadata(self) -> list[str]:
        hw = self.hw
        out = [
            {"name": "process_name", "ph": "M", "pid": DEVICE_PID,
             "args": {"name": f"device: {hw.name} ({hw.system.mode}), {self.model_name}"}},
            {"name": "process_sort_index", "ph": "M", "pid": DEVICE_PID, "args": {"sort_index": 0}},
            {"name": "process_name", "ph": "M", "pid": REQUESTS_PID, "args": {"name": "requests"}},
            {"name": "process_sort_index", "ph": "M", "pid": REQUESTS_PID, "args": {"sort_index": 1}},
        ]
        threads = [(TID_ITERATIONS, "iterations"), (TID_PHASES, "phases"),
                   (TID_ARRAYS, "NPU systolic arrays: weight GEMMs"), (TID_VECTOR, "NPU vector unit")]
        threads += [(TID_ARRAY + k, f"NPU array {k}: attention") for k in range(hw.npu.systolic_arrays)]
        channels = hw.memory.geometry.channels
        if hw.system.mode != "npu-only":
            threads += [(TID_PIM + c, f"PIM channel {c}") for c in range(channels)]
        threads += [(TID_KV + c, f"channel {c}: K/V writes and reads") for c in range(channels)]
        for tid, name in threads:
            out.append({"name": "thread_name", "ph": "M", "pid": DEVICE_PID, "tid": tid, "args": {"name": name}})
            out.append({"name": "thread_sort_index", "ph": "M", "pid": DEVICE_PID, "tid": tid,
                        "args": {"sort_index": tid}})
        return [json.dumps(e) for e in out]

    def _iterations(self, its) -> list[str]:
        """The written iterations' spans and counters, from the run's iteration records
        (the rows of iterations.csv)."""
        if self.first is None:
            return []
        col = {name: i for i, name in enumerate(ITERATION_FIELDS)}
        out = []
        for row in its[self.first: self.last + 1]:
            i, start, cycles = (int(row[col[k]]) for k in ("iteration", "start_cycle", "cycles"))
            args = {k: int(row[col[k]]) for k in ("requests", "prefill_tokens", "decode_tokens", "sub_batches")}
            out.append(self._span(TID_ITERATIONS, f"iteration {i}", "iteration", start, start + cycles, args))
            out.append(json.dumps({"name": "batch", "ph": "C", "pid": DEVICE_PID, "ts": self._us(start),
                                   "args": {k: int(row[col[k]]) for k in ("requests", "kv_tokens")}}))
        return out

    def _requests(self, requests) -> list[str]:
        """Lifetimes of the requests that overlap the written iterations, clipped to them."""
        if self.first is None:
            return []
        lo, hi = self.t0, self.t1
        out = []

        def span(r, name, a, b, args=None):
            a, b = max(a, lo), min(b, hi)
            if b < a:
                return
            base = {"cat": "request", "id": r.index, "pid": REQUESTS_PID, "tid": 0, "name": name}
            out.append(json.dumps({**base, "ph": "b", "ts": self._us(a), "args": args or {}}))
            return json.dumps({**base, "ph": "e", "ts": self._us(b)})

        for r in requests:
            if r.release < 0:  # never released (cannot happen once the run ended)
                continue
            arrival = r.release  # a later turn's arrival is its release after think time
            end = r.finish if r.finish >= 0 else hi
            if end < lo or arrival > hi:
                continue
            rejected = r.status == REJECTED
            closing = [span(r, f"request {r.id}" + (" (rejected)" if rejected else ""), arrival, end, {
                "trace_id": r.id, "status": r.status, "context_tokens": r.context,
                "output_tokens": r.output, "channel": r.channel, "reason": r.reason or None,
                "clipped_to_window": bool(arrival < lo or end > hi)})]
            if r.first_token >= 0:
                closing.append(span(r, "time to first token", arrival, r.first_token))
            if r.first_scheduled >= 0:
                closing.append(span(r, "queued", arrival, r.first_scheduled))
            out.extend(e for e in reversed(closing) if e is not None)
        return out

    def document_lines(self, result) -> list[str]:
        meta = {
            "neupims_sim_trace": 1,
            "hw": self.hw.name, "mode": self.hw.system.mode, "model": self.model_name,
            "window": self.window.text,
            "iterations_written": [self.first, self.last] if self.first is not None else [],
            "time_us": [self._us(self.t0), self._us(self.t1)] if self.first is not None else [],
            "iterations_run": int(len(result.iterations)),
            "truncated": self.truncated or None,
        }
        events = (self._metadata() + self._iterations(result.iterations) + self.events
                  + self._requests(result.requests))
        return ['{"displayTimeUnit": "ns", "otherData": ' + json.dumps(meta) + ',\n"traceEvents": [\n',
                ",\n".join(events), "\n]}\n"]

    def write(self, path: Path, result) -> None:
        write_atomic(path, self.document_lines(result))
