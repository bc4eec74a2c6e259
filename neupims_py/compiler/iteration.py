"""One iteration of a model on the NPU + PIM device: lowering per decoder layer, execution
on the engine, and where every cycle went.

Per layer and sub-batch (DESIGN.md, NeuPIMs section 5):
- pre:  norm, QKV generation (GEMM), rotary (LLaMA), the new tokens' K and V written into
        each request's channel;
- mha:  attention. Requests with more than one query token (prefill, chunked prefill) on
        the NPU in every mode; decode requests on the NPU in `npu-only` mode, otherwise as
        PIM GEMVs in their channel (logits, then attend);
- post: softmax / partial sums of the PIM results (vector units), projection (GEMM),
        residual add, norm, FFN (GEMMs and activation), residual add.

Modes: `npu-only` and `npu+pim` run pre, mha and post one after the other for the whole
batch. `neupims` with sub-batch interleaving (batch >= threshold) splits the batch into two
sub-batches balanced per channel and overlaps one sub-batch's PIM attention with the
other's NPU work (NeuPIMs stages A-F).

Reuse (`simulate(..., reuse=...)`, `neupims-sim iteration --reuse`; `exact` simulates every
layer). Layers have the same shapes, and with the compiler's weight layout every layer's
weights sit at the same channel, bank and column offsets, one layer's rows a fixed number
of rows above the previous layer's, so layer l's accesses are layer 0's with renamed rows:
- steady (default): layers are simulated one after the other until the engine state before
  layer l equals the state before layer p = l - k for a period k <= MAX_PERIOD
  (`state_signature`: cycles counted from that boundary, past cycles folded where only
  "not before" is asked, weight rows renamed). From then on layers p .. l - 1 repeat cycle
  for cycle, so layer j of the period is counted for layers j, j + k, ... < L and nothing
  more is simulated, except with sub-batches the last layer's second phase (no next pre)
  and sub-batch 2's post, run from the state saved after the first phase of the period's
  layer the last layer repeats: the result is exact's, counters included. With sub-batches
  p >= 1 (layer 0 lacks sub-batch 2's post). A state that never repeats means every layer
  is simulated. For 256 ShareGPT-like requests on the neupims preset p = 3, k = 1 (refresh
  settles into the layer period after a few layers), for 64 p = 1; for 512 the state
  cycles through 4 layers (refresh falls differently in each) from layer 8 on.
- fast: two layers, an estimate. One batch: layer 1's phases stand for layers 1 .. L-1.
  Two sub-batches (phases sb1.pre, per layer l A_l = `sb2.npu|sb1.pim` and B_l =
  `sb1.npu|sb2.pim`, sb2.post): B_0 stands for B_0 .. B_{L-2}, A_1 for A_1 .. A_{L-1},
  and B_1 is the last layer's. Before the state settles, layers differ by up to 2%
  (refresh alignment): 1.5% under exact for 256 requests (bench/README.md).
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np

from neupims_py.compiler import lowering_jit as lj
from neupims_py.compiler.layout import AddressLayout, KvLayout, RowAllocator
from neupims_py.compiler.program import LoweredPhase, Phase, PhaseResult, PlainPagesBuffer, shift_renames
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng
from neupims_py.errors import UserError
from neupims_py.formats import Stat
from neupims_py.npu import VectorOp, attention_timing, rows_cycles, vector_cycles


REUSE_LEVELS = ("fast", "steady")
MAX_PERIOD = 4  # steady: the longest cycle of layers looked for (512 requests: 4)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class BatchEntry:
    """One request in the iteration: q_len new tokens over kv_len cached ones."""

    req: int
    q_len: int
    kv_len: int
    channel: int


@dataclass
class IterationResult:
    cycles: int  # the iteration, all simulated (or extrapolated) layers
    layers: int  # layers the iteration covers
    layers_simulated: int
    exact: bool
    mode: str
    ops: dict  # op name -> {"unit", "busy", "bytes", "cycles" (summed span over layers)}
    stats: np.ndarray  # DRAM/PIM counters over the iteration [channel, Stat] (extrapolated)
    npu_busy: np.ndarray  # per NPU resource (arrays..., vector)
    pim_busy: np.ndarray  # per channel
    phases: list = field(default_factory=list)  # (label, cycles)
    sub_batches: int = 1
    reuse: str = "none"  # how the layers not simulated were filled in (module docstring)

    def to_dict(self) -> dict:
        tot = self.stats.sum(axis=0)
        return {
            "cycles": int(self.cycles),
            "mode": self.mode,
            "layers": self.layers,
            "layers_simulated": self.layers_simulated,
            "exact": self.exact,
            "reuse": self.reuse,
            "sub_batches": self.sub_batches,
            "npu_array_utilization": float(self.npu_busy[:-1].sum() / max(1, len(self.npu_busy) - 1) / max(self.cycles, 1)),
            "vector_utilization": float(self.npu_busy[-1] / max(self.cycles, 1)),
            "pim_utilization": float(self.pim_busy.mean() / max(self.cycles, 1)),
            "dram": {s.name.lower(): int(tot[s]) for s in Stat},
            "ops": self.ops,
            "phases": [{"phase": label, "cycles": int(c)} for label, c in self.phases],
        }


class IterationSimulator:
    """Holds the lowered hardware, the weight layout and the KV row allocation; simulates
    iterations one after the other on the same engine state (open rows, refresh, PIM)."""

    def __init__(self, hw, model, *, max_inject: int | None = None):
        self.hw = hw
        self.model = model
        self.mem = hw.memory
        self.params = lower_memory(self.mem)
        self.state = eng.new_state(self.params)
        self.req_buffer = PlainPagesBuffer()  # the phases' request tables, one after another
        self.layout = AddressLayout(self.mem)
        self.mode = hw.system.mode
        self.pim = self.mode != "npu-only"
        if self.pim and not self.mem.pim.enabled:
            raise UserError(f"mode {self.mode} needs a memory with PIM (memory.pim.enabled)")
        # weights: every layer's matrices, tile by tile, from address 0
        self.w_base: dict[tuple[int, str], int] = {}
        off = 0
        for layer in range(model.layers_per_stage):
            for w in model.weight_matrices():
                self.w_base[(layer, w.name)] = off
                off += w.rows * w.cols * model.dtype_bytes
                off = _ceil(off, self.layout.row_bytes) * self.layout.row_bytes
        self.weight_bytes = off
        if off > self.mem.capacity_bytes:
            raise UserError(
                f"model {model.name}: {off / 2**30:.1f} GiB of weights per shard exceed the "
                f"{self.mem.capacity_bytes / 2**30:.1f} GiB memory; raise tp or pp"
            )
        per_row_all = self.layout.channels * self.layout.banks * self.layout.row_bytes
        self.rows = RowAllocator(self.layout, _ceil(off, per_row_all))
        self.kv = KvLayout(self.layout, model.d_shard, model.head_dim)
        self.capacity: dict[int, int] = {}  # request -> tokens its KV rows were laid out for
        # NPU attention of one request runs on one systolic array: cost it on one
        self.npu_one_array = dataclasses.replace(hw.npu, systolic_arrays=1)
        self.max_inject = max_inject or self.mem.geometry.channels
        self.prefix = f"{model.name}"
        L, pim = self.layout, self.mem.pim
        f = L.f
        self._kv_geo = lj.KvGeo(
            e=self.kv.e, k_chunks=self.kv.k_chunks, v_rows_per_block=self.kv.v_rows_per_block,
            banks=L.banks, elems_per_row=L.elems_per_row, bursts_per_row=L.bursts_per_row,
            burst_bytes=L.burst_bytes, bankgroups=L.bankgroups, banks_per_group=L.banks_per_group,
            ch_shift=f["ch"].shift, ra_shift=f["ra"].shift, bg_shift=f["bg"].shift,
            ba_shift=f["ba"].shift, ro_shift=f["ro"].shift, co_shift=f["co"].shift,
        )
        self._pim_geo = lj.PimGeo(
            heads=model.heads_per_shard, head_dim=model.head_dim, k_chunks=self.kv.k_chunks,
            heads_per_row=self.kv.heads_per_row, v_rows_per_block=self.kv.v_rows_per_block,
            banks=L.banks, elems_per_row=L.elems_per_row,
            multipliers=pim.multipliers_per_bank, min_k=pim.comps_readres_min_k, ranks=L.ranks,
            bankgroups=L.bankgroups, tfaw=self.mem.timing.tFAW,
        )

    # ---------------------------------------------------------------- KV placement
    def ensure_kv(self, e: BatchEntry, capacity: int | None = None) -> int:
        """The first KV row of request e in its channel, allocating rows for `capacity`
        tokens (default: the tokens it has after this iteration) on first use. The K and V
        regions are laid out for that capacity, so a growing cache never moves."""
        tokens = e.kv_len + e.q_len
        if e.req not in self.rows.owned:
            cap = max(capacity or tokens, tokens)
            need = self.kv.rows_for(cap)
            base = self.rows.allocate(e.req, e.channel, need)
            if base is None:
                raise UserError(
                    f"request {e.req}: its KV cache ({need} rows per bank) does not fit in "
                    f"channel {e.channel} ({self.rows.rows_free(e.channel)} rows free)"
                )
            self.capacity[e.req] = cap
        elif tokens > self.capacity[e.req]:
            raise UserError(
                f"request {e.req} has {tokens} tokens but its KV cache was allocated for "
                f"{self.capacity[e.req]}; allocate it with its final length (ensure_kv capacity)"
            )
        return self.rows.base(e.req)

    def k_region_rows(self, req: int) -> int:
        """Rows of the K region of a request's cache (V follows it), from its capacity."""
        return _ceil(self.capacity[req], self.layout.banks) * self.kv.k_chunks

    def scratch_row(self, req: int) -> int:
        """The row the PIM's GWRITEs read the query / logits from (last row of the cache)."""
        return self.rows.base(req) + self.kv.rows_for(self.capacity[req]) - 1

    def release(self, req: int) -> None:
        if req in self.rows.owned:
            self.rows.release(req)
            del self.capacity[req]

    # ---------------------------------------------------------------- steady state
    def _weight_rows_per_layer(self) -> int | None:
        """Rows (in every bank) between one layer's weights and the next one's, when every
        layer's weights sit at the same channel, bank and column offsets (the layer's
        bytes a multiple of one row across all banks): then layer l's accesses are layer
        0's with every weight row moved by l times this. None otherwise."""
        m = self.model
        if m.layers_per_stage < 2:
            return None
        first = m.weight_matrices()[0].name
        stride = self.w_base[(1, first)] - self.w_base[(0, first)]
        stripe = self.layout.channels * self.layout.banks * self.layout.row_bytes
        return stride // stripe if stride % stripe == 0 else None

    def state_signature(self, layer: int, parts_out: dict | None = None) -> np.ndarray | None:
        """The engine state between two phases, as it bears on what follows, with cycles
        counted from the current one and the weight rows of layer `layer` renamed to layer
        0's: two boundaries with equal signatures are followed by the same behaviour
        (cycle for cycle) when the same work, one layer on, follows them. Cycles in the past
        are one value where only "not before" is asked of them (earliest-issue cycles,
        ready bounds, wake-ups, the tFAW window); the stats-only interval starts count when
        their interval is open. None when layers cannot be renamed into each other or work
        is still in flight.

        Left out, as they hold nothing between phases: the transaction queues, write buffer
        and their address tables (empty: checked through the channel's lengths), command
        queue items and their hit counts (lengths checked: empty queues count no hits),
        counters (stats, latency histogram) and the constant rule spans. tests/test_compiler_modes.py pins the engine state's layout
        this reads, so a change there is seen."""
        rpl = self._weight_rows_per_layer()
        st = self.state
        if rpl is None or st.glob[eng.G_FLUSH] != 0:
            return None
        clk = int(st.glob[eng.G_CLK])
        ch_ = st.chan
        if ch_[:, [eng.CH_CQ_TOTAL, eng.CH_RQ_LEN, eng.CH_WB_LEN]].any() or st.queue[:, :, eng.QU_LEN].any():
            return None

        def rel(x, floor):
            x = np.asarray(x, np.int64)
            return np.where(x >= eng.INF // 2, eng.INF, np.maximum(x - clk, floor))

        def rows(r):
            r = np.asarray(r, np.int64)
            weight = (r >= 0) & (r < self.rows.first_row)
            return np.where(weight, r - layer * rpl, r)

        tfaw = self.mem.timing.tFAW
        bank, rank = st.bank, st.rank
        refq = ch_[:, eng.CH_REFQ:]
        refq = np.where(np.arange(refq.shape[1]) < ch_[:, eng.CH_REFQ_LEN, None], refq, -1)
        pim_mode = ch_[:, eng.CH_PIM_MODE]
        # the last four ACTs of a rank (a ring): oldest first, wherever the ring's head is
        slot = (rank[:, eng.RK_FAW_HEAD, None] + np.arange(4)) % 4
        faw = np.take_along_axis(rank[:, eng.RK_FAW:eng.RK_FAW + 4], slot, axis=1)
        parts = {
            "bank_next": rel(st.bank_next, 0),  # each bank's own cycles and its floors
            "open_row": rows(bank[:, eng.BK_OPEN_ROW]),
            "hits": bank[:, eng.BK_HITS],
            "pim_row": rows(bank[:, eng.BK_PIM_ROW]),
            "rank": rank[:, [eng.RK_OPEN, eng.RK_FAW_N, eng.RK_PIM_OPEN]],
            "faw": rel(faw, -tfaw),
            "rank_since": np.where(rank[:, eng.RK_OPEN] > 0, rel(rank[:, eng.RK_SINCE], -eng.INF), 0),
            "chan": ch_[:, [eng.CH_DRAINING, eng.CH_QIDX, eng.CH_REFQ_LEN, eng.CH_IN_REF, eng.CH_REF_RANK,
                            eng.CH_REF_NEXT_RANK, eng.CH_QMASK, eng.CH_QDIRTY, eng.CH_STUCK, eng.CH_GATE_RD,
                            eng.CH_GATE_WR]],
            "pim_mode": pim_mode,
            "pim_since": np.where(pim_mode != 0, rel(ch_[:, eng.CH_PIM_SINCE], -eng.INF), 0),
            "next_ref": rel(ch_[:, eng.CH_NEXT_REF], -eng.INF),
            "wake": rel(ch_[:, eng.CH_WAKE], 0),
            "min_lb": rel(ch_[:, eng.CH_MINLB], 0),
            "refq": refq,
            "queue_lb": rel(st.queue[:, :, eng.QU_LB], 0),
        }
        if parts_out is not None:
            parts_out.update(parts)
        return np.concatenate([np.asarray(x, np.int64).ravel() for x in parts.values()])

    # ---------------------------------------------------------------- lowering
    def _new_phase(self) -> Phase:
        npu = self.hw.npu
        return Phase(
            arrays=npu.systolic_arrays,
            array_rows=npu.array_rows,
            array_cols=npu.array_cols,
            double_buffered=npu.double_buffered,
            burst_bytes=self.mem.geometry.burst_bytes,
            buffer=self.req_buffer,
        )

    def _kv_token_bursts(self, e: BatchEntry, tokens: range) -> np.ndarray:
        """Burst addresses of the K and V of `tokens` of request e (all its rows): K chunk
        by chunk, token by token; V with all bursts of a (bank, row) together, so a row is
        opened once per access pass (compiler/lowering_jit.py kv_burst_fill)."""
        return self._kv_bursts([e], [tokens.start], [tokens.stop])[0]

    def _kv_bursts(self, entries, t0, t1) -> tuple[np.ndarray, np.ndarray]:
        """The bursts of tokens t0[i] .. t1[i] - 1 of each entries[i], concatenated, and
        the bursts per entry."""
        ch = [e.channel for e in entries]
        base = [self.ensure_kv(e) for e in entries]
        k_rows = [self.k_region_rows(e.req) for e in entries]
        return lj.kv_bursts(self._kv_geo, ch, base, k_rows, t0, t1)

    def _pim_gemvs(self, ph: Phase, entries, op: str, after: int) -> None:
        """NeuPIMs decode attention of each entry on its channel's PIM, one after the other
        (compiler/lowering_jit.py pim_gemv_fill):
        - logits q.K^T: per 512-element chunk of the query a GWRITE, then per K row (32
          tokens) a tile: PIM_HEADER, G_ACT per rank and bank group, COMPS_READRES per rank
          and head in the row, PIM_PRECHARGE per rank and bank group;
        - attend S.V: per head and 512-token block a GWRITE of the logits, then a tile per
          `banks` head dimensions (one head, ceil(tokens / multipliers) COMPs)."""
        if not entries:
            return
        base = [self.ensure_kv(e) for e in entries]
        n = len(entries)
        cmds = lj.pim_gemv_stream(
            self._pim_geo,
            ch=[e.channel for e in entries],
            base=base,
            kvn=[e.kv_len + e.q_len for e in entries],
            k_rows=[self.k_region_rows(e.req) for e in entries],
            scratch=[self.scratch_row(e.req) for e in entries],
            after=np.full(n, after, np.int64),
            op=np.full(n, ph.op(op), np.int64),
        )
        ph.pim_block(cmds)

    def _pre(self, ph: Phase, layer: int, entries, tag: str) -> int:
        m, npu = self.model, self.hw.npu
        T = sum(e.q_len for e in entries)
        norm = VectorOp.LAYERNORM if m.norm == "layernorm" else VectorOp.RMSNORM
        ph.vector(f"{tag}norm1", vector_cycles(npu, norm, T, m.d_model))
        j = ph.gemm(npu, f"{tag}qkv", T, m.d_model, m.qkv_shard, self.w_base[(layer, "qkv")])
        if m.rotary:
            j = ph.vector(f"{tag}rotary", vector_cycles(npu, VectorOp.ROTARY, T, 2 * m.d_shard), dep=j)
        if entries:
            kv = np.array([e.kv_len for e in entries], np.int64)
            q = np.array([e.q_len for e in entries], np.int64)
            ph.writes(self._kv_bursts(entries, kv, kv + q)[0], after=j)
        return j

    def _mha(self, ph: Phase, layer: int, entries, tag: str, after: int = -1) -> None:
        m = self.model
        hs, dh = m.heads_per_shard, m.head_dim
        pim = []
        for e in entries:
            if e.q_len > 1 or not self.pim:
                # attention on the NPU: cached K and V come from DRAM
                kv_total = e.kv_len + e.q_len
                cost = attention_timing(self.npu_one_array, e.q_len, kv_total, hs, dh,
                                        name=f"{tag}attention").cycles
                t = ph.task(e.req % ph.arrays, cost, f"{tag}attention_npu", dep=after)
                reads = self._kv_token_bursts(e, range(0, e.kv_len))
                if reads.size:
                    ph.reads(reads, t)
            else:
                if not pim:
                    ph.op(f"{tag}attention_pim")  # ops are reported in order of appearance
                pim.append(e)
        # PIM commands keep their order among themselves only: one block for all
        self._pim_gemvs(ph, pim, f"{tag}attention_pim", after)

    def _pim_gemv(self, ph: Phase, e: BatchEntry, op: str, after: int) -> None:
        """NeuPIMs decode attention of one request on its channel's PIM (`_pim_gemvs`)."""
        self._pim_gemvs(ph, [e], op, after)

    def _post(self, ph: Phase, layer: int, entries, tag: str) -> None:
        m, npu = self.model, self.hw.npu
        T = sum(e.q_len for e in entries)
        hs = m.heads_per_shard
        pim_rows = [e.kv_len + e.q_len for e in entries if self.pim and e.q_len == 1]
        if pim_rows:
            # softmax of the logits the PIM returned, then the partial sums of the attend
            lens = np.repeat(np.asarray(pim_rows, np.int64), hs)
            j = ph.vector(f"{tag}softmax_pim", rows_cycles(npu, VectorOp.SOFTMAX, lens))
            blocks = sum(_ceil(n, self.layout.elems_per_row) for n in pim_rows)
            ph.vector(f"{tag}partial_sums", vector_cycles(npu, VectorOp.ADD, blocks * hs, m.head_dim), dep=j)
        j = ph.gemm(npu, f"{tag}proj", T, m.d_shard, m.d_model, self.w_base[(layer, "proj")])
        j = ph.vector(f"{tag}residual1", vector_cycles(npu, VectorOp.ADD, T, m.d_model), dep=j)
        norm = VectorOp.LAYERNORM if m.norm == "layernorm" else VectorOp.RMSNORM
        j = ph.vector(f"{tag}norm2", vector_cycles(npu, norm, T, m.d_model), dep=j)
        if m.ffn_kind == "gelu":
            j = ph.gemm(npu, f"{tag}ffn1", T, m.d_model, m.ffn_shard, self.w_base[(layer, "ffn1")])
            j = ph.vector(f"{tag}gelu", vector_cycles(npu, VectorOp.GELU, T, m.ffn_shard), dep=j)
            j = ph.gemm(npu, f"{tag}ffn2", T, m.ffn_shard, m.d_model, self.w_base[(layer, "ffn2")])
        else:
            ph.gemm(npu, f"{tag}gate", T, m.d_model, m.ffn_shard, self.w_base[(layer, "gate")])
            j = ph.gemm(npu, f"{tag}up", T, m.d_model, m.ffn_shard, self.w_base[(layer, "up")])
            j = ph.vector(f"{tag}swiglu", vector_cycles(npu, VectorOp.SWIGLU, T, m.ffn_shard), dep=j)
            j = ph.gemm(npu, f"{tag}down", T, m.ffn_shard, m.d_model, self.w_base[(layer, "down")])
        ph.vector(f"{tag}residual2", vector_cycles(npu, VectorOp.ADD, T, m.d_model), dep=j)

    def split_sub_batches(self, entries) -> tuple[list, list]:
        """Two sub-batches balanced per channel (NeuPIMs): each channel's requests dealt
        alternately, so both halves load every channel's PIM alike."""
        a, b = [], []
        per_ch: dict[int, list] = {}
        for e in entries:
            per_ch.setdefault(e.channel, []).append(e)
        flip = 0
        for ch in sorted(per_ch):
            reqs = sorted(per_ch[ch], key=lambda e: -(e.kv_len + e.q_len))
            for e in reqs:
                (a if flip == 0 else b).append(e)
                flip ^= 1
        return a, b

    def interleaves(self, entries) -> bool:
        """Whether the batch runs as two interleaved sub-batches (NeuPIMs)."""
        sysc = self.hw.system
        return (
            self.mode == "neupims"
            and sysc.sub_batch_interleaving
            and len(entries) >= sysc.sub_batch_threshold
            and len(entries) >= 2
        )

    def plan(self, entries, layers: int):
        """The phases of an iteration over `layers` layers: a list of (label, layer,
        builder), and the number of sub-batches."""
        return list(self.phases(entries, layers)), 2 if self.interleaves(entries) else 1

    def phases(self, entries, layers: int, repeats=None):
        """The phases of `plan`, each lowered when it is reached (an exact run of a big
        batch would otherwise hold every layer's requests at once). `repeats(l)`, if given,
        is asked before layer l >= 1 is lowered; when it answers a layer j (None: go on), the
        layers simulated stand for the ones after them: one batch ends there; with
        sub-batches the last layer's second phase and sub-batch 2's post follow, lowered on
        layer j's weights and labelled as the last layer's (the engine state is then the
        one after layer j's first phase, which `repeats` restores)."""
        groups = self._groups(entries)
        for label, layer, steps in self._phase_steps(entries, layers, repeats):
            yield label, layer, self._build(steps, groups)

    def _groups(self, entries) -> dict:
        """The requests a phase step works on: 0 the batch, 1 and 2 the sub-batches."""
        if not self.interleaves(entries):
            return {0: entries}
        sb1, sb2 = self.split_sub_batches(entries)
        return {0: entries, 1: sb1, 2: sb2}

    def _build(self, steps, groups) -> Phase:
        """The phase of `steps` ((kind, layer, group) in order, `_phase_steps`)."""
        ph = self._new_phase()
        for kind, layer, g in steps:
            ents = groups[g]
            if kind == "pre":
                self._pre(ph, layer, ents, "")
            elif kind == "mha":
                self._mha(ph, layer, ents, "")
            elif kind == "post":
                self._post(ph, layer, ents, "")
            else:  # "pre+mha": the attention waits for the QKV generation
                j = self._pre(ph, layer, ents, "")
                self._mha(ph, layer, ents, "", after=j)
        return ph

    def _phase_steps(self, entries, layers: int, repeats=None):
        """`phases` as recipes: (label, layer, steps), steps a tuple of (kind, layer,
        group) with kind "pre", "mha", "post" or "pre+mha" (the attention after the QKV
        generation) and group 0 (the batch) or sub-batch 1 or 2."""
        if not self.interleaves(entries):
            layer = 0
            while layer < layers:
                if layer > 0 and repeats is not None and repeats(layer) is not None:
                    return
                if self.pim:
                    yield ("pre+mha", layer, (("pre+mha", layer, 0),))
                    yield ("post", layer, (("post", layer, 0),))
                else:
                    yield ("layer", layer, (("pre+mha", layer, 0), ("post", layer, 0)))
                layer += 1
            return
        yield ("sb1.pre", -1, (("pre", 0, 1),))
        layer = 0
        while layer < layers:
            j = repeats(layer) if layer > 0 and repeats is not None else None
            if j is not None:
                # the last layer's second phase and sub-batch 2's post, with the weights of
                # the period's layer it repeats (the state was set to that layer's)
                yield ("sb1.npu|sb2.pim", layers - 1, (("post", j, 1), ("mha", j, 2)))
                yield ("sb2.post", layers, (("post", j, 2),))
                return
            first = (("post", layer - 1, 2),) if layer > 0 else ()
            yield ("sb2.npu|sb1.pim", layer, first + (("pre", layer, 2), ("mha", layer, 1)))
            nxt = (("pre", layer + 1, 1),) if layer + 1 < layers else ()
            yield ("sb1.npu|sb2.pim", layer, (("post", layer, 1),) + nxt + (("mha", layer, 2),))
            layer += 1
        yield ("sb2.post", layers, (("post", layers - 1, 2),))

    @staticmethod
    def _phase_key(label: str, steps) -> tuple[tuple, int]:
        """A phase's shape (its label and steps, layers counted from its first layer) and
        that first layer: phases of one shape differ only in their weights' layer."""
        base = min(layer for _, layer, _ in steps)
        return (label, tuple((k, layer - base, g) for k, layer, g in steps)), base

    def _layer_stride(self) -> int | None:
        """Bytes between one layer's weights and the next one's when a phase lowered for
        one layer is the same phase k layers on with every weight address k strides up and
        only the rows changing (the row field above the others and the stride a whole
        number of rows across channels and banks): then a lowered phase is reused for its
        shape's later layers (program.py LoweredPhase). None otherwise."""
        m = self.model
        if m.layers_per_stage < 2:
            return None
        names = [w.name for w in m.weight_matrices()]
        stride = self.w_base[(1, names[0])] - self.w_base[(0, names[0])]
        if any(self.w_base[(layer, n)] != self.w_base[(0, n)] + layer * stride
               for layer in range(m.layers_per_stage) for n in names):
            return None
        f = self.layout.f
        ro = f["ro"].shift
        if any(f[k].shift > ro for k in f if k != "ro") or stride % (1 << ro):
            return None
        # the engine's request table must hold the address as given and nothing derived
        # from the row: a probe of weight and KV addresses in every channel, both ways
        L = self.layout
        n = 2 * L.channels
        ch = np.arange(n) % L.channels
        row = np.where(np.arange(n) < L.channels, 0, self.rows.first_row)
        addr = L.compose(ch, np.arange(n) % L.banks, row, np.arange(n) % L.bursts_per_row)
        if not shift_renames(self.params, addr, self.rows.first_row, stride):
            return None
        return stride

    # ---------------------------------------------------------------- execution
    @staticmethod
    def _steady_phases(n_sb: int) -> tuple:
        """With reuse, two layers are simulated and these phases stand for L - 1 layers
        each. One batch: layer 1's phases (layer 0 starts from the previous iteration's
        end). Two sub-batches (phases sb1.pre, then per layer l `sb2.npu|sb1.pim` (A_l) and
        `sb1.npu|sb2.pim` (B_l), then sb2.post): A_0 lacks sub-batch 2's post and B_{L-1}
        sub-batch 1's next pre, every other A_l and B_l has the shapes of A_1 and B_0, so
        B_0 stands for B_0 .. B_{L-2} and A_1 for A_1 .. A_{L-1}; the simulated B_1 is the
        last layer's."""
        if n_sb == 1:
            return (("pre+mha", 1), ("post", 1), ("layer", 1))
        return (("sb1.npu|sb2.pim", 0), ("sb2.npu|sb1.pim", 1))

    def simulate(self, entries, *, exact: bool = False, layers: int | None = None,
                 reuse: str = "steady") -> IterationResult:
        """Simulate one iteration. `exact`: every layer; otherwise `reuse` says which
        layers stand for the others (the module docstring: "fast" or "steady")."""
        if reuse not in REUSE_LEVELS:
            raise UserError(f"reuse {reuse!r} is not one of {', '.join(REUSE_LEVELS)}")
        entries = [e if isinstance(e, BatchEntry) else BatchEntry(*e) for e in entries]
        if not entries:
            raise UserError("an iteration needs at least one request")
        for e in entries:
            if not 0 <= e.channel < self.layout.channels:
                raise UserError(f"request {e.req}: channel {e.channel} is not in 0..{self.layout.channels - 1}")
            if e.q_len < 1 or e.kv_len < 0:
                raise UserError(f"request {e.req}: q_len must be >= 1 and kv_len >= 0")
            self.ensure_kv(e)
        L = layers or self.model.layers_per_stage
        n_sb = 2 if self.interleaves(entries) else 1
        level = "none" if exact or L <= 2 else reuse
        sim_layers = {"none": L, "fast": 2, "steady": L}[level]
        steady = self._steady_phases(n_sb) if level == "fast" else ()
        # steady: layers p .. l - 1 repeat (period k = l - p) from where the state before
        # layer l equals the one before layer p = l - k (k <= MAX_PERIOD); with sub-batches
        # layer 0 lacks sub-batch 2's post, so p >= 1
        period = {"layer": None, "k": 1}
        first = 1 if n_sb == 2 else 0
        sigs = {0: self.state_signature(0)} if level == "steady" and n_sb == 1 else {}
        after_a = {}  # with sub-batches: the engine state after each recent layer's first phase

        def repeats(layer):
            """None, or the layer of the period that the last layer repeats."""
            if level != "steady":
                return None
            sig = sigs[layer] = self.state_signature(layer)
            sigs.pop(layer - MAX_PERIOD - 1, None)
            if sig is None:
                return None
            for k in range(1, MAX_PERIOD + 1):
                prev = sigs.get(layer - k)
                if layer - k >= first and prev is not None and np.array_equal(sig, prev):
                    p = period["layer"] = layer - k
                    period["k"] = k
                    last = period["last"] = p + (L - 1 - p) % k
                    if n_sb == 2:
                        # the last layer's second phase follows the first phase of the
                        # period's layer that the last layer repeats
                        for dst, src in zip(self.state, after_a[last]):
                            dst[...] = src
                    return last
            return None

        # a shape of phase that comes more than once is lowered once and then run for
        # each of its layers with the weight addresses moved (LoweredPhase)
        stride = self._layer_stride()
        seen: dict[tuple, int] = {}
        if stride is not None:
            for label, _, steps in self._phase_steps(entries, sim_layers):
                key = self._phase_key(label, steps)[0]
                seen[key] = seen.get(key, 0) + 1
        lowered: dict[tuple, tuple[LoweredPhase, int]] = {}
        groups = self._groups(entries)
        results: list[tuple[str, int, PhaseResult]] = []
        for label, layer, steps in self._phase_steps(entries, sim_layers, repeats):
            key, base = self._phase_key(label, steps)
            if key not in lowered and seen.get(key, 0) > 1:
                lowered[key] = (LoweredPhase(self._build(steps, groups), self.params, self.rows.first_row), base)
            if key in lowered:
                lp, b0 = lowered[key]
                r = lp.run(self.params, self.state, self.max_inject, weight_delta=(base - b0) * stride)
            else:
                r = self._build(steps, groups).run(self.params, self.state, self.max_inject)
            results.append((label, layer, r))
            if level == "steady" and n_sb == 2 and label == "sb2.npu|sb1.pim":
                after_a[layer] = [x.copy() for x in self.state]
                after_a.pop(layer - MAX_PERIOD, None)
        p, k = period["layer"], period["k"]
        if p is not None:
            sim_layers = p + k

        def weight(label, layer):
            if (label, layer) in steady:
                return L - 1
            if p is not None and p <= layer < p + k:
                # layer j of the period stands for layers j, j + k, ... < L; with
                # sub-batches the last layer's second phase is simulated apart
                n = (L - 1 - layer) // k + 1
                return n - 1 if label == "sb1.npu|sb2.pim" and layer == period["last"] else n
            return 1

        cycles = 0
        stats = None
        npu_busy = None
        pim_busy = None
        ops: dict[str, dict] = {}
        plist = []
        for label, layer, r in results:
            w = weight(label, layer)
            cycles += w * r.cycles
            stats = r.stats * w if stats is None else stats + r.stats * w
            npu_busy = r.npu_busy * w if npu_busy is None else npu_busy + r.npu_busy * w
            pim_busy = r.pim_busy * w if pim_busy is None else pim_busy + r.pim_busy * w
            plist.append((f"L{layer}.{label}" if layer >= 0 else label, r.cycles))
            for name, o in r.ops.items():
                agg = ops.setdefault(name, {"unit": o["unit"], "busy": 0, "bytes": 0, "cycles": 0})
                agg["busy"] += w * o["busy"]
                agg["bytes"] += w * o["bytes"]
                agg["cycles"] += w * (o["end"] - o["start"])
        return IterationResult(
            cycles=int(cycles),
            layers=L,
            layers_simulated=sim_layers,
            exact=exact or sim_layers == L,
            mode=self.mode,
            reuse=level if sim_layers < L else "none",
            ops=ops,
            stats=stats,
            npu_busy=npu_busy,
            pim_busy=pim_busy,
            phases=plist,
            sub_batches=n_sb,
        )


def simulate_iteration(hw, model, batch, state: IterationSimulator | None = None, *,
                       exact: bool = False, layers: int | None = None, reuse: str = "steady"):
    """Simulate one iteration; returns (IterationResult, simulator) — pass the simulator
    back as `state` to simulate the next iteration on the same engine state."""
    sim = state or IterationSimulator(hw, model)
    return sim.simulate(batch, exact=exact, layers=layers, reuse=reuse), sim
