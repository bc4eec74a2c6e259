"""What an iteration costs: cycles, where they went, and the counters energy needs.

One interface, two implementations:

- `ExactCost` simulates every iteration whole on the cycle-level engine
  (`IterationSimulator.simulate(..., exact=True)`: every layer, one persistent engine state).
  Right by construction, and slow: for small traces and for checking `ReuseCost`.
- `ReuseCost` (the default) composes an iteration from cycle-level pieces simulated once
  and memoised (components.py): weight streams per token class; per request, the PIM
  attention, K/V writes and K/V reads it puts on its channel; and two calibrations (how
  much a weight stream slows down while PIM runs beside it for a part of it,
  `mixed_slowdown`, and how much later the PIM ends then, `mixed_lateness`; how much
  K/V writes get in PIM's way on one channel, `write_pim_overlap`). The composition
  follows the phase structure of `IterationSimulator.plan()`:

  * npu-only, one phase per layer: pre (norm, QKV), attention on the NPU, post
    (projection, FFN). A channel serves QKV weights, then its K/V writes and reads, then
    post weights (program order); the post weights no tile gates are served together
    with the K/V reads (measured so), so the post stream's weights are in once the
    slowest channel is through; attention runs on array `req % arrays` once its K/V
    arrived. The post stream is replayed tile by tile from its measurement alone: each
    tile waits for its array (QKV tiles, attention) and for its weights, which a channel
    offers in order once the tile two back on the array ended (double buffering). A
    uniform shift of the post stream, as before, was 5 % short on micro decode
    iterations.
  * npu+pim, and neupims below the sub-batch threshold, two phases per layer: pre, then
    per channel the decodes' K/V writes and PIM GEMVs (measured together, as they start
    together) beside the prefills' writes and reads, and prefill attention on the arrays;
    then post with the softmax and partial sums of the PIM results.
  * neupims with sub-batches: sb1.pre, then per layer two phases in which one sub-batch's
    weight stream (post of the last layer + pre of this one, then its K/V writes) runs
    while the other's attention runs on PIM from the phase start: phase = max(NPU side
    slowed by the PIM beside it, the slowest channel's PIM, late by what the stream beside
    it costs it, + writes); then sb2.post. With
    a start cycle and short streams, the first and the last phase's streams (no PIM
    beside them) are measured at the refresh offsets they start at; the others averaged.

  Inside a phase, vector operators are replayed exactly over the measured tile ends (the
  engine issues NPU tasks in program order: a vector task starts when the vector unit is
  free and its dependency ended, a GEMM's join after every earlier task): for token counts
  up to the array height this reproduces the engine's phase to the cycle. Channel work
  adds up per channel.

  Refresh: given the cycle an iteration starts at (the serving loop gives it), npu+pim and
  npu-only iterations whose weight streams are short (a few refresh intervals: small
  models) are composed layer by layer, each weight stream and decode piece measured at the
  offset in the refresh period where it starts (Components.refresh_bin); otherwise, and for
  interleaved iterations but for the streams of their first and last phases, pieces are
  averaged over offsets. What the composition cannot
  see: other engine state carried from one phase to the next (open rows), and
  interactions beyond the two calibrations. tests/test_serving_cost_model.py measures the
  difference to `ExactCost`.

  A phase costs what the engine clock advanced, the drain of buffered writes at its
  barrier included (compiler/program.py Phase.run), and ExactCost runs the engine through
  the serving loop's idle gaps, so the engine's clock is the serving timeline.

With `trace = True`, `ReuseCost` also returns the timeline it composed (`IterationCost.
timeline`, drawn by `neupims-sim run --chrome-trace`): per phase, when each NPU step, each
request's attention on its array and each channel's PIM and K/V work began and ended, as
the composition timed them. Off by default; nothing is recorded then.

Cycles are NPU cycles; the engine runs NPU and memory on one clock (both presets 1 GHz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from neupims_py.compiler.iteration import BatchEntry, IterationSimulator
from neupims_py.engine.dram import G_CLK
from neupims_py.formats import NUM_STATS, Stat
from neupims_py.npu import VectorOp, attention_timing, rows_cycles, vector_cycles
from neupims_py.serving.components import ChannelWork, Components, join_tail, tile_array

# Per-iteration operator groups recorded in iterations.csv (cycles summed over layers).
OP_GROUPS = ("qkv", "proj", "ffn", "attention_npu", "attention_pim", "vector")
_GEMM_GROUP = {"qkv": "qkv", "proj": "proj", "ffn1": "ffn", "ffn2": "ffn", "gate": "ffn",
               "up": "ffn", "down": "ffn"}


def op_group(name: str, unit: str) -> str:
    """The OP_GROUPS entry of a compiler operator name (tags like 'sb1.' stripped)."""
    base = name.rsplit(".", 1)[-1]
    if unit == "vector":
        return "vector"
    if base in _GEMM_GROUP:
        return _GEMM_GROUP[base]
    return "attention_pim" if unit == "pim" else "attention_npu"


@dataclass(frozen=True)
class IterationCost:
    """One iteration: its cycles, cycles per operator group (spans summed over layers and
    phases, so overlapping groups both count), busy cycles, and DRAM/PIM counters."""

    cycles: int
    ops: dict  # OP_GROUPS -> cycles
    array_busy: float  # systolic-array busy cycles, summed over arrays
    vector_busy: float
    pim_busy: float  # PIM busy cycles, summed over channels
    overlap: int  # cycles PIM attention ran under NPU work (sub-batch interleaving)
    stats: np.ndarray  # float64 [Stat], summed over channels
    sub_batches: int
    phases: tuple = field(default=())  # (label, cycles) of one layer's phases (ReuseCost) or all (ExactCost)
    timeline: tuple = field(default=())  # TraceBlock..., only when the cost model's `trace` is on


class TracePhase(NamedTuple):
    """One phase of a traced iteration. `spans` are (track, name, start, end, layer offset,
    sub-batch) with cycles from the phase start; tracks: 'arrays' (weight GEMMs on all
    systolic arrays), 'array<k>' (attention on array k), 'vector', 'pim<c>' (PIM work of
    channel c), 'kv<c>' (K/V writes and reads of channel c). Layer offsets (and `layer`, the
    phase's own; None: no layer) count from the block's current layer."""

    label: str
    cycles: float
    layer: int | None
    spans: tuple


class TraceBlock(NamedTuple):
    """`phases` in order, repeated `repeat` times for layers first_layer, first_layer + 1, ..."""

    first_layer: int
    repeat: int
    phases: tuple


class CostModel:
    """`iteration_cycles(batch)`, plus the KV rows of each admitted request
    (`admit`/`release`) for a model that lays KV caches out at real addresses. Set `trace`
    to have each IterationCost carry its timeline."""

    name = "base"
    trace = False
    # True: the model holds one device's engine state (its clock, open rows, refresh
    # timing), so one instance must not serve two devices or two pipeline stages
    per_device = False

    def __init__(self, hw, model):
        self.hw = hw
        self.model = model

    def admit(self, req: int, channel: int, tokens: int) -> None:
        """Request `req` holds KV rows for `tokens` tokens in `channel` from now on."""

    def release(self, req: int) -> None:
        """Request `req` finished: its rows are free."""

    def iteration_cycles(self, batch: list[BatchEntry], start: int | None = None) -> IterationCost:
        """What `batch` costs as one iteration; `start`: the cycle it starts at on the
        serving timeline (None: anywhere, a cost independent of the timeline)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"cost_model": self.name}


class ExactCost(CostModel):
    """Every iteration simulated whole, every layer, on one engine state."""

    name = "exact"
    per_device = True

    def __init__(self, hw, model):
        super().__init__(hw, model)
        self.sim = IterationSimulator(hw, model)

    def admit(self, req, channel, tokens):
        self.sim.ensure_kv(BatchEntry(req, 1, 0, channel), tokens)

    def release(self, req):
        self.sim.release(req)

    def idle_until(self, cycle: int) -> None:
        """Let the engine run without work up to `cycle` (refreshes go on meanwhile), so its
        clock is the serving timeline's: one phase holding a single task that lasts the gap
        on the vector unit (its counters are not an iteration's and are not reported)."""
        sim = self.sim
        st = sim.state
        clk = int(st.glob[G_CLK])
        if cycle <= clk:
            return
        ph = sim._new_phase()
        ph.vector("idle", cycle - clk - 1)
        ph.run(sim.params, st, sim.max_inject)

    def iteration_cycles(self, batch, start=None):
        if start is not None:
            self.idle_until(start)
        r = self.sim.simulate(batch, exact=True)
        ops = dict.fromkeys(OP_GROUPS, 0)
        for name, o in r.ops.items():
            ops[op_group(name, o["unit"])] += int(o["cycles"])
        # PIM attention spans and weight-GEMM spans that did not fit side by side
        pim_span = ops["attention_pim"]
        npu_span = ops["qkv"] + ops["proj"] + ops["ffn"]
        return IterationCost(
            cycles=int(r.cycles),
            ops=ops,
            array_busy=float(r.npu_busy[:-1].sum()),
            vector_busy=float(r.npu_busy[-1]),
            pim_busy=float(r.pim_busy.sum()),
            overlap=max(0, min(pim_span, npu_span, pim_span + npu_span - int(r.cycles))) if r.sub_batches > 1 else 0,
            stats=r.stats.sum(axis=0).astype(np.float64),
            sub_batches=r.sub_batches,
            phases=tuple(r.phases),
            # the engine reports operator spans summed over the iteration, so a trace of an
            # exact run shows its phases (every layer's, as simulated) but no unit tracks
            timeline=(TraceBlock(0, 1, tuple(TracePhase(label, float(c), None, ())
                                             for label, c in r.phases)),) if self.trace else (),
        )


# ---------------------------------------------------------------------- replay of a phase


class _Step(NamedTuple):
    name: str
    gemm: bool
    cost: int  # vector ops: cycles; GEMMs: the join tail
    dep: int  # index of the step this one waits for (-1: none)


def _pre_steps(model, npu, T: int) -> tuple[list[_Step], int]:
    """IterationSimulator._pre: norm1, QKV (join), rotary. Returns the steps and the index
    of the step that K/V writes and attention wait for."""
    norm = VectorOp.LAYERNORM if model.norm == "layernorm" else VectorOp.RMSNORM
    tail = join_tail(npu, T)
    steps = [_Step("norm1", False, vector_cycles(npu, norm, T, model.d_model), -1),
             _Step("qkv", True, tail, -1)]
    if model.rotary:
        steps.append(_Step("rotary", False, vector_cycles(npu, VectorOp.ROTARY, T, 2 * model.d_shard), 1))
    return steps, len(steps) - 1


def _post_steps(model, npu, T: int, pim_lens: list[int], elems_per_row: int) -> list[_Step]:
    """IterationSimulator._post: PIM softmax and partial sums, projection, residual, norm,
    FFN, residual."""
    tail = join_tail(npu, T)
    steps: list[_Step] = []
    hs = model.heads_per_shard
    if pim_lens:
        lens = np.repeat(np.asarray(pim_lens, np.int64), hs)
        steps.append(_Step("softmax_pim", False, rows_cycles(npu, VectorOp.SOFTMAX, lens), -1))
        blocks = sum(-(-n // elems_per_row) for n in pim_lens)
        steps.append(_Step("partial_sums", False, vector_cycles(npu, VectorOp.ADD, blocks * hs, model.head_dim),
                           len(steps) - 1))

    def gemm(name):
        steps.append(_Step(name, True, tail, -1))
        return len(steps) - 1

    def vec(name, cost, dep):
        steps.append(_Step(name, False, cost, dep))
        return len(steps) - 1

    norm = VectorOp.LAYERNORM if model.norm == "layernorm" else VectorOp.RMSNORM
    j = gemm("proj")
    j = vec("residual1", vector_cycles(npu, VectorOp.ADD, T, model.d_model), j)
    j = vec("norm2", vector_cycles(npu, norm, T, model.d_model), j)
    if model.ffn_kind == "gelu":
        j = gemm("ffn1")
        j = vec("gelu", vector_cycles(npu, VectorOp.GELU, T, model.ffn_shard), j)
        j = gemm("ffn2")
    else:
        gemm("gate")
        j = gemm("up")
        j = vec("swiglu", vector_cycles(npu, VectorOp.SWIGLU, T, model.ffn_shard), j)
        j = gemm("down")
    vec("residual2", vector_cycles(npu, VectorOp.ADD, T, model.d_model), j)
    return steps


def _replay(steps: list[_Step], tile_ends, last: float = 0.0, vfree: float = 0.0) -> list[float]:
    """End cycle of every step, as the engine's in-order NPU task issue gives them: a GEMM's
    join starts after every earlier task (its own tiles end at `tile_ends`, in GEMM order),
    a vector task after the vector unit is free and its dependency ended. `last`: when
    the tasks before `steps` end; `vfree`: when the vector unit is free."""
    ends: list[float] = []
    g = 0
    for st in steps:
        if st.gemm:
            e = max(last, tile_ends[g]) + st.cost
            g += 1
        else:
            e = max(vfree, ends[st.dep] if st.dep >= 0 else 0.0) + st.cost
            vfree = e
        last = max(last, e)
        ends.append(e)
    return ends


def _as_one(t: float, pieces: list[ChannelWork]) -> ChannelWork:
    """`pieces` of one channel as one piece that takes `t` cycles (measured together), drained
    no sooner than the pieces drain one after another; busy cycles and counters summed."""
    drained = max(t, _channel_time(pieces, drained=True))
    return ChannelWork(t, t, drained, drained, sum(w.pim_busy for w in pieces), sum(w.stats for w in pieces))


def _works(writes) -> list[ChannelWork]:
    """The work of (tokens, work) pairs."""
    return [w for _, w in writes]


def _channel_time(works: list[ChannelWork], drained: bool = False) -> float:
    """Serial work on one channel: each request's step, plus the longest lead-in; with
    `drained`, until posted writes have reached the banks."""
    if not works:
        return 0.0
    if drained:
        return sum(w.drained_step for w in works) + max(w.drained_base - w.drained_step for w in works)
    return sum(w.step for w in works) + max(w.base - w.step for w in works)


def _step_spans(steps: list[_Step], ends, next_from: int, sb: int) -> list[tuple]:
    """Trace spans of a replayed NPU program, as `_account_steps` counts them: a GEMM from the
    previous join to its own, a vector step for its cost up to its end. Steps from index
    `next_from` on belong to the next layer (a post then the next layer's pre)."""
    out = []
    prev_join = 0.0
    for i, (st, e) in enumerate(zip(steps, ends)):
        layer = int(i >= next_from)
        if st.gemm:
            out.append(("arrays", st.name, prev_join, e, layer, sb))
            prev_join = e
        else:
            out.append(("vector", st.name, e - st.cost, e, layer, sb))
    return out


def _tag(spans, layer: int, sb: int) -> list[tuple]:
    return [(*s, layer, sb) for s in spans]


class _Acc:
    """Accumulates one iteration's composition: ops, busy cycles and counters, with a
    multiplicity (layers a phase stands for)."""

    def __init__(self):
        self.ops = dict.fromkeys(OP_GROUPS, 0.0)
        self.array_busy = 0.0
        self.vector_busy = 0.0
        self.pim_busy = 0.0
        self.overlap = 0.0
        self.stats = np.zeros(NUM_STATS)


class ReuseCost(CostModel):
    """An iteration composed from memoised cycle-level pieces (see the module docstring)."""

    name = "reuse"

    def __init__(self, hw, model, *, exact_tokens: bool = False, grid_ratio: float = 2 ** 0.25):
        super().__init__(hw, model)
        self.parts = Components(hw, model, exact_tokens=exact_tokens, grid_ratio=grid_ratio)
        self.sim = self.parts.sim  # split_sub_batches / interleaves, as the exact run
        self.pim = hw.system.mode != "npu-only"
        self.dual = hw.memory.pim.row_buffers == "dual"
        self.arrays = hw.npu.systolic_arrays
        self.layers = model.layers_per_stage
        self.exact_tokens = exact_tokens
        self._runs: dict[tuple, list[tuple[int, int]]] = {}

    def describe(self):
        return {"cost_model": self.name, "exact_tokens": self.exact_tokens,
                "grid_ratio": self.parts.grid_ratio, "engine_runs": dict(self.parts.measured)}

    # ------------------------------------------------------------------ per request
    def _attention_npu(self, e: BatchEntry) -> int:
        m = self.model
        # as the compiler costs it: one request's attention on one array
        return attention_timing(self.sim.npu_one_array, e.q_len, e.kv_len + e.q_len, m.heads_per_shard,
                                m.head_dim, name="attention").cycles

    def _on_npu(self, e: BatchEntry) -> bool:
        return e.q_len > 1 or not self.pim

    # ------------------------------------------------------------------ channels
    def _by_channel(self, entries, what) -> dict[int, list[ChannelWork]]:
        out: dict[int, list[ChannelWork]] = {}
        for e in entries:
            w = what(e)
            if w is not None:
                out.setdefault(e.channel, []).append(w)
        return out

    def _writes(self, entries) -> dict[int, list[tuple[int, ChannelWork]]]:
        """Per channel, (new tokens, K/V write work) of each request."""
        return self._by_channel(entries, lambda e: (e.q_len, self.parts.kv_write(e.q_len, e.kv_len)))

    def _decode_writes(self, entries) -> dict[int, list[tuple[int, ChannelWork]]]:
        """`_writes`, with the decodes' writes on a channel as one piece: accepted after
        `Components.decode_writes` (their count on the channel, as the slowest of the
        channels that write decodes), drained, busy and counted as the sum of the pieces."""
        out = self._writes(entries)
        dec = {c: [w for q, w in lst if q == 1] for c, lst in out.items()}
        C = sum(1 for d in dec.values() if d)
        for c, d in dec.items():
            if not d:
                continue
            one = _as_one(self.parts.decode_writes(len(d), C), d)
            out[c] = [(1, one)] + [(q, w) for q, w in out[c] if q != 1]
        return out

    def _decodes_single_buffer(self, entries, decodes: dict) -> dict[int, list[ChannelWork]]:
        """With a single row buffer, each channel's decodes (write and PIM GEMV each, all
        after QKV) as one piece: their GEMVs' pieces plus what their writes add beside them
        (`Components.decode_writes_beside_pim`, for their count and mean KV length); drained,
        busy and counted as the per-request `decode` pieces. A channel with one decode keeps
        its `decode` piece: that is the write and the GEMV measured together (at the refresh
        offset it starts at, when the iteration's start is known)."""
        kvs: dict[int, list[int]] = {}
        for e in entries:
            if not self._on_npu(e):
                kvs.setdefault(e.channel, []).append(e.kv_len)
        out = {}
        for c, d in decodes.items():
            if len(d) == 1:  # one decode's piece is already its write and GEMV together
                out[c] = d
                continue
            t = (_channel_time([self.parts.pim(k) for k in kvs[c]])
                 + self.parts.decode_writes_beside_pim(len(d), float(np.mean(kvs[c]))))
            out[c] = [_as_one(t, d)]
        return out

    def _pims(self, entries):
        return self._by_channel(entries, lambda e: None if self._on_npu(e) else self.parts.pim(e.kv_len))

    def _reads(self, entries):
        return self._by_channel(
            entries, lambda e: self.parts.kv_read(e.kv_len) if self._on_npu(e) and e.kv_len > 0 else None)

    def _pim_lens(self, entries) -> list[int]:
        return [e.kv_len + e.q_len for e in entries if self.pim and e.q_len == 1]

    def _attention_arrays(self, entries, start: float, reads_from: dict[int, float],
                          spans: list | None = None, read=None,
                          free: dict | None = None) -> tuple[float, float]:
        """Attention on the NPU of `entries`, queued on array req % arrays from `start`, each
        once its cached K/V were read: a channel serves its requests' reads (pieces
        `read(entry)`, default `kv_read`) in program order from `reads_from[channel]`.
        Returns (end of the last one, busy cycles); appends each one's (track, name, start,
        end) to `spans` if given; leaves each array's last attention end in `free`."""
        read = read or (lambda e: self.parts.kv_read(e.kv_len))
        free = {} if free is None else free
        done: dict[int, list[ChannelWork]] = {}
        busy = end = 0.0
        for e in entries:
            if not self._on_npu(e):
                continue
            ready = start
            if e.kv_len > 0:
                lst = done.setdefault(e.channel, [])
                lst.append(read(e))
                ready = max(ready, reads_from.get(e.channel, 0.0) + _channel_time(lst))
            a = e.req % self.arrays
            c = self._attention_npu(e)
            t = max(free.get(a, start), ready) + c
            free[a] = t
            busy += c
            end = max(end, t)
            if spans is not None:
                spans.append((f"array{a}", "attention_npu", t - c, t))
        return end, busy

    def _combine(self, writes: list, pims: list, reads: list, pim_from: float, io_from: float) -> float:
        """When one channel is done with its K/V writes then reads (a channel serves normal
        requests in program order, from `io_from`) and its PIM GEMVs (from `pim_from`).

        Without PIM, or once it is over: writes (drained if reads queue behind them), then
        reads. With PIM still running when the writes start:
        max(writes + reads, PIM) + beta * min(writes, PIM still running), with beta
        measured for decode-sized and prompt-sized writes (`write_pim_overlap`); reads
        wait for PIM with a single row buffer and overlap it with dual ones."""
        R, P = _channel_time(reads), _channel_time(pims)
        p_left = max(0.0, pim_from + P - io_from)  # PIM still running when the writes start
        if not p_left:
            return max(io_from + _channel_time(_works(writes), drained=R > 0) + R, pim_from + P)
        g = self.parts.banks
        Ws = _channel_time([w for q, w in writes if q <= g], drained=self.dual)
        Wb = _channel_time([w for q, w in writes if q > g], drained=self.dual)
        W = Ws + Wb
        extra = 0.0
        if W:
            beta = (Ws * self.parts.write_pim_overlap(1) + Wb * self.parts.write_pim_overlap(g + 1)) / W
            extra = beta * min(W, p_left)
        if self.dual:
            return max(io_from + W + R, pim_from + P) + extra
        return max(io_from + W, pim_from + P) + extra + R

    def _channel_spans(self, ch: int, writes: list, pims: list, reads: list, pim_from: float,
                       io_from: float, end: float, w_at: tuple, a_at: tuple) -> list[tuple]:
        """Trace spans of one channel as `_combine` times its work: PIM GEMVs from `pim_from`;
        K/V writes from `io_from`, then reads (after PIM with a single row buffer). The
        interference `_combine` adds lands on the span that ends last, so the channel ends
        at `end`. `w_at`/`a_at`: (layer offset, sub-batch) of the writes / of the attention."""
        R, P = _channel_time(reads), _channel_time(pims)
        pim_left = pim_from + P > io_from
        W = _channel_time(_works(writes), drained=self.dual if pim_left else R > 0)
        out = []
        if P:
            out.append([f"pim{ch}", "attention_pim", pim_from, pim_from + P, *a_at])
        t = io_from
        if W:
            out.append([f"kv{ch}", "kv_write", t, t + W, *w_at])
            t += W
        if R:
            if not self.dual:
                t = max(t, pim_from + P)
            out.append([f"kv{ch}", "kv_read", t, t + R, *a_at])
        if out:
            last = max(out, key=lambda s: s[3])
            last[3] = max(last[3], end)
        return [tuple(s) for s in out]

    # ------------------------------------------------------------------ accounting
    def _account_channels(self, acc: _Acc, works: dict, w: float) -> None:
        for lst in works.values():
            for x in lst:
                x = x if isinstance(x, ChannelWork) else x[1]
                acc.stats += x.stats * w
                acc.pim_busy += x.pim_busy * w

    def _account_steps(self, acc: _Acc, steps, ends, w: float) -> None:
        prev_join = 0.0
        for st, e in zip(steps, ends):
            if st.gemm:
                acc.ops[_GEMM_GROUP.get(st.name, "ffn")] += (e - prev_join) * w
                prev_join = e
            else:
                acc.ops["vector"] += st.cost * w
                acc.vector_busy += st.cost * w

    def _steps(self, kind: str, T: int, pim_lens) -> tuple[list[_Step], int | None]:
        """The NPU program of a weight-stream phase; the index of its pre's last step."""
        m, npu, epr = self.model, self.hw.npu, self.parts.elems_per_row
        if kind == "pre":
            return _pre_steps(m, npu, T)
        if kind == "post":
            return _post_steps(m, npu, T, pim_lens, epr), None
        first, second = ((_pre_steps(m, npu, T), (_post_steps(m, npu, T, pim_lens, epr), None))
                         if kind == "fused" else
                         ((_post_steps(m, npu, T, pim_lens, epr), None), _pre_steps(m, npu, T)))
        (a, ja), (b, jb) = first, second
        n = len(a)
        b = [x._replace(dep=x.dep + n if x.dep >= 0 else -1) for x in b]
        j = ja if ja is not None else (jb + n if jb is not None else None)
        return a + b, j

    # ------------------------------------------------------------------ iterations
    def _tracks_refresh(self, batch, start) -> bool:
        """Whether to compose layer by layer at the refresh offsets the phases start at:
        with a start cycle, refresh on, and weight streams short enough for the offset to
        matter (a layer of a real model streams for many intervals, and its pieces are
        averaged over offsets)."""
        if start is None or self.parts.refresh_bin(0) is None:
            return False
        return self.parts.stream_is_short("post", sum(e.q_len for e in batch))

    def _bin(self, t0: float | None, d: float = 0.0) -> int | None:
        return None if t0 is None else self.parts.refresh_bin(t0 + d)

    def iteration_cycles(self, batch, start=None):
        batch = [e if isinstance(e, BatchEntry) else BatchEntry(*e) for e in batch]
        acc = _Acc()
        timeline: list | None = [] if self.trace else None
        track = self._tracks_refresh(batch, start)
        if self.sim.interleaves(batch) and self.pim:
            # composed from pieces averaged over refresh offsets but the first and last
            # phases' streams: at the offsets every phase starts at, the micro/tiny traces
            # came out 0.1-1 % further from exact
            cycles, phases, sub = self._interleaved(acc, batch, timeline, start)
        else:
            body, kinds = (self._npu_only if not self.pim else self._serial), ("pre", "post")
            cycles, phases, sub = 0.0, None, 1
            runs = [(layer, 1) for layer in range(self.layers)] if track else self._layer_runs(kinds, self.layers)
            for first, n in runs:
                c, ph, sub = body(acc, batch, first, n, timeline, start + cycles if track else None)
                cycles += c
                phases = phases or ph
        stats = acc.stats
        # time-proportional counters follow the composed iteration, not the pieces
        g = self.hw.memory.geometry
        rank_cycles = float(cycles) * g.channels * g.ranks
        stats[Stat.REF] = rank_cycles / self.hw.memory.timing.tREFI
        stats[Stat.RANK_ACTIVE_CYCLES] = min(stats[Stat.RANK_ACTIVE_CYCLES], rank_cycles)
        return IterationCost(
            cycles=int(round(cycles)),
            ops={k: int(round(v)) for k, v in acc.ops.items()},
            array_busy=acc.array_busy,
            vector_busy=acc.vector_busy,
            pim_busy=acc.pim_busy,
            overlap=int(round(acc.overlap)),
            stats=stats,
            sub_batches=sub,
            phases=tuple((label, int(round(c))) for label, c in phases),
            timeline=tuple(timeline) if timeline is not None else (),
        )

    def _layer_runs(self, kinds, layers: int) -> list[tuple[int, int]]:
        """(first layer, count) of the runs of consecutive layers among the first `layers`
        whose weight streams of `kinds` are alike (Components.stream_layer): one run of all
        layers for a model whose layers line up with the address mapping."""
        got = self._runs.get((kinds, layers))
        if got is None:
            runs: list[list] = []
            for layer in range(layers):
                key = tuple(self.parts.stream_layer(k, layer) for k in kinds)
                if runs and runs[-1][2] == key:
                    runs[-1][1] += 1
                else:
                    runs.append([layer, 1, key])
            got = self._runs[(kinds, layers)] = [(first, n) for first, n, _ in runs]
        return got

    def _npu_only(self, acc: _Acc, batch, first: int, L: int, timeline: list | None = None,
                  t0: float | None = None):
        """One phase per layer (for the L layers from `first`, which stream alike): pre,
        attention on the NPU, post. A channel serves QKV weights, then its K/V writes and
        reads, then post weights (program order). The post weights that no tile gates
        (`Components.post_prefix`) queue behind the K/V reads and are served with them
        (`kv_read_beside_post`: the reads end when both are in); a channel without K/V
        reads serves them after QKV, one with writes only after its writes. So the post
        stream's weights are in once the slowest channel is through (X). Attention runs on
        array `req % arrays` once its K/V arrived. The post stream, measured alone (at the
        refresh offset it starts at), is replayed tile by tile: a tile starts when its
        array is free (QKV tiles, attention) and no sooner than it started alone, counted
        from X minus the ungated weights' time alone (they are in at X already).
        `t0`: the engine cycle the phase starts at (None: anywhere)."""
        T = sum(e.q_len for e in batch)
        A = self.arrays
        # the pre part of the layer's whole stream: its post weights that no tile gates
        # load beside QKV on the channels without K/V work
        fused = self.parts.stream("fused", T, first, self._bin(t0))
        steps_pre, j = _pre_steps(self.model, self.hw.npu, T)
        n_pre = sum(1 for st in steps_pre if st.gemm)
        pre_ends = _replay(steps_pre, fused.ends[:n_pre])
        pre_tiles = [t for t in tile_array(fused).tolist() if t[0] < n_pre]
        j_end = pre_ends[j]
        _, U = self.parts.post_prefix(first)
        writes = self._writes(batch)
        reads = self._by_channel(batch, lambda e: self.parts.kv_read_beside_post(e.kv_len, first)
                                 if e.kv_len > 0 else None)
        # on a channel of decodes only, the reads overlap the writes' drain by what
        # `decode_overlap` measured for its first decode
        plain = {e.channel for e in batch if e.q_len > 1 or e.kv_len == 0}
        overlap: dict[int, float] = {}
        for e in batch:
            if e.channel not in plain and e.channel not in overlap:
                overlap[e.channel] = self.parts.decode_overlap(e.kv_len, first)
        io_end = {c: j_end + _channel_time(_works(writes.get(c, [])), drained=True) - overlap.get(c, 0.0)
                  for c in writes}
        attn_spans = [] if timeline is not None else None
        free: dict[int, float] = {}
        attn_end, attn_busy = self._attention_arrays(
            batch, j_end, io_end, attn_spans, lambda e: self.parts.kv_read_beside_post(e.kv_len, first), free)
        chans = {c: self._combine(writes.get(c, []), [], reads.get(c, []), 0.0, j_end) - overlap.get(c, 0.0)
                 for c in set(writes) | set(reads)}
        chan_end = max(chans.values(), default=0.0)
        X = max((chans[c] + (0.0 if c in reads else U) for c in chans), default=j_end)
        post = self.parts.stream("post", T, first, self._bin(t0, X - U))
        for _, a, _, end in pre_tiles:
            free[a] = max(free.get(a, 0.0), end)
        rot = len(pre_tiles) % A
        back = A * (2 if self.hw.npu.double_buffered else 1)
        gemm_end: dict[int, float] = {}
        ends_of: dict[int, list] = {}  # per GEMM: (alone end, composed end) of its tiles
        offer, offer_alone = X - U, 0.0
        gated = False
        for g, a, s0, e0 in tile_array(post).tolist():
            a = int(a)
            mine = ends_of.setdefault(g, [])
            if len(mine) >= back:
                gated = True
            if gated:
                # a channel offers weight reads in order, a tile's once the tile `back`
                # before it on its array ended: it arrives as long after its offer as alone
                gate = mine[-back] if len(mine) >= back else (-np.inf, -np.inf)
                offer_alone = max(offer_alone, gate[0])
                offer = max(offer, gate[1])
                arrive = offer + (s0 - offer_alone)
            else:
                arrive = X - U + s0
            a = (a + rot) % A
            st = max(free.get(a, 0.0), arrive)
            free[a] = st + (e0 - s0)
            mine.append((e0, free[a]))
            gemm_end[g] = max(gemm_end.get(g, 0.0), free[a])
        steps_post = _post_steps(self.model, self.hw.npu, T, [], self.parts.elems_per_row)
        post_ends = _replay(steps_post, [gemm_end[g] for g in sorted(gemm_end)],
                            last=max(max(pre_ends), attn_end), vfree=max(pre_ends))
        steps, _ = self._steps("fused", T, [])
        ends = pre_ends + post_ends
        phase = max(max(ends), chan_end, attn_end) + 1
        self._account_steps(acc, steps, ends, L)
        acc.array_busy += (fused.array_busy + attn_busy) * L
        acc.stats += fused.stats * L
        acc.ops["attention_npu"] += (attn_end - j_end) * L if attn_busy else 0.0
        self._account_channels(acc, writes, L)
        self._account_channels(acc, reads, L)
        if timeline is not None:
            spans = _step_spans(steps, ends, len(steps), 0) + _tag(attn_spans, 0, 0)
            for c in sorted(chans):
                spans += self._channel_spans(c, writes.get(c, []), [], reads.get(c, []), 0.0, j_end,
                                             chans[c], (0, 0), (0, 0))
            timeline.append(TraceBlock(first, L, (TracePhase("layer", phase, 0, tuple(spans)),)))
        return phase * L, (("layer", phase),), 1

    def _serial(self, acc: _Acc, batch, first: int, L: int, timeline: list | None = None,
                t0: float | None = None):
        """npu+pim (and neupims below the sub-batch threshold), for the L layers from
        `first` (which stream alike): per layer, pre and attention (K/V writes, PIM GEMVs
        and NPU attention all wait for QKV), then post. A decode's write and PIM GEMV are
        one measured piece (`Components.decode`). `t0`: the engine cycle the layer starts at
        (None: anywhere)."""
        T = sum(e.q_len for e in batch)
        sm = self.parts.stream("pre", T, first, self._bin(t0))
        steps, j = self._steps("pre", T, [])
        ends = _replay(steps, sm.ends)
        j_end = ends[j]
        at = self._bin(t0, j_end)
        decodes = self._by_channel(batch, lambda e: None if self._on_npu(e) else self.parts.decode(e.kv_len, at))
        if not self.dual:
            decodes = self._decodes_single_buffer(batch, decodes)
        writes = self._writes([e for e in batch if self._on_npu(e)])
        reads = self._reads(batch)
        chans = {c: self._combine(writes.get(c, []), decodes.get(c, []), reads.get(c, []), j_end, j_end)
                 for c in set(writes) | set(decodes) | set(reads)}
        chan_end = max(chans.values(), default=0.0)
        io_end = {c: j_end + _channel_time(_works(writes.get(c, [])), drained=True) for c in writes}
        attn_spans = [] if timeline is not None else None
        attn_end, attn_busy = self._attention_arrays(batch, j_end, io_end, attn_spans)
        ph1 = max(max(ends), chan_end, attn_end) + 1
        if timeline is not None:
            spans1 = _step_spans(steps, ends, len(steps), 0) + _tag(attn_spans, 0, 0)
            for c in sorted(chans):
                spans1 += self._channel_spans(c, writes.get(c, []), decodes.get(c, []), reads.get(c, []),
                                              j_end, j_end, chans[c], (0, 0), (0, 0))
        self._account_steps(acc, steps, ends, L)
        acc.array_busy += (sm.array_busy + attn_busy) * L
        acc.stats += sm.stats * L
        for works in (writes, decodes, reads):
            self._account_channels(acc, works, L)
        pim_only = decodes if self.dual else self._pims(batch)  # single buffer: decodes hold the writes too
        acc.ops["attention_pim"] += max((_channel_time(p) for p in pim_only.values()), default=0.0) * L
        acc.ops["attention_npu"] += (attn_end - j_end) * L if attn_busy else 0.0
        sm = self.parts.stream("post", T, first, self._bin(t0, ph1))
        steps, _ = self._steps("post", T, self._pim_lens(batch))
        ends = _replay(steps, sm.ends)
        ph2 = max(ends) + 1
        self._account_steps(acc, steps, ends, L)
        acc.array_busy += sm.array_busy * L
        acc.stats += sm.stats * L
        if timeline is not None:
            timeline.append(TraceBlock(first, L, (TracePhase("pre+mha", ph1, 0, tuple(spans1)),
                                              TracePhase("post", ph2, 0, tuple(_step_spans(steps, ends, len(steps), 0))))))
        return (ph1 + ph2) * L, (("pre+mha", ph1), ("post", ph2)), 1

    def _sub_phase(self, acc, kind, npu_sb, attn_sb, w, trace=None, layer: int = 0, at: int | None = None):
        """One interleaved phase: `npu_sb` runs its weight stream (`kind`) and, when the
        stream holds a pre, its K/V writes after QKV; `attn_sb` attends: PIM GEMVs from the
        phase start, side by side with the stream (which they slow down by
        `mixed_slowdown`, for the busiest channel's share of the stream and the decodes'
        mean KV length, and which makes them end `mixed_lateness` later: the micro model's
        PIM-bound phases were 5-10 % short without it), prefills on the arrays after their
        last tile. The decodes' writes
        on a channel are accepted after `Components.decode_writes` (`_decode_writes`).
        `trace`: None, or (timeline phases list, label, phase layer offset, NPU sub-batch,
        attention sub-batch, attention layer offset) to append this phase's TracePhase to.
        `layer`: the layer whose weights the stream reads (its first, for 'layer')."""
        T = sum(e.q_len for e in npu_sb)
        sm = self.parts.stream(kind, T, layer, at)
        steps, j = self._steps(kind, T, self._pim_lens(npu_sb))
        pims = self._pims(attn_sb) if attn_sb is not None else {}
        pim_side = max((_channel_time(p) for p in pims.values()), default=0.0)
        S = sm.ends[-1]
        slow = 1.0
        late = 0.0
        if pim_side:
            kv = float(np.mean([e.kv_len for e in attn_sb if not self._on_npu(e)]))
            slow += self.parts.mixed_slowdown(kind, T, pim_side / S, kv)
            late = self.parts.mixed_lateness(kind, T, pim_side / S, kv) * S
        ends = _replay(steps, [t * slow for t in sm.ends])
        npu_end = max(ends)
        j_end = ends[j] if j is not None else None
        writes = self._decode_writes(npu_sb) if j is not None else {}
        reads = self._reads(attn_sb) if attn_sb is not None else {}
        io_from = j_end if j_end is not None else S * slow
        chans = {c: self._combine(writes.get(c, []), pims.get(c, []), reads.get(c, []), late if c in pims else 0.0, io_from)
                 for c in set(writes) | set(pims) | set(reads)}
        chan_end = max(chans.values(), default=0.0)
        attn_end = attn_busy = 0.0
        attn_spans = [] if trace is not None else None
        if attn_sb is not None:
            io_end = {c: io_from + _channel_time(_works(writes.get(c, [])), drained=True) for c in reads}
            attn_end, attn_busy = self._attention_arrays(attn_sb, S * slow, io_end, attn_spans)
        self._account_steps(acc, steps, ends, w)
        acc.array_busy += (sm.array_busy + attn_busy) * w
        acc.stats += sm.stats * w
        for works in (writes, pims, reads):
            self._account_channels(acc, works, w)
        acc.ops["attention_pim"] += pim_side * w
        acc.ops["attention_npu"] += attn_busy * w
        acc.overlap += min(npu_end, pim_side) * w
        phase = max(npu_end, chan_end, attn_end) + 1
        if trace is not None:
            out, label, layer, sb, attn_sb_no, attn_layer = trace
            next_from = len(steps) - len(_pre_steps(self.model, self.hw.npu, T)[0]) if kind == "layer" else len(steps)
            spans = _step_spans(steps, ends, next_from, sb) + _tag(attn_spans, attn_layer, attn_sb_no)
            pre_layer = int(kind == "layer")
            for c in sorted(chans):
                spans += self._channel_spans(c, writes.get(c, []), pims.get(c, []), reads.get(c, []), 0.0,
                                             io_from, chans[c], (pre_layer, sb), (attn_layer, attn_sb_no))
            out.append(TracePhase(label, phase, layer, tuple(spans)))
        return phase

    def _interleaved(self, acc: _Acc, batch, timeline: list | None = None, t0: float | None = None):
        """neupims with sub-batches, the phases of IterationSimulator.plan(): sb1.pre, then
        per layer l (sb2.npu|sb1.pim: sb2's post of l-1 and pre of l, sb1's attention of l;
        sb1.npu|sb2.pim: sb1's post of l and pre of l+1, sb2's attention of l), sb2.post."""
        L = self.layers
        sb1, sb2 = self.sim.split_sub_batches(batch)
        tr = [[], [], []] if timeline is not None else None

        def at(block, label, layer, sb, attn_sb, attn_layer):
            return None if tr is None else (tr[block], label, layer, sb, attn_sb, attn_layer)
        first = self._sub_phase(acc, "pre", sb1, None, 1, at(0, "sb1.pre", 0, 1, 0, 0), 0,
                                self._bin(t0) if self._tracks_refresh(sb1, t0) else None)
        a0 = self._sub_phase(acc, "pre", sb2, sb1, 1, at(0, "sb2.npu|sb1.pim", 0, 2, 1, 0))
        total = first + a0
        phases = [("sb1.pre", first), ("sb2.npu|sb1.pim", a0)]
        runs = self._layer_runs(("layer",), L - 1)
        blocks = []
        for k, (lay, n) in enumerate(runs):
            # repeat k (layer k): sb1's post of k and pre of k+1 beside sb2's attention of k,
            # then sb2's post of k and pre of k+1 beside sb1's attention of k+1
            if tr is not None:
                tr[1] = []
            b = self._sub_phase(acc, "layer", sb1, sb2, n, at(1, "sb1.npu|sb2.pim", 0, 1, 2, 0), lay)
            a = self._sub_phase(acc, "layer", sb2, sb1, n, at(1, "sb2.npu|sb1.pim", 1, 2, 1, 1), lay)
            total += (a + b) * n
            if k == 0:
                phases += [("sb1.npu|sb2.pim", b), ("sb2.npu|sb1.pim", a)]
            if tr is not None:
                blocks.append(TraceBlock(lay, n, tuple(tr[1])))
        last = self._sub_phase(acc, "post", sb1, sb2, 1, at(2, "sb1.npu|sb2.pim", 0, 1, 2, 0), L - 1)
        total += last
        end = self._sub_phase(acc, "post", sb2, None, 1, at(2, "sb2.post", 0, 2, 0, 0), L - 1,
                              self._bin(t0, total) if self._tracks_refresh(sb2, t0) else None)
        total += end
        phases += [("sb1.npu|sb2.pim", last), ("sb2.post", end)]
        if timeline is not None:
            timeline.append(TraceBlock(0, 1, tuple(tr[0])))
            timeline.extend(blocks)
            timeline.append(TraceBlock(L - 1, 1, tuple(tr[2])))
        return total, tuple(phases), 2


COST_MODELS = {"exact": ExactCost, "reuse": ReuseCost}
