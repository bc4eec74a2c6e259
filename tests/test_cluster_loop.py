"""Several devices: pipeline stages, KV transfers, capacity back-pressure, routing, and a
1-device cluster against the single-device loop."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest

from neupims_py.cluster import Cluster, load_cluster
from neupims_py.cluster.link import Link
from neupims_py.cluster.results import cluster_request_rows, summarize_cluster
from neupims_py.cluster.routing import make_router
from neupims_py.compiler.iteration import BatchEntry
from neupims_py.serving.cost_model import ReuseCost
from neupims_py.serving.metrics import Clock, request_rows
from neupims_py.serving.request_state import FINISHED

from serving_common import MICRO, TINY, requests, serve

CLOCK = Clock(1000.0)  # both presets run at 1 GHz: ns = cycles


@cache
def _reuse(hw, model):
    """One ReuseCost per (hardware, model) for the session (it keeps no request state)."""
    return ReuseCost(hw, model)


def run_cluster(tmp_path, text, rows, model=MICRO, **kw):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    cfg = load_cluster(path, model)
    cluster = Cluster(cfg, model, reuse_cost=_reuse, **kw)
    return cluster.run(rows), cfg, cluster


def test_one_device_cluster_equals_single_device(tmp_path):
    """Sessions, think times, chunked prefill, a rejection: every request field the same."""
    rows = requests([8, 5, 30, 12, 7, 3000, 9], [3, 2, 5, 9, 1, 2, 4],
                    arrival_ns=[0, 1, 500, 900, 5000, 5000, 6000],
                    session_id=[-1, 7, -1, 7, -1, -1, 7], turn=[-1, 0, -1, 1, -1, -1, 2],
                    think_time_ns=[0, 0, 0, 3000, 0, 0, 0], history_tokens=[0, 0, 0, 7, 0, 0, 21])
    over = ("scheduler.policy=chunked", "scheduler.max_batch_tokens=16", "scheduler.max_prompt_tokens=100")
    single, _ = serve(rows, "neupims", *over)
    params = ", ".join(over)
    cr, cfg, _ = run_cluster(tmp_path, f"cluster:\n  pools:\n    - {{name: a, hw: neupims, params: [{params}]}}\n", rows)
    a, b = request_rows(single, CLOCK), cluster_request_rows(cr, CLOCK)
    assert [x["status"] for x in a].count("rejected") == 1
    for x, y in zip(a, b, strict=True):
        assert {k: y[k] for k in x} == x
    assert [r.token_cycles for r in cr.requests] == [r.token_cycles for r in single.requests]
    assert cr.end_cycle == single.end_cycle
    assert cr.devices[0].records == [tuple(r) for r in single.iterations.tolist()]
    s = summarize_cluster(cr, CLOCK, cfg=cfg, meta={})
    assert s["devices"][0]["iterations"] == len(single.iterations)


def test_two_mixed_devices_round_robin_serve_their_share_as_single_devices(tmp_path):
    """Round-robin sends requests 0, 2, 4 to device 0 and 1, 3, 5 to device 1; devices do
    not interact, so each request's times are those of a single device given its share."""
    rows = requests([8, 5, 30, 12, 7, 20], [3, 2, 5, 9, 1, 4], arrival_ns=[0, 1, 500, 900, 5000, 5000])
    cr, cfg, _ = run_cluster(tmp_path, "cluster:\n  arrival_routing: round-robin\n  pools:\n"
                             "    - {name: a, hw: neupims, count: 2}\n", rows)
    assert [cr.served_by[i].name for i in range(6)] == ["a.0", "a.1"] * 3
    for k in (0, 1):
        single, _ = serve(rows[k::2])
        got = [r for r in cr.requests if r.index % 2 == k]
        assert [r.token_cycles for r in got] == [r.token_cycles for r in single.requests]
        assert [r.channel for r in got] == [r.channel for r in single.requests]


def _stage_cost(model, pp):
    from neupims_py.config import load_hw
    return _reuse(load_hw("neupims"), dataclasses.replace(model, pp=pp))


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_two_stage_pipeline_iteration_time_by_hand(tmp_path, micro_batches):
    """TINY (2 layers) on 2 stages of 1 layer. Iteration times from the single-device cost
    of one stage's layer, GPipe by hand, plus the link: 64 GB/s (bytes / 64 ns), 1 us."""
    rows = requests([8, 5, 12], 2)
    text = ("cluster:\n  pools:\n    - name: p\n      hw: neupims\n      count: 2\n      pp: 2\n"
            f"      micro_batches: {micro_batches}\n"
            "      stage_link: {bandwidth_gbps: 64, latency_us: 1}\n")
    if micro_batches == 1:
        text = text.replace("      micro_batches: 1\n", "")
    cr, cfg, _ = run_cluster(tmp_path, text, rows, model=TINY)
    stages = [_stage_cost(TINY, 2) for _ in range(2)]  # one cost model (engine) per stage
    lat = 1000
    # min-load channels: 0, 1, 2; prefill then one decode step each
    iters = [[BatchEntry(0, 8, 0, 0), BatchEntry(1, 5, 0, 1), BatchEntry(2, 12, 0, 2)],
             [BatchEntry(0, 1, 8, 0), BatchEntry(1, 1, 5, 1), BatchEntry(2, 1, 12, 2)]]
    t = 0
    link_free = 0
    ends, busy0, busy1 = [], 0, 0
    for entries in iters:
        groups = [entries] if micro_batches == 1 else [entries[:2], entries[2:]]
        s0 = s1 = t
        for g in groups:
            # each stage costs the micro-batch at the cycle it starts it (refresh schedule)
            c0 = stages[0].iteration_cycles(g, start=s0).cycles
            s0 += c0  # stage 0 runs the micro-batches back to back
            occ = sum(e.q_len for e in g) * TINY.d_model * 2 // 64
            send = max(s0, link_free)
            link_free = send + occ
            start1 = max(s1, send + occ + lat)
            c1 = stages[1].iteration_cycles(g, start=start1).cycles
            s1 = start1 + c1
            busy0 += c0
            busy1 += c1
        t = s1
        ends.append(t)
    r0, r1, r2 = cr.requests
    assert [r.token_cycles for r in cr.requests] == [ends] * 3
    assert cr.end_cycle == ends[-1]
    s = summarize_cluster(cr, CLOCK, cfg=cfg, meta={})
    assert s["pools"]["p"]["pipeline_bubble"] == pytest.approx(1 - (busy0 + busy1) / (2 * ends[-1]))
    assert [d["busy_cycles"] for d in s["devices"]] == [busy0, busy1]



def test_a_pipeline_refuses_one_exact_cost_for_two_stages(tmp_path):
    """ExactCost holds one engine (clock, open rows, refresh timing): two stages on it would
    interleave their timelines on one device. A ReuseCost keeps no state and may be shared."""
    from neupims_py.cluster.device import Pipeline
    from neupims_py.config import load_hw
    from neupims_py.serving.cost_model import ExactCost

    path = tmp_path / "cluster.yaml"
    path.write_text("cluster:\n  pools:\n    - {name: p, hw: neupims, count: 2, pp: 2, "
                    "stage_link: {bandwidth_gbps: 64, latency_us: 1}}\n")
    pool = load_cluster(path, TINY).pools[0]
    exact = ExactCost(load_hw("neupims"), dataclasses.replace(TINY, pp=2))
    with pytest.raises(ValueError, match="give every stage its own"):
        Pipeline("p.0", pool, TINY, [exact, exact])
    shared = _stage_cost(TINY, 2)
    assert Pipeline("p.0", pool, TINY, [shared, shared]).costs == [shared, shared]
    two = [ExactCost(load_hw("neupims"), dataclasses.replace(TINY, pp=2)) for _ in range(2)]
    assert Pipeline("p.1", pool, TINY, two).costs == two

DISAGG = """cluster:
  link: {{bandwidth_gbps: {bw}, latency_us: 2}}
  decode_routing: {routing}
  pools:
    - {{name: pre, hw: npu-only, count: 1, role: prefill, cost_per_hour: 2}}
    - {{name: dec, hw: neupims, count: {n_dec}, role: decode, cost_per_hour: 3{params}}}
"""


@pytest.mark.parametrize("bw", [64, 50])
def test_disaggregated_transfer_time_is_bytes_over_bandwidth_plus_latency(tmp_path, bw):
    rows = requests([8, 5, 30, 12, 7, 40], [3, 2, 5, 9, 1, 4], arrival_ns=[0, 1, 500, 900, 5000, 5000])
    cr, cfg, _ = run_cluster(tmp_path, DISAGG.format(bw=bw, routing="round-robin", n_dec=2, params=""), rows)
    out = {row["id"]: row for row in cluster_request_rows(cr, CLOCK)}
    assert all(r.status == FINISHED for r in cr.requests)
    for r in cr.requests:
        row = out[r.id]
        if r.output <= 1:  # done with the first token, on the prefill device
            assert row["decode_device"] is None and row["transfer_ns"] is None
            continue
        nbytes = 2 * MICRO.layers * MICRO.heads * (MICRO.d_model // MICRO.heads) * 2 * r.context
        assert row["kv_transfer_bytes"] == nbytes
        exact = nbytes / bw + 2000  # ns
        assert exact <= row["transfer_ns"] < exact + 1  # whole cycles of 1 ns
        if bw == 64:
            assert row["transfer_ns"] == exact
        t = cr.transfers[r.index]
        # TTFT ends on the prefill device; decode tokens come after the transfer
        assert r.first_token == t.queued and r.token_cycles[0] == t.queued
        assert r.token_cycles[1] > t.end and len(r.token_cycles) == r.output
    # round-robin over the decode devices, in the order prefills completed
    decoded = [cr.transfers[i] for i in sorted(cr.transfers, key=lambda i: (cr.transfers[i].queued, i))]
    assert [t.dst.name for t in decoded] == ["dec.0", "dec.1"] * (len(decoded) // 2) + ["dec.0"] * (len(decoded) % 2)
    s = summarize_cluster(cr, CLOCK, cfg=cfg, meta={})
    assert s["cost"]["per_hour"] == 2 + 2 * 3
    assert s["cost"]["run_dollars"] == pytest.approx(8 * cr.end_cycle * 1e-9 / 3600)
    assert s["transfers"]["count"] == len(decoded)


def test_decode_kv_capacity_blocks_transfers_until_memory_frees(tmp_path):
    """The decode device holds 50 KV tokens: two requests of 40 + 4 tokens are prefilled
    together, the second's transfer waits until the first has finished decoding."""
    rows = requests([40, 40], 4)
    params = ", params: [scheduler.max_total_tokens=50]"
    cr, cfg, _ = run_cluster(tmp_path, DISAGG.format(bw=64, routing="least-kv", n_dec=1, params=params), rows)
    r0, r1 = cr.requests
    t0, t1 = cr.transfers[0], cr.transfers[1]
    assert t0.queued == t1.queued == r0.first_token == r1.first_token  # one prefill iteration
    assert t0.start == t0.queued
    assert t1.start == r0.finish > t1.queued  # blocked until r0 freed its rows
    assert r1.token_cycles[1] > t1.end
    dec = cr.devices[1]
    assert max(rec[8] for rec in dec.records) <= 50  # kv_tokens of every iteration
    assert r0.finish < r1.token_cycles[1] and r1.status == FINISHED
    # without the limit, the second only waits for the link to carry the first's bytes
    cr2, _, _ = run_cluster(tmp_path, DISAGG.format(bw=64, routing="least-kv", n_dec=1, params=""), rows)
    a, b = cr2.transfers[0], cr2.transfers[1]
    assert a.start == b.queued and b.start == a.start + a.nbytes // 64


def test_link_serializes_transfers_and_overlaps_latency():
    from neupims_py.cluster.config import LinkConfig
    link = Link(LinkConfig(bandwidth_gbps=2.0, latency_us=0.5), 1.0)
    assert link.send(0, 100) == (0, 50 + 500)
    assert link.send(10, 100) == (50, 100 + 500)  # waits for the first's 50 cycles only
    assert link.send(1000, 1) == (1000, 1001 + 500)


class _Fake:
    def __init__(self, name, n, kv):
        self.name, self.n, self.kv = name, n, kv

    def load_requests(self):
        return self.n

    def load_kv_tokens(self):
        return self.kv


def test_routing_policies():
    devs = [_Fake("a", 3, 10), _Fake("b", 1, 50), _Fake("c", 1, 5)]
    rr = make_router("round-robin")
    assert [rr.choose(devs).name for _ in range(4)] == ["a", "b", "c", "a"]
    assert make_router("least-loaded").choose(devs).name == "b"  # ties: the first
    assert make_router("least-kv").choose(devs).name == "c"
    with pytest.raises(Exception, match="least-kv"):
        make_router("fastest")


@pytest.mark.parametrize("bw", [64, 4])
def test_kv_overlap_sends_layer_by_layer_during_the_prefill(tmp_path, bw):
    """MICRO has 2 layers: half the KV is ready halfway through the prefill iteration
    [s, e], the rest at e. Fast link (64 GB/s): the last half arrives a half's occupancy
    plus the latency after e. Slow link (4 GB/s): the link is the bottleneck from the
    first half on: ready_0 + 2 halves' occupancy + latency."""
    rows = requests([40], 4)
    text = DISAGG.format(bw=bw, routing="round-robin", n_dec=1, params="").replace(
        "  decode_routing", "  kv_overlap: true\n  decode_routing")
    cr, cfg, _ = run_cluster(tmp_path, text, rows)
    (r,) = cr.requests
    t = cr.transfers[0]
    s, e = 0, r.first_token
    half = 2048 * 40 // 2 // bw  # cycles one layer's K/V holds the link
    ready0 = s + -(-(e - s) // 2)
    assert t.queued == s and t.start == ready0
    if bw == 64:
        assert half < e - ready0
        assert t.end == e + half + 2000
    else:
        assert half > e - ready0
        assert t.end == ready0 + 2 * half + 2000
    assert r.token_cycles[1] > t.end and r.status == FINISHED
    # without overlap the whole cache leaves at e
    plain, _, _ = run_cluster(tmp_path, DISAGG.format(bw=bw, routing="round-robin", n_dec=1, params=""), rows)
    assert plain.transfers[0].end == e + 2 * half + 2000 > t.end


def test_kv_overlap_without_room_waits_as_without_overlap(tmp_path):
    rows = requests([40, 40], 4)
    text = DISAGG.format(bw=64, routing="least-kv", n_dec=1,
                         params=", params: [scheduler.max_total_tokens=50]").replace(
        "  decode_routing", "  kv_overlap: true\n  decode_routing")
    cr, _, _ = run_cluster(tmp_path, text, rows)
    r0, r1 = cr.requests
    t0, t1 = cr.transfers[0], cr.transfers[1]
    assert t0.queued == 0 < t0.start < r0.first_token  # overlapped with the prefill
    assert t1.queued == r1.first_token and t1.start == r0.finish  # waited for room
    assert t1.end == t1.start + 2048 * 40 // 64 + 2000


def test_pipelined_decode_pool_receives_each_stage_its_layers_in_parallel(tmp_path):
    """Decode replicas of 2 stages (1 layer each of MICRO's 2): each transfer is two
    halves on two links side by side, so it takes bytes / 2 / bandwidth + latency."""
    rows = requests([8, 30, 12], [3, 5, 4], arrival_ns=[0, 0, 20000])
    text = DISAGG.format(bw=64, routing="round-robin", n_dec=2, params=", pp: 2")
    cr, cfg, _ = run_cluster(tmp_path, text, rows)
    assert [d.name for d in cr.devices] == ["pre.0", "dec.0"]
    assert all(r.status == FINISHED and len(r.token_cycles) == r.output for r in cr.requests)
    for r in cr.requests:
        t = cr.transfers[r.index]
        assert t.end - t.start == 2048 * r.context // 2 // 64 + 2000
    assert sorted(cr.links) == [("pre.0", "dec.0.s0"), ("pre.0", "dec.0.s1")]
    assert [link.bytes for _, link in sorted(cr.links.items())] == [1024 * (8 + 30 + 12)] * 2


def test_pipelined_prefill_pool_sends_each_stage_share(tmp_path):
    rows = requests([8, 30], [3, 5])
    text = DISAGG.format(bw=64, routing="round-robin", n_dec=1, params="").replace(
        "count: 1, role: prefill", "count: 2, pp: 2, micro_batches: 2, role: prefill")
    cr, cfg, _ = run_cluster(tmp_path, text, rows)
    assert all(r.status == FINISHED and len(r.token_cycles) == r.output for r in cr.requests)
    assert sorted(cr.links) == [("pre.0.s0", "dec.0"), ("pre.0.s1", "dec.0")]
    for r in cr.requests:
        t = cr.transfers[r.index]
        assert t.queued == r.first_token and t.end - t.start == 2048 * r.context // 2 // 64 + 2000


def test_mixed_pools_of_different_hardware_share_the_arrivals(tmp_path):
    rows = requests([8, 5, 30, 12], [3, 2, 5, 4], arrival_ns=[0, 1, 500, 900])
    cr, cfg, _ = run_cluster(tmp_path, "cluster:\n  arrival_routing: round-robin\n  pools:\n"
                             "    - {name: pim, hw: neupims}\n    - {name: base, hw: npu-only}\n", rows)
    assert [cr.served_by[i].name for i in range(4)] == ["pim.0", "base.0"] * 2
    single, _ = serve(rows[1::2], "npu-only")
    assert [r.token_cycles for r in cr.requests[1::2]] == [r.token_cycles for r in single.requests]
    s = summarize_cluster(cr, CLOCK, cfg=cfg, meta={})
    assert [d["mode"] for d in s["devices"]] == ["neupims", "npu-only"]
    assert s["pools"]["base"]["utilization"]["pim"] == 0.0 < s["pools"]["pim"]["utilization"]["pim"]
