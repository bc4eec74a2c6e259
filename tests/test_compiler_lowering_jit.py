"""The vectorised / compiled lowering against the plain per-tile and per-command loops it
replaced (kept here as the slow reference): PIM decode GEMV streams command for command,
K/V bursts burst for burst, GEMM tiles task for task and request for request."""

import numpy as np
import pytest

from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.compiler.program import Phase, cmd_counts
from neupims_py.config import load_hw
from neupims_py.formats import Cmd
from neupims_py.model import load_model
from neupims_py.npu import check_gemm_sram

from test_compiler_lowering import MODELS, shrunk


def ceil(a, b):
    return -(-a // b)


# --------------------------------------------------------------------------- references

def ref_pim_gemv(sim, e, op, after):
    """The original `_pim_gemv` loop: (ch, cmd, rank, bg, ba, row, k, dur, after, op) tuples."""
    L, kv, m, mem = sim.layout, sim.kv, sim.model, sim.mem
    out = []
    base = sim.ensure_kv(e)
    ch = e.channel
    kvn = e.kv_len + e.q_len
    k_rows = sim.k_region_rows(e.req)
    scratch = sim.scratch_row(e.req)
    dh = m.head_dim
    k_per_head = ceil(dh, mem.pim.multipliers_per_bank)
    ranks, bgs = L.ranks, L.bankgroups
    tfaw = mem.timing.tFAW

    def cmd(c, rank=0, bg=0, ba=0, row=0, k=0, dur=0):
        out.append((ch, int(c), rank, bg, ba, row, k, dur, after, op))

    def tile(row, heads_in_tile, k):
        dur = bgs * tfaw + ranks * heads_in_tile * 2 * (max(k, mem.pim.comps_readres_min_k) + 1) + 64
        cmd(Cmd.PIM_HEADER, dur=dur)
        for r in range(ranks):
            for g in range(bgs):
                cmd(Cmd.G_ACT, rank=r, bg=g, row=row)
        for r in range(ranks):
            for _ in range(heads_in_tile):
                cmd(Cmd.COMPS_READRES, rank=r, k=k)
        for r in range(ranks):
            for g in range(bgs):
                cmd(Cmd.PIM_PRECHARGE, rank=r, bg=g)

    for c in range(kv.k_chunks):
        cmd(Cmd.GWRITE, row=scratch)
        heads_in_chunk = min(kv.heads_per_row, m.heads_per_shard - c * kv.heads_per_row)
        for tg in range(ceil(kvn, L.banks)):
            tile(kv.k_row(base, tg, c), heads_in_chunk, k_per_head)
    for h in range(m.heads_per_shard):
        for blk in range(ceil(kvn, L.elems_per_row)):
            tokens = min(L.elems_per_row, kvn - blk * L.elems_per_row)
            cmd(Cmd.GWRITE, row=scratch)
            for dr in range(ceil(dh, L.banks)):
                row = kv.v_row(base, k_rows, blk, (h * dh) // L.banks + dr)
                tile(row, 1, ceil(tokens, mem.pim.multipliers_per_bank))
    return out


def ref_kv_bursts(sim, e, tokens):
    """The original numpy `_kv_token_bursts`."""
    L, kv = sim.layout, sim.kv
    base = sim.ensure_kv(e)
    k_rows = sim.k_region_rows(e.req)
    out = []
    t = np.arange(tokens.start, tokens.stop, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, np.int64)
    per_row = L.bursts_per_row
    for c in range(kv.k_chunks):
        cols_used = min(per_row, ceil(min(L.elems_per_row, kv.e - c * L.elems_per_row) * 2, L.burst_bytes))
        rows = base + (t // L.banks) * kv.k_chunks + c
        bank = t % L.banks
        col = np.arange(cols_used, dtype=np.int64)
        out.append(L.compose(e.channel, np.repeat(bank, cols_used), np.repeat(rows, cols_used),
                             np.tile(col, t.size)))
    tok_per_burst = L.burst_bytes // 2
    blocks = np.unique(np.stack([t // L.elems_per_row, (t % L.elems_per_row) // tok_per_burst], 1), axis=0)
    j = np.arange(kv.e, dtype=np.int64)
    blk = np.repeat(blocks[:, 0], j.size)
    cb = np.repeat(blocks[:, 1], j.size)
    jj = np.tile(j, len(blocks))
    rows = base + k_rows + blk * kv.v_rows_per_block + jj // L.banks
    bank = jj % L.banks
    order = np.lexsort((cb, bank, rows))
    out.append(L.compose(e.channel, bank[order], rows[order], cb[order]))
    return np.concatenate(out)


def ref_gemm(ph, npu, m, k, n, w_base):
    """The original per-tile `Phase.gemm` loop: tasks (res, cost) and requests
    (addr, group offset from the first tile, after offset or -1)."""
    check_gemm_sram(npu, m, k, n, name="g")
    R, C, A = ph.array_rows, ph.array_cols, ph.arrays
    stream = max(m, 4)
    depth = 2 if ph.double_buffered else 1
    tasks, reqs = [], []
    offset = w_base
    i = 0
    for n0 in range(0, n, C):
        cols = min(C, n - n0)
        for k0 in range(0, k, R):
            rows = min(R, k - k0)
            a = i % A
            slot = max(stream, rows) if ph.double_buffered else rows + stream
            cost = slot + (rows if i < A and ph.double_buffered else 0)
            tasks.append((a, cost))
            nb = ceil(rows * cols * 2, ph.burst_bytes)
            back = i - depth * A
            for b in range(nb):
                reqs.append((offset + b * ph.burst_bytes, i, back if back >= 0 else -1))
            offset += nb * ph.burst_bytes
            i += 1
    tail = R + C - 2 + stream - (max(stream, R) if ph.double_buffered else stream)
    tasks.append((-1, max(tail, 0)))
    return tasks, reqs


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("preset", ["npu-pim", "neupims"])
def test_pim_streams_equal_the_per_command_loop(name, preset):
    model = MODELS[name]
    sim = IterationSimulator(load_hw(preset), model)
    entries = [BatchEntry(i, 1, kv, i % 5) for i, kv in enumerate([0, 1, 31, 32, 100, 511, 512, 513, 1000, 1500])]
    ph = sim._new_phase()
    sim._mha(ph, 0, entries, "x.", after=7)
    op = ph.op("x.attention_pim")
    expected = [c for e in entries for c in ref_pim_gemv(sim, e, op, 7)]
    assert ph.pim == expected
    # one request through the single-request entry point
    ph = sim._new_phase()
    sim._pim_gemv(ph, entries[4], "pim", -1)
    assert ph.pim == ref_pim_gemv(sim, entries[4], ph.op("pim"), -1)
    assert sum(cmd_counts(ph).values()) == len(ph.pim)


@pytest.mark.parametrize("name", list(MODELS))
def test_kv_bursts_equal_the_numpy_reference(name):
    model = MODELS[name]
    sim = IterationSimulator(load_hw("neupims"), model)
    e = BatchEntry(3, 1, 0, 6)
    sim.ensure_kv(e, 2000)
    for start, stop in [(0, 0), (0, 1), (5, 6), (31, 33), (0, 100), (500, 530), (511, 513),
                        (0, 1030), (1023, 1025), (700, 1999)]:
        got = sim._kv_token_bursts(e, range(start, stop))
        np.testing.assert_array_equal(got, ref_kv_bursts(sim, e, range(start, stop)),
                                      err_msg=f"tokens {start}..{stop}")


def test_kv_writes_of_a_batch_equal_the_per_request_bursts():
    model = load_model("gpt3-7b")
    sim = IterationSimulator(load_hw("neupims"), model)
    entries = [BatchEntry(i, q, kv, i % 32) for i, (q, kv) in
               enumerate([(1, 0), (1, 31), (3, 60), (1, 511), (40, 500), (1, 1200)])]
    ph = sim._new_phase()
    j = sim._pre(ph, 0, entries, "")
    addr, isw, grp, aft = ph.request_arrays()
    writes = addr[isw == 1]
    expected = np.concatenate([ref_kv_bursts(sim, e, range(e.kv_len, e.kv_len + e.q_len)) for e in entries])
    np.testing.assert_array_equal(writes, expected)
    assert (aft[isw == 1] == j).all()


@pytest.mark.parametrize("mkn", [(128, 512, 384), (1, 320, 1280), (7, 200, 130), (300, 1024, 1024)])
@pytest.mark.parametrize("double", [True, False])
def test_gemm_tiles_equal_the_per_tile_loop(mkn, double):
    m, k, n = mkn
    hw = load_hw("neupims")
    npu = hw.npu
    ph = Phase(arrays=npu.systolic_arrays, array_rows=npu.array_rows, array_cols=npu.array_cols,
               double_buffered=double, burst_bytes=hw.memory.geometry.burst_bytes)
    ph.vector("before", 5)  # the GEMM's tasks start at index 1
    j = ph.gemm(npu, "g", m, k, n, w_base=4096)
    tasks, reqs = ref_gemm(ph, npu, m, k, n, 4096)
    assert j == len(tasks)
    assert list(zip(ph.t_res[1:].tolist(), ph.t_cost[1:].tolist())) == tasks
    assert (ph.t_dep[1:] == -1).all()
    addr, isw, grp, aft = ph.request_arrays()
    assert addr.tolist() == [r[0] for r in reqs]
    assert grp.tolist() == [r[1] + 1 for r in reqs]
    assert aft.tolist() == [r[2] + 1 if r[2] >= 0 else -1 for r in reqs]
    assert not isw.any()


def test_a_second_gemm_continues_on_the_next_array():
    hw = load_hw("neupims")
    npu = hw.npu
    ph = Phase(arrays=8, array_rows=128, array_cols=128, double_buffered=True, burst_bytes=64)
    ph.gemm(npu, "a", 16, 384, 128, 0)  # 3 tiles on arrays 0, 1, 2
    ph.gemm(npu, "b", 16, 128, 256, 0)  # 2 tiles on arrays 3, 4
    assert ph.t_res.tolist() == [0, 1, 2, -1, 3, 4, -1]


def test_decode_phase_of_a_shrunk_model_is_unchanged_by_running_it_twice():
    """Phase.run keeps the builder's arrays: the same phase run again from the same state
    gives the same result (serving's run_phase runs a phase at several refresh offsets)."""
    from neupims_py.engine import dram as eng
    sim = IterationSimulator(load_hw("neupims"), shrunk())
    entries = [BatchEntry(i, 1, 40 + 30 * i, i % 4) for i in range(6)]
    ph = sim._new_phase()
    j = sim._pre(ph, 0, entries, "")
    sim._mha(ph, 0, entries, "", after=j)
    results = [ph.run(sim.params, eng.new_state(sim.params), 32) for _ in range(2)]
    assert results[0].cycles == results[1].cycles
    assert results[0].ops == results[1].ops
    assert results[0].pim_cmds == len(ph.pim) > 0
