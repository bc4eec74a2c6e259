"""The iteration cost models: ReuseCost's composition against whole-iteration simulation.

Measured differences (ReuseCost vs ExactCost) are what these tests bound; the numbers at
the time of writing are in the docstrings.
"""

from __future__ import annotations

import numpy as np
import pytest

from neupims_py.compiler.iteration import BatchEntry
from neupims_py.compiler.program import cmd_counts
from neupims_py.serving.components import _new_phase, run_phase
from neupims_py.serving.cost_model import ExactCost, _replay
from neupims_py.serving.orchestrator import Orchestrator

from serving_common import TINY, MICRO, hw_for, requests, reuse_cost

E = BatchEntry
SUB4 = ("system.sub_batch_threshold=4",)
BATCHES = {
    "decodes": [E(i, 1, 100 + 37 * i, i % 32) for i in range(8)],
    "shared-channels": [E(i, 1, 100 + 37 * i, i % 4) for i in range(8)],
    "prefill": [E(i, 1, 60 + 37 * i, i % 32) for i in range(6)] + [E(10, 64, 0, 7)],
    "chunk": [E(i, 1, 60 + 37 * i, i % 32) for i in range(6)] + [E(10, 40, 64, 7)],
}


def _errors(mode, *overrides, batches=BATCHES):
    reuse = reuse_cost(mode, "tiny", overrides)
    out = {}
    for name, batch in batches.items():
        exact = ExactCost(hw_for(mode, *overrides), TINY)
        for e in batch:
            exact.admit(e.req, e.channel, e.kv_len + e.q_len)
        x = exact.iteration_cycles(batch)
        r = reuse.iteration_cycles(batch)
        assert r.sub_batches == x.sub_batches, name
        out[name] = r.cycles / x.cycles - 1
    return out


@pytest.mark.parametrize("mode, overrides", [
    ("npu-only", ()),
    ("npu+pim", ()),
    ("neupims", ()),  # below the sub-batch threshold: pre+mha, post
    ("neupims", ("system.sub_batch_threshold=4",)),  # two interleaved sub-batches
])
def test_reuse_within_seven_percent_of_exact(mode, overrides):
    """Measured (tiny model, one iteration each, a fresh exact simulator), for decodes /
    shared channels / prefill / chunk: npu-only +0.8/+1.7/+1.2/+1.1 %, npu+pim
    -2.8/-0.5/-0.3/-3.7 %, neupims -4.7/-0.3/+1.7/-3.7 %, neupims with sub-batches
    +0.9/-0.1/-0.6/+2.3 % (with pieces averaged over the first refresh interval from fresh
    states: npu-only -0.6/+0.1/-2.1/-2.2 %, npu+pim +0.4/+0.8/+1.7/-3.4 %, neupims
    -4.2/+0.1/+2.3/-3.4 %, neupims with sub-batches -5.1/+1.9/-2.9/+0.2 %; before the K/V write and read steps, the PIM-fraction slowdown
    and per-layer streams: up to -5.2 %). One iteration of the exact simulator moves by
    several percent with where in the refresh interval its phases start, and with where
    the KV rows of the same batch are placed."""
    errs = _errors(mode, *overrides)
    assert max(abs(v) for v in errs.values()) < 0.07, errs


def test_vector_replay_is_exact_on_a_measured_stream():
    """The post phase of the compiler (softmax of PIM results, projection, FFN, every vector
    op) against ReuseCost's replay over the stream it measured without vector ops."""
    cost = reuse_cost("npu+pim", "tiny")
    sim = cost.sim
    for T, kv in ((8, 100), (100, 900)):
        batch = [E(-1 - i, 1, kv + i, i % 32) for i in range(T)]
        for e in batch:
            sim.ensure_kv(e, e.kv_len + 1)
        ph = _new_phase(cost.hw)
        sim._post(ph, 0, batch, "")
        engine = run_phase(ph, sim).cycles
        steps, _ = cost._steps("post", T, cost._pim_lens(batch))
        assert max(_replay(steps, cost.parts.stream("post", T).ends)) + 1 == pytest.approx(engine, abs=0.5)
        for e in batch:
            sim.release(e.req)


def test_token_counts_up_to_the_array_height_share_one_stream():
    parts = reuse_cost("npu+pim", "micro").parts
    assert parts.stream_class(1) == parts.stream_class(128) == 128
    n = parts.measured["stream"]
    assert parts.stream("pre", 3) == parts.stream("pre", 120)
    assert parts.measured["stream"] <= n + 1
    big = parts.stream("pre", 1000).ends[-1]
    assert big > parts.stream("pre", 500).ends[-1] > parts.stream("pre", 128).ends[-1]


def test_grid_and_compute_bound_line_stay_close_to_every_count():
    """Interpolated / extended streams against streams measured at the exact count."""
    grid = reuse_cost("npu+pim", "micro").parts
    exact = type(grid)(grid.hw, grid.model, exact_tokens=True)
    for T in (140, 200, 300, 700, 1500):
        a, b = grid.stream("post", T).ends[-1], exact.stream("post", T).ends[-1]
        assert abs(a / b - 1) < 0.02, (T, a, b)


def test_pim_key_means_same_commands_and_cycles():
    parts = reuse_cost("neupims", "micro").parts
    sim = parts.sim
    assert parts.pim_key(33) == parts.pim_key(64) != parts.pim_key(65)
    counts = []
    for kv in (32, 63):
        e = E(-99, 1, kv, 0)
        sim.ensure_kv(e, kv + 1)
        ph = _new_phase(parts.hw)
        sim._pim_gemv(ph, e, "pim", -1)
        counts.append((cmd_counts(ph), run_phase(ph, sim).cycles))
        sim.release(e.req)
    assert counts[0] == counts[1]


def test_long_writes_are_linear_in_tokens_and_v_columns():
    """K/V writes of more than `banks` tokens, composed from three aligned pieces per octave
    (components.Components.kv_write), against the same writes measured directly. A V burst
    holds 32 tokens of one dimension, so 33 aligned tokens write two V bursts per
    dimension where 32 write one: interpolating linearly in tokens between 32 and 64 (as
    before) was 26-33 % short at 33 and 38 tokens. Measured now (micro, tiny): within 2 %
    everywhere below except drained time at a 31-token offset (-7 %, -8 %: the K writes
    then span one more row group, which the V column count does not see)."""
    for name in ("micro", "tiny"):
        parts = reuse_cost("npu+pim", name).parts
        for q, off in ((33, 0), (38, 0), (40, 20), (63, 0), (90, 0), (100, 17), (130, 0)):
            got, ref = parts.kv_write(q, off), parts._write_at(q, off)
            for f in ("base", "drained_base"):
                assert getattr(got, f) == pytest.approx(getattr(ref, f), rel=0.03), (name, q, off, f)


def test_kv_reads_step_with_v_columns():
    """The cached K/V reads of an NPU attention (components.Components.kv_read) against the
    same reads measured directly: V is read a 32-token burst column at a time, so 33 tokens
    cost about what 64 do. Interpolating between multiples of 32 (as before) was 26 % short
    at 20 tokens and 9 % at 100; from one token above a multiple to the next multiple the
    V columns are the same and the rest is linear (below 32 tokens every count is
    measured). Measured now: within 0.7 % (micro, tiny; 20 to 777 tokens)."""
    for name in ("micro", "tiny"):
        parts = reuse_cost("npu-only", name).parts

        def direct(kv):
            def build(ph, e):
                ph.reads(parts.sim._kv_token_bursts(e, range(0, e.kv_len)), -1)
            return parts._run_on_channel([(build, 1, kv)]).cycles
        for kv in (20, 47, 100, 300):
            assert parts.kv_read(kv).base == pytest.approx(direct(kv), rel=0.02), (name, kv)


def _six_decodes(sim):
    """Six decodes (KV 43, 44, 55, 63, 18, 23 tokens on channels 0-5) holding KV rows in
    `sim`, and the two sub-batches NeuPIMs splits them into."""
    batch = [E(10 + i, 1, kv, i) for i, kv in enumerate((43, 44, 55, 63, 18, 23))]
    for e in batch:
        sim.ensure_kv(e, e.kv_len + 5)
    return (batch, *sim.split_sub_batches(batch))


def test_short_pim_beside_a_stream_slows_it_by_what_was_measured_for_that_fraction():
    """An interleaved phase (sub-batch 1's post and next pre beside sub-batch 2's PIM
    attention, tiny model, three decodes each) composed by ReuseCost against the engine
    running it (from new states, averaged over refresh offsets as the pieces are). The
    PIM covers about 60 % of the stream; taking the slowdown measured with PIM over the
    whole stream, scaled by 60 %, gave +4.4 % (the stream catches up once PIM is over:
    the engine's stream ends 0.2 % later than alone). Measured now: -0.18 % (+0.15 % with
    pieces averaged from fresh states and no PIM lateness)."""
    from neupims_py.serving.cost_model import _Acc
    cost = reuse_cost("neupims", "tiny", ("system.sub_batch_threshold=4",))
    sim = cost.sim
    batch, sb1, sb2 = _six_decodes(sim)
    ph = sim._new_phase()
    sim._post(ph, 0, sb1, "")
    sim._pre(ph, 1, sb1, "")
    sim._mha(ph, 0, sb2, "")
    engine = run_phase(ph, sim).cycles
    composed = cost._sub_phase(_Acc(), "layer", sb1, sb2, 1)
    for e in batch:
        sim.release(e.req)
    assert composed == pytest.approx(engine, rel=0.01)


def test_pim_beside_a_stream_ends_late():
    """An interleaved phase whose PIM side is the longest (micro model: sub-batch 1's last
    post beside sub-batch 2's PIM attention, three decodes each) composed by ReuseCost
    against the engine running it (from new states, averaged over refresh offsets as the
    pieces are). The GEMVs take turns at the banks with the stream's weight reads, so they
    end later than alone (`Components.mixed_lateness`, from the same runs as
    `mixed_slowdown` against the GEMVs alone). Without that: -2.7 %; measured now: +0.3 %."""
    from neupims_py.serving.cost_model import _Acc
    cost = reuse_cost("neupims", "micro", SUB4)
    sim = cost.sim
    batch, sb1, sb2 = _six_decodes(sim)
    ph = sim._new_phase()
    sim._post(ph, 1, sb1, "")
    sim._mha(ph, 1, sb2, "")
    res = run_phase(ph, sim)
    composed = cost._sub_phase(_Acc(), "post", sb1, sb2, 1, None, 1)
    for e in batch:
        sim.release(e.req)
    assert res.pim_end > res.cycles - 10  # the PIM side ends the phase
    assert composed == pytest.approx(res.cycles, rel=0.01)


@pytest.mark.parametrize("model_name, kvs, channels, bound", [
    ("micro", (40, 49, 58, 67, 76, 85), range(6), 0.015),
    ("micro", (20, 33, 47, 90), range(4), 0.015),
    ("tiny", (37, 40, 59), range(3, 6), 0.025),
])
def test_npu_only_layer_at_its_refresh_offsets(model_name, kvs, channels, bound):
    """An npu-only layer of decodes (QKV, K/V writes and reads, attention on the NPU,
    projection and FFN in one phase) composed by ReuseCost at the refresh offset it starts
    at, against the engine running it from there (fresh state, eight offsets over the
    refresh period). The post weights no tile gates wait behind the K/V reads on their
    channels and are served with them, the arrays with attention start their post tiles
    late, and the rest of the post weights are offered in order as tiles two back on an
    array end (double buffering). Shifting the whole post stream to after the last
    attention, as before: micro -7.5 % / -7.2 % (at most -10.3 %), tiny +1.7 %.
    Measured now: mean +0.5 % / +0.7 % (at most 3.4 %), tiny +1.5 % (at most 5.8 %)."""
    from neupims_py.serving.components import refresh_period
    from neupims_py.serving.cost_model import _Acc
    cost = reuse_cost("npu-only", model_name)
    sim = cost.sim
    batch = [E(10 + i, 1, kv, ch) for i, (kv, ch) in enumerate(zip(kvs, channels))]
    for e in batch:
        sim.ensure_kv(e, e.kv_len + 5)
    (_, _, ph), = list(sim.phases(batch, 1))
    period = refresh_period(sim.params)
    errs = []
    for k in range(8):
        offset = k * period // 8 + 100
        engine = run_phase(ph, sim, offset).cycles
        composed = cost._npu_only(_Acc(), batch, 0, 1, None, 10 * period + offset)[0]
        errs.append(composed / engine - 1)
    for e in batch:
        sim.release(e.req)
    assert abs(np.mean(errs)) < bound, errs


def test_layers_whose_weights_do_not_line_up_stream_apart():
    """The micro model's layers are 1.5 MiB of weights apart, the address mapping repeats
    every 1 MiB (one row of every bank of every channel): its odd layers' weights start in
    other banks than its even layers', and the post stream of layer 1 takes other times
    than layer 0's where refreshes fall (24 of the 32 refresh bins: 2145 against 1555
    cycles at bin 1; averaged over the refresh period they come out alike). ReuseCost
    measures a stream for the first layer that lines up with the one it stands for (the
    tiny model's and real models' layers all line up). Checked against the last-layer
    post phase of an interleaved iteration run on the engine at two refresh bins."""
    from neupims_py.serving.cost_model import _Acc
    cost = reuse_cost("neupims", "micro", ("system.sub_batch_threshold=4",))
    parts, sim = cost.parts, cost.sim
    assert [parts.stream_layer("post", n) for n in (0, 1)] == [0, 1]
    assert reuse_cost("neupims", "tiny").parts.stream_layer("post", 1) == 0
    batch = [E(20 + i, 1, 40 + 9 * i, i) for i in range(6)]
    for e in batch:
        sim.ensure_kv(e, e.kv_len + 5)
    phases, _ = sim.plan(batch, 2)
    label, layer, ph = phases[-1]
    assert label == "sb2.post"
    _, sb2 = sim.split_sub_batches(batch)
    apart = []
    for at in (0, 1):
        engine = run_phase(ph, sim, parts.bin_offset(at)).cycles
        last = cost._sub_phase(_Acc(), "post", sb2, None, 1, None, 1, at)
        first = cost._sub_phase(_Acc(), "post", sb2, None, 1, None, 0, at)
        assert last == pytest.approx(engine, rel=0.003), at
        apart.append(abs(first / engine - 1))
    for e in batch:
        sim.release(e.req)
    assert max(apart) > 0.02, apart


def test_a_phase_costs_what_the_engine_clock_advanced():
    """Four write bursts (below the write-drain threshold, so they wait in the write buffer
    until the phase's barrier drains them): the phase is accepted within a few cycles, but
    the writes are in the banks only after an ACT, tRCDWR and CWL at least; the phase
    counts that drain (Phase.run) and the engine clock moved by exactly its cycles."""
    from neupims_py.engine import dram as eng
    cost = reuse_cost("npu+pim", "micro")
    sim, t = cost.sim, cost.hw.memory.timing
    e = E(-500, 4, 0, 0)
    sim.ensure_kv(e, 4)
    ph = _new_phase(cost.hw)
    ph.writes(sim._kv_token_bursts(e, range(0, 1))[:4])
    state = eng.new_state(sim.params)
    state.glob[eng.G_CLK] = 100
    res = ph.run(sim.params, state, sim.max_inject)
    sim.release(e.req)
    assert res.writes == 4
    assert res.cycles == int(state.glob[eng.G_CLK]) - 100
    assert res.cycles >= t.tRCDWR + t.CWL + 4


def test_a_phase_of_npu_tasks_only_ends_with_its_last_task():
    """No memory work: a 50-cycle task from cycle 100 ends at 150 and the next phase
    starts at 151 (a phase ends one cycle after its last event), not after the memory's
    next event (the first refresh, thousands of cycles later)."""
    from neupims_py.engine import dram as eng
    cost = reuse_cost("npu+pim", "micro")
    ph = _new_phase(cost.hw)
    ph.vector("alone", 50)
    state = eng.new_state(cost.sim.params)
    state.glob[eng.G_CLK] = 100
    assert int(state.chan[:, eng.CH_NEXT_REF].min()) > 1000
    res = ph.run(cost.sim.params, state, cost.sim.max_inject)
    assert int(state.glob[eng.G_CLK]) == 151
    assert res.cycles == 51
    assert state.stats[:, int(eng.Stat.REF)].sum() == 0


def test_idle_time_refreshes_on_the_exact_engine():
    """ExactCost runs the engine through the serving loop's idle gaps: its clock is the
    timeline's and every channel refreshed once per refresh interval meanwhile."""
    from neupims_py.engine import dram as eng
    exact = ExactCost(hw_for("npu+pim"), MICRO)
    interval, channels = exact.sim.params.refresh_interval, exact.hw.memory.geometry.channels
    for cycle in (10, 1949, 5000, 123_457):
        exact.idle_until(cycle)
        st = exact.sim.state
        assert int(st.glob[eng.G_CLK]) == cycle
        assert st.stats[:, int(eng.Stat.REF)].sum() == channels * ((cycle - 1) // interval)


def test_the_exact_engine_clock_is_the_serving_timeline():
    """After every iteration of a trace with idle gaps, the exact engine's clock is where
    the serving loop's timeline says the iteration ended."""
    from neupims_py.engine import dram as eng
    hw = hw_for("npu+pim")
    cost = ExactCost(hw, MICRO)
    seen = []

    def observe(i, start, it, entries):
        seen.append((start + it.cycles, int(cost.sim.state.glob[eng.G_CLK])))
    rows = requests([20, 30, 12], [3, 2, 4], arrival_ns=[1_000, 4_000, 90_000])
    result = Orchestrator(hw, MICRO, cost, observer=observe).run(rows)
    assert len(seen) >= 3 and all(a == b for a, b in seen), seen
    assert seen[-1][1] == result.end_cycle


def test_reuse_meets_refreshes_where_the_iteration_starts():
    """One decode iteration (micro, npu+pim, three requests) started at 12 cycles spread
    over the refresh period, from a fresh exact simulator each: ReuseCost composing it at
    the refresh offsets its phases start at against averaged over offsets. Measured: mean
    |error| 1.7 % (at most 4.4 %) against 2.5 % (at most 5.2 %)."""
    cost = reuse_cost("npu+pim", "micro")
    batch = [E(i, 1, 40 + 9 * i, i) for i in range(3)]
    anywhere = cost.iteration_cycles(batch).cycles
    tracked, averaged = [], []
    for k in range(12):
        start = 10_000 + k * 3900 // 12 + 7
        exact = ExactCost(hw_for("npu+pim"), MICRO)
        for e in batch:
            exact.admit(e.req, e.channel, e.kv_len + 1)
        x = exact.iteration_cycles(batch, start=start).cycles
        tracked.append(abs(cost.iteration_cycles(batch, start=start).cycles / x - 1))
        averaged.append(abs(anywhere / x - 1))
    assert np.mean(tracked) < 0.02 and np.mean(tracked) < np.mean(averaged), (tracked, averaged)



@pytest.mark.parametrize("model_name, mode, overrides, seed, bound", [
    *(("micro", "neupims", SUB4, seed, 0.02) for seed in (1, 2, 3)),
    *(("micro", "npu+pim", (), seed, 0.035) for seed in (1, 2, 3)),
    *(("micro", "npu-only", (), seed, 0.02) for seed in (1, 2, 3)),
    *(("tiny", "neupims", SUB4, seed, 0.005) for seed in (1, 2, 3)),
    *(("tiny", "npu+pim", (), seed, 0.005) for seed in (1, 2, 3)),
    *(("tiny", "npu-only", (), seed, 0.005) for seed in (1, 2, 3)),
])
def test_exact_and_reuse_agree_on_a_small_trace(model_name, mode, overrides, seed, bound):
    """The issue's target is 0.5 %: met on the tiny model for seeds 1-3 in every mode; not
    on the micro model. Measured (simulated time of the whole trace, reuse against exact),
    seeds 1 / 2 / 3: micro model, 8 requests: neupims (sub-batches from 4 requests) -0.70 /
    -1.07 / -1.48 %, npu+pim +2.39 / -1.19 / +3.26 %, npu-only +1.89 / +1.19 / +0.97 %;
    tiny model, 6 requests: neupims -0.42 / -0.00 / +0.00 %, npu+pim -0.00 / -0.01 / +0.19 %,
    npu-only +0.03 / -0.10 / +0.35 %. Every iteration of the exact run costed by ReuseCost
    on the same batch at the same start cycle (sum over the iterations): micro neupims
    -0.15 / -1.20 / -1.17 %, npu+pim -1.07 / -0.90 / -0.66 %, npu-only +1.66 / +1.47 /
    +1.22 %; tiny neupims -0.35 / -0.12 / +0.85 %, npu+pim +0.09 / +0.01 / +0.21 %, npu-only
    -0.55 / +0.10 / +0.97 %. (Before short pieces were averaged over the refresh period from
    an idled state and the PIM beside a stream ran late (`mixed_lateness`): micro -1.71 /
    -1.02 / -1.54, +2.25 / -0.53 / +2.74, +0.97 / +4.08 / +0.48 %; tiny -0.01 / -0.56 /
    +0.01, -0.01 / -0.24 / +0.00, -0.04 / -0.31 / +0.36 %; per iteration micro -1.36 /
    -1.24 / -1.54, -1.19 / -0.91 / -0.68, +1.23 / +0.44 / -0.06 %, tiny -0.32 / -0.30 /
    +0.71, +0.08 / -0.13 / +0.03, -0.17 / +0.31 / +0.83 %. Before the npu-only post stream
    was replayed tile by tile: micro npu-only -2.5 / -0.0 / -0.7 % whole; tiny -0.3 / -0.9
    / -0.9 %; before the first and last interleaved phases' streams were measured at
    their refresh offsets, neupims micro -1.91 / -1.02 / -2.24 %, tiny +0.15 / +0.21 /
    +0.64 %. Before phases counted the barrier's write drain and ReuseCost composed
    at the refresh offsets: micro -1.3 / -3.1 / -0.4, -2.0 / -1.5 / -2.3, -2.2 / -6.7 /
    -2.4 %; tiny +0.3 / -0.0 / +1.1, +0.7 / +0.6 / +0.8, +1.0 / +1.2 / +0.7 %.)

    What the timeline is: a phase costs what the engine clock advanced, the write drain at
    its barrier included (Phase.run: a barrier means memory quiescent, as PIM reads K/V in
    the banks, not in the controller's write buffer), and the exact engine runs through
    the loop's idle gaps (ExactCost.idle_until), so the engine's refresh schedule is the
    timeline's. With a start cycle, ReuseCost composes npu+pim and npu-only iterations (and
    neupims ones below the sub-batch threshold) layer by layer, each weight stream and
    decode piece measured at the refresh offset it starts at (Components.refresh_bin): a
    short stream on the micro model takes 1687 cycles or up to 21 % more depending on where
    the next refresh falls and which rank it takes. Interleaved iterations stay averaged
    over offsets but for the streams of their first and last phases, which no PIM runs
    beside (at the offsets throughout, the traces came out 0.1-1 % further from exact); their weight streams slow down beside PIM as measured
    beside mixed decodes (Components.mixed_slowdown).

    What is left: (1) one exact iteration moves by several percent with the cycle it
    starts at (a tiny neupims decode alone: 25,784 cycles at one start, 27,217-28,353
    within 100 cycles of it; std over the refresh period 1.4-2.2 %), more finely than the
    refresh bins resolve and at offsets that composition errors of a few hundred cycles
    move; so a trace of 15-25 iterations carries a few tenths of a percent of this noise
    (tiny neupims seed 3: one decode alone +9.8 %, +0.4 % of the trace). Interleaved
    decode iterations lock into the refresh period in the exact run (tiny: 42,900 cycles,
    11 refresh intervals, iteration after iteration, against a mean of 43,178 over start
    offsets, which ReuseCost averaged over offsets meets to +0.35 %). (2) The micro traces are chaotic: an
    iteration 1-7 % short (a prompt's first iteration after an idle gap, whose post
    phases meet a refresh the exact run's write drain postponed; a prefill joining
    decodes) ends before an arrival the exact run's iteration ended after, so the two runs
    batch differently from there on (npu+pim seed 3: +3.3 %, though the exact run's own
    batches compose to -0.7 %). (3) Pieces start with every bank closed; the exact run's
    phases start with the rows earlier phases left open (micro, seed 1: a row open in
    every bank before 11-19 % of the phases in the PIM modes, none in npu-only, where at
    most 34 of 1024 banks are open), and copying just the open rows into an idled state
    reproduces an exact phase to the cycle (micro npu+pim: phases 3.5-12.7 % longer than
    with every bank closed). Weight streams measured with a row open in every bank: micro
    npu+pim -0.0 / -0.0 / -0.0 %, neupims +0.5 / -0.3 / -1.1 %, but micro npu-only +1.3 /
    +1.2 / +1.6 % and tiny npu-only +0.8 % (seed 3); with the banks a stream leaves open
    itself, mixed. What a piece would need is the state its predecessor phase leaves. (4)
    The npu-only layer composition is +0.5 to +1.7 % over the engine at the same refresh
    offsets (test_npu_only_layer_at_its_refresh_offsets); npu-only prompts alone: the
    controller serves the ungated post weights behind a prompt's K/V writes out of program
    order (the projection's last), which the tile replay does not see (micro -4 %)."""
    model = {"micro": MICRO, "tiny": TINY}[model_name]
    rng = np.random.default_rng(seed)
    n = 8 if model_name == "micro" else 6
    rows = requests(rng.integers(16, 64, n), rng.integers(8, 16, n),
                    arrival_ns=np.sort(rng.integers(0, 200_000, n)))
    hw = hw_for(mode, *overrides)
    exact = Orchestrator(hw, model, ExactCost(hw, model)).run(rows)
    reuse = Orchestrator(hw, model, reuse_cost(mode, model_name, overrides)).run(rows)
    diff = reuse.end_cycle / exact.end_cycle - 1
    assert abs(diff) < bound, diff
    assert len(reuse.iterations) == pytest.approx(len(exact.iterations), abs=2)
