"""Analytic bandwidth bounds on the 8-channel HBM2 preset, 4 requests offered per cycle.

Peak: 8 channels x 64 B per burst of 2 cycles at 1 GHz = 256 GB/s; bandwidth here is bytes
moved over the replay's cycles.

- Streaming reads (line i at i x 64 B) with refresh off run the data bus back to back. Over
  a finite run the front end and the layout cost a little against the 256 GB/s: channel c
  receives its first request only after 32 x c earlier ones (rorabgbachco puts 32 lines of a
  2 KiB row in one channel), the first data needs ACT + tRCD + read_delay, and 100k lines
  are 3125 rows, so five channels carry 391 rows and three 390. For this trace that caps an
  ideal controller at 99.65 % of 256 GB/s (``ideal_stream_cycles``); the engine must reach
  99.9 % of that cap, and its read commands must be burst-spaced except for at most one
  precharge bubble per channel (when the stream wraps to a bank whose row is still open).
- With refresh every tREFI per rank, a refresh costs about tRTP + tRP (close the rows) +
  tRFC + tRCD (reopen): 256 x (1 - 293 / 3900) = 236.8 GB/s, within 1 %.
- Random lines over 1 GiB are all row misses, limited by four ACTs per tFAW per channel:
  8 x 4 x 64 B / 30 cycles = 68.3 GB/s; the engine must stay under it and above 95 % of it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.formats import Cmd

N = 100_000
LINE = 64
MAX_INJECT = 4
PEAK_GBPS = 256.0


def refresh_off(mem):
    return dataclasses.replace(mem, controller=dataclasses.replace(mem.controller, refresh_policy="off"))


def run(mem, addr, log=False):
    n = len(addr)
    res = replay(
        lower_memory(mem),
        np.asarray(addr, np.uint64),
        np.zeros(n, bool),
        np.zeros(n, np.int64),
        max_inject_per_cycle=MAX_INJECT,
        log_commands=log,
    )
    gbps = n * LINE / (res.cycles / (mem.clock_mhz * 1e6)) / 1e9
    return res, gbps


def stream_addresses():
    return np.arange(N, dtype=np.int64) * LINE


def ideal_stream_cycles(mem, addr) -> int:
    """Cycles an ideal controller needs for the all-at-cycle-0 read stream: each channel's
    first request is offered after the requests ahead of it (MAX_INJECT a cycle), its ACT
    goes two cycles later (accepted, queued), its first RD tRCD after that, then one RD per
    burst; the run ends the cycle after the last data returns."""
    t = mem.timing
    ch_shift, ch_mask = mem.address_fields["ch"]
    ch = (addr >> ch_shift) & ch_mask
    worst = 0
    for c in range(mem.geometry.channels):
        idx = np.flatnonzero(ch == c)
        first_rd = idx[0] // MAX_INJECT + 2 + t.tRCDRD
        last_rd = first_rd + mem.burst_cycles * (len(idx) - 1)
        worst = max(worst, last_rd + mem.read_delay + 1)
    return worst


def test_ideal_stream_cap_by_hand(hbm2_mem):
    # channels 0-4 carry 391 rows (12512 reads), channel 4's first request is number 128:
    # offered at 32, RD at 32 + 2 + 14 = 48, last RD 48 + 2 x 12511 = 25070, data 25086
    assert ideal_stream_cycles(hbm2_mem, stream_addresses()) == 25087


def test_streaming_reads_reach_the_data_bus_peak(hbm2_mem):
    mem = refresh_off(hbm2_mem)
    addr = stream_addresses()
    res, gbps = run(mem, addr, log=True)
    cap = N * LINE / ideal_stream_cycles(mem, addr)  # GB/s at 1 GHz
    assert gbps <= PEAK_GBPS
    assert gbps >= 0.999 * cap, (gbps, cap)
    log = res.commands[0]
    for ch in range(mem.geometry.channels):
        rd = log.cycle[(log.ch == ch) & (log.cmd == Cmd.RD)]
        gaps = np.diff(rd)
        slow = gaps[gaps != mem.burst_cycles]
        assert len(slow) <= 1 and (slow <= mem.burst_cycles + mem.timing.tRP).all(), (ch, slow)


def test_streaming_reads_with_refresh(hbm2_mem):
    t = hbm2_mem.timing
    _, gbps = run(hbm2_mem, stream_addresses())
    bound = PEAK_GBPS * (1 - (t.tRTP + t.tRP + t.tRFC + t.tRCDRD) / t.tREFI)
    assert bound == pytest.approx(236.77, abs=0.01)
    assert gbps == pytest.approx(bound, rel=0.01)


def test_random_reads_are_bounded_by_tfaw(hbm2_mem):
    mem = refresh_off(hbm2_mem)
    rng = np.random.default_rng(20240531)
    addr = rng.integers(0, (1 << 30) // LINE, N) * LINE
    res, gbps = run(mem, addr)
    t = mem.timing
    bound = mem.geometry.channels * 4 * LINE / t.tFAW  # GB/s at 1 GHz
    assert bound == pytest.approx(68.27, abs=0.01)
    assert res.summary()["row_hit_rate"] < 0.01
    assert 0.95 * bound <= gbps < bound
