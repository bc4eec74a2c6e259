"""The `cluster:` YAML section and `neupims-sim run CLUSTER.yaml`: outputs, determinism,
the 1-device cluster against `run`, and every user mistake a one-line error."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import yaml

from neupims_py.cli import main
from neupims_py.cluster.config import load_cluster
from neupims_py.config import presets_dir
from neupims_py.errors import UserError

from serving_common import MICRO, requests, write_test_trace


def _setup(tmp_path):
    model = tmp_path / "micro.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    trace = tmp_path / "t.h5"
    rows = requests([8, 5, 30, 12, 7, 3000], [4, 6, 2, 5, 1, 2], arrival_ns=[0, 10, 2000, 2000, 3000, 3000])
    write_test_trace(trace, rows)
    return str(model), str(trace)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_one_device_cluster_file_gives_run_outputs(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    one = tmp_path / "one.yaml"
    one.write_text("cluster:\n  pools:\n    - {name: solo, hw: neupims, params: [scheduler.max_batch_tokens=64]}\n")
    assert main(["run", "neupims", trace, "--model", model, "--quiet", "-p",
                 "scheduler.max_batch_tokens=64", "--out", str(tmp_path / "single")]) == 0
    assert main(["run", str(one), trace, "--model", model, "--quiet", "--out", str(tmp_path / "c")]) == 0
    single, clus = _csv(tmp_path / "single" / "requests.csv"), _csv(tmp_path / "c" / "requests.csv")
    assert [{k: r[k] for k in s} for r, s in zip(clus, single, strict=True)] == single
    assert {r["device"] for r in clus} == {"solo.0"}
    assert (tmp_path / "single" / "tokens.csv").read_bytes() == (tmp_path / "c" / "tokens.csv").read_bytes()
    it_single = (tmp_path / "single" / "iterations.csv").read_text().splitlines()
    it_clus = (tmp_path / "c" / "iterations.csv").read_text().splitlines()
    assert [line.split(",", 1)[1] for line in it_clus] == it_single
    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "c" / "summary.json").read_text())
    for key in ("requests", "throughput", "latency_ms", "energy_j", "simulated_seconds"):
        assert a[key] == b[key], key


def test_disaggregated_cli_outputs_and_determinism(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    cfg = tmp_path / "dis.yaml"
    cfg.write_text("""cluster:
  name: d
  link: {bandwidth_gbps: 64, latency_us: 2}
  pools:
    - {name: pre, hw: npu-only, role: prefill, cost_per_hour: 2, params: [scheduler.max_batch_tokens=64]}
    - {name: dec, hw: neupims, count: 2, role: decode, cost_per_hour: 3}
""")
    args = ["run", str(cfg), trace, "--model", model, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "5 finished, 1 rejected of 6" in table and "pool dec" in table
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("summary.json", "requests.csv", "tokens.csv", "devices.csv", "iterations.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(s["pools"]) == {"pre", "dec"} and [d["device"] for d in s["devices"]] == ["pre.0", "dec.0", "dec.1"]
    assert s["cost"]["per_hour"] == 8.0
    tokens = s["throughput"]["output_tokens"]
    assert s["cost"]["output_tokens_per_dollar"] == pytest.approx(tokens / (8.0 * s["simulated_seconds"] / 3600))
    reqs = _csv(tmp_path / "a" / "requests.csv")
    moved = [r for r in reqs if r["transfer_ns"]]
    assert len(moved) == 4  # finished with more than one output token
    for r in moved:
        assert int(r["transfer_ns"]) == int(r["kv_transfer_bytes"]) // 64 + 2000
        assert int(r["first_token_ns"]) == int(r["transfer_queued_ns"])
    devs = _csv(tmp_path / "a" / "devices.csv")
    assert [d["role"] for d in devs] == ["prefill", "decode", "decode"]
    assert sum(int(d["requests"]) for d in devs[1:]) == 4


def test_shipped_cluster_examples_load():
    from neupims_py.model import load_model
    gpt = load_model("gpt3-7b")
    d = load_cluster(presets_dir() / "cluster-disagg.yaml", gpt)
    assert [(p.cfg.role, p.cfg.count, p.hw.system.mode) for p in d.pools] == [
        ("prefill", 1, "npu-only"), ("decode", 2, "neupims")]
    p = load_cluster(presets_dir() / "cluster-pp2.yaml", gpt)
    assert p.pools[0].cfg.pp == 2 and p.pools[0].stage_link.bandwidth_gbps == 64


BASE = "cluster:\n  link: {bandwidth_gbps: 10}\n  pools:\n"


@pytest.mark.parametrize("pools, field, text", [
    ("    - {name: a, hw: neupims, cout: 2}\n", "cluster.pools[0].cout", "did you mean 'count'"),
    ("    - {name: a, hw: nosuchpreset}\n", "cluster.pools[0].hw", "nosuchpreset"),
    ("    - {name: a, hw: neupims, count: 4, pp: 4}\n", "cluster.pools[0].pp", "does not divide the 2 layers"),
    ("    - {name: a, hw: neupims, count: 3, pp: 2}\n", "cluster.pools[0].count", "not a multiple of pp 2"),
    ("    - {name: a, hw: neupims, role: prefil}\n", "cluster.pools[0].role", "did you mean 'prefill'"),
    ("    - {name: a, hw: neupims, role: prefill}\n", "cluster.pools", "add a pool with role: decode"),
    ("    - {name: a, hw: neupims, role: decode}\n", "cluster.pools", "add a pool with role: prefill"),
    ("    - {name: a, hw: neupims}\n    - {name: a, hw: npu-only}\n", "cluster.pools[1].name", "used twice"),
    ("    - {name: a, hw: neupims, micro_batches: 2}\n", "cluster.pools[0].micro_batches", "pp > 1"),
    ("    - {name: a, hw: neupims, params: scheduler.policy=chunked}\n", "cluster.pools[0].params", "list"),
    ("    - {name: a, hw: neupims, params: [scheduler.policy=chunk]}\n", "cluster.pools[0].params", "chunked"),
    ("    - {name: a, hw: neupims, routing: fastest}\n", "cluster.pools[0].routing", "least-kv"),
    ("    - {hw: neupims}\n", "cluster.pools[0].name", "missing required field"),
    ("    - {name: a, hw: neupims, count: 0}\n", "cluster.pools[0].count", "at least 1"),
])
def test_config_errors_name_file_and_field(tmp_path, pools, field, text):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + pools)
    with pytest.raises(UserError) as exc:
        load_cluster(path, MICRO)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert text in msg


@pytest.mark.parametrize("text, field, hint", [
    ("cluster:\n  pools:\n    - {name: p, hw: npu-only, role: prefill}\n    - {name: d, hw: neupims, role: decode}\n",
     "cluster.link", "bandwidth_gbps"),
    ("cluster:\n  pools:\n    - {name: a, hw: neupims, count: 2, pp: 2}\n", "cluster.pools[0].stage_link", "stage_link"),
    ("cluster:\n  link: {bandwidth_gbps: 0}\n  pools: [{name: a, hw: neupims}]\n", "cluster.link.bandwidth_gbps", "at least"),
    ("cluster:\n  link: {bandwith_gbps: 5}\n  pools: [{name: a, hw: neupims}]\n", "cluster.link.bandwith_gbps", "bandwidth_gbps"),
    ("cluster:\n  pool: []\n", "cluster.pool", "did you mean 'pools'"),
    ("cluster:\n  pools: []\n", "cluster.pools", "non-empty list"),
    ("cluster: {pools: [{name: a, hw: neupims}]}\nextra: 1\n", "extra", "valid keys of the top level: cluster"),
    ("cluster:\n  pools:\n    - {name: p, hw: npu-only, role: prefill}\n    - {name: d, hw: neupims, role: decode}\n"
     "    - {name: m, hw: neupims}\n  link: {bandwidth_gbps: 1}\n", "cluster.pools", "cannot be combined"),
    ("cluster:\n  kv_overlap: true\n  link: {bandwidth_gbps: 1}\n  pools:\n"
     "    - {name: p, hw: npu-only, role: prefill, count: 2, pp: 2}\n    - {name: d, hw: neupims, role: decode}\n",
     "cluster.kv_overlap", "pp: 1"),
    ("cluster:\n  pools:\n    - {name: a, hw: neupims, params: [npu.clock_mhz=500]}\n    - {name: b, hw: neupims}\n",
     "cluster.pools", "different NPU clocks"),
])
def test_more_config_errors(tmp_path, text, field, hint):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        load_cluster(path, MICRO)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert hint in msg


def test_cli_errors_exit_2_without_output(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "    - {name: a, hw: neupims, cout: 2}\n")
    out = tmp_path / "out"
    assert main(["run", str(bad), trace, "--model", model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cluster.pools[0].cout" in err and "Traceback" not in err
    assert not out.exists()
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "    - {name: a, hw: neupims}\n")
    assert main(["run", str(good), trace, "--model", model, "-p", "scheduler.policy=chunked"]) == 2
    assert "-p: not available with a cluster file" in capsys.readouterr().err
    assert main(["run", str(good), trace, "--model", model, "--mode", "npu-only"]) == 2
    assert "--mode" in capsys.readouterr().err
