"""`neupims-sim latency`: the roofline against closed forms worked out by hand, and the
cycle-level simulator against the roofline (never faster; near it for batch-1 decode)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from neupims_py.analytic import latency, roofline_latencies
from neupims_py.cli import main
from neupims_py.config import load_hw

from serving_common import TINY

# TINY by hand: 2 layers, d_model 512, FFN 2048, tp 1, FP16. Per layer QKV 512 x 1536,
# projection 512 x 512, FFN 512 x 2048 and 2048 x 512:
PARAMS = 2 * (512 * 1536 + 512 * 512 + 2 * 512 * 2048)  # 6_291_456
WEIGHT_BYTES = 2 * PARAMS
KV_PER_TOKEN = 2 * 2 * 512 * 2  # K and V, 2 layers, 512 features, 2 bytes
# The neupims preset with 16 channels: 8 arrays of 128 x 128 MACs at 1 GHz; 16 channels of a
# 128-bit DDR bus at 1 GHz; PIM: 32 banks x 16 multipliers x 2 bytes per COMP every 2 cycles.
HW16 = ["memory.geometry.channels=16"]
FLOPS = 8 * 128 * 128 * 2 * 1e9  # 2.62144e14
BUS = 16 * 16 * 2 * 1e9  # 5.12e11 bytes/s
PIM = 16 * 32 * 16 * 2 * 1e9 / 2  # 8.192e12 bytes/s

# Cycle-level / roofline for one decode step at batch 1, measured (ReuseCost, prompt 64):
# TINY 2.28 (neupims), 2.26 (npu+pim), 2.61-2.66 (npu-only); gpt3-7b with prompt 1024:
# 1.84 (neupims), 2.8 (npu-only). Where it goes (TINY, neupims: 28,072 cycles per step):
# weight GEMMs 16,045 cycles (the 12,288 of the roofline at 77% of peak bandwidth), then
# 12,020 cycles of PIM attention in the request's single channel, which the roofline counts
# at the bandwidth of all channels, and overlapped. 3.0 leaves room for small model changes
# while still catching a decode step that stops being memory-bound.
BATCH1_DECODE_FACTOR = 3.0


def test_roofline_closed_forms():
    for mode in ("npu-only", "npu+pim", "neupims"):
        hw = load_hw(mode.replace("+", "-"), HW16)
        lat = roofline_latencies(hw, TINY, prompt=64, response=3, batch=1)
        assert len(lat) == 3
        # prefill of 64 tokens: 2 * params * 64 FLOPs = 3.07 us < reading the weights 24.6 us
        assert lat[0] == pytest.approx(max(2 * PARAMS * 64 / FLOPS, WEIGHT_BYTES / BUS))
        assert lat[0] == pytest.approx(2.4576e-5)
        for n in (1, 2):
            kv = KV_PER_TOKEN * (64 + n - 1)
            expected = {"npu-only": (WEIGHT_BYTES + kv) / BUS,
                        "npu+pim": WEIGHT_BYTES / BUS + kv / PIM,
                        "neupims": max(WEIGHT_BYTES / BUS, kv / PIM)}[mode]
            assert lat[n] == pytest.approx(expected, rel=1e-12), (mode, n)
    # npu-only, decode step 1 written out: (12_582_912 + 262_144) / 5.12e11 = 25.088 us
    hw = load_hw("npu-only", HW16)
    assert roofline_latencies(hw, TINY, 64, 2)[1] == pytest.approx(2.5088e-5)
    # 8 x 512 tokens: compute-bound prefill, 2 * 6_291_456 * 4096 / 2.62144e14 = 196.608 us
    assert roofline_latencies(hw, TINY, 512, 1, batch=8)[0] == pytest.approx(1.96608e-4)
    # a big batch of long contexts makes PIM decode bound by the K/V read on neupims:
    # 64 requests x 2047 tokens x 4096 bytes / 8.192e12 = 65.5 us > 24.6 us of weights
    hw = load_hw("neupims", HW16)
    assert roofline_latencies(hw, TINY, 2047, 2, batch=64)[1] == pytest.approx(64 * 2047 * 4096 / PIM)


@pytest.mark.parametrize("mode", ["npu-only", "npu+pim", "neupims"])
def test_batch1_decode_is_memory_bound_and_near_the_roofline(mode):
    r = latency("neupims", TINY, prompt=64, response=3, mode=mode)
    assert r.mode == mode and len(r.simulated) == len(r.roofline) == 3
    assert all(s >= b for s, b in zip(r.simulated, r.roofline)), r.ratios
    peaks = r.peaks
    # the roofline's decode step is the weight read, not compute
    assert r.roofline[1] >= WEIGHT_BYTES / peaks.bus_bytes_per_s > 2 * PARAMS / peaks.flops_per_s
    assert all(x <= BATCH1_DECODE_FACTOR for x in r.ratios[1:]), r.ratios


def test_batch_runs_together_and_is_never_faster_than_the_roofline(capsys):
    # max_batch_size 2 would split a batch of 4: the limit is raised, and said so
    hw = load_hw("npu-pim", ["scheduler.max_batch_size=2", "scheduler.max_batch_tokens=256"])
    r = latency(hw, TINY, prompt=128, response=3, batch=4, exact=True)
    assert r.raised == {"max_batch_size": (2, 4), "max_batch_tokens": (256, 512)}
    assert r.cost_model == "exact"
    assert all(s >= b for s, b in zip(r.simulated, r.roofline)), r.ratios
    # 4 x 128 prompt tokens: 24.6 us of compute > 12.3 us reading the weights over 32 channels
    assert r.roofline[0] == pytest.approx(2 * PARAMS * 512 / FLOPS)
    assert r.roofline[0] > WEIGHT_BYTES / (32 * 16 * 2 * 1e9)
    for mode in ("neupims", "npu-only"):
        r = latency("neupims", TINY, prompt=512, response=2, batch=4, mode=mode, exact=True)
        assert r.roofline[0] == pytest.approx(2 * PARAMS * 2048 / FLOPS)  # compute-bound
        assert all(s >= b for s, b in zip(r.simulated, r.roofline)), (mode, r.ratios)


def test_cli_table_and_json(tmp_path, capsys):
    model = tmp_path / "tiny.yaml"
    model.write_text(yaml.safe_dump(dataclasses.asdict(TINY)))
    out = tmp_path / "lat.json"
    assert main(["latency", "neupims", "--model", str(model), "--prompt", "64", "--response", "20",
                 "-p", "scheduler.max_batch_size=1", "--batch", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scheduler.max_batch_size raised from 1 to 2" in text
    assert "prefill" in text and "..." in text and "decode: 19 steps" in text
    report = json.loads(out.read_text())
    lat = report["latencies_s"]
    assert len(lat["roofline"]) == len(lat["simulated"]) == 20
    hw = load_hw("neupims", ["scheduler.max_batch_size=2"])
    assert lat["roofline"] == pytest.approx(roofline_latencies(hw, TINY, 64, 20, batch=2), rel=1e-12)
    assert lat["ratio"] == pytest.approx([s / r for s, r in zip(lat["simulated"], lat["roofline"])])
    # the table shows the same numbers, in milliseconds
    row = next(line for line in text.splitlines() if line.strip().startswith("prefill"))
    assert float(row.split()[2]) == pytest.approx(lat["simulated"][0] * 1e3, abs=1e-4)

    assert main(["latency", "neupims", "--model", str(model), "--prompt", "0", "--response", "2"]) == 2
    assert "--prompt: must be at least 1" in capsys.readouterr().err
    assert main(["latency", "neupims", "--model", str(model), "--prompt", "4", "--response", "2",
                 "--json", str(tmp_path / "missing" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mode_on_a_loaded_configuration_equals_the_mode_switch():
    from neupims_py.analytic.latency import _with
    from neupims_py.compiler.cli import MODE_OVERRIDES

    for mode, overrides in MODE_OVERRIDES.items():
        changed = _with(load_hw("npu-only"), dict(o.split("=", 1) for o in overrides))
        assert changed == load_hw("npu-only", overrides), mode
