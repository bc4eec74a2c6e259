"""Benchmark fixtures: the 1M-request DRAM traces, made once per session in a temporary dir.

`bench_*.py` files are collected here (pytest's default pattern is `test_*.py`).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GENERATOR = Path(__file__).resolve().parents[2] / "shared" / "tools" / "gen_dram_traces.py"
N = 1_000_000


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself: not twice
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def traces_1m(tmp_path_factory) -> dict[str, Path]:
    """name (stream_rd_1M, stream_r8w2_1M, random_r8w2_1M) -> DRAMsim3 trace file of N
    requests, one offered per cycle."""
    out = tmp_path_factory.mktemp("dram_traces")
    if GENERATOR.is_file():
        subprocess.run([sys.executable, str(GENERATOR), "--n", str(N), "--outdir", str(out)],
                       check=True)
    else:
        for name, arrays in _arrays().items():
            _write(out / f"{name}.ds3.trace", *arrays)
    return {p.name.removesuffix(".ds3.trace"): p for p in out.glob("*.ds3.trace")}


def _arrays():
    """The generator's three patterns (its random draws differ): 64-byte lines in 1 GiB."""
    rng = np.random.default_rng(0)
    line, space = 64, 1 << 30
    i = np.arange(N, dtype=np.int64)
    return {
        "stream_rd_1M": (i * line % space, np.zeros(N, bool)),
        "stream_r8w2_1M": ((i + 1) * line % space, rng.random(N) >= 0.8),
        "random_r8w2_1M": (rng.integers(0, space // line, N) * line, rng.random(N) >= 0.8),
    }


def _write(path: Path, addr, is_write) -> None:
    ops = np.where(is_write, "WRITE", "READ")
    rows = enumerate(zip(addr.tolist(), ops))
    path.write_text("".join(f"{a:#x} {o} {c}\n" for c, (a, o) in rows))


@pytest.fixture(autouse=True)
def _machine_load(request):
    """Record the load average around every benchmark in its extra_info (`load_before`,
    `load_after`: 1-minute averages; `cpus`) and say so when the machine was busy, since
    on a shared machine a timing taken beside other jobs is not the simulator's."""
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    before = os.getloadavg()[0]
    yield
    if bench is None:
        return
    after = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    bench.extra_info.update(load_before=round(before, 2), load_after=round(after, 2), cpus=cpus)
    if max(before, after) > 0.5 * cpus:
        print(f"\n[bench] {request.node.name}: load average {before:.1f} -> {after:.1f} on "
              f"{cpus} CPUs: the machine was busy, timings may be inflated")
