"""`neupims-sim run --chrome-trace`: Trace Event format, named tracks, spans from the run's
own timings (the iterations of iterations.csv, the operator cycles of the same rows), the
window, the cap, and no effect on the results."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import defaultdict

import pytest
import yaml

from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.results.chrome_trace import (
    TID_ARRAY,
    TID_ARRAYS,
    TID_ITERATIONS,
    TID_PHASES,
    TID_PIM,
    TID_VECTOR,
    MAX_EVENTS,
    ChromeTrace,
    parse_window,
)
from neupims_py.serving.orchestrator import Orchestrator

from serving_common import MICRO, hw_for, requests, reuse_cost, serve, write_test_trace

NS = 1e-3  # timestamps are microseconds, rounded to the nanosecond
# every run here: the micro model (2 layers), neupims preset (8 arrays, 32 channels, 1 GHz)
LAYERS, ARRAYS, CHANNELS = 2, 8, 32
ROWS = dict(prompt=[8, 5, 30, 12, 20, 7], output=[4, 6, 2, 5, 3, 8],
            arrival_ns=[0, 10, 2000, 2000, 3000, 40000])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("trace")
    model = d / "micro.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    trace = d / "t.h5"
    write_test_trace(trace, requests(ROWS["prompt"], ROWS["output"], arrival_ns=ROWS["arrival_ns"]))
    return d, str(model), str(trace)


def _run(setup, name, *extra):
    d, model, trace = setup
    out, tr = d / name, d / f"{name}.json"
    assert main(["run", "neupims", trace, "--model", model, "--quiet", "--out", str(out),
                 "--chrome-trace", str(tr), *extra]) == 0
    with open(out / "iterations.csv") as f:
        its = list(csv.DictReader(f))
    with open(out / "requests.csv") as f:
        reqs = list(csv.DictReader(f))
    return json.loads(tr.read_text()), its, reqs


@pytest.fixture(scope="module")
def interleaved(setup):
    # sub-batches from 2 requests on, so the trace holds the interleaved phases too
    return _run(setup, "inter", "-p", "system.sub_batch_threshold=2")


def _spans(doc, tid=None):
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and (tid is None or e["tid"] == tid)]


def _thread_names(doc):
    return {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def test_trace_event_format_and_tracks(interleaved):
    doc, its, _ = interleaved
    assert set(doc) == {"displayTimeUnit", "otherData", "traceEvents"}
    for e in doc["traceEvents"]:
        assert e["ph"] in {"X", "M", "C", "b", "e"}, e
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int) and e["dur"] >= 0 and e["ts"] >= 0
        if e["ph"] in "be":
            assert e["cat"] == "request" and isinstance(e["id"], int)
    names = _thread_names(doc)
    want = {"iterations", "phases", "NPU systolic arrays: weight GEMMs", "NPU vector unit",
            *(f"NPU array {k}: attention" for k in range(ARRAYS)),
            *(f"PIM channel {c}" for c in range(CHANNELS)),
            *(f"channel {c}: K/V writes and reads" for c in range(CHANNELS))}
    assert set(names.values()) == want
    procs = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {"device: neupims (neupims), micro", "requests"}
    # every span sits on a named track
    assert {e["tid"] for e in _spans(doc)} <= set(names)
    assert doc["otherData"]["iterations_written"] == [0, len(its) - 1]
    assert doc["otherData"]["truncated"] is None


def test_iteration_spans_are_the_runs_iterations(interleaved):
    doc, its, _ = interleaved
    spans = sorted(_spans(doc, TID_ITERATIONS), key=lambda e: e["ts"])
    assert [e["name"] for e in spans] == [f"iteration {r['iteration']}" for r in its]
    for e, r in zip(spans, its):
        assert e["ts"] == pytest.approx(int(r["start_ns"]) * NS, abs=1e-9)
        assert e["ts"] + e["dur"] == pytest.approx(int(r["end_ns"]) * NS, abs=1e-6)
        assert e["args"]["requests"] == int(r["requests"])
        assert e["args"]["prefill_tokens"] == int(r["prefill_tokens"])
        assert e["args"]["sub_batches"] == int(r["sub_batches"])


def test_phases_tile_each_iteration_layer_by_layer(interleaved):
    doc, its, _ = interleaved
    phases = defaultdict(list)
    for e in _spans(doc, TID_PHASES):
        phases[e["args"]["iteration"]].append(e)
    kinds = set()
    for r in its:
        ps = sorted(phases[int(r["iteration"])], key=lambda e: e["ts"])
        # the phases of IterationSimulator.plan(): per layer pre+mha, post; interleaved:
        # sb1.pre, per layer two phases, sb2.post
        sub = int(r["sub_batches"])
        kinds.add(sub)
        if sub == 1:
            assert [e["name"] for e in ps] == ["L0.pre+mha", "L0.post", "L1.pre+mha", "L1.post"]
        else:
            assert [e["name"] for e in ps] == ["L0.sb1.pre", "L0.sb2.npu|sb1.pim", "L0.sb1.npu|sb2.pim",
                                               "L1.sb2.npu|sb1.pim", "L1.sb1.npu|sb2.pim", "L1.sb2.post"]
        assert ps[0]["ts"] == pytest.approx(int(r["start_ns"]) * NS, abs=1e-9)
        for a, b in zip(ps, ps[1:]):
            assert b["ts"] == pytest.approx(a["ts"] + a["dur"], abs=2 * NS)
        # the composed phases add up to the iteration within the rounding of its cycles
        assert ps[-1]["ts"] + ps[-1]["dur"] == pytest.approx(int(r["end_ns"]) * NS, abs=1.6 * NS)
    assert kinds == {1, 2}


def test_operator_spans_add_up_to_the_iterations_operator_cycles(interleaved):
    doc, its, _ = interleaved
    per = defaultdict(lambda: defaultdict(float))
    counts = defaultdict(lambda: defaultdict(int))
    for e in _spans(doc):
        if e["tid"] in (TID_ARRAYS, TID_VECTOR):
            group = {"qkv": "qkv", "proj": "proj", "ffn1": "ffn", "ffn2": "ffn"}.get(
                e["cat"], "vector" if e["tid"] == TID_VECTOR else None)
            assert group is not None, e
            per[e["args"]["iteration"]][group] += e["dur"] / NS
            per[e["args"]["iteration"]][group + " spans"] += 1
            counts[e["args"]["iteration"]][e["name"]] += 1
            assert re.fullmatch(rf"L[0-{LAYERS - 1}]\.{e['cat']}", e["name"])
    for r in its:
        i = int(r["iteration"])
        n = len(per[i]) and sum(counts[i].values())
        assert n
        for g in ("qkv", "proj", "ffn", "vector"):
            # the same cycles as iterations.csv's column, within rounding: there the sum, here
            # each span (fractional cycles where PIM slows a stream) to the nanosecond
            assert per[i][g] == pytest.approx(float(r[f"{g}_cycles"]), abs=1 + per[i][g + " spans"])
        # each layer's QKV and FFN GEMMs once per sub-batch
        for layer in range(LAYERS):
            assert counts[i][f"L{layer}.qkv"] == int(r["sub_batches"])
            assert counts[i][f"L{layer}.ffn2"] == int(r["sub_batches"])


def test_spans_nest_on_every_track_and_stay_in_their_iteration(interleaved):
    doc, its, reqs = interleaved
    bounds = {int(r["iteration"]): (int(r["start_ns"]) * NS, int(r["end_ns"]) * NS) for r in its}
    tracks = defaultdict(list)
    for e in _spans(doc):
        tracks[e["tid"]].append(e)
        if e["tid"] != TID_ITERATIONS:
            a, b = bounds[e["args"]["iteration"]]
            assert a - NS <= e["ts"] and e["ts"] + e["dur"] <= b + 2 * NS, e
    for tid, spans in tracks.items():
        # Perfetto draws a track's slices as a stack: each one after the previous or inside it
        spans.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for y in spans:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= y["ts"] + 2 * NS:
                stack.pop()
            if stack:
                assert y["ts"] + y["dur"] <= stack[-1]["ts"] + stack[-1]["dur"] + 2 * NS, (stack[-1], y)
            stack.append(y)
    # PIM work only on channels that hold a request's KV cache
    used = {int(r["channel"]) for r in reqs if r["channel"]}
    pim = {e["tid"] - TID_PIM for e in _spans(doc) if TID_PIM <= e["tid"] < TID_PIM + CHANNELS}
    assert pim and pim <= used
    assert all(re.fullmatch(r"L[01]\.attention_pim", e["name"]) for e in _spans(doc)
               if TID_PIM <= e["tid"] < TID_PIM + CHANNELS)


def test_request_lifetimes_are_async_spans_with_ttft(interleaved):
    doc, _, reqs = interleaved
    ev = [e for e in doc["traceEvents"] if e["ph"] in "be"]
    by = defaultdict(dict)
    for e in ev:
        assert e["ph"] not in by[(e["id"], e["name"])]
        by[(e["id"], e["name"])][e["ph"]] = e["ts"]
    for k, r in enumerate(reqs):
        life = by[(k, f"request {r['id']}")]
        assert life["b"] == pytest.approx(int(r["arrival_ns"]) * NS, abs=NS)
        assert life["e"] == pytest.approx(int(r["finish_ns"]) * NS, abs=NS)
        ttft = by[(k, "time to first token")]
        assert (ttft["e"] - ttft["b"]) / NS == pytest.approx(int(r["ttft_ns"]), abs=1.5)
        queued = by[(k, "queued")]
        assert queued["e"] == pytest.approx(int(r["first_scheduled_ns"]) * NS, abs=NS)
    assert len(by) == 3 * len(reqs)


def _direct(window: str | None, *, max_events=None):
    """The interleaved run through the Orchestrator with a tracer: (trace, result)."""
    over = ("system.sub_batch_threshold=2",)
    hw, cost = hw_for("neupims", *over), reuse_cost("neupims", "micro", over)
    tracer = ChromeTrace(hw, "micro", parse_window(window), max_events=max_events or MAX_EVENTS)
    try:
        tracer.attach(cost)
        result = Orchestrator(hw, cost.model, cost, observer=tracer).run(
            requests(ROWS["prompt"], ROWS["output"], arrival_ns=ROWS["arrival_ns"]))
    finally:
        cost.trace = False
    return json.loads("".join(tracer.document_lines(result))), result, tracer


def test_window_in_iterations_and_in_time(interleaved):
    _, its, _ = interleaved
    doc, result, _ = _direct("2:5")
    assert result.iterations[:, 1].tolist() == [int(r["start_cycle"]) for r in its]
    spans = _spans(doc)
    assert sorted(e["name"] for e in _spans(doc, TID_ITERATIONS)) == ["iteration 2", "iteration 3", "iteration 4"]
    lo, hi = int(its[2]["start_ns"]) * NS, int(its[4]["end_ns"]) * NS
    assert all(lo - NS <= e["ts"] and e["ts"] + e["dur"] <= hi + 2 * NS for e in spans)
    assert {e["args"]["iteration"] for e in spans if "iteration" in e["args"]} == {2, 3, 4}
    ev = [e for e in doc["traceEvents"] if e["ph"] in "be"]
    assert ev and all(lo - NS <= e["ts"] <= hi + NS for e in ev)
    assert doc["otherData"]["iterations_written"] == [2, 4]
    assert _direct("2:5")[0] == doc  # deterministic
    # time: the iterations that overlap [a, b), worked out from iterations.csv
    a_ns, b_ns = int(its[3]["start_ns"]) + 1, int(its[6]["start_ns"]) + 1
    doc, _, _ = _direct(f"{a_ns / 1000}us:{b_ns / 1000}us")
    want = [int(r["iteration"]) for r in its if int(r["end_ns"]) > a_ns and int(r["start_ns"]) < b_ns]
    assert want == [3, 4, 5, 6]
    assert sorted(int(e["name"].split()[1]) for e in _spans(doc, TID_ITERATIONS)) == want


def test_window_parsing():
    assert parse_window("3:9")[:3] == ("it", 3, 9)
    assert parse_window(":9")[:3] == ("it", 0, 9)
    assert parse_window("4:")[:3] == ("it", 4, None)
    assert parse_window("1.5ms:2ms")[:3] == ("us", 1500.0, 2000.0)
    assert parse_window("0.5s:")[:3] == ("us", 500000.0, None)
    for bad, needle in [("5", "not a window"), ("9:3", "ends before"), ("1ms:5", "mixes units"),
                        ("a:b", "not a number"), (":", "not a window"), ("-1:4", "negative")]:
        with pytest.raises(UserError, match=needle):
            parse_window(bad)


def test_cap_stops_at_an_iteration_boundary():
    doc, result, tracer = _direct(None, max_events=300)
    n_it = len(_spans(doc, TID_ITERATIONS))
    assert 0 < n_it < len(result.iterations)
    assert f"stopped before iteration {n_it}" in doc["otherData"]["truncated"]
    assert len(tracer.events) <= 300


def test_tracing_changes_no_result(interleaved):
    _, its, reqs = interleaved
    over = ("system.sub_batch_threshold=2",)
    result, _ = serve(requests(ROWS["prompt"], ROWS["output"], arrival_ns=ROWS["arrival_ns"]), "neupims",
                      *over)
    assert not reuse_cost("neupims", "micro", over).trace
    assert [int(float(r["cycles"])) for r in its] == result.iterations[:, 2].astype(int).tolist()
    assert [int(r["finish_ns"]) for r in reqs] == [r.finish for r in result.requests]  # 1 GHz


def test_trace_errors(setup, capsys):
    d, model, trace = setup
    assert main(["run", "neupims", trace, "--model", model, "--chrome-trace", str(d / "no" / "t.json")]) == 2
    assert "--chrome-trace" in capsys.readouterr().err
    assert main(["run", "neupims", trace, "--model", model, "--chrome-trace", str(d / "x.json"),
                 "--trace-window", "5:2"]) == 2
    assert "--trace-window" in capsys.readouterr().err
    assert not (d / "x.json").exists()


def test_npu_only_and_exact_runs(setup):
    doc, its, reqs = _run(setup, "npu", "--mode", "npu-only")
    names = _thread_names(doc)
    assert not any(n.startswith("PIM") for n in names.values())
    att = [e for e in _spans(doc) if e["cat"] == "attention_npu"]
    assert att and all(TID_ARRAY <= e["tid"] < TID_ARRAY + ARRAYS for e in att)
    assert sorted({e["name"] for e in _spans(doc, TID_PHASES)}) == ["L0.layer", "L1.layer"]
    # --exact: the phases every layer of the engine run took, nothing finer
    doc, its, _ = _run(setup, "exact", "--exact", "--max-requests", "2")
    phases = defaultdict(float)
    for e in _spans(doc, TID_PHASES):
        phases[e["args"]["iteration"]] += e["dur"]
    for r in its:
        assert phases[int(r["iteration"])] / NS == pytest.approx(int(r["cycles"]), abs=1)
    assert {e["tid"] for e in _spans(doc)} == {TID_ITERATIONS, TID_PHASES}
