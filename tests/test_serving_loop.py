"""The serving loop: token times, admission limits, rejections, multi-turn release, placement."""

from __future__ import annotations

import math

import pytest

from neupims_py.compiler.iteration import BatchEntry
from neupims_py.serving.kv_placement import KvPlacement
from neupims_py.serving.metrics import Clock, request_rows, summarize
from neupims_py.serving.request_state import FINISHED, REJECTED
from neupims_py.serving.scheduler import make_scheduler
from neupims_py.errors import UserError
from neupims_py.serving.orchestrator import ITERATION_FIELDS

from serving_common import hw_for, requests, reuse_cost, serve


def col(result, name):
    return result.iterations[:, ITERATION_FIELDS.index(name)]


def test_two_requests_token_times_by_hand():
    """r0 (8 prompt, 3 output) arrives at 0, r1 (5, 2) at 1 ns, during r0's prefill: it
    waits for the next iteration. Channels by min-load: r0 -> 0, r1 -> 1 (0 holds 8). Each
    iteration costs what its batch costs starting where the previous one ended."""
    rows = requests([8, 5], [3, 2], arrival_ns=[0, 1])
    result, _ = serve(rows)
    cost = reuse_cost("neupims", "micro")
    c0 = cost.iteration_cycles([BatchEntry(0, 8, 0, 0)], start=0).cycles
    c1 = cost.iteration_cycles([BatchEntry(0, 1, 8, 0), BatchEntry(1, 5, 0, 1)], start=c0).cycles
    c2 = cost.iteration_cycles([BatchEntry(0, 1, 9, 0), BatchEntry(1, 1, 5, 1)], start=c0 + c1).cycles
    r0, r1 = result.requests
    assert r0.token_cycles == [c0, c0 + c1, c0 + c1 + c2]
    assert r1.token_cycles == [c0 + c1, c0 + c1 + c2]
    assert (r0.channel, r1.channel) == (0, 1)
    assert r1.release == 1 and r1.first_scheduled == c0
    assert r0.finish == r1.finish == result.end_cycle == c0 + c1 + c2
    assert list(col(result, "cycles")) == [c0, c1, c2]
    assert list(col(result, "prefill_tokens")) == [8, 5, 0]
    assert list(col(result, "decode_tokens")) == [0, 1, 2]
    rows_out = request_rows(result, Clock(1000.0))  # 1 GHz: ns = cycles
    assert rows_out[1]["ttft_ns"] == c0 + c1 - 1
    assert rows_out[0]["tpot_ns"] == (c1 + c2) / 2
    assert rows_out[0]["e2e_ns"] == c0 + c1 + c2


def test_max_batch_size():
    result, _ = serve(requests([4] * 4, 3), "neupims", "scheduler.max_batch_size=2")
    assert col(result, "requests").max() == 2
    r = result.requests
    assert all(x.status == FINISHED for x in r)
    assert r[2].first_scheduled >= min(r[0].finish, r[1].finish)


def test_max_batch_tokens_orca_waits_and_rejects():
    rows = requests([8, 5, 12], 2)
    result, _ = serve(rows, "neupims", "scheduler.max_batch_tokens=10")
    r0, r1, r2 = result.requests
    assert r0.first_scheduled == 0 and r1.first_scheduled > 0  # 8 + 5 > 10
    assert col(result, "prefill_tokens")[:2].tolist() == [8, 5]
    assert (col(result, "prefill_tokens") + col(result, "decode_tokens")).max() <= 10
    assert r2.status == REJECTED and "max_batch_tokens 10" in r2.reason


def test_chunked_prefill_splits_prompts():
    result, _ = serve(requests([10], 3), "neupims", "scheduler.policy=chunked",
                      "scheduler.max_batch_tokens=4")
    assert col(result, "prefill_tokens").tolist() == [4, 4, 2, 0, 0]
    assert col(result, "decode_tokens").tolist() == [0, 0, 0, 1, 1]
    r = result.requests[0]
    assert r.first_token == sum(col(result, "cycles")[:3])
    # a chunk after the first attends over the cached tokens: exactly the costs of that
    cost = reuse_cost("neupims", "micro")
    start = int(col(result, "start_cycle")[1])
    assert start == col(result, "cycles")[0]
    assert col(result, "cycles")[1] == cost.iteration_cycles([BatchEntry(0, 4, 4, 0)], start=start).cycles


def test_chunked_budget_is_shared_with_decodes():
    rows = requests([6, 9], [4, 2], arrival_ns=[0, 1])
    result, _ = serve(rows, "neupims", "scheduler.policy=chunked", "scheduler.max_batch_tokens=5")
    tokens = col(result, "prefill_tokens") + col(result, "decode_tokens")
    assert tokens.max() <= 5
    assert sum(col(result, "prefill_tokens")) == 15
    assert all(x.status == FINISHED for x in result.requests)


def test_max_total_tokens_serialises_requests():
    result, orch = serve(requests([8, 8], 7), "neupims", "scheduler.max_total_tokens=20")
    r0, r1 = result.requests
    assert orch.limits.max_total_tokens == 20
    assert r1.first_scheduled >= r0.finish
    assert col(result, "requests").max() == 1


@pytest.mark.parametrize("override, rows, needle", [
    ("scheduler.max_request_tokens=20", ([8, 4], [15, 4]), "max_request_tokens 20"),
    ("scheduler.max_prompt_tokens=6", ([8, 4], [3, 3]), "max_prompt_tokens 6"),
    ("scheduler.max_total_tokens=12", ([8, 4], [5, 3]), "max_total_tokens 12"),
])
def test_requests_that_never_fit_are_rejected_with_a_reason(override, rows, needle):
    result, orch = serve(requests(*rows), "neupims", override)
    r0, r1 = result.requests
    assert r0.status == REJECTED and needle in r0.reason
    assert r1.status == FINISHED
    summary = summarize(result, Clock(1000.0), hw=orch.hw, meta={})
    assert summary["requests"]["rejected"] == 1
    assert list(summary["requests"]["rejected_reasons"]) == [r0.reason]
    out = request_rows(result, Clock(1000.0))
    assert out[0]["status"] == "rejected" and out[0]["first_token_ns"] is None


def test_derived_limits_come_from_memory():
    _, orch = serve(requests([4], 2))
    p = orch.placement
    per_channel = p.channel_token_capacity()
    assert p.rows_for(per_channel) <= p.rows_per_channel < p.rows_for(per_channel + 1)
    assert orch.limits.max_request_tokens == per_channel
    assert orch.limits.max_total_tokens == per_channel * p.channels


def test_multi_turn_release_after_previous_turn_and_think_time():
    # session 7: turn 0 (6 + 3), turn 1 carries 9 tokens of history; session 8 alone
    rows = requests([6, 5, 4], [3, 4, 2], arrival_ns=[0, 100, 1000],
                    session_id=[7, 8, 7], turn=[0, -1, 1], think_time_ns=[0, 0, 1000],
                    history_tokens=[0, 0, 9])
    rows["session_id"][1] = -1
    result, _ = serve(rows)
    t0, other, t1 = result.requests
    assert t1.context == 13
    assert t1.release == t0.finish + 1000  # arrival_ns 1000 is earlier than that
    assert t1.first_scheduled >= t1.release
    assert col(result, "prefill_tokens").tolist().count(13) == 1
    assert all(r.status == FINISHED for r in result.requests)
    assert other.first_scheduled < t0.finish


def test_a_rejected_turn_rejects_the_rest_of_its_session():
    rows = requests([9, 4], [3, 2], session_id=[3, 3], turn=[0, 1], think_time_ns=[0, 50],
                    history_tokens=[0, 12])
    result, _ = serve(rows, "neupims", "scheduler.max_prompt_tokens=8")
    t0, t1 = result.requests
    assert t0.status == t1.status == REJECTED
    assert "session 3" in t1.reason


def test_channel_policies():
    rows = requests([30, 10, 20, 5], 2)
    rr, _ = serve(rows, "neupims", "scheduler.channel_policy=round-robin")
    assert [r.channel for r in rr.requests] == [0, 1, 2, 3]
    ml, _ = serve(requests([30, 10, 20, 5], 2, arrival_ns=[0, 0, 0, 0]), "neupims",
                  "scheduler.channel_policy=min-load", "scheduler.max_batch_size=256")
    assert [r.channel for r in ml.requests] == [0, 1, 2, 3]  # all empty: lowest first
    a, _ = serve(rows, "neupims", "scheduler.channel_policy=random", seed=5)
    b, _ = serve(rows, "neupims", "scheduler.channel_policy=random", seed=5)
    assert [r.channel for r in a.requests] == [r.channel for r in b.requests]


def _tight_placement(channel_full: str) -> KvPlacement:
    sim = reuse_cost("neupims", "micro").sim
    # 10 rows per bank left in every channel: rows_for(32) = 1 K + 8 V + 1 scratch = 10
    return KvPlacement(sim.layout, sim.kv, sim.layout.rows - 10, policy="min-load",
                       channel_full=channel_full)


def _others_busier(p: KvPlacement) -> None:
    """Make every channel but 0 far busier by the min-load estimate, so channel 0 (full or
    not) is the one min-load picks."""
    p.load[1:] = [10**9] * (p.channels - 1)


def test_channel_full_wait_and_migrate():
    wait = _tight_placement("wait")
    assert wait.rows_for(32) == 10 and not wait.fits_empty_channel(33)
    assert wait.place(1, 32, 0) == 0
    _others_busier(wait)
    assert wait.place(2, 32, 0) is None  # channel 0 is picked and full: the request waits
    wait.release(1)
    assert wait.place(2, 32, 0) == 0
    migrate = _tight_placement("migrate")
    assert migrate.place(1, 32, 0) == 0
    _others_busier(migrate)
    assert migrate.place(2, 32, 0) == 1  # the channel with the most free rows
    assert migrate.free_rows()[:2] == [0, 0]


def _neupims_estimate(kv_len, e, dk, elems_per_row, banks):
    """Scheduler::estimate_mha_latency of the NeuPIMs artifact, written out again."""
    logits = math.ceil(e / elems_per_row) * (100 + math.ceil(kv_len / banks) * 184)
    attend = math.ceil(kv_len / elems_per_row) * (e // dk) * (100 + math.ceil(dk / banks) * 184)
    return logits + attend


def test_min_load_follows_kv_growth():
    p = _tight_placement("wait")
    est = lambda n: _neupims_estimate(n, p.kv.e, p.kv.head_dim, p.kv.L.elems_per_row, p.kv.L.banks)
    assert p.place(1, 16, 10) == 0
    assert p.place(2, 16, 4) == 1
    p.grow(2, 7)  # channel 1 now holds 11 tokens
    assert p.choose() == 2
    assert p.load[:3] == [est(10), est(11), 0]
    p.release(1)
    assert p.load[0] == 0 and p.choose() == 0


def test_min_load_counts_a_fixed_cost_per_request():
    """Two short requests cost more than one of their combined length (NeuPIMs' estimate has
    a per-request GWRITE part and rounds tiles up), so a third short one avoids them."""
    p = _tight_placement("wait")
    est = lambda n: _neupims_estimate(n, p.kv.e, p.kv.head_dim, p.kv.L.elems_per_row, p.kv.L.banks)
    assert 2 * est(1) > est(2)
    p.load[:3] = [2 * est(1), est(2), 10**9]
    p.load[3:] = [10**9] * (p.channels - 3)
    assert p.choose() == 1


def test_unknown_scheduler_lists_the_valid_ones():
    with pytest.raises(UserError, match="valid: orca, chunked"):
        make_scheduler("fcfs", None)
    with pytest.raises(UserError, match="did you mean 'chunked'"):
        hw_for("neupims", "scheduler.policy=chunk")
