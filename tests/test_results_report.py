"""`neupims-sim report RUN_DIR`: the numbers behind the plots (worked out by hand on a
hand-written run directory), PNGs from a real small run, and the errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys

import numpy as np
import pytest
import yaml

from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.results.report import ITERATION_COLUMNS, RunData, figure_class

from serving_common import MICRO, requests, write_test_trace

PLOTS = ("latency_cdf.png", "throughput.png", "batch_kv.png", "utilization.png", "op_cycles.png",
         "prefill_decode.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _hand_run(d):
    """Two iterations (1000 and 2000 cycles at 1 GHz, 8 arrays, 32 channels), two requests."""
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"hw": "h", "mode": "neupims", "model": "m",
                                                "units": {"clock_mhz": 1000, "systolic_arrays": 8, "channels": 32}}))
    values = {"start_ns": (0, 1000), "end_ns": (1000, 3000), "cycles": (1000, 2000), "requests": (2, 2),
              "prefill_tokens": (5, 0), "decode_tokens": (1, 2), "kv_tokens": (6, 8), "overlap_cycles": (0, 500),
              "array_busy": (4000, 4000), "vector_busy": (100, 100), "pim_busy": (3200, 0),
              "dram_busy": (16000, 32000)}
    cols = list(ITERATION_COLUMNS)
    _write_csv(d / "iterations.csv", ["iteration", *cols],
               [[i, *(values.get(c, (7, 9))[i] for c in cols)] for i in range(2)])
    _write_csv(d / "requests.csv", ["id", "status", "ttft_ns", "finish_ns"],
               [[0, "finished", 100, 600], [1, "finished", 250, 1250], [2, "rejected", "", ""]])
    # out of order on purpose: gaps are within a request, in token order
    _write_csv(d / "tokens.csv", ["request_id", "token", "time_ns"],
               [[1, 1, 1250], [0, 0, 100], [1, 0, 250], [0, 2, 600], [0, 1, 300]])
    return d


def test_numbers_behind_the_plots_by_hand(tmp_path):
    run = RunData(_hand_run(tmp_path / "run"))
    assert sorted(run.time_between_tokens_ns()) == [200, 300, 1000]
    u = run.utilization()
    # busy / (cycles x units): arrays 4000/(1000*8), 4000/(2000*8); PIM 3200/(1000*32);
    # DRAM bus 16000/(1000*32), 32000/(2000*32)
    assert u["systolic arrays"].tolist() == [0.5, 0.25]
    assert u["vector unit"].tolist() == [0.1, 0.05]
    assert u["PIM"].tolist() == [0.1, 0.0]
    assert u["DRAM data bus"].tolist() == [0.5, 0.5]
    assert np.isnan(run.requests["ttft_ns"][2])


def test_report_draws_every_plot(tmp_path, capsys):
    d = _hand_run(tmp_path / "run")
    assert main(["report", str(d)]) == 0
    assert "wrote 6 plots" in capsys.readouterr().out
    for name in PLOTS:
        data = (d / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert not [p for p in (d / "plots").iterdir() if p.name.startswith(".")]


def test_report_of_a_real_small_run(tmp_path):
    pytest.importorskip("matplotlib")
    model = tmp_path / "micro.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    trace = tmp_path / "t.h5"
    write_test_trace(trace, requests([8, 5, 30, 12], [4, 6, 2, 5], arrival_ns=[0, 10, 2000, 2000]))
    run = tmp_path / "run"
    assert main(["run", "npu-pim", str(trace), "--model", str(model), "--quiet", "--out", str(run)]) == 0
    out = tmp_path / "plots"
    assert main(["report", str(run), "--out", str(out)]) == 0
    import matplotlib.image
    for name in PLOTS:
        img = matplotlib.image.imread(out / name)
        assert img.shape[0] > 200 and img.shape[1] > 400, name
        assert img[..., :3].std() > 0.01, name  # not blank
    data = RunData(run)
    # utilisation per iteration never exceeds the units there are
    for name, u in data.utilization().items():
        assert ((u >= 0) & (u <= 1.0 + 1e-9)).all(), name
    with open(run / "iterations.csv") as f:
        its = list(csv.DictReader(f))
    cycles = sum(float(r["cycles"]) for r in its)
    pim = sum(float(r["pim_busy"]) for r in its) / (cycles * 32)
    assert pim == pytest.approx(json.loads((run / "summary.json").read_text())["utilization"]["pim"])


def test_report_errors(tmp_path, capsys, monkeypatch):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    d = _hand_run(tmp_path / "run")
    (d / "tokens.csv").unlink()
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err
    assert "has no tokens.csv" in err and "RUN_DIR" in err
    d = _hand_run(tmp_path / "run2")
    _write_csv(d / "iterations.csv", ["iteration", "cycles"], [[0, 10]])
    assert main(["report", str(d)]) == 2
    assert "iterations.csv: missing column(s) start_ns" in capsys.readouterr().err
    d = _hand_run(tmp_path / "run3")
    (d / "summary.json").write_text("{}")
    assert main(["report", str(d)]) == 2
    assert "has no 'units'" in capsys.readouterr().err
    assert not (d / "plots").exists()
    (d / "summary.json").write_text('{"pools": {}}')  # a cluster run's summary
    assert main(["report", str(d)]) == 2
    assert "holds a cluster run" in capsys.readouterr().err
    assert not (d / "plots").exists()
    # matplotlib is optional: a clear message, no traceback
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError, match=r"pip install 'neupims-py\[plot\]'"):
        figure_class()
    d = _hand_run(tmp_path / "run4")
    assert main(["report", str(d)]) == 2
    assert "pip install 'neupims-py[plot]'" in capsys.readouterr().err
