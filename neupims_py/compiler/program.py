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
    buffer: object = None  # an eng.RequestBuffer for run's request table (None: a new one)

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
        nres = self.arrays + 1
        addr, isw, grp, aft = self.request_arrays()
        start = int(state.glob[eng.G_CLK])
        batch = eng.new_batch(p, addr, isw, np.zeros(len(addr), np.int64), group=grp, after=aft, per_channel=True,
                              buffer=self.buffer)
        t = self._task_arrays()
        tasks = eng.new_npu_tasks(t[0], t[1], t[2], n_resources=nres)
        cmds = self.pim_array()
        if len(cmds):
            # the engine keeps each channel's commands in order: sort by channel (stable),
            # gathering the columns as rows of one array in the same pass
            c = np.take(cmds.T, np.argsort(cmds[:, P_CH], kind="stable"), axis=1)
            pb = eng.new_pim_batch(p, ch=c[P_CH], cmd=c[P_CMD], rank=c[2], bg=c[3], ba=c[4], row=c[5],
                                   k=c[6], dur=c[7], cycle=np.zeros(len(cmds), np.int64), after=c[8],
                                   presorted=True)
            pim_op = c[P_OP]
        else:
            pb = eng.new_pim_batch(p)
            pim_op = np.zeros(0, np.int64)
        ctl = eng.new_ctl(start, max_inject, False)
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
        ops = self._op_report(start, batch.reads_per_task, tasks, pb, pim_op, t)
        stats = state.stats - before
        writes = int(np.count_nonzero(isw))
        return PhaseResult(
            cycles=done - start,
            ops=ops,
            stats=stats,
            npu_busy=tasks.busy[:nres].copy(),
            pim_busy=stats[:, int(eng.Stat.PIM_BUSY_CYCLES)].copy(),
            reads=len(addr) - writes,
            writes=writes,
            pim_cmds=len(cmds),
            task_end=tasks.end - start,
            pim_end=int(pb.done.max()) - start if len(cmds) else 0,
        )

    def _op_report(self, start, reads_per_task, tasks, pb, pim_op, t) -> dict:
        ops: dict[str, dict] = {}

        def entry(name, unit):
            return ops.setdefault(name, {"start": None, "end": None, "busy": 0, "unit": unit, "bytes": 0})

        t_res, t_op = t[0], t[3]
        nops = len(self.op_names)
        # tasks of each op: contiguous runs mostly, so group by a stable sort of the op
        order = np.argsort(t_op, kind="stable")
        bounds = np.searchsorted(t_op[order], np.arange(nops + 1))
        pim_ops = set(np.unique(pim_op).tolist()) if len(pim_op) else set()
        for oi, name in enumerate(self.op_names):
            sel = order[bounds[oi]:bounds[oi + 1]]
            if sel.size:
                unit = "vector" if (t_res[sel] == self.arrays).all() else "npu"
                e = entry(name, unit)
                e["start"] = int(tasks.start[sel].min()) - start
                e["end"] = int(tasks.end[sel].max()) - start
                e["busy"] += int(tasks.cost[sel].sum())
            if oi in pim_ops:
                psel = pim_op == oi
                e = entry(name, "pim")
                e["unit"] = "pim"
                s0 = int(pb.issued[psel].min()) - start
                e1 = int(pb.done[psel].max()) - start
                e["start"] = s0 if e["start"] is None else min(e["start"], s0)
                e["end"] = e1 if e["end"] is None else max(e["end"], e1)
        # bytes read per op through the tasks their reads feed (the batch counted each
        # task's requests: those of group g)
        if reads_per_task.any():
            per_task = np.zeros(len(t_res), np.int64)
            per_task[:len(reads_per_task)] = reads_per_task
            per_op = np.bincount(t_op, weights=per_task * self.burst_bytes, minlength=nops)
            for oi, name in enumerate(self.op_names):
                if name in ops:
                    ops[name]["bytes"] += int(per_op[oi])
        return ops


def cmd_counts(phase: Phase) -> dict[str, int]:
    """PIM commands of a phase by name (for tests and reports)."""
    cmds = phase.pim_array()[:, P_CMD]
    values, n = np.unique(cmds, return_counts=True)
    # in the order the commands first appear (as a dict built command by command)
    first = [int(np.argmax(cmds == v)) for v in values]
    return {Cmd(int(values[i])).name: int(n[i]) for i in np.argsort(first)}
