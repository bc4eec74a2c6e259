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

Reuse: layers have the same shapes, so unless `exact` is set only the first two layers
are simulated (the second one in steady state) and the rest are taken to repeat the second;
with sub-batch interleaving the first three (the last one drains the pipeline).
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np

from neupims_py.compiler import lowering_jit as lj
from neupims_py.compiler.layout import AddressLayout, KvLayout, RowAllocator
from neupims_py.compiler.program import Phase, PhaseResult
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng
from neupims_py.errors import UserError
from neupims_py.formats import Stat
from neupims_py.npu import VectorOp, attention_timing, rows_cycles, vector_cycles


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

    def to_dict(self) -> dict:
        tot = self.stats.sum(axis=0)
        return {
            "cycles": int(self.cycles),
            "mode": self.mode,
            "layers": self.layers,
            "layers_simulated": self.layers_simulated,
            "exact": self.exact,
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

    # ---------------------------------------------------------------- lowering
    def _new_phase(self) -> Phase:
        npu = self.hw.npu
        return Phase(
            arrays=npu.systolic_arrays,
            array_rows=npu.array_rows,
            array_cols=npu.array_cols,
            double_buffered=npu.double_buffered,
            burst_bytes=self.mem.geometry.burst_bytes,
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
        """The phases of an iteration over `layers` layers: a list of (label, layer, builder)."""
        phases = []
        if not self.interleaves(entries):
            for layer in range(layers):
                if self.pim:
                    ph = self._new_phase()
                    j = self._pre(ph, layer, entries, "")
                    self._mha(ph, layer, entries, "", after=j)
                    phases.append(("pre+mha", layer, ph))
                    ph = self._new_phase()
                    self._post(ph, layer, entries, "")
                    phases.append(("post", layer, ph))
                else:
                    ph = self._new_phase()
                    j = self._pre(ph, layer, entries, "")
                    self._mha(ph, layer, entries, "", after=j)
                    self._post(ph, layer, entries, "")
                    phases.append(("layer", layer, ph))
            return phases, 1
        sb1, sb2 = self.split_sub_batches(entries)
        ph = self._new_phase()
        self._pre(ph, 0, sb1, "")
        phases.append(("sb1.pre", -1, ph))
        for layer in range(layers):
            ph = self._new_phase()
            if layer > 0:
                self._post(ph, layer - 1, sb2, "")
            self._pre(ph, layer, sb2, "")
            self._mha(ph, layer, sb1, "")
            phases.append(("sb2.npu|sb1.pim", layer, ph))
            ph = self._new_phase()
            self._post(ph, layer, sb1, "")
            if layer + 1 < layers:
                self._pre(ph, layer + 1, sb1, "")
            self._mha(ph, layer, sb2, "")
            phases.append(("sb1.npu|sb2.pim", layer, ph))
        ph = self._new_phase()
        self._post(ph, layers - 1, sb2, "")
        phases.append(("sb2.post", layers, ph))
        return phases, 2

    # ---------------------------------------------------------------- execution
    def simulate(self, entries, *, exact: bool = False, layers: int | None = None) -> IterationResult:
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
        # Reuse: layer 0 once, then layer 1 in steady state standing for every layer not
        # simulated. With sub-batches a layer's phases also run the next layer's pre of
        # sub-batch 1, which the last layer lacks, so the last layer is simulated as well.
        sim_layers = L if exact else min(L, 3 if self.interleaves(entries) else 2)
        phases, n_sb = self.plan(entries, sim_layers)
        results: list[tuple[str, int, PhaseResult]] = []
        for label, layer, ph in phases:
            results.append((label, layer, ph.run(self.params, self.state, self.max_inject)))

        def weight(layer):
            return L - sim_layers + 1 if sim_layers < L and layer == 1 else 1
        cycles = 0
        stats = None
        npu_busy = None
        pim_busy = None
        ops: dict[str, dict] = {}
        plist = []
        for label, layer, r in results:
            w = weight(layer) if layer >= 0 and layer < sim_layers else 1
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
            ops=ops,
            stats=stats,
            npu_busy=npu_busy,
            pim_busy=pim_busy,
            phases=plist,
            sub_batches=n_sb,
        )


def simulate_iteration(hw, model, batch, state: IterationSimulator | None = None, *,
                       exact: bool = False, layers: int | None = None):
    """Simulate one iteration; returns (IterationResult, simulator) — pass the simulator
    back as `state` to simulate the next iteration on the same engine state."""
    sim = state or IterationSimulator(hw, model)
    return sim.simulate(batch, exact=exact, layers=layers), sim
