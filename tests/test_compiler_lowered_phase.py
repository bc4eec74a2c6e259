"""A phase shape lowered once and run for every layer (program.py LoweredPhase): the
request table moved k layers on is the one lowered k layers on, and an iteration run that
way is the one that lowers every phase anew (the slow reference: reuse switched off)."""

import dataclasses

import numpy as np
import pytest

from neupims_py.compiler import BatchEntry, IterationSimulator
from neupims_py.compiler.program import LoweredPhase, _execute, shift_renames
from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng
from neupims_py.model import load_model

MiB = 2**20


def d512(layers=5, **kw):
    """GPT-3 at d_model 512, one shard: per layer QKV 512 x 1536, projection 512 x 512,
    FFN 512 x 2048 and 2048 x 512, FP16: 1.5 + 0.5 + 2 + 2 = 6 MiB of weights."""
    shape = {"d_model": 512, "heads": 4, "ffn_dim": 2048, "tp": 1, **kw}
    return dataclasses.replace(load_model("gpt3-7b"), name="gpt3-small", layers=layers, **shape)


BATCH = [BatchEntry(i, 1, 60 + 45 * i, i % 4) for i in range(8)]


def test_the_layer_stride_is_a_layers_weights():
    """6 MiB per layer, a whole number of 1 MiB stripes (32 channels x 32 banks x 1 KiB
    rows, rows the top field of rorabgbachco): layer l's weights are layer 0's, 6 l rows up."""
    sim = IterationSimulator(load_hw("neupims"), d512())
    assert sim._layer_stride() == 6 * MiB
    assert sim.w_base[(3, "ffn2")] - sim.w_base[(0, "ffn2")] == 3 * 6 * MiB


def test_no_stride_when_the_row_is_not_the_top_address_field():
    """With the channel above the row, moving a weight address by a layer's bytes changes
    its channel: no lowered phase stands for another layer's."""
    hw = load_hw("neupims", ["memory.controller.address_mapping=chrorabgbaco"])
    assert IterationSimulator(hw, d512())._layer_stride() is None


def test_no_stride_when_a_layer_is_not_a_whole_number_of_stripes():
    """d_model 320: 320 x 960 + 320 x 320 + 2 x 320 x 1280 FP16 weights, 2,457,600 bytes
    (2.34375 MiB) per layer, not a whole number of 1 MiB stripes."""
    model = d512(d_model=320, heads=5, ffn_dim=1280)
    assert IterationSimulator(load_hw("npu-pim"), model)._layer_stride() is None


@pytest.mark.parametrize("k", [1, 3])
def test_a_lowered_phase_moved_k_layers_is_the_phase_lowered_k_layers_on(k):
    """Sub-batch 1's post with its next pre and sub-batch 2's attention (NeuPIMs' second
    stage): lowered for layer 0 and run moved k layers (the engine moves the addresses as it
    accepts the requests), the engine's request table afterwards, the tasks, the PIM streams
    and the report plan equal those of the phase lowered for layer k and run on a fresh
    state of its own; run again unmoved, the table holds layer 0's addresses again."""
    hw = load_hw("neupims", ["system.sub_batch_threshold=4"])
    sim = IterationSimulator(hw, d512())
    for e in BATCH:
        sim.ensure_kv(e)
    groups = sim._groups(BATCH)

    def steps(layer):
        return (("post", layer, 1), ("pre", layer + 1, 1), ("mha", layer, 2))

    lp = LoweredPhase(sim._build(steps(0), groups), sim.params, sim.rows.first_row)
    got = lp.run(sim.params, eng.new_state(sim.params), sim.max_inject, weight_delta=k * sim._layer_stride())
    assert lp.delta == k * sim._layer_stride()
    want = sim._build(steps(k), groups)._lower(sim.params, None)
    want_run = _execute(want, want.batch, want.pim_cols, want.tasks.copy(), sim.params,
                        eng.new_state(sim.params), sim.max_inject)
    assert np.array_equal(lp.lw.batch.req, want.batch.req)  # addresses, and every output
    assert np.array_equal(lp.lw.batch.write, want.batch.write)
    assert got.cycles == want_run.cycles and got.ops == want_run.ops
    assert np.array_equal(lp.lw.tasks, want.tasks)
    assert np.array_equal(lp.lw.pim_cols, want.pim_cols)
    assert [r[0] for r in lp.lw.report] == [r[0] for r in want.report]
    # moved back: layer 0's table (addresses and inputs; the outputs are this run's)
    lp.run(sim.params, eng.new_state(sim.params), sim.max_inject, weight_delta=0)
    w0 = sim._build(steps(0), groups)._lower(sim.params, None).batch
    inputs = [eng.RQ_ADDR, eng.RQ_GROUP, eng.RQ_CYCLE, eng.RQ_AFTER]
    assert np.array_equal(lp.lw.batch.req[:, inputs], w0.req[:, inputs])
    assert not (w0.req[:, eng.RQ_DONE] >= 0).any() and (lp.lw.batch.req[:, eng.RQ_DONE] >= 0).all()


def test_the_engine_moves_each_request_once_and_sets_its_outputs_anew():
    """The engine's move (new_ctl move_delta / move_below_row) against a table made with the
    moved addresses: a single stream of 128 reads and writes to 16 columns of rows 0, 1, 3, 4 of one
    bank, those below row 3 (the "weights") moved one row up, offered 4 a cycle into a
    transaction queue of 32 (so requests are refused and offered again: each must move
    once). Run twice on one table, the second time moved back (the moved rows are still below
    row 3), it equals fresh tables of the moved and original addresses run on the same
    states, outputs and all."""
    p = lower_memory(load_hw("hbm2-8gb-x128").memory)
    row = 1 << p.ro_shift
    rows = np.repeat([0, 1, 3, 4], 32)
    addr = rows * row + (np.arange(128) % 16) * 64  # each address twice: duplicate reads
    moved = np.where(rows < 3, addr + row, addr)
    isw = np.arange(128) % 3 == 0
    cyc = np.zeros(128, np.int64)

    def run(table, state, delta):
        pb = eng.new_pim_batch(p)
        ctl = eng.new_ctl(int(state.glob[eng.G_CLK]), 4, False, delta, 3)
        nt = eng.new_npu_tasks()
        eng.run_requests(p, state, table, pb, nt, ctl, eng.new_log(1), np.zeros_like(state.stats))
        state.glob[eng.G_CLK] = ctl[eng.C_END] + 1

    one = eng.new_batch(p, addr, isw, cyc)
    s1, s2 = eng.new_state(p), eng.new_state(p)
    run(one, s1, row)
    want = eng.new_batch(p, moved, isw, cyc)
    run(want, s2, 0)
    assert np.array_equal(one.req, want.req)
    per_cycle = np.bincount(one.req[:, eng.RQ_ADDED])
    assert (per_cycle[1:-1] < 4).any()  # refused at times: offered again
    one = one._replace(inj=eng.new_batch(p, addr, isw, cyc).inj)
    run(one, s1, -row)
    want = eng.new_batch(p, addr, isw, cyc)
    run(want, s2, 0)
    assert np.array_equal(one.req, want.req)
    assert all(np.array_equal(x, y) for x, y in zip(s1, s2))


@pytest.mark.parametrize("preset,overrides", [
    ("neupims", ["system.sub_batch_threshold=4"]),  # two sub-batches
    ("npu-pim", []),
    ("npu-only", []),
])
def test_an_exact_iteration_with_lowered_phases_is_the_one_lowering_every_phase(preset, overrides, monkeypatch):
    """Every layer simulated, once with the recurring phase shapes lowered once, once with
    every phase lowered anew: the same result, every figure and phase."""
    hw = load_hw(preset, overrides)
    fast = IterationSimulator(hw, d512())
    assert fast._layer_stride() is not None
    got = fast.simulate(BATCH, exact=True).to_dict()
    monkeypatch.setattr(IterationSimulator, "_layer_stride", lambda self: None)
    want = IterationSimulator(hw, d512()).simulate(BATCH, exact=True).to_dict()
    assert got == want
    assert list(got["ops"]) == list(want["ops"])


def test_the_probe_of_the_engine_table_sees_a_move_that_changes_the_channel():
    """shift_renames builds both tables: moving the weight addresses one channel up puts
    them in other channels' blocks of the table, which a copy with moved addresses does not."""
    sim = IterationSimulator(load_hw("neupims"), d512())
    L = sim.layout
    n = 2 * L.channels
    ch = np.arange(n) % L.channels
    row = np.where(np.arange(n) < L.channels, 0, sim.rows.first_row)
    addr = L.compose(ch, np.arange(n) % L.banks, row, np.arange(n) % L.bursts_per_row)
    assert shift_renames(sim.params, addr, sim.rows.first_row, 6 * MiB)
    assert not shift_renames(sim.params, addr, sim.rows.first_row, 1 << L.f["ch"].shift)


def _run_table(p, addr, isw, distinct, max_inject=4):
    table = eng.new_batch(p, addr, isw, np.zeros(len(addr), np.int64), per_channel=True)
    state = eng.new_state(p)
    ctl = eng.new_ctl(0, max_inject, False, distinct=distinct)
    eng.run_requests(p, state, table, eng.new_pim_batch(p), eng.new_npu_tasks(), ctl, eng.new_log(1),
                     np.zeros_like(state.stats))
    return table, state


def test_requests_of_distinct_addresses_run_the_same_without_the_pending_address_tables():
    """new_ctl(distinct=True) keeps no pending-read / pending-write tables: 600 reads and
    writes of addresses of their own over 4 banks and 3 rows of 2 channels of hbm2, 4 offered
    a cycle (queues fill, requests are refused), run the same as with the tables, every
    output and the whole state after. With a shared address the flag is wrong and so are the
    results (a second read of a pending address is not merged into the first)."""
    p = lower_memory(load_hw("hbm2-8gb-x128").memory)
    rng = np.random.default_rng(7)
    lines = rng.permutation(2 * 4 * 3 * 32)[:600]  # distinct (channel, bank, row, column)
    ch, rest = lines % 2, lines // 2
    ba, rest = rest % 4, rest // 4
    row, co = rest % 3, rest // 3
    addr = (ch << p.ch_shift) | (ba << p.ba_shift) | (row << p.ro_shift) | (co << p.co_shift)
    assert co.max() == p.co_mask and np.unique(addr).size == 600
    isw = rng.random(600) < 0.3
    with_tables, s1 = _run_table(p, addr, isw, False)
    without, s2 = _run_table(p, addr, isw, True)
    assert np.array_equal(with_tables.req, without.req)
    # the whole state, but the values left in the tables' empty slots
    assert all(np.array_equal(getattr(s1, f), getattr(s2, f)) for f in s1._fields if f not in ("rvals", "wvals"))
    assert (s1.rkeys == -1).all() and (s1.wkeys == -1).all()
    assert (with_tables.req[:, eng.RQ_DONE] > 0).all()
    dup = addr.copy()
    dup[1] = dup[0]
    isw[:2] = False
    a, _ = _run_table(p, dup, isw, False)
    b, _ = _run_table(p, dup, isw, True)
    assert not np.array_equal(a.req, b.req)


def test_a_lowered_phase_knows_when_its_addresses_are_distinct():
    """LoweredPhase.distinct_after: the d512 phase's requests have addresses of their own,
    moved any number of layers; moved onto the span of the addresses it keeps (activations
    and KV, above the weights) they might meet; a phase with a request twice never is."""
    sim = IterationSimulator(load_hw("neupims", ["system.sub_batch_threshold=4"]), d512())
    for e in BATCH:
        sim.ensure_kv(e)
    groups = sim._groups(BATCH)
    steps = (("post", 0, 1), ("pre", 1, 1), ("mha", 0, 2))
    lp = LoweredPhase(sim._build(steps, groups), sim.params, sim.rows.first_row)
    stride = sim._layer_stride()
    assert lp.distinct_after(0) and lp.distinct_after(3 * stride)
    a = lp.lw.batch.req[:, eng.RQ_ADDR]
    weights = ((a >> sim.params.ro_shift) & sim.params.ro_mask) < sim.rows.first_row
    assert weights.any() and (~weights).any()
    onto = int(a[~weights].min() - a[weights].min())  # the lowest weight onto the lowest kept
    assert not lp.distinct_after(onto)
    ph = sim._build(steps, groups)
    addr, isw, grp, aft = ph.request_arrays()
    ph._req = [(np.append(addr, addr[:1]), np.append(isw, isw[:1]), np.append(grp, grp[:1]),
                np.append(aft, aft[:1]))]
    assert not LoweredPhase(ph, sim.params, sim.rows.first_row).distinct_after(0)
