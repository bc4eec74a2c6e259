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

from neupims_py.engine import dram as eng
from neupims_py.formats import Cmd
from neupims_py.npu import check_gemm_sram


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class PhaseResult:
    cycles: int  # from the phase's start to its last event
    ops: dict  # op name -> {"start", "end", "busy", "unit", "bytes"} (cycles relative to phase start)
    stats: np.ndarray  # DRAM/PIM counters of the phase [channel, Stat]
    npu_busy: np.ndarray  # busy cycles per NPU resource (arrays..., vector)
    pim_busy: np.ndarray  # per channel
    reads: int
    writes: int
    pim_cmds: int


@dataclass
class Phase:
    """Builder of one phase."""

    arrays: int
    array_rows: int
    array_cols: int
    double_buffered: bool
    burst_bytes: int
    addr: list = field(default_factory=list)
    is_write: list = field(default_factory=list)
    group: list = field(default_factory=list)
    after: list = field(default_factory=list)
    t_res: list = field(default_factory=list)
    t_cost: list = field(default_factory=list)
    t_dep: list = field(default_factory=list)
    t_op: list = field(default_factory=list)
    pim: list = field(default_factory=list)  # (ch, cmd, rank, bg, ba, row, k, dur, after, op)
    op_names: list = field(default_factory=list)
    _op_index: dict = field(default_factory=dict)
    _next_array: int = 0

    @property
    def vector_res(self) -> int:
        return self.arrays

    def op(self, name: str) -> int:
        if name not in self._op_index:
            self._op_index[name] = len(self.op_names)
            self.op_names.append(name)
        return self._op_index[name]

    def task(self, res: int, cost: int, op: str, dep: int = -1) -> int:
        self.t_res.append(res)
        self.t_cost.append(int(cost))
        self.t_dep.append(dep)
        self.t_op.append(self.op(op))
        return len(self.t_res) - 1

    def reads(self, addrs: np.ndarray, group: int, after: int = -1) -> None:
        n = len(addrs)
        self.addr.append(np.asarray(addrs, np.int64))
        self.is_write.append(np.zeros(n, np.int8))
        self.group.append(np.full(n, group, np.int64))
        self.after.append(np.full(n, after, np.int64))

    def writes(self, addrs: np.ndarray, after: int = -1) -> None:
        n = len(addrs)
        self.addr.append(np.asarray(addrs, np.int64))
        self.is_write.append(np.ones(n, np.int8))
        self.group.append(np.full(n, -1, np.int64))
        self.after.append(np.full(n, after, np.int64))

    def pim_cmd(self, ch, cmd, rank=0, bg=0, ba=0, row=0, k=0, dur=0, after=-1, op="pim") -> None:
        self.pim.append((ch, int(cmd), rank, bg, ba, row, k, dur, after, self.op(op)))

    def gemm(self, npu, op: str, m: int, k: int, n: int, w_base: int) -> int:
        """Weight-stationary GEMM: one task per weight tile, fed by the tile's DRAM reads;
        a tile's loads wait for the buffer two tiles back on its array (double buffering).
        Returns the join task that ends when the last output has left the arrays."""
        check_gemm_sram(npu, m, k, n, name=op)
        R, C, A = self.array_rows, self.array_cols, self.arrays
        stream = max(m, 4)
        depth = 2 if self.double_buffered else 1
        first_task = len(self.t_res)
        offset = w_base
        i = 0
        for n0 in range(0, n, C):
            cols = min(C, n - n0)
            for k0 in range(0, k, R):
                rows = min(R, k - k0)
                a = (self._next_array + i) % A
                # a weight tile's preload overlaps the previous tile's stream (double
                # buffered); an idle array pays the preload first
                slot = max(stream, rows) if self.double_buffered else rows + stream
                cost = slot + (rows if i < A and self.double_buffered else 0)
                t = self.task(a, cost, op)
                nbytes = rows * cols * 2
                nb = _ceil(nbytes, self.burst_bytes)
                back = i - depth * A
                self.reads(offset + np.arange(nb, dtype=np.int64) * self.burst_bytes, t,
                           first_task + back if back >= 0 else -1)
                offset += nb * self.burst_bytes
                i += 1
        self._next_array = (self._next_array + i) % A
        tail = R + C - 2 + stream - (max(stream, R) if self.double_buffered else stream)
        return self.task(-1, max(tail, 0), op)

    def vector(self, op: str, cost: int, dep: int = -1) -> int:
        return self.task(self.vector_res, cost, op, dep)

    def run(self, p: eng.DramParams, state: eng.DramState, max_inject: int) -> PhaseResult:
        nres = self.arrays + 1
        if self.addr:
            addr = np.concatenate(self.addr)
            isw = np.concatenate(self.is_write)
            grp = np.concatenate(self.group)
            aft = np.concatenate(self.after)
        else:
            addr = np.zeros(0, np.int64)
            isw = np.zeros(0, np.int8)
            grp = aft = np.zeros(0, np.int64)
        start = int(state.glob[eng.G_CLK])
        batch = eng.new_batch(p, addr, isw, np.zeros(len(addr), np.int64), group=grp, after=aft, per_channel=True)
        tasks = eng.new_npu_tasks(self.t_res, self.t_cost, self.t_dep, n_resources=nres)
        if self.pim:
            cols = list(zip(*self.pim))
            pb = eng.new_pim_batch(p, ch=cols[0], cmd=cols[1], rank=cols[2], bg=cols[3], ba=cols[4],
                                   row=cols[5], k=cols[6], dur=cols[7], cycle=np.zeros(len(self.pim), np.int64),
                                   after=cols[8])
            pim_op = np.asarray(cols[9], np.int64)[np.argsort(np.asarray(cols[0]), kind="stable")]
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
        # the next phase starts after this one's last event (a barrier)
        state.glob[eng.G_CLK] = max(int(state.glob[eng.G_CLK]), end + 1)
        ops = self._op_report(start, batch, tasks, pb, pim_op)
        stats = state.stats - before
        return PhaseResult(
            cycles=end + 1 - start,
            ops=ops,
            stats=stats,
            npu_busy=tasks.busy[:nres].copy(),
            pim_busy=stats[:, int(eng.Stat.PIM_BUSY_CYCLES)].copy(),
            reads=int((batch.req[:, eng.RQ_WRITE] == 0).sum()),
            writes=int((batch.req[:, eng.RQ_WRITE] != 0).sum()),
            pim_cmds=len(self.pim),
        )

    def _op_report(self, start, batch, tasks, pb, pim_op) -> dict:
        ops: dict[str, dict] = {}

        def entry(name, unit):
            return ops.setdefault(name, {"start": None, "end": None, "busy": 0, "unit": unit, "bytes": 0})

        t_op = np.asarray(self.t_op, np.int64)
        for oi, name in enumerate(self.op_names):
            sel = np.nonzero(t_op == oi)[0]
            if sel.size:
                res = np.asarray(self.t_res)[sel]
                unit = "vector" if (res == self.arrays).all() else "npu"
                e = entry(name, unit)
                e["start"] = int(tasks.start[sel].min()) - start
                e["end"] = int(tasks.end[sel].max()) - start
                e["busy"] += int(tasks.cost[sel].sum())
            psel = np.nonzero(pim_op == oi)[0]
            if psel.size:
                e = entry(name, "pim")
                e["unit"] = "pim"
                s0 = int(pb.issued[psel].min()) - start
                e1 = int(pb.done[psel].max()) - start
                e["start"] = s0 if e["start"] is None else min(e["start"], s0)
                e["end"] = e1 if e["end"] is None else max(e["end"], e1)
        # bytes read per op through the tasks their reads feed
        grp = batch.req[:, eng.RQ_GROUP]
        fed = grp >= 0
        if fed.any():
            per_task = np.bincount(grp[fed], minlength=len(self.t_res)) * self.burst_bytes
            per_op = np.bincount(t_op, weights=per_task, minlength=len(self.op_names))
            for oi, name in enumerate(self.op_names):
                if name in ops:
                    ops[name]["bytes"] += int(per_op[oi])
        return ops


def cmd_counts(phase: Phase) -> dict[str, int]:
    """PIM commands of a phase by name (for tests and reports)."""
    counts: dict[str, int] = {}
    for row in phase.pim:
        name = Cmd(row[1]).name
        counts[name] = counts.get(name, 0) + 1
    return counts
