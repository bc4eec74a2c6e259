"""The engine against the slow reference model of DRAMsim3's controller (dram_reference.py):
every request's accepted and done cycles and the whole command log must be equal.

Hand-picked scenarios make sure each controller mechanism is exercised, since random traces
reach some of them rarely (write drains and where they stop, reads served from the write
buffer, merged reads, a write waiting for a read of its line, the row-hit cap, refresh with
open rows, dual issue, two ranks, the round-robin start). Hypothesis then draws small random
traces over a few rows, banks, bank groups and channels, so conflicts, hits, duplicates and
write-read pairs are common, with random gaps (some into a refresh) and 1-4 requests
offered per cycle, on both presets and two controller variants.

All of it is small enough for the pure-Python run (NUMBA_DISABLE_JIT=1 -m nojit), where
the random tests draw fewer examples.
"""

from __future__ import annotations

import dataclasses
import os

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dram_reference  # tests/dram_reference.py
from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.engine import dram as eng
from neupims_py.formats import Cmd, Stat

pytestmark = pytest.mark.nojit

# Examples per random test; a longer search: NEUPIMS_REFERENCE_EXAMPLES=5000 pytest -k random
EXAMPLES = int(os.environ.get("NEUPIMS_REFERENCE_EXAMPLES", 10 if numba.config.DISABLE_JIT else 60))


def variant(preset, **controller):
    mem = load_hw(preset).memory
    if controller:
        mem = dataclasses.replace(mem, controller=dataclasses.replace(mem.controller, **controller))
    return mem


MEMS = {
    "hbm2": variant("hbm2-8gb-x128"),  # 1 rank, per-bank queues of 8, dual issue
    "neupims": variant("neupims"),  # 2 ranks, 32 channels, queues of 128, single issue
    "hbm2-per-rank": variant("hbm2-8gb-x128", queue_structure="per-rank", cmd_queue_size=32),
    "hbm2-close-page": variant("hbm2-8gb-x128", row_buffer_policy="close-page"),
    # 4 ranks of 16 banks: 64 command queues per channel, more than the engine's queue
    # bitmasks hold (MASK_QUEUES), so its plain round-robin scan runs
    "hbm2-4-ranks": dataclasses.replace(
        variant("hbm2-8gb-x128"),
        geometry=dataclasses.replace(load_hw("hbm2-8gb-x128").memory.geometry, ranks=4, rows=8192),
    ),
    # 64 channels: more than the engine's bitmask of due channels holds (MASK_CHANNELS), so
    # its run loop walks the channels one by one
    "hbm2-64-channels": dataclasses.replace(
        variant("hbm2-8gb-x128"),
        geometry=dataclasses.replace(load_hw("hbm2-8gb-x128").memory.geometry, channels=64, rows=4096,
                                     channel_size_mib=128),
    ),
}
PARAMS = {name: lower_memory(mem) for name, mem in MEMS.items()}


def address(mem, ch=0, ra=0, bg=0, ba=0, ro=0, co=0) -> int:
    f = mem.address_fields
    fields = {"ch": ch, "ra": ra, "bg": bg, "ba": ba, "ro": ro, "co": co}
    a = 0
    for name, value in fields.items():
        shift, mask = f[name]
        assert value <= mask, name
        a |= value << shift
    return a


def engine_commands(res):
    return [
        (int(c), Cmd(int(k)), int(ch), int(r), int(g), int(b), int(ro), int(co))
        for chunk in res.commands
        for c, k, ch, r, g, b, ro, co in zip(*chunk)
    ]


def first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"command {i}: engine {x}, reference {y}; before it: {a[max(0, i - 3):i]}"
    return f"lengths differ: engine {len(a)}, reference {len(b)}; tail {a[-3:]} vs {b[-3:]}"


def check(name, addr, is_write, cycle, max_inject=1):
    """Replay on the engine and the reference; everything observable must be equal.
    The reference runs first: a trace it finds livelocked would never finish in the engine."""
    mem = MEMS[name]
    ref = dram_reference.run(mem, addr, is_write, cycle, max_inject)
    res = replay(
        PARAMS[name],
        np.asarray(addr, np.uint64),
        np.asarray(is_write, bool),
        np.asarray(cycle, np.int64),
        max_inject_per_cycle=max_inject,
        log_commands=True,
    )
    assert res.added.tolist() == ref.added
    assert res.done.tolist() == ref.done
    got = engine_commands(res)
    assert got == ref.commands, first_difference(got, ref.commands)
    for ch, s in enumerate(ref.stats):
        engine = res.final_stats[ch]
        assert (
            engine[Stat.READ_ROW_HITS],
            engine[Stat.WRITE_ROW_HITS],
            engine[Stat.READS_FORWARDED],
        ) == (s["read_row_hits"], s["write_row_hits"], s["reads_forwarded"]), ch
    return got, ref


def kinds(cmds, ch=0):
    return [c[1] for c in cmds if c[2] == ch]


# --------------------------------------------------------------------------- scenarios


def test_write_drain_when_more_than_8_wait_and_queues_are_empty():
    mem = MEMS["hbm2"]
    addr = [address(mem, co=i) for i in range(9)] + [address(mem, ro=1)]
    cmds, ref = check("hbm2", addr, [True] * 9 + [False], list(range(10)))
    # 8 buffered writes stay put; the ninth starts a drain
    assert kinds(cmds).count(Cmd.WR) == 9
    assert ref.done[:9] == [i + 2 for i in range(9)]  # posted: acknowledged the next cycle


def test_write_buffer_full_forces_a_drain_behind_reads():
    mem = MEMS["hbm2"]
    writes = [address(mem, bg=1, co=i % 32, ro=i // 32) for i in range(33)]
    reads = [address(mem, co=i % 32) for i in range(40)]
    addr = [a for pair in zip(reads, writes) for a in pair] + reads[33:]
    is_write = [w for _ in range(33) for w in (False, True)] + [False] * 7
    cmds, _ = check("hbm2", addr, is_write, [0] * len(addr), max_inject=2)
    rd = [c[0] for c in cmds if c[1] == Cmd.RD]
    wr = [c[0] for c in cmds if c[1] == Cmd.WR]
    # the 32nd buffered write starts a drain although reads are still queued
    assert len(wr) == 33 and wr[0] < rd[-1]


def test_read_served_from_write_buffer_and_merged_reads():
    mem = MEMS["hbm2"]
    a, b = address(mem, co=3), address(mem, co=4)
    cmds, ref = check("hbm2", [a, a, b, b, b], [True, False, False, False, False], [0, 1, 2, 2, 3])
    assert ref.done[1] == 3  # forwarded from the write buffer at added + 1
    assert ref.done[2] == ref.done[3] == ref.done[4]  # one RD serves all three
    assert kinds(cmds).count(Cmd.RD) == 1


def test_drain_stops_at_a_write_whose_read_is_pending():
    mem = MEMS["hbm2"]
    a = address(mem, co=8)
    # 8 reads fill bank 0's command queue, so a read of `a` waits in the read queue while
    # 32 writes (the first to `a`) fill the write buffer and force a drain; when bank 0
    # has room the drain reaches the write to `a` and stops: the read goes first
    addr = [address(mem, co=i) for i in range(8)] + [a, a]
    addr += [address(mem, bg=1 + i % 3, ba=i // 3 % 4, co=i) for i in range(31)]
    is_write = [False] * 9 + [True] * 32
    cmds, _ = check("hbm2", addr, is_write, [0] * len(addr), max_inject=4)
    (rd,) = [c[0] for c in cmds if c[1] == Cmd.RD and (c[4], c[7]) == (0, 8)]
    (wr,) = [c[0] for c in cmds if c[1] == Cmd.WR and (c[4], c[7]) == (0, 8)]
    assert rd < wr


def test_full_write_buffer_does_not_livelock():
    """DRAMsim3 stalls for good when the write buffer is full and its first drainable write
    has a pending read still in the read queue: every cycle the drain starts, stops at that
    write, and no read is scheduled. Engine and reference serve the read queue in the cycle
    the drain stops, so the trace completes, identically in both."""
    mem = MEMS["hbm2"]
    a = address(mem, bg=3, ba=3, co=5)
    reads = [address(mem, bg=i % 3, ba=i // 3 % 3, co=i) for i in range(12)]
    writes = [address(mem, bg=1, ba=1, ro=1, co=i) for i in range(31)]
    addr = reads + [a, a] + writes
    is_write = [False] * 13 + [True] * 32
    cmds, _ = check("hbm2", addr, is_write, [0] * len(addr), max_inject=4)
    (rd,) = [c[0] for c in cmds if c[1] == Cmd.RD and (c[4], c[5], c[7]) == (3, 3, 5)]
    (wr,) = [c[0] for c in cmds if c[1] == Cmd.WR and (c[4], c[5], c[7]) == (3, 3, 5)]
    assert rd < wr  # the read of `a` still goes before the write to `a`


# Found by a search over random traces: a write drained into bank 0's command queue behind
# a read of the same line at another address (0x48 read, 0x40 written) is ready first
# (write-to-write spacing is shorter than write-to-read) but must wait for the read.
SAME_LINE_TRACE = """
    0xe4280 WRITE 11  0xe0400 WRITE 11  0xe0000 WRITE 17  0xf44c0 WRITE 17
    0xf0040 WRITE 18  0x80048 READ 20  0x48 READ 21  0xfc3c0 WRITE 21
    0x80040 WRITE 23  0xf0640 WRITE 23  0xfc1c0 WRITE 24  0xf40c0 WRITE 25
    0xe4080 WRITE 30  0xf8340 WRITE 31  0xe4480 WRITE 31  0xe8500 WRITE 32
    0xe0600 WRITE 32  0xf0240 WRITE 34  0xec580 WRITE 35  0x40 WRITE 38
    0xf42c0 WRITE 40  0x40040 WRITE 46  0xf8740 WRITE 49  0xf8540 WRITE 50
    0xf46c0 WRITE 50  0xe8700 WRITE 50  0xe0200 WRITE 52  0xec380 WRITE 55
    0xfc5c0 WRITE 55  0xe8100 WRITE 57  0x44048 WRITE 58  0x48 WRITE 59
    0xe8300 WRITE 59  0x80048 WRITE 60
"""


def test_write_waits_for_an_earlier_read_of_its_line():
    fields = SAME_LINE_TRACE.split()
    addr = [int(a, 16) for a in fields[0::3]]
    is_write = [op == "WRITE" for op in fields[1::3]]
    cycle = [int(c) for c in fields[2::3]]
    cmds, _ = check("hbm2", addr, is_write, cycle, max_inject=3)
    on_line = [(c[0], c[1]) for c in cmds if (c[4], c[5], c[6], c[7]) == (0, 0, 0, 1)]
    (rd,) = [t for t, k in on_line if k == Cmd.RD]
    wr = [t for t, k in on_line if k == Cmd.WR]
    assert len(wr) == 2 and rd < min(wr)


@pytest.mark.parametrize("hits_before", [3, 5])
def test_row_hit_cap_lets_a_conflict_precharge(hits_before):
    mem = MEMS["hbm2"]
    # row 0 is read `hits_before` times, a read of row 1 waits behind, and one more hit on
    # row 0 is queued just when the precharge becomes legal (ACT 2 + tRAS 34 = 36)
    addr = [address(mem, co=i) for i in range(hits_before)] + [address(mem, ro=1), address(mem, co=7)]
    cycle = list(range(hits_before + 1)) + [34]
    cmds, _ = check("hbm2", addr, [False] * len(addr), cycle)
    pre = [c[0] for c in cmds if c[1] == Cmd.PRE]
    if hits_before >= mem.controller.row_hit_cap:
        # cap reached: the precharge goes first; the late hit reopens row 0 afterwards
        assert pre == [36, 84]
    else:
        # under the cap the pending hit is served first (RD 36), then PRE at RD + tRTP
        assert pre == [41]


def test_refresh_precharges_open_banks_and_blocks_the_rank():
    mem = MEMS["hbm2"]
    addr = [address(mem, ba=b, ro=b) for b in range(4)] + [address(mem, ba=b, ro=5) for b in range(4)]
    cycle = [3880, 3881, 3882, 3883, 3900, 3901, 3902, 3903]
    cmds, _ = check("hbm2", addr, [False] * 8, cycle)
    ref_at = [c[0] for c in cmds if c[1] == Cmd.REF and c[2] == 0]
    assert ref_at and ref_at[0] > 3900  # open rows had to be precharged first


def test_two_ranks_staggered_refresh_and_rank_switches():
    mem = MEMS["neupims"]
    addr = [address(mem, ra=i % 2, bg=i % 3, co=i) for i in range(12)]
    addr += [address(mem, ch=1, ra=1, ro=2, co=1), address(mem, ra=1, co=5)]
    cycle = [1940 + 3 * i for i in range(12)] + [3890, 3895]
    cmds, _ = check("neupims", addr, [i % 4 == 3 for i in range(14)], cycle, max_inject=2)
    ch0 = [c for c in cmds if c[2] == 0]
    # rank 0 is due at tREFI / 2 = 1950, rank 1 at 3900; each waits for its open rows
    refs = [(c[0], c[3]) for c in ch0 if c[1] == Cmd.REF]
    assert [r for _, r in refs] == [0, 1]
    assert refs[0][0] > 1950 and refs[1][0] > 3900
    # while rank 0 prepares its refresh, rank 1 keeps reading
    assert any(c[1] == Cmd.RD and c[3] == 1 and 1950 < c[0] < refs[0][0] for c in ch0)


def test_dual_issue_of_a_row_and_a_column_command():
    mem = MEMS["hbm2"]
    # four ACTs fill the tFAW window; the fifth (bank group 0, bank 1) waits until 32,
    # when bank group 0's row hits are streaming: ACT and RD share cycle 32
    addr = [address(mem, bg=g) for g in range(4)] + [address(mem, ba=1)]
    addr += [address(mem, co=i) for i in range(1, 16)]
    cmds, _ = check("hbm2", addr, [False] * len(addr), [0] * len(addr), max_inject=4)
    at_32 = sorted(c[1] for c in cmds if c[0] == 32)
    assert at_32 == [Cmd.ACT, Cmd.RD]


def test_first_scan_starts_at_queue_1():
    """DRAMsim3's queue_idx_ starts at 0 and is advanced before use: its first scan of the
    command queues begins at queue 1, so bank 1 wins a tie with bank 0 there."""
    mem = MEMS["hbm2"]
    # two reads reach banks 0 and 1 (queues 0 and 1) of an unused channel while the first
    # refresh (3900 + tRFC 260) blocks it: both ACTs become ready at 4160 in the same scan
    addr = [address(mem, ba=0), address(mem, ba=1)]
    cmds, _ = check("hbm2", addr, [False, False], [3901, 3902])
    acts = [(c[0], c[5]) for c in cmds if c[1] == Cmd.ACT]
    assert acts == [(4160, 1), (4166, 0)]


@pytest.mark.parametrize("name", ["hbm2", "neupims"])
def test_rank_gated_queues_on_a_stream(name):
    """Reads streaming over every bank of a rank, a few hits per row, 4 offered a cycle:
    each read raises its rank's floor for the next one, so the queues waiting for a read
    hit are passed over by their gate (CH_GATE_RD, the rank's read floor still ahead) rather
    than searched; the commands and cycles stay the reference's, and the gate did fire."""
    mem = MEMS[name]
    g = mem.geometry
    addr = [address(mem, bg=i % g.bankgroups, ba=i // g.bankgroups % g.banks_per_group, co=i // 16 % 4)
            for i in range(16 * g.bankgroups * g.banks_per_group // 4)]
    check(name, addr, [False] * len(addr), [0] * len(addr), max_inject=4)
    p = PARAMS[name]
    state = eng.new_state(p)
    batch = eng.new_batch(p, np.asarray(addr, np.int64), np.zeros(len(addr), bool), np.zeros(len(addr), np.int64))
    ctl = eng.new_ctl(0, 4, False)
    assert eng.run_requests(p, state, batch, eng.new_pim_batch(p), eng.new_npu_tasks(), ctl, eng.new_log(1),
                            np.zeros_like(state.stats)) == 0
    assert ctl[eng.C_GATED] > 0 and ctl[eng.C_SEARCHES] > 0


# --------------------------------------------------------------------------- random traces


@st.composite
def traces(draw, name, channels):
    mem = MEMS[name]
    g = mem.geometry
    field = st.fixed_dictionaries(
        {
            "ch": st.integers(0, channels - 1),
            "ra": st.integers(0, g.ranks - 1),
            "bg": st.integers(0, 2),
            "ba": st.integers(0, 1),
            "ro": st.integers(0, 2),
            "co": st.integers(0, 3),
        }
    )
    # mostly line addresses; sometimes a byte offset, so that two different addresses share
    # a line (a write then only waits for an earlier read of the same line in its queue)
    offset = st.sampled_from([0, 0, 0, 8])
    line = st.builds(lambda f, o: address(mem, **f) + o, field, offset)
    pool = draw(st.lists(line, min_size=1, max_size=40))
    n = draw(st.integers(1, 60))
    addr = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    is_write = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    # two thirds back to back (same cycle), the rest up to 10 cycles apart
    gaps = draw(st.lists(st.integers(0, 30).map(lambda x: max(0, x - 20)), min_size=n, max_size=n))
    # one jump somewhere, often to just before or inside a refresh (every tREFI / ranks)
    interval = mem.timing.tREFI // g.ranks
    at = draw(st.integers(0, n - 1))
    jump = draw(st.one_of(st.integers(0, 2 * interval), st.integers(interval - 150, interval + 300)))
    gaps[at] += jump
    cycle = np.cumsum(gaps).tolist()
    return addr, is_write, cycle, draw(st.integers(1, 4))


def hypothesis_settings(examples):
    # derandomized: the same traces on every run, so a failure reproduces (and CI is stable)
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@hypothesis_settings(EXAMPLES)
@given(traces("hbm2", channels=3))
def test_random_traces_hbm2(trace):
    check("hbm2", *trace)


@hypothesis_settings(EXAMPLES)
@given(traces("neupims", channels=2))
def test_random_traces_neupims(trace):
    check("neupims", *trace)


@hypothesis_settings(EXAMPLES // 2)
@given(traces("hbm2-per-rank", channels=2))
def test_random_traces_per_rank_queues(trace):
    check("hbm2-per-rank", *trace)


@hypothesis_settings(EXAMPLES // 2)
@given(traces("hbm2-close-page", channels=2))
def test_random_traces_close_page(trace):
    check("hbm2-close-page", *trace)


@hypothesis_settings(EXAMPLES // 2)
@given(traces("hbm2-4-ranks", channels=2))
def test_random_traces_unmasked_queues(trace):
    assert eng.num_queues(PARAMS["hbm2-4-ranks"]) > eng.MASK_QUEUES
    check("hbm2-4-ranks", *trace)


@hypothesis_settings(max(EXAMPLES // 6, 1))
@given(traces("hbm2-64-channels", channels=64))
def test_random_traces_unmasked_channels(trace):
    assert PARAMS["hbm2-64-channels"].channels > eng.MASK_CHANNELS
    check("hbm2-64-channels", *trace)
