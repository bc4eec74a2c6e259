"""Synthetic workloads: arrival processes, length distributions, adapter popularity, the synth command."""

import json
import shlex

import numpy as np
import pytest

from neupims_py.cli import main
from neupims_py.errors import UserError
from neupims_py.workload import load_trace, write_trace
from neupims_py.workload.arrivals import Arrivals
from neupims_py.workload.lengths import adapter_popularity, parse_length_spec, sample_adapters
from neupims_py.workload.synth import synthesize


def measured_rate_and_cv(times_ns):
    gaps = np.diff(times_ns) / 1e9
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


@pytest.mark.parametrize("rate, cv", [(10.0, 2.0), (250.0, 0.5), (3.0, 4.0)])
def test_gamma_rate_and_cv_over_100k_arrivals(rate, cv):
    times = Arrivals("gamma", rate=rate, cv=cv).times_ns(np.random.default_rng(1), 100_001)
    measured_rate, measured_cv = measured_rate_and_cv(times)
    assert abs(measured_rate / rate - 1) < 0.02
    assert abs(measured_cv / cv - 1) < 0.05


def test_gamma_params_attribute():
    # shape = 1/cv^2 = 4, scale = 1/(rate * shape) = 1/(2 * 4)
    params = json.loads(Arrivals("gamma", rate=2.0, cv=0.5).params())
    assert params == {"rate_per_s": 2.0, "cv": 0.5, "shape": 4.0, "scale_s": 0.125}


def test_poisson_has_cv_one():
    times = Arrivals("poisson", rate=40.0).times_ns(np.random.default_rng(2), 100_001)
    measured_rate, measured_cv = measured_rate_and_cv(times)
    assert abs(measured_rate / 40 - 1) < 0.02
    assert abs(measured_cv - 1) < 0.05


def test_fixed_and_at_once_are_exact():
    fixed = Arrivals("fixed", rate=4.0).times_ns(np.random.default_rng(0), 5)
    assert fixed.tolist() == [0, 250_000_000, 500_000_000, 750_000_000, 1_000_000_000]
    assert fixed.dtype == np.int64
    assert Arrivals("at-once").times_ns(np.random.default_rng(0), 3).tolist() == [0, 0, 0]


def test_by_duration():
    # One request every 0.3 s within [0, 1): at 0, 0.3, 0.6, 0.9.
    fixed = Arrivals("fixed", rate=1 / 0.3).times_within_ns(np.random.default_rng(0), 1.0)
    assert fixed.tolist() == [0, 300_000_000, 600_000_000, 900_000_000]
    poisson = Arrivals("poisson", rate=50.0).times_within_ns(np.random.default_rng(5), 200.0)
    assert poisson[-1] < 200 * 10**9
    assert abs(len(poisson) / (50 * 200) - 1) < 0.03  # sd of the count is sqrt(10000) = 1%


def test_same_seed_same_times_other_seed_other_times():
    a = Arrivals("gamma", rate=5.0, cv=3.0)
    first = a.times_ns(np.random.default_rng(11), 1000)
    assert np.array_equal(first, a.times_ns(np.random.default_rng(11), 1000))
    assert not np.array_equal(first, a.times_ns(np.random.default_rng(12), 1000))


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"kind": "poisson"}, "--rate"),
        ({"kind": "poisson", "rate": -1.0}, "--rate"),
        ({"kind": "gamma", "rate": 1.0}, "--cv"),
        ({"kind": "fixed", "rate": 1.0, "cv": 2.0}, "--cv"),
        ({"kind": "at-once", "rate": 1.0}, "--rate"),
        ({"kind": "weibull", "rate": 1.0}, "--arrival"),
    ],
)
def test_bad_arrival_parameters_name_the_flag(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        Arrivals(**kwargs)


def test_length_specs():
    rng = np.random.default_rng(0)
    assert parse_length_spec("fixed:128", "--prompt").sample(rng, 3).tolist() == [128, 128, 128]
    uniform = parse_length_spec("uniform:3:5", "--prompt").sample(rng, 30_000)
    assert set(uniform.tolist()) == {3, 4, 5}
    assert abs((uniform == 5).mean() - 1 / 3) < 0.02


def test_zipf_follows_its_power_law():
    # P(k) ~ k^-a on 10..1000, so P(10) / P(20) = 2^a.
    alpha = 1.5
    values = parse_length_spec(f"zipf:{alpha}:10:1000", "--output").sample(
        np.random.default_rng(3), 200_000
    )
    assert values.min() >= 10 and values.max() <= 1000
    support = np.arange(10, 1001)
    p10 = 10.0**-alpha / (support**-alpha).sum()
    assert abs((values == 10).mean() / p10 - 1) < 0.05
    assert abs((values == 10).sum() / (values == 20).sum() / 2**alpha - 1) < 0.1


@pytest.mark.parametrize(
    "spec",
    ["normal:3", "fixed", "uniform:5", "uniform:9:3", "zipf:1:0:9", "fixed:x", "zipf:-1:1:9"],
)
def test_bad_length_specs(spec):
    with pytest.raises(UserError, match="--prompt"):
        parse_length_spec(spec, "--prompt")


def test_adapter_popularity_power_law():
    # alpha 1, 3 adapters: weights (k+1)^-1 = 1, 1/2, 1/3, which sum to 11/6.
    assert np.allclose(adapter_popularity(3, 1.0), np.array([1, 1 / 2, 1 / 3]) / (11 / 6))
    assert np.allclose(adapter_popularity(4, 0.0), 0.25)
    ids = sample_adapters(np.random.default_rng(0), 100_000, 8, 2.0)
    counts = np.bincount(ids, minlength=8)
    assert abs(counts[0] / counts[1] / 4 - 1) < 0.05  # (2/1)^2
    assert sample_adapters(np.random.default_rng(0), 3, 0, 1.0).tolist() == [-1, -1, -1]


def test_synthesize_lengths_from_a_trace_keeps_pairs(tmp_path):
    source = tmp_path / "src.h5"
    rows, attrs = synthesize(
        Arrivals("fixed", rate=1.0),
        seed=0,
        n=5,
        prompt=parse_length_spec("uniform:1:1000", "--prompt"),
        output=parse_length_spec("uniform:1:1000", "--output"),
    )
    write_trace(source, rows, {**attrs, "command": "test"})
    pairs = set(zip(rows["prompt_tokens"].tolist(), rows["output_tokens"].tolist()))
    sampled, sampled_attrs = synthesize(
        Arrivals("poisson", rate=3.0), seed=1, n=200, lengths_from=load_trace(source)
    )
    got = set(zip(sampled["prompt_tokens"].tolist(), sampled["output_tokens"].tolist()))
    assert got <= pairs and len(got) > 1
    assert json.loads(sampled_attrs["lengths_from"])["requests"] == 5


def run(*argv):
    return main(["trace", *map(str, argv)])


def test_synth_command_is_reproducible_and_records_itself(tmp_path, capsys):
    out_a, out_b, out_c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    common = [
        "--n",
        16,
        "--arrival",
        "gamma",
        "--rate",
        8,
        "--cv",
        2,
        "--prompt",
        "zipf:1.2:4:512",
        "--output",
        "uniform:1:64",
        "--adapters",
        3,
    ]
    assert run("synth", "--out", out_a, *common, "--seed", 5) == 0
    assert run("synth", "--out", out_b, *common, "--seed", 5) == 0
    assert run("synth", "--out", out_c, *common, "--seed", 6) == 0
    a, b, c = load_trace(out_a), load_trace(out_b), load_trace(out_c)
    assert a.requests.tobytes() == b.requests.tobytes()
    assert a.requests.tobytes() != c.requests.tobytes()
    assert len(a) == 16 and set(a.requests["adapter_id"].tolist()) <= {0, 1, 2}
    assert a.attrs["seed"] == 5 and a.attrs["arrival_process"] == "gamma"
    command = a.attrs["command"]
    assert (
        command.startswith("neupims-sim trace synth --out ")
        and "--cv 2.0" in command
        and "--seed 5" in command
    )
    # The recorded command makes the same trace again.
    again = tmp_path / "again.h5"
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(again)
    assert main(argv) == 0
    assert load_trace(again).requests.tobytes() == a.requests.tobytes()


def test_synth_by_duration(tmp_path):
    out = tmp_path / "d.h5"
    assert (
        run(
            "synth",
            "--out",
            out,
            "--duration",
            2,
            "--arrival",
            "fixed",
            "--rate",
            4,
            "--prompt",
            "fixed:7",
            "--output",
            "fixed:9",
        )
        == 0
    )
    trace = load_trace(out)
    assert trace.requests["arrival_ns"].tolist() == [i * 250_000_000 for i in range(8)]
    assert set(trace.requests["prompt_tokens"].tolist()) == {7}


def test_synth_without_lengths_is_a_user_error(tmp_path, capsys):
    assert run("synth", "--out", tmp_path / "x.h5", "--n", 4, "--rate", 1) == 2
    err = capsys.readouterr().err
    assert "--prompt and --output" in err and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists()
