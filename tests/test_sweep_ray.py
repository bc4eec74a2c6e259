"""`neupims-sim sweep --ray`: the points as Ray tasks on a local Ray instance started here
give the same table as running them in this process. Skipped without the ray extra."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from neupims_py.cli import main

from serving_common import MICRO, requests, write_test_trace

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow  # a local Ray instance takes 10-20 s to start
def test_ray_tasks_give_the_local_table(tmp_path, local_ray, capsys):
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(dataclasses.asdict(MICRO)))
    write_test_trace(tmp_path / "t.h5", requests([8, 30, 12], [4, 2, 5], arrival_ns=[0, 10, 2000]))
    spec = {"base": {"hw": "neupims", "model": "micro.yaml", "trace": "t.h5"},
            "points": [{"scheduler.max_batch_size": 1}, {"scheduler.max_batch_size": 4},
                       {"scheduler.max_batch_size": 0}]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    # the running instance is used ("auto" would also find a cluster started by `ray start`)
    assert main(["sweep", str(path), "--out", str(tmp_path / "ray"), "--ray", "auto", "--quiet"]) == 0
    assert "3 points: 2 run, 0 reused, 1 failed" in capsys.readouterr().out
    assert ray.is_initialized()  # not shut down by the sweep: it did not start it
    assert main(["sweep", str(path), "--out", str(tmp_path / "local"), "--quiet"]) == 0
    capsys.readouterr()
    text = (tmp_path / "ray" / "results.csv").read_text()
    assert text == (tmp_path / "local" / "results.csv").read_text()
    assert text.count(",ok,") == 2 and "max_batch_size: must be at least 1" in text
