"""`neupims-sim trace info`: the summary numbers, the table, the plot and its missing-matplotlib error."""

import sys

import numpy as np
import pytest

from neupims_py.cli import main
from neupims_py.workload import Trace, write_trace
from neupims_py.workload.info import summarize
from neupims_py.workload.trace_file import empty_requests

ATTRS = {
    "source": "hand-made",
    "tokenizer": "none",
    "arrival_process": "fixed",
    "arrival_params": "{}",
    "seed": -1,
    "command": "none",
}


def hundred_requests():
    """Prompts 1..100, outputs 2..200 step 2, one arrival every 0.5 s, adapters 0,0,0,1 repeating."""
    r = empty_requests(100)
    r["arrival_ns"] = np.arange(100) * 500_000_000
    r["prompt_tokens"] = np.arange(1, 101)
    r["output_tokens"] = np.arange(1, 101) * 2
    r["adapter_id"] = [0, 0, 0, 1] * 25
    return r


def test_summary_numbers():
    s = summarize(Trace(requests=hundred_requests(), attrs=ATTRS))
    assert s.requests == 100
    assert s.duration_s == pytest.approx(49.5)
    assert s.rate_per_s == pytest.approx(2.0)  # 99 gaps of 0.5 s
    # Linear-interpolation percentiles of 1..100: rank q*(n-1) between neighbours.
    assert (
        s.prompt.mean,
        s.prompt.median,
        s.prompt.p90,
        s.prompt.p99,
        s.prompt.max,
    ) == pytest.approx((50.5, 50.5, 90.1, 99.01, 100))
    assert (s.output.mean, s.output.p90, s.output.max) == pytest.approx((101.0, 180.2, 200))
    assert s.sessions == 0 and s.adapters == 2 and s.top_adapter_share == pytest.approx(0.75)


def test_summary_of_sessions():
    r = empty_requests(3)
    r["session_id"] = [0, 1, 0]
    r["turn"] = [0, 0, 1]
    r["history_tokens"] = [0, 0, 12]
    s = summarize(Trace(requests=r, attrs=ATTRS))
    assert s.sessions == 2 and s.turns_max == 2 and s.history.max == 12
    assert s.rate_per_s == 0.0  # all at time 0


def test_info_command_prints_the_table(tmp_path, capsys):
    path = tmp_path / "t.h5"
    write_trace(path, hundred_requests(), ATTRS)
    assert main(["trace", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "requests        100" in out
    assert "duration        49.500 s" in out and "rate            2.000 req/s" in out
    prompt_line = next(line for line in out.splitlines() if line.startswith("prompt "))
    assert prompt_line.split() == ["prompt", "50.5", "50.5", "90.1", "99.0", "100"]
    assert "adapters        2 (the most used serves 75.0% of requests)" in out
    assert "source          hand-made" in out


def test_info_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "t.h5"
    write_trace(path, hundred_requests(), ATTRS)
    png = tmp_path / "t.png"
    assert main(["trace", "info", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5", "t.png"]


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    path = tmp_path / "t.h5"
    write_trace(path, hundred_requests(), ATTRS)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert main(["trace", "info", str(path), "--plot", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert (
        "--plot: needs matplotlib" in err and "neupims-py[plot]" in err and "Traceback" not in err
    )
    assert capsys.readouterr().out == ""  # nothing printed before the error


def test_info_on_a_damaged_file(tmp_path, capsys):
    path = tmp_path / "t.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    assert main(["trace", "info", str(path)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
