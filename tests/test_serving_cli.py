"""`neupims-sim run`: outputs, determinism, errors."""

from __future__ import annotations

import csv
import dataclasses
import json

import yaml

from neupims_py.cli import main

from serving_common import MICRO, requests, write_test_trace


def _setup(tmp_path):
    model = tmp_path / "micro.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    trace = tmp_path / "t.h5"
    rows = requests([8, 5, 30, 12, 3000], [4, 6, 2, 5, 2], arrival_ns=[0, 10, 2000, 2000, 3000])
    write_test_trace(trace, rows)
    return str(model), str(trace)


def test_run_writes_outputs_and_is_deterministic(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    args = ["run", "neupims", trace, "--model", model, "--quiet", "-p", "scheduler.max_batch_tokens=64"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "4 finished, 1 rejected of 5" in table and "max_batch_tokens 64" in table
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("summary.json", "requests.csv", "tokens.csv", "iterations.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["requests"] == {"total": 5, "finished": 4, "rejected": 1, "rejected_reasons": {
        "orca prefills a prompt in one iteration: history + prompt 3000 tokens > max_batch_tokens 64": 1}}
    assert summary["model"] == "micro" and summary["scheduler"]["policy"] == "orca"
    with open(tmp_path / "a" / "requests.csv") as f:
        reqs = list(csv.DictReader(f))
    assert [r["status"] for r in reqs] == ["finished"] * 4 + ["rejected"]
    with open(tmp_path / "a" / "tokens.csv") as f:
        assert sum(1 for _ in f) == 1 + 4 + 6 + 2 + 5
    # writing into an existing directory replaces the files
    assert main([*args, "--out", str(tmp_path / "a"), "--max-requests", "2"]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["requests"]["total"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_run_errors(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    (tmp_path / "file").write_text("")
    assert main(["run", "neupims", trace, "--model", model, "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err
    assert main(["run", "neupims", trace, "--model", model, "--max-requests", "0"]) == 2
    assert "--max-requests" in capsys.readouterr().err
    assert main(["run", "neupims", trace, "--model", model, "-p", "scheduler.channel_policy=rr"]) == 2
    assert "round-robin" in capsys.readouterr().err


def test_mode_switch(tmp_path, capsys):
    model, trace = _setup(tmp_path)
    assert main(["run", "neupims", trace, "--model", model, "--mode", "npu-only", "--quiet",
                 "--max-requests", "2"]) == 0
    assert "(npu-only)" in capsys.readouterr().out
