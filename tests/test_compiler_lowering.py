"""The operator compiler's lowering against closed forms: weight bytes the GEMMs read, GEMM
cycles against the NPU and DRAM bounds, the PIM command streams of decode attention (the
NeuPIMs KV mapping of DESIGN.md), and attention on the NPU (prefill path = decode path).

Models are shrunk GPT-3 shapes so that a layer's weights are ~100k DRAM requests, not the
1.6M of a GPT3-7B shard's layer.
"""

import dataclasses

import pytest

from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.compiler.program import Phase, cmd_counts
from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng
from neupims_py.errors import UserError
from neupims_py.formats import Cmd, Stat
from neupims_py.model import load_model
from neupims_py.npu import attention_flops, attention_timing, decode_attention_timing, gemm_timing


def ceil(a, b):
    return -(-a // b)


def shrunk(layers=2, d_model=512, heads=4, ffn_dim=2048, tp=1):
    """GPT-3 architecture at a small size (head_dim 128 by default, as GPT3-7B)."""
    return dataclasses.replace(load_model("gpt3-7b"), name=f"gpt3-{d_model}", layers=layers,
                               d_model=d_model, heads=heads, ffn_dim=ffn_dim, tp=tp)


TINY = shrunk()
GEMMS = ("qkv", "proj", "ffn1", "ffn2")


# --------------------------------------------------------------------------- weight bytes

@pytest.mark.parametrize("model", [TINY, shrunk(d_model=320, heads=5, ffn_dim=1280)],
                         ids=["d512", "d320-unaligned"])
def test_gemms_of_one_layer_read_the_shards_weights_once(model):
    sim = IterationSimulator(load_hw("npu-pim"), model)
    r = sim.simulate([BatchEntry(0, 1, 40, 0), BatchEntry(1, 3, 70, 5)], layers=1)
    d, f = model.d_model, model.ffn_shard
    # qkv d x 3d, proj d x d, ffn1 d x f, ffn2 f x d, FP16
    expected = 2 * (d * 3 * d + d * d + d * f + f * d)
    assert model.layer_weight_bytes_per_shard() == expected
    assert sum(r.ops[g]["bytes"] for g in GEMMS) == expected
    assert r.ops["qkv"]["bytes"] == 2 * d * 3 * d


@pytest.mark.parametrize("exact", [False, True], ids=["reuse", "exact"])
def test_gemms_of_an_iteration_read_every_layers_weights(exact):
    model = shrunk(layers=4)
    sim = IterationSimulator(load_hw("npu-only"), model)
    r = sim.simulate([BatchEntry(0, 1, 40, 0), BatchEntry(1, 1, 70, 1)], exact=exact, reuse="fast")
    assert r.layers == 4
    assert r.layers_simulated == (4 if exact else 2)
    assert sum(r.ops[g]["bytes"] for g in GEMMS) == 4 * model.layer_weight_bytes_per_shard()


@pytest.mark.parametrize("exact", [False, True], ids=["reuse", "exact"])
def test_interleaved_sub_batches_each_read_every_layers_weights(exact):
    """NeuPIMs runs each sub-batch's GEMMs on its own, so every layer's weights are read
    twice per iteration. (Reuse once counted sub-batch 1's QKV weights only for the first two
    layers: the steady layer stood in for layers that run sub-batch 1's next QKV-gen.)"""
    model = shrunk(layers=5)
    hw = load_hw("neupims", ["system.sub_batch_threshold=4"])
    sim = IterationSimulator(hw, model)
    batch = [BatchEntry(i, 1, 30 + 20 * i, i % 3) for i in range(4)]
    r = sim.simulate(batch, exact=exact, reuse="fast")
    assert r.sub_batches == 2
    for w in model.weight_matrices():
        assert r.ops[w.name]["bytes"] == 2 * 5 * w.rows * w.cols * 2, w.name


# --------------------------------------------------------------------------- GEMM cycles

@pytest.mark.parametrize("m", [1, 512], ids=["memory-bound", "compute-bound"])
def test_gemm_cycles_between_the_npu_and_dram_bounds(m):
    """A tile-aligned GEMM in a phase of its own, weights from DRAM, refresh off.

    K = N = 2048: 256 tiles of 128 x 128, 32 per array, 8 MiB of weights.
    - NPU bound (gemm_timing, weights already on chip). M = 1: a tile streams max(1, 4) rows
      and its 128-cycle preload dominates, so an array's 32nd tile starts at 32 x 128 =
      4,096 and finishes 254 (fill and drain) + 4 later: 4,354 cycles. M = 512: tiles start
      512 apart after the first preload, the last at 128 + 31 x 512 = 16,000, finishing at
      16,000 + 254 + 512 = 16,766.
    - DRAM bound: every weight byte crosses 32 channels x 64 B per 2-cycle burst, 1,024 B per
      cycle: 8 MiB / 1,024 = 8,192 cycles.
    So M = 1 is memory-bound (8,192 > 4,354) and M = 512 compute-bound (16,766 > 8,192).
    The phase cannot beat either bound; it may lose to the larger one by the time to fill
    the pipeline (the first tiles' loads, the last tile's drain) and by row misses, which we
    allow 30% for.
    """
    k = n = 2048
    hw = load_hw("npu-only")
    npu, mem = hw.npu, hw.memory
    mem = dataclasses.replace(mem, controller=dataclasses.replace(mem.controller,
                                                                  refresh_policy="off"))
    params = lower_memory(mem)
    state = eng.new_state(params)
    ph = Phase(arrays=npu.systolic_arrays, array_rows=npu.array_rows,
               array_cols=npu.array_cols, double_buffered=npu.double_buffered,
               burst_bytes=mem.geometry.burst_bytes)
    ph.gemm(npu, "g", m, k, n, w_base=0)
    r = ph.run(params, state, mem.geometry.channels)

    npu_bound = gemm_timing(npu, m, k, n, name="g").cycles
    assert npu_bound == {1: 4354, 512: 16766}[m]
    per_cycle = mem.geometry.channels * mem.geometry.burst_bytes // mem.burst_cycles
    assert per_cycle == 1024
    dram_bound = k * n * 2 // per_cycle
    assert r.ops["g"]["bytes"] == k * n * 2
    assert r.reads == k * n * 2 // 64
    assert r.cycles >= npu_bound
    assert r.cycles >= dram_bound
    assert r.cycles <= 1.3 * max(npu_bound, dram_bound)
    # the arrays' busy cycles: per tile max(stream, preload), plus one preload per array as
    # it starts idle
    assert r.npu_busy[:-1].sum() == 256 * max(m, 4, 128) + 8 * 128


# --------------------------------------------------------------------------- PIM streams

def pim_parts(phase, e_shard):
    """The decode GEMV's commands split into logits (up to the ceil(E/512)+1-th GWRITE, the
    first one of the attend) and attend: (cmd, rank, bg, ba, row, k) tuples."""
    rows = [(c[1], c[2], c[3], c[4], c[5], c[6]) for c in phase.pim]
    gw = [i for i, c in enumerate(rows) if c[0] == Cmd.GWRITE]
    cut = gw[ceil(e_shard, 512)]
    return rows[:cut], rows[cut:]


def count(cmds, cmd):
    return sum(1 for c in cmds if c[0] == cmd)


MODELS = {
    "d512-h4": TINY,  # E = 512: one K row per 32 tokens, 4 heads per row
    "gpt3-7b-tp4": load_model("gpt3-7b"),  # E = 1024, 8 heads of 128: two K rows per 32 tokens
    "d768-h12-dh64": shrunk(d_model=768, heads=12, ffn_dim=3072),  # 8 heads of 64 per K row
}


@pytest.mark.parametrize("kv_len", [0, 31, 32, 100, 511, 512, 1000])
@pytest.mark.parametrize("name", list(MODELS))
def test_pim_commands_of_one_decode_request(name, kv_len):
    """Counts worked out from the NeuPIMs layout (DESIGN.md) on the preset's channel:
    2 ranks x 4 bank groups x 4 banks = 32 banks, 1 KiB rows = 512 FP16 elements,
    16 multipliers per bank. kv = kv_len + 1 tokens (the new one included), E = heads x
    head_dim of the shard, h heads of d dims.

    logits q.K^T: K holds token t in bank t % 32, ceil(E/512) rows per 32 tokens, each row
      the token's key for 512/d heads. One GWRITE per 512-element query chunk; one tile
      (PIM_HEADER, a G_ACT per rank and bank group = all 32 banks, ..., PIM_PRECHARGEs) per
      K row; per tile and rank a COMPS_READRES of d/16 COMPs per head in the row.
    attend S.V: V holds dimension j in bank j % 32, a row 512 tokens of it, ceil(E/32) rows
      per 512 tokens. Per head and 512-token block one GWRITE (512 logits = 1 KiB) and
      ceil(d/32) tiles; per tile and rank one COMPS_READRES of ceil(tokens/16) COMPs.
    """
    model = MODELS[name]
    hw = load_hw("npu-pim")
    sim = IterationSimulator(hw, model)
    e = BatchEntry(7, 1, kv_len, 3)
    phases, n_sb = sim.plan([e], 1)
    assert n_sb == 1 and [p[0] for p in phases] == ["pre+mha", "post"]
    phase = phases[0][2]
    assert cmd_counts(phases[1][2]) == {}

    kv, E, h, d = kv_len + 1, model.d_shard, model.heads_per_shard, model.head_dim
    ranks, bgs = 2, 4
    chunks, groups, blocks = ceil(E, 512), ceil(kv, 32), ceil(kv, 512)
    logits_tiles = groups * chunks
    attend_tiles = h * blocks * ceil(d, 32)
    counts = cmd_counts(phase)
    assert counts == {
        "GWRITE": chunks + h * blocks,
        "PIM_HEADER": logits_tiles + attend_tiles,
        "G_ACT": (logits_tiles + attend_tiles) * ranks * bgs,
        "PIM_PRECHARGE": (logits_tiles + attend_tiles) * ranks * bgs,
        "COMPS_READRES": groups * ranks * h + attend_tiles * ranks,
    }

    logits, attend = pim_parts(phase, E)
    assert count(logits, Cmd.PIM_HEADER) == logits_tiles
    assert count(logits, Cmd.GWRITE) == chunks
    lk = [c[5] for c in logits if c[0] == Cmd.COMPS_READRES]
    assert len(lk) == groups * ranks * h and set(lk) == {ceil(d, 16)}
    # every (token, dimension) of K is multiplied: 16 banks per rank x 16 elements per COMP
    assert sum(lk) * 16 * 16 == groups * 32 * E
    assert count(attend, Cmd.PIM_HEADER) == attend_tiles
    ak = [c[5] for c in attend if c[0] == Cmd.COMPS_READRES]
    tokens = [min(512, kv - 512 * b) for b in range(blocks)]
    assert sum(ak) == h * ceil(d, 32) * ranks * sum(ceil(t, 16) for t in tokens)

    # rows: the K region then the V region of this request, nothing else
    base = sim.rows.base(e.req)
    k_rows = {c[4] for c in logits if c[0] == Cmd.G_ACT}
    v_rows = {c[4] for c in attend if c[0] == Cmd.G_ACT}
    assert k_rows == set(range(base, base + groups * chunks))
    v_base = base + groups * chunks
    assert v_rows == set(range(v_base, v_base + blocks * ceil(E, 32)))
    assert sim.kv.rows_for(kv) == groups * chunks + blocks * ceil(E, 32) + 1
    assert {c[0] for c in phase.pim} == {e.channel}


def test_engine_issues_the_planned_pim_commands():
    """Run the planned stream: the channel's counters show every command of the plan."""
    hw = load_hw("npu-pim")
    sim = IterationSimulator(hw, TINY)
    e = BatchEntry(0, 1, 100, 2)
    planned = cmd_counts(sim.plan([e], 1)[0][0][2])
    sim2 = IterationSimulator(hw, TINY)
    r = sim2.simulate([e], layers=1)
    ch = r.stats[e.channel]
    for name, n in planned.items():
        assert ch[Stat[name]] == n, name
    assert r.stats[:, Stat.COMPS_READRES].sum() == planned["COMPS_READRES"]
    # kv = 101: logits 4 x 1 tiles x 2 ranks x 4 heads x 8 COMPs, attend 4 heads x 4 tiles x 2
    # ranks x ceil(101/16) = 7 COMPs
    assert ch[Stat.PIM_COMPS] == 4 * 2 * 4 * 8 + 4 * 4 * 2 * 7


# --------------------------------------------------------------------------- attention, NPU

def test_attention_flops_closed_form():
    # Q.K^T and S.V: 2 * q * d * kv each, per head
    assert attention_flops(1, 101, 128, 4) == 4 * 1 * 101 * 128 * 4
    assert attention_flops(16, 116, 64, 12) == 4 * 16 * 116 * 64 * 12
    npu = load_hw("neupims").npu
    assert attention_timing(npu, 16, 116, 12, 64).flops == 4 * 16 * 116 * 64 * 12


def test_decode_on_the_npu_is_the_prefill_path_with_one_query():
    """npu-only: a decode request is lowered through the q_len > 1 path of `_mha`; its
    attention runs on one systolic array and costs what `attention_timing` gives on a
    one-array NPU for one query over kv_len + 1 tokens, and
    reads the cached K (each token's E x 2 bytes) and V (per dimension, the 64-byte bursts of
    32 tokens that hold the cached tokens)."""
    hw = load_hw("npu-only")
    hs, d, E = TINY.heads_per_shard, TINY.head_dim, TINY.d_shard
    kv_len = 100
    sim = IterationSimulator(hw, TINY)
    r = sim.simulate([BatchEntry(0, 1, kv_len, 4)], layers=2, exact=True)
    assert "attention_pim" not in r.ops
    npu1 = dataclasses.replace(hw.npu, systolic_arrays=1)
    one = attention_timing(npu1, 1, kv_len + 1, hs, d)
    assert one.cycles == decode_attention_timing(npu1, kv_len + 1, hs, d).cycles
    assert r.ops["attention_npu"]["busy"] == 2 * one.cycles
    assert r.ops["attention_npu"]["bytes"] == 2 * (kv_len * E * 2 + E * ceil(kv_len, 32) * 64)
    # the new token's K (E x 2 bytes) and V (one burst per dimension) are written per layer
    assert r.stats[:, Stat.WRITES_DONE].sum() == 2 * (E * 2 // 64 + E)
    assert r.stats[4, Stat.WRITES_DONE] == r.stats[:, Stat.WRITES_DONE].sum()


def test_prefill_runs_on_the_npu_in_neupims_mode():
    hw = load_hw("neupims")
    hs, d = TINY.heads_per_shard, TINY.head_dim
    sim = IterationSimulator(hw, TINY)
    r = sim.simulate([BatchEntry(0, 16, 100, 1), BatchEntry(1, 1, 60, 2)], layers=1)
    npu1 = dataclasses.replace(hw.npu, systolic_arrays=1)  # one request: one array
    assert r.ops["attention_npu"]["busy"] == attention_timing(npu1, 16, 116, hs, d).cycles
    assert "attention_pim" in r.ops
    assert r.stats[2, Stat.PIM_HEADER] > 0 and r.stats[1, Stat.PIM_HEADER] == 0


def test_kv_cache_regions_are_fixed_by_capacity_and_never_overlap():
    """A cache laid out for its capacity keeps its K, V and scratch rows as it grows (a
    growing cache once moved its V region into the next request's rows)."""
    hw = load_hw("neupims")
    sim = IterationSimulator(hw, TINY)
    a = sim.ensure_kv(BatchEntry(0, 1, 30, 5), capacity=100)
    b = sim.ensure_kv(BatchEntry(1, 1, 10, 5), capacity=40)
    rows_a = sim.kv.rows_for(100)
    assert b == a + rows_a  # first fit, back to back in channel 5
    k_rows = sim.k_region_rows(0)
    assert k_rows == -(-100 // sim.layout.banks) * sim.kv.k_chunks
    for kv_len in (30, 31, 32, 63, 64, 99):  # crosses token-group boundaries
        sim.simulate([BatchEntry(0, 1, kv_len, 5)], layers=1)
        assert sim.rows.base(0) == a and sim.k_region_rows(0) == k_rows
        assert sim.scratch_row(0) == a + rows_a - 1 < b
    with pytest.raises(UserError, match="allocated for 100"):
        sim.simulate([BatchEntry(0, 1, 100, 5)], layers=1)
    sim.release(0)
    assert sim.ensure_kv(BatchEntry(2, 1, 5, 5), capacity=8) == a  # freed rows reused
