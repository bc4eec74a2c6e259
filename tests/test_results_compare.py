"""`neupims-sim compare`: its table and files hold the individual runs' numbers and their
ratios to the first run, recomputed here from those runs' own outputs."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import yaml

from neupims_py.cli import main

from serving_common import MICRO, requests, write_test_trace

CHANNELS = 32  # both presets


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    model = d / "micro.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    trace = d / "t.h5"
    write_test_trace(trace, requests([8, 5, 30, 12, 20], [4, 6, 2, 5, 3], arrival_ns=[0, 10, 2000, 2000, 3000]))
    return d, str(model), str(trace)


def _by_hand(run_dir) -> dict:
    """The compared metrics of one run, from its summary.json and iterations.csv."""
    s = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "iterations.csv") as f:
        its = list(csv.DictReader(f))
    cycles = sum(float(r["cycles"]) for r in its)
    lat = s["latency_ms"]
    return {
        "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
        "requests_per_s": s["throughput"]["requests_per_s"],
        "ttft_p50_ms": lat["ttft"]["p50"], "ttft_p99_ms": lat["ttft"]["p99"],
        "tbt_p50_ms": lat["inter_token"]["p50"], "tbt_p99_ms": lat["inter_token"]["p99"],
        "npu_util": s["utilization"]["systolic_arrays"], "pim_util": s["utilization"]["pim"],
        "dram_util": sum(float(r["dram_busy"]) for r in its) / (cycles * CHANNELS),
        "row_hit_rate": (sum(float(r["dram_row_hits"]) for r in its)
                         / sum(float(r["dram_column_cmds"]) for r in its)),
    }


def test_compare_matches_the_individual_runs(setup, capsys):
    d, model, trace = setup
    for hw in ("npu-pim", "neupims"):
        assert main(["run", hw, trace, "--model", model, "--quiet", "--exact", "--out", str(d / hw)]) == 0
    capsys.readouterr()
    out = d / "cmp"
    assert main(["compare", "npu-pim", "neupims", trace, "--model", model, "--exact", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    a, b = _by_hand(d / "npu-pim"), _by_hand(d / "neupims")
    report = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["npu-pim", "neupims"]
    got_a, got_b = (r["metrics"] for r in report["runs"])
    # iterations.csv rounds to 10 significant digits: 1e-9
    assert got_a == pytest.approx(a, rel=1e-9) and got_b == pytest.approx(b, rel=1e-9)
    assert a["pim_util"] > 0 and a["dram_util"] > 0
    for key in a:
        want = b[key] / a[key]
        assert report["runs"][1]["ratio_to_first"][key] == pytest.approx(want, rel=1e-9), key
        assert report["runs"][0]["ratio_to_first"][key] == 1.0
        assert f"(x{want:.3f})" in table, key
    # the CSV holds the same numbers
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["output_tokens_per_s_ratio"]) == pytest.approx(
        b["output_tokens_per_s"] / a["output_tokens_per_s"], rel=1e-12)
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    # the runs' own outputs are kept and equal the individual runs'
    for k, hw in enumerate(("npu-pim", "neupims")):
        for name in ("iterations.csv", "requests.csv"):
            assert (out / "runs" / f"{k}-{hw}" / name).read_bytes() == (d / hw / name).read_bytes()


def test_compare_modes(setup, capsys):
    d, model, trace = setup
    out = d / "modes"
    assert main(["compare", "npu-pim", trace, "--model", model, "--modes", "npu-only,npu+pim",
                 "--quiet", "--exact", "--out", str(out), "--max-requests", "3"]) == 0
    table = capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["npu-pim [npu-only]", "npu-pim [npu+pim]"]
    first, second = (_by_hand(out / r["run_dir"]) for r in report["runs"])
    assert json.loads((out / report["runs"][0]["run_dir"] / "summary.json").read_text())["mode"] == "npu-only"
    assert first["pim_util"] == 0.0
    # no PIM in the first run: no ratio for PIM
    assert report["runs"][1]["ratio_to_first"]["pim_util"] is None
    want = second["output_tokens_per_s"] / first["output_tokens_per_s"]
    assert report["runs"][1]["ratio_to_first"]["output_tokens_per_s"] == pytest.approx(want, rel=1e-12)
    assert f"(x{want:.3f})" in table
    assert json.loads((out / report["runs"][0]["run_dir"] / "summary.json").read_text())[
        "requests"]["total"] == 3


@pytest.mark.parametrize("argv, needle", [
    (["neupims", "{trace}"], "nothing to compare"),
    (["neupims", "npu-pim"], "should be the trace"),
    (["neupims", "{trace}", "--modes", "npu-only,gpu"], "unknown mode 'gpu'"),
    (["neupims", "nope.yaml", "{trace}"], "nope.yaml"),
    (["neupims", "npu-pim", "{trace}", "-p", "scheduler.bogus=1"], "bogus"),
])
def test_compare_errors(setup, capsys, argv, needle):
    d, model, trace = setup
    out = d / f"err-{len(argv)}"
    argv = [a.replace("{trace}", trace) for a in argv]
    assert main(["compare", *argv, "--model", model, "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()  # checked before any run
