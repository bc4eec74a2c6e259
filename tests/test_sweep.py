"""`neupims-sim sweep`: a grid gathered into one table equal to the individual runs, resumed
without recomputing, a failing point that does not stop the others, a process pool that
gives the same table, and the sweep file's errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys

import pytest
import yaml

import neupims_py.sweep.runner as runner
from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.sweep import load_sweep, run_sweep

from serving_common import MICRO, requests, write_test_trace

GRID = {"scheduler.max_batch_size": [1, 4], "mode": ["npu-only", "neupims"]}


def _setup(tmp_path, **sweep):
    """A micro model, a 4-request trace and a sweep file over them (paths relative to it).
    Every iteration simulated (`exact`): on 4 requests that is ~10x faster than measuring
    the reuse cost model's pieces in each point's process."""
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    rows = requests([8, 5, 30, 12], [4, 6, 2, 5], arrival_ns=[0, 10, 2000, 2000])
    write_test_trace(tmp_path / "t.h5", rows)
    spec = {"base": {"hw": "neupims", "model": "micro.yaml", "trace": "t.h5",
                     "scheduler": {"max_batch_tokens": 64}, "exact": True}, **sweep}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_equals_individual_runs_and_resumes(tmp_path, monkeypatch, capsys):
    path = _setup(tmp_path, grid=GRID)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "4 points: 4 run, 0 reused, 0 failed" in text
    rows = _table(out / "results.csv")
    assert [(r["scheduler.max_batch_size"], r["mode"], r["status"]) for r in rows] == [
        ("1", "npu-only", "ok"), ("1", "neupims", "ok"), ("4", "npu-only", "ok"), ("4", "neupims", "ok")]
    assert len({r["key"] for r in rows}) == 4
    # each row equals `neupims-sim run` of that point on its own
    for r in rows:
        single = tmp_path / f"single-{r['point']}"
        assert main(["run", "neupims", str(tmp_path / "t.h5"), "--model", str(tmp_path / "micro.yaml"),
                     "--quiet", "--exact", "--mode", r["mode"], "-p", "scheduler.max_batch_tokens=64",
                     "-p", f"scheduler.max_batch_size={r['scheduler.max_batch_size']}",
                     "--out", str(single)]) == 0
        summary = json.loads((single / "summary.json").read_text())
        assert float(r["throughput.output_tokens_per_s"]) == pytest.approx(
            summary["throughput"]["output_tokens_per_s"], rel=1e-12)
        assert float(r["latency_ms.ttft.p50"]) == pytest.approx(summary["latency_ms"]["ttft"]["p50"], rel=1e-12)
        assert int(r["iterations.count"]) == summary["iterations"]["count"]
        assert int(r["requests.finished"]) == summary["requests"]["finished"] == 4
        # and the point's own files are the run's files
        assert (out / "points" / r["key"] / "tokens.csv").read_text() == (single / "tokens.csv").read_text()
    capsys.readouterr()
    # batch size 1 serialises the requests: lower throughput than 4 in both modes
    tput = {(r["scheduler.max_batch_size"], r["mode"]): float(r["throughput.output_tokens_per_s"]) for r in rows}
    assert tput[("1", "neupims")] < tput[("4", "neupims")] and tput[("1", "npu-only")] < tput[("4", "npu-only")]

    # re-run: nothing is simulated again, the files are untouched, the table is the same
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*.json")}
    calls = []
    monkeypatch.setattr(runner, "run_point", lambda argv: calls.append(argv) or pytest.fail("recomputed"))
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    assert "4 points: 0 run, 4 reused, 0 failed" in capsys.readouterr().out
    assert calls == [] and mtimes == {p: p.stat().st_mtime_ns for p in mtimes}
    again = _table(out / "results.csv")
    assert [{**r, "reused": "x"} for r in again] == [{**r, "reused": "x"} for r in rows]
    assert {r["reused"] for r in again} == {"true"}
    # a grown grid runs only its new points
    monkeypatch.undo()
    path.write_text(path.read_text().replace("- 4\n", "- 4\n  - 2\n"))
    seen = []
    real = runner.run_point
    monkeypatch.setattr(runner, "run_point", lambda argv: seen.append(argv) or real(argv))
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    assert len(seen) == 2 and all("scheduler.max_batch_size=2" in a for a in seen)
    assert len(_table(out / "results.csv")) == 6


def test_failing_points_do_not_stop_the_sweep(tmp_path, capsys):
    path = _setup(tmp_path, points=[
        {"scheduler.max_batch_size": 2},
        {"scheduler.max_batch_size": -1},  # rejected when the configuration is loaded
        {"max_requests": 0},  # rejected by `run` itself
        {"scheduler.max_batch_size": 3},
    ])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "4 points: 3 run, 0 reused, 2 failed" in text
    rows = _table(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "error", "error", "ok"]
    assert "scheduler.max_batch_size" in rows[1]["error"] and "-1" in rows[1]["error"]
    assert rows[2]["error"] == "--max-requests: must be at least 1"
    assert rows[1]["throughput.output_tokens_per_s"] == "" and float(rows[3]["throughput.output_tokens_per_s"]) > 0
    assert "must be at least 1" in text
    # failed points are tried again on a re-run; asked to, the exit status says they failed
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--fail-on-error"]) == 1
    assert "4 points: 1 run, 2 reused, 2 failed" in capsys.readouterr().out


def test_process_pool_gives_the_same_table(tmp_path, capsys):
    # random channels: the seed matters, and each worker must use the point's own
    path = _setup(tmp_path, grid={"scheduler.max_batch_size": [1, 4],
                                  "scheduler.channel_policy": ["random"], "seed": [0, 1]})
    sweep = load_sweep(path)
    one = run_sweep(sweep, tmp_path / "one", jobs=1)
    two = run_sweep(sweep, tmp_path / "two", jobs=2)
    assert one.failed == two.failed == 0 and one.ran == two.ran == 4
    assert (tmp_path / "one" / "results.csv").read_text() == (tmp_path / "two" / "results.csv").read_text()
    for row in one.rows:
        for name in ("summary.json", "tokens.csv", "iterations.csv"):
            a = tmp_path / "one" / "points" / row["key"] / name
            assert a.read_bytes() == (tmp_path / "two" / "points" / row["key"] / name).read_bytes()


def test_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = _setup(tmp_path, grid=GRID, plots=["throughput.output_tokens_per_s:scheduler.max_batch_size"])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--plot", "latency_ms.ttft.p50:mode"]) == 0
    for name in ("throughput.output_tokens_per_s-vs-scheduler.max_batch_size.png",
                 "latency_ms.ttft.p50-vs-mode.png"):
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    # a metric that is no column: the error names close ones
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--plot", "throughput.tokens:mode"]) == 2
    assert "output_tokens" in capsys.readouterr().err


@pytest.mark.parametrize("sweep, message", [
    ({"grid": {"scheduler.max_batch_sise": [1]}}, "grid.scheduler.max_batch_sise: unknown field (did you mean 'scheduler.max_batch_size'?)"),
    ({"points": [{"tarce": "x"}]}, "points[0].tarce: unknown field (did you mean 'trace'?)"),
    ({"grid": {"seed": 3}}, "grid.seed: expected a non-empty list of values"),
    ({"grid": {"seed": ["a"]}}, "grid.seed: expected a whole number"),
    ({"grid": {"mode": ["pim"]}}, "grid.mode: unknown mode 'pim'"),
    ({"grids": {}}, "grids: unknown key; valid: base, grid, points, plots"),
    ({"grid": {"seed": [1]}, "points": [{"seed": 2}]}, "seed: set both by the grid and by a point"),
    ({"grid": {"seed": [1]}, "plots": ["throughput.output_tokens_per_s:mode"]}, "'mode' is not a swept field"),
])
def test_sweep_file_errors(tmp_path, sweep, message, capsys):
    path = _setup(tmp_path, **sweep)
    with pytest.raises(UserError) as exc:
        load_sweep(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_errors(tmp_path, capsys):
    path = _setup(tmp_path, grid={"seed": [0]})
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such sweep file" in capsys.readouterr().err
    assert main(["sweep", str(path), "--jobs", "0"]) == 2
    assert "--jobs: must be at least 1" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", str(tmp_path / "a" / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_shipped_sweeps_load():
    from neupims_py.model import programs_dir

    for path in sorted((programs_dir().parent / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        assert sweep.points and sweep.swept, path
        assert all(p["trace"].endswith(".h5") for p in sweep.points)


def test_parquet_matches_csv(tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    path = _setup(tmp_path, points=[{"scheduler.max_batch_size": 2}, {"scheduler.max_batch_size": -2}])
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    table = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    rows = _table(tmp_path / "out" / "results.csv")
    assert [r["status"] for r in table] == ["ok", "error"] and table[0]["reused"] is False
    assert table[0]["throughput.output_tokens_per_s"] == float(rows[0]["throughput.output_tokens_per_s"])
    assert table[1]["throughput.output_tokens_per_s"] is None and table[1]["error"] == rows[1]["error"]


def test_ray_missing_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    path = _setup(tmp_path, grid={"seed": [0]})
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--ray", "auto", "--quiet"]) == 2
    assert "pip install 'neupims-py[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
