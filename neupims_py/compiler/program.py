"""Lowering of operators into one phase of engine work: DRAM requests, NPU tasks, PIM streams.

A phase is what the engine runs in one call: NPU tasks (weight tiles on the systolic
arrays, vector operators) whose operand loads are real DRAM reads, KV-cache reads and
writes at real addresses, and per-channel PIM command streams. Everything issued in a
phase overlaps as the hardware allows; the phase ends when all of it is done.

Resources of the NPU: arrays 0 .. A-1, then one vector resource A standing for the
vector units together (``neupims_py.npu.vector`` already spreads an operator over them).
A task on resource -1 is a join: it starts after every earlier task of the phase.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

import numpy as np

from neupims_py.compiler.lowering_jit import P_CH, P_CMD, P_COLS, P_OP
from neupims_py.engine import dram as eng
from neupims_py.formats import Cmd
from neupims_py.npu import check_gemm_sram


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class PhaseResult:
    cycles: int  # from the phase's start to its last event, buffered writes drained
    ops: dict  # op name -> {"start", "end", "busy", "unit", "bytes"} (cycles relative to phase start)
    stats: np.ndarray  # DRAM/PIM counters of the phase [channel, Stat]
    npu_busy: np.ndarray  # busy cycles per NPU resource (arrays..., vector)
    pim_busy: np.ndarray  # per channel
    reads: int
    writes: int
    pim_cmds: int
    task_end: np.ndarray | None = None  # per task, cycles from the phase's start
    pim_end: int = 0  # the last PIM command's completion, from the phase's start (0: none)


@dataclass
class Phase:
    """Builder of one phase. Requests, tasks and PIM commands are kept as blocks of arrays
    in the order they were added (a GEMM adds its tiles as one block)."""

    arrays: int
    array_rows: int
    array_cols: int
    double_buffered: bool
    burst_bytes: int
    _req: list = field(default_factory=list)  # (addr, is_write, group, after) blocks
    _tasks: list = field(default_factory=list)  # [4, n] blocks: res, cost, dep, op
    _t_pending: list = field(default_factory=list)  # (res, cost, dep, op) not yet in a block
    _n_tasks: int = 0
    _pim: list = field(default_factory=list)  # [n, P_COLS] blocks (compiler/lowering_jit.py)
    _pim_pending: list = field(default_factory=list)
    op_names: list = field(default_factory=list)
    _op_index: dict = field(default_factory=dict)
    _next_array: int = 0
    buffer: object = None  # a PlainPagesBuffer or eng.RequestBuffer for run's request table (None: a new one)

    @property
    def vector_res(self) -> int:
        return self.arrays

    def op(self, name: str) -> int:
        if name not in self._op_index:
            self._op_index[name] = len(self.op_names)
            self.op_names.append(name)
        return self._op_index[name]

    # ------------------------------------------------------------------ NPU tasks
    def task(self, res: int, cost: int, op: str, dep: int = -1) -> int:
        self._t_pending.append((res, int(cost), dep, self.op(op)))
        self._n_tasks += 1
        return self._n_tasks - 1

    def _task_block(self, res, cost, dep, op: int) -> int:
        """Tasks res[i], cost[i], dep[i] of one op; returns the index of the first."""
        self._flush_tasks()
        n = len(res)
        block = np.empty((4, n), np.int64)
        block[0], block[1], block[2], block[3] = res, cost, dep, op
        self._tasks.append(block)
        first = self._n_tasks
        self._n_tasks += n
        return first

    def _flush_tasks(self) -> None:
        if self._t_pending:
            self._tasks.append(np.array(self._t_pending, np.int64).reshape(-1, 4).T)
            self._t_pending = []

    def _task_arrays(self) -> np.ndarray:
        self._flush_tasks()
        if not self._tasks:
            return np.zeros((4, 0), np.int64)
        if len(self._tasks) > 1:
            self._tasks = [np.concatenate(self._tasks, axis=1)]
        return self._tasks[0]

    @property
    def t_res(self) -> np.ndarray:
        return self._task_arrays()[0]

    @property
    def t_cost(self) -> np.ndarray:
        return self._task_arrays()[1]

    @property
    def t_dep(self) -> np.ndarray:
        return self._task_arrays()[2]

    @property
    def t_op(self) -> np.ndarray:
        return self._task_arrays()[3]

    # ------------------------------------------------------------------ DRAM requests
    def _request_block(self, addrs, write: bool, group, after) -> None:
        addrs = np.asarray(addrs, np.int64)
        n = len(addrs)
        if n == 0:
            return
        self._req.append((addrs, np.full(n, 1 if write else 0, np.int8),
                          np.broadcast_to(np.asarray(group, np.int64), (n,)),
                          np.broadcast_to(np.asarray(after, np.int64), (n,))))

    def reads(self, addrs: np.ndarray, group: int, after: int = -1) -> None:
        self._request_block(addrs, False, group, after)

    def writes(self, addrs: np.ndarray, after: int = -1) -> None:
        self._request_block(addrs, True, -1, after)

    # ------------------------------------------------------------------ PIM
    def pim_cmd(self, ch, cmd, rank=0, bg=0, ba=0, row=0, k=0, dur=0, after=-1, op="pim") -> None:
        self._pim_pending.append((ch, int(cmd), rank, bg, ba, row, k, dur, after, self.op(op)))

    def pim_block(self, cmds: np.ndarray) -> None:
        """PIM commands as rows of columns P_* (compiler/lowering_jit.py), in order."""
        self._flush_pim()
        if len(cmds):
            self._pim.append(np.asarray(cmds, np.int64))

    def _flush_pim(self) -> None:
        if self._pim_pending:
            self._pim.append(np.array(self._pim_pending, np.int64).reshape(-1, P_COLS))
            self._pim_pending = []

    def pim_array(self) -> np.ndarray:
        """Every PIM command of the phase, in order: [n, P_COLS]."""
        self._flush_pim()
        if not self._pim:
            return np.zeros((0, P_COLS), np.int64)
        if len(self._pim) > 1:
            self._pim = [np.concatenate(self._pim)]
        return self._pim[0]

    @property
    def pim(self) -> list[tuple]:
        """The PIM commands as tuples (ch, cmd, rank, bg, ba, row, k, dur, after, op)."""
        return [tuple(int(x) for x in row) for row in self.pim_array()]

    # ------------------------------------------------------------------ operators
    def gemm(self, npu, op: str, m: int, k: int, n: int, w_base: int) -> int:
        """Weight-stationary GEMM: one task per weight tile, fed by the tile's DRAM reads;
        a tile's loads wait for the buffer two tiles back on its array (double buffering).
        Tiles go output-column block by output-column block, K block by K block, on the
        arrays round-robin; their weights are read contiguously from w_base on.
        Returns the join task that ends when the last output has left the arrays."""
        check_gemm_sram(npu, m, k, n, name=op)
        R, C, A = self.array_rows, self.array_cols, self.arrays
        stream = max(m, 4)
        depth = 2 if self.double_buffered else 1
        nk, nn = _ceil(k, R), _ceil(n, C)
        rows = np.minimum(R, k - np.arange(nk, dtype=np.int64) * R)
        cols = np.minimum(C, n - np.arange(nn, dtype=np.int64) * C)
        rows = np.tile(rows, nn)  # tile i: output block i // nk, K block i % nk
        cols = np.repeat(cols, nk)
        i = np.arange(nk * nn, dtype=np.int64)
        res = (self._next_array + i) % A
        # a weight tile's preload overlaps the previous tile's stream (double buffered);
        # an idle array pays the preload first
        slot = np.maximum(stream, rows) if self.double_buffered else rows + stream
        cost = slot + (np.where(i < A, rows, 0) if self.double_buffered else 0)
        first = self._task_block(res, cost, np.full(len(i), -1, np.int64), self.op(op))
        nb = -(-(rows * cols * 2) // self.burst_bytes)
        back = i - depth * A
        total = int(nb.sum())
        addrs = w_base + np.arange(total, dtype=np.int64) * self.burst_bytes
        group = np.repeat(first + i, nb)
        after = np.repeat(np.where(back >= 0, first + back, -1), nb)
        self._req.append((addrs, np.zeros(total, np.int8), group, after))
        self._next_array = (self._next_array + len(i)) % A
        tail = R + C - 2 + stream - (max(stream, R) if self.double_buffered else stream)
        return self.task(-1, max(tail, 0), op)

    def vector(self, op: str, cost: int, dep: int = -1) -> int:
        return self.task(self.vector_res, cost, op, dep)

    def request_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every DRAM request of the phase, in order: address, is_write, group, after."""
        if len(self._req) > 1:
            self._req = [tuple(np.concatenate(c) for c in zip(*self._req))]
        if not self._req:
            z = np.zeros(0, np.int64)
            return z, np.zeros(0, np.int8), z, z
        return self._req[0]

    def run(self, p: eng.DramParams, state: eng.DramState, max_inject: int) -> PhaseResult:
        lw = self._lower(p, self.buffer)
        return _execute(lw, lw.batch, lw.pim_cols, lw.tasks, p, state, max_inject)

    def _lower(self, p: eng.DramParams, buffer) -> "_Lowered":
        """The engine's inputs of the phase (the request table in `buffer`'s memory, or a
        new table when None) and what the report needs of them."""
        addr, isw, grp, aft = self.request_arrays()
        batch = eng.new_batch(p, addr, isw, np.zeros(len(addr), np.int64), group=grp, after=aft, per_channel=True,
                              buffer=buffer)
        t = self._task_arrays()
        cmds = self.pim_array()
        if len(cmds):
            # the engine keeps each channel's commands in order: sort by channel (stable),
            # gathering the columns as rows of one array in the same pass
            c = np.take(cmds.T, np.argsort(cmds[:, P_CH], kind="stable"), axis=1)
        else:
            c = None
        writes = int(np.count_nonzero(isw))
        return _Lowered(
            batch=batch, tasks=t, pim_cols=c, n_res=self.arrays + 1,
            report=_report_plan(self.op_names, self.arrays, self.burst_bytes, t,
                                c[P_OP] if c is not None else np.zeros(0, np.int64), batch.reads_per_task),
            reads=len(addr) - writes, writes=writes,
        )


@dataclass
class _Lowered:
    """A phase lowered to the engine's inputs."""

    batch: eng.DramBatch
    tasks: np.ndarray  # [4, n]: res, cost, dep, op
    pim_cols: np.ndarray | None  # [P_COLS, n] PIM commands sorted by channel (None: none)
    n_res: int  # NPU resources: the arrays and the vector units
    report: list  # _report_plan
    reads: int
    writes: int


def _execute(lw: _Lowered, batch, c, t, p, state, max_inject, move=(0, 0), distinct=False) -> PhaseResult:
    """Run a lowered phase on the engine state, with `batch` (its request table), PIM
    columns `c`, tasks `t` and the move of addresses `move` (bytes, below which row) and
    `distinct` (no two requests share an address): the engine's ``new_ctl``."""
    nres = lw.n_res
    start = int(state.glob[eng.G_CLK])
    tasks = eng.new_npu_tasks(t[0], t[1], t[2], n_resources=nres)
    if c is not None:
        pb = eng.new_pim_batch(p, ch=c[P_CH], cmd=c[P_CMD], rank=c[2], bg=c[3], ba=c[4], row=c[5],
                               k=c[6], dur=c[7], cycle=np.zeros(c.shape[1], np.int64), after=c[8],
                               presorted=True)
    else:
        pb = eng.new_pim_batch(p)
    ctl = eng.new_ctl(start, max_inject, False, *move, distinct=distinct)
    log = eng.new_log(1)
    before = state.stats.copy()
    snap = np.zeros_like(state.stats)
    eng.run_requests(p, state, batch, pb, tasks, ctl, log, snap)
    end = int(ctl[eng.C_END])
    if end < start:
        end = start
    # the next phase starts after this one's last event and after the engine drained
    # the writes still buffered (a barrier: memory quiescent); the phase costs what
    # the engine clock advanced, drain included
    state.glob[eng.G_CLK] = max(int(state.glob[eng.G_CLK]), end + 1)
    done = int(state.glob[eng.G_CLK])
    stats = state.stats - before
    n_pim = c.shape[1] if c is not None else 0
    return PhaseResult(
        cycles=done - start,
        ops=_report(lw.report, start, tasks, pb),
        stats=stats,
        npu_busy=tasks.busy[:nres].copy(),
        pim_busy=stats[:, int(eng.Stat.PIM_BUSY_CYCLES)].copy(),
        reads=lw.reads,
        writes=lw.writes,
        pim_cmds=n_pim,
        task_end=tasks.end - start,
        pim_end=int(pb.done.max()) - start if n_pim else 0,
    )


def _report_plan(op_names, arrays, burst_bytes, t, pim_op, reads_per_task) -> list:
    """Per reported op, in order: (name, its tasks (None: none), unit, its PIM commands
    (None: none), bytes read feeding it). What `_report` needs besides the engine's
    outputs, fixed by the phase's tasks and commands."""
    t_res, t_op = t[0], t[3]
    nops = len(op_names)
    # tasks of each op: contiguous runs mostly, so group by a stable sort of the op
    order = np.argsort(t_op, kind="stable")
    bounds = np.searchsorted(t_op[order], np.arange(nops + 1))
    pim_ops = set(np.unique(pim_op).tolist()) if len(pim_op) else set()
    # bytes read per op through the tasks their reads feed (the batch counted each
    # task's requests: those of group g)
    per_op = None
    if reads_per_task.any():
        per_task = np.zeros(len(t_res), np.int64)
        per_task[:len(reads_per_task)] = reads_per_task
        per_op = np.bincount(t_op, weights=per_task * burst_bytes, minlength=nops)
    plan = []
    for oi, name in enumerate(op_names):
        sel = order[bounds[oi]:bounds[oi + 1]]
        has_tasks, has_pim = sel.size > 0, oi in pim_ops
        if not (has_tasks or has_pim):
            continue
        unit = "pim" if has_pim else "vector" if (t_res[sel] == arrays).all() else "npu"
        plan.append((name, sel if has_tasks else None, unit,
                     np.flatnonzero(pim_op == oi) if has_pim else None,
                     int(per_op[oi]) if per_op is not None else 0))
    return plan


def _report(plan, start, tasks, pb) -> dict:
    """op name -> {"start", "end", "busy", "unit", "bytes"}, cycles from the phase's start."""
    ops: dict[str, dict] = {}
    for name, sel, unit, psel, nbytes in plan:
        s = e = None
        busy = 0
        if sel is not None:
            s = int(tasks.start[sel].min()) - start
            e = int(tasks.end[sel].max()) - start
            busy = int(tasks.cost[sel].sum())
        if psel is not None:
            s0 = int(pb.issued[psel].min()) - start
            e1 = int(pb.done[psel].max()) - start
            s = s0 if s is None else min(s, s0)
            e = e1 if e is None else max(e, e1)
        ops[name] = {"start": s, "end": e, "busy": busy, "unit": unit, "bytes": nbytes}
    return ops


def plain_pages(shape, dtype) -> np.ndarray:
    """An uninitialised array in anonymous memory of ordinary pages, aligned to a page.
    numpy asks the kernel for huge pages for big arrays, and gathering those (compaction)
    cost the system 0.1-0.5 s per 100 MB request table here; the engine runs as fast on
    ordinary pages (measured on a 1.7M-request phase)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if not hasattr(mmap, "MAP_ANONYMOUS"):  # Windows: numpy's own memory
        return np.empty(shape, dtype)
    # mapped in one go (MAP_POPULATE, Linux): the caller writes all of it next
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    buf = mmap.mmap(-1, max(count * dtype.itemsize, 1), flags=flags)
    return np.frombuffer(buf, dtype, count=count).reshape(shape)


class PlainPagesBuffer:
    """Memory for request tables reused by successive phases, as eng.RequestBuffer
    (`eng.new_batch(buffer=)` takes either), in ordinary pages (`plain_pages`)."""

    def __init__(self):
        self.req = None
        self.write = None

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.req is None or len(self.req) < n:
            self.req = self.write = None  # let the old memory go first
            self.req = plain_pages((n, eng.RQ_COLS), np.int64)
            self.write = np.empty(n, np.int8)
        return self.req[:n], self.write[:n]


class LoweredPhase:
    """A phase lowered once to the engine's inputs (request table, tasks, PIM streams,
    report plan) and run any number of times. `weight_delta` moves the address of every
    request in a row below `first_row` (the weights) by that many bytes. With the weight
    stride of k layers (IterationSimulator: every layer's weights at the same channel, bank
    and column offsets, rows a fixed number apart) that is the same phase lowered k layers
    on. The engine moves the addresses as it accepts the requests and sets their outputs
    anew (``eng.new_ctl``'s move), so the one table serves every run without a copy: it
    holds the addresses of the layer last run (`delta`, bytes from the layer lowered)."""

    def __init__(self, phase: Phase, p: eng.DramParams, first_row: int):
        # the table in memory of its own, in ordinary pages (`plain_pages`)
        self.lw = phase._lower(p, PlainPagesBuffer())
        self.first_row = first_row
        self.delta: int | None = 0
        self._tasks = np.empty_like(self.lw.tasks)
        self._pim = np.empty_like(self.lw.pim_cols) if self.lw.pim_cols is not None else None
        # whether its requests have addresses of their own, and the spans of the addresses
        # a run moves and of those it keeps (`distinct_after`)
        a = self.lw.batch.req[:, eng.RQ_ADDR]
        self._distinct = bool(np.unique(a).size == a.size)
        moved = ((a >> p.ro_shift) & p.ro_mask) < first_row
        self._spans = tuple((int(x.min()), int(x.max())) if x.size else None for x in (a[moved], a[~moved]))

    def batch(self, p: eng.DramParams, weight_delta: int = 0) -> tuple[eng.DramBatch, int]:
        """The table for a run with the weights `weight_delta` bytes from the layer lowered,
        and the move the run must make (``eng.new_ctl``'s move_delta)."""
        if self.delta is None:
            raise RuntimeError("a run of this lowered phase stopped half way: its request table is "
                               "partly moved; lower the phase again")
        tb = self.lw.batch
        fields = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in tb._asdict().items()
                  if k not in ("req", "write")}
        return type(tb)(req=tb.req, write=tb.write, **fields), weight_delta - self.delta

    def run(self, p: eng.DramParams, state: eng.DramState, max_inject: int,
            weight_delta: int = 0) -> PhaseResult:
        lw = self.lw
        # the engine only reads the tasks' and commands' columns: copies all the same, in
        # memory held for them
        np.copyto(self._tasks, lw.tasks)
        if self._pim is not None:
            np.copyto(self._pim, lw.pim_cols)
        batch, move = self.batch(p, weight_delta)
        self.delta = None  # (until the run has moved every request)
        r = _execute(lw, batch, self._pim, self._tasks, p, state, max_inject, move=(move, self.first_row),
                     distinct=self.distinct_after(weight_delta))
        self.delta = weight_delta
        return r

    def distinct_after(self, weight_delta: int) -> bool:
        """Whether the requests have addresses of their own with the weights moved by
        `weight_delta` bytes from the layer lowered: those of the table as lowered are
        distinct, and the span of the moved ones, moved, does not meet the span of the
        others (a shift keeps the moved ones apart from each other)."""
        if not self._distinct:
            return False
        m, k = self._spans
        if m is None or k is None:
            return True
        lo, hi = m[0] + weight_delta, m[1] + weight_delta
        return lo >= 0 and (hi < k[0] or lo > k[1])


def shift_renames(p: eng.DramParams, addr: np.ndarray, first_row: int, delta: int) -> bool:
    """Whether the engine's request table of `addr` with the addresses in rows below
    `first_row` moved by `delta` bytes is the table of `addr` with those addresses moved,
    as the engine makes it for LoweredPhase (eng.new_ctl's move: no field of the table but
    the address depends on them)."""
    addr = np.asarray(addr, np.int64)
    n = len(addr)
    moved = np.where(((addr >> p.ro_shift) & p.ro_mask) < first_row, addr + delta, addr)
    isw = np.arange(n) % 2
    group, after = np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) - 1

    def table(a):
        return eng.new_batch(p, a, isw, np.zeros(n, np.int64), group=group, after=after, per_channel=True)

    want = table(moved)
    made = table(addr)
    req = made.req.copy()
    a = req[:, eng.RQ_ADDR]
    a[((a >> p.ro_shift) & p.ro_mask) < first_row] += delta
    made = made._replace(req=req)
    return all(np.array_equal(x, y) for x, y in zip(made, want))


def cmd_counts(phase: Phase) -> dict[str, int]:
    """PIM commands of a phase by name (for tests and reports)."""
    cmds = phase.pim_array()[:, P_CMD]
    values, n = np.unique(cmds, return_counts=True)
    # in the order the commands first appear (as a dict built command by command)
    first = [int(np.argmax(cmds == v)) for v in values]
    return {Cmd(int(values[i])).name: int(n[i]) for i in np.argsort(first)}
