"""PIM commands of the engine against closed-form timings worked out from the preset.

NeuPIMs preset: tRCDRD 14, tFAW 30, tRAS 34, tRP 14, tRFC 260, tGWRITE 96, CL 14 + BL/2 2 =
read_delay 16, COMPS_READRES(k) holds the rank's PIM units 2 * (max(k, 6) + 1) cycles.
"""

import dataclasses

import numpy as np
import pytest

from neupims_py.compiler.layout import AddressLayout
from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.engine import dram as eng
from neupims_py.formats import Cmd

C = Cmd


def memory(row_buffers="dual", refresh="off"):
    mem = load_hw("neupims").memory
    return dataclasses.replace(
        mem,
        pim=dataclasses.replace(mem.pim, row_buffers=row_buffers),
        controller=dataclasses.replace(mem.controller, refresh_policy=refresh),
    )


def run(mem, cmds, reads=(), read_cycles=None):
    """cmds: (cmd, rank, bg, ba, row, k, dur) on channel 0. reads: byte addresses."""
    p = lower_memory(mem)
    cols = list(zip(*cmds))
    n = len(cmds)
    pb = eng.new_pim_batch(p, ch=[0] * n, cmd=[int(c) for c in cols[0]], rank=cols[1], bg=cols[2],
                           ba=cols[3], row=cols[4], k=cols[5], dur=cols[6], cycle=[0] * n)
    addr = np.asarray(reads, np.int64)
    cyc = np.zeros(len(addr), np.int64) if read_cycles is None else np.asarray(read_cycles)
    r = replay(p, addr, np.zeros(len(addr), bool), cyc, pim=pb, log_commands=True)
    log = [(int(c.cycle[i]), Cmd(int(c.cmd[i])).name, int(c.rank[i]), int(c.bg[i]), int(c.ba[i]))
           for c in r.commands for i in range(len(c.cycle))]
    return pb, r, log


def cmd(c, rank=0, bg=0, ba=0, row=0, k=0, dur=0):
    return (c, rank, bg, ba, row, k, dur)


@pytest.mark.nojit
def test_gwrite_opens_its_row_and_holds_comps_for_tgwrite():
    pb, _, log = run(memory(), [cmd(C.GWRITE, row=5), cmd(C.G_ACT, bg=1, row=7), cmd(C.COMPS_READRES, k=8)])
    # closed bank: ACT at 0, GWRITE tRCDRD later; G_ACT next cycle (ACT->G_ACT other bank
    # group is tRRD_S 4, already met); COMPS_READRES waits for the global buffer: GWRITE + 96
    assert log[:2] == [(0, "ACT", 0, 0, 0), (14, "GWRITE", 0, 0, 0)]
    assert pb.issued.tolist() == [14, 15, 14 + 96]
    assert pb.done[0] == 14 + 96
    # results: 8 COMPs (2 cycles each) then the READRES data (read_delay 16)
    assert pb.done[2] == 110 + 2 * 8 + 16


@pytest.mark.nojit
def test_g_act_chain_in_one_rank_is_spaced_by_tfaw():
    stream = [cmd(C.G_ACT, rank=0, bg=g, row=3) for g in range(4)] + [cmd(C.G_ACT, rank=1, bg=0, row=3)]
    pb, _, _ = run(memory(), stream)
    # a G_ACT opens four banks at once: the rank's next activation waits a whole tFAW
    assert pb.issued.tolist() == [0, 30, 60, 90, 91]


@pytest.mark.nojit
@pytest.mark.parametrize("k, slot", [(8, 2 * (8 + 1)), (3, 2 * (6 + 1)), (6, 14), (32, 66)])
def test_comps_readres_spacing(k, slot):
    stream = [cmd(C.G_ACT, row=1)] + [cmd(C.COMPS_READRES, k=k)] * 3
    pb, _, _ = run(memory(), stream)
    first = 14  # G_ACT -> COMPS_READRES: tRCDRD
    assert pb.issued.tolist() == [0, first, first + slot, first + 2 * slot]


def gemv_tile():
    """One KV tile: header, G_ACT bank group 1, four heads, PIM precharge."""
    return ([cmd(C.PIM_HEADER, dur=300), cmd(C.G_ACT, bg=1, row=7)]
            + [cmd(C.COMPS_READRES, k=8)] * 4 + [cmd(C.PIM_PRECHARGE, bg=1)])


def reads_bank_group_2(mem, n):
    L = AddressLayout(mem)
    bank = 2 * mem.geometry.banks_per_group  # rank 0, bank group 2, bank 0
    return L.compose(0, np.full(n, bank), np.zeros(n, np.int64), np.arange(n))


@pytest.mark.nojit
def test_gemv_tile_dual_buffer_serves_reads_meanwhile():
    mem = memory("dual")
    pb, r, log = run(mem, gemv_tile(), reads_bank_group_2(mem, 8))
    g_act = 0
    crs = [g_act + 14 + 18 * i for i in range(4)]
    assert pb.issued.tolist() == [0, 0] + crs + [crs[-1] + 18]
    pim_pre = crs[-1] + 18
    # the reads (accepted at cycle 1) may open their row once the G_ACT's tFAW window has
    # passed (a G_ACT activates four banks: G_ACT -> ACT same rank is tFAW), then stream
    # one column every tCCD_L = 2 cycles, all before the PIM precharge
    tfaw = mem.timing.tFAW
    act = [c for c, name, *_ in log if name == "ACT"]
    assert act == [tfaw]
    # RD from ACT + tRCDRD = 44 every 2 cycles, but the COMPS_READRES at crs[2] = 50 takes
    # that cycle's command slot and its result uses the data bus: COMPS_READRES -> RD in
    # the rank is read_to_read_o = burst 2 + tRTRS 2 = 4, so the reads resume at 54
    rd = [44, 46, 48] + [crs[2] + 4 + 2 * i for i in range(5)]
    assert rd[-1] < crs[3]
    assert r.done.tolist() == [t + 16 for t in rd]
    assert r.done.max() < pim_pre


@pytest.mark.nojit
def test_gemv_tile_single_buffer_blocks_reads_until_precharge():
    mem = memory("single")
    pb, r, log = run(mem, gemv_tile(), reads_bank_group_2(mem, 8))
    pim_pre = int(pb.issued[-1])
    assert pim_pre == 14 + 18 * 4
    act = [c for c, name, *_ in log if name == "ACT"]
    # Newton: the channel is in PIM mode from the header to the last PIM precharge
    assert act == [pim_pre + 1]
    assert r.done.tolist() == [pim_pre + 1 + 14 + 16 + 2 * i for i in range(8)]
    assert r.stats[0, int(eng.Stat.PIM_BLOCKED_CYCLES)] == pim_pre


@pytest.mark.nojit
def test_dual_buffer_normal_act_of_a_pim_row_waits_for_pim_precharge():
    mem = memory("dual")
    L = AddressLayout(mem)
    same_row = L.compose(0, np.array([0]), np.array([9]), np.array([0]))
    stream = [cmd(C.G_ACT, bg=0, row=9), cmd(C.COMPS_READRES, k=8), cmd(C.PIM_PRECHARGE, bg=0)]
    pb, r, log = run(mem, stream, same_row)
    assert pb.issued.tolist() == [0, 14, 34]  # PIM precharge: tRAS after the G_ACT
    act = [c for c, name, *_ in log if name == "ACT"]
    # the row is open in the PIM buffer until 34; the normal ACT goes the cycle after
    assert act == [35]
    assert r.done.tolist() == [35 + 14 + 16]


@pytest.mark.nojit
def test_pim_header_waits_for_the_refresh_it_would_straddle():
    mem = memory("dual", refresh="rank-staggered")
    interval = mem.timing.tREFI // mem.geometry.ranks  # 1950: rank 0 refreshes first
    p = lower_memory(mem)
    stream = [cmd(C.PIM_HEADER, dur=1000), cmd(C.G_ACT, row=2)]
    cols = list(zip(*stream))
    pb = eng.new_pim_batch(p, ch=[0, 0], cmd=[int(c) for c in cols[0]], rank=cols[1], bg=cols[2],
                           ba=cols[3], row=cols[4], k=cols[5], dur=cols[6], cycle=[1000, 1000])
    r = replay(p, np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64), pim=pb, log_commands=True)
    refs = [int(c.cycle[i]) for c in r.commands for i in range(len(c.cycle))
            if c.cmd[i] == int(Cmd.REF) and c.ch[i] == 0]
    # 1000 + 1000 > 1950: the GEMV waits for rank 0's refresh, then starts
    assert refs[0] == interval
    assert pb.issued[0] == interval + 1
    assert pb.issued[1] == interval + mem.timing.tRFC  # REF -> G_ACT: tRFC


def test_refresh_waits_for_open_pim_rows():
    mem = memory("dual", refresh="rank-staggered")
    interval = mem.timing.tREFI // mem.geometry.ranks
    p = lower_memory(mem)
    # a header with no duration estimate starts right before the refresh is due
    stream = [cmd(C.PIM_HEADER), cmd(C.G_ACT, row=2), cmd(C.COMPS_READRES, k=8), cmd(C.PIM_PRECHARGE)]
    cols = list(zip(*stream))
    start = interval - 5
    pb = eng.new_pim_batch(p, ch=[0] * 4, cmd=[int(c) for c in cols[0]], rank=cols[1], bg=cols[2],
                           ba=cols[3], row=cols[4], k=cols[5], dur=cols[6], cycle=[start] * 4)
    # a later read in rank 1 keeps the run going past the refresh
    later = AddressLayout(mem).compose(0, np.array([16]), np.array([0]), np.array([0]))
    r = replay(p, later, np.zeros(1, bool), np.array([interval + 200]), pim=pb, log_commands=True)
    refs = [int(c.cycle[i]) for c in r.commands for i in range(len(c.cycle))
            if c.cmd[i] == int(Cmd.REF) and c.ch[i] == 0]
    pim_pre = start + 34  # G_ACT at `start`, PIM precharge tRAS later
    assert pb.issued[-1] == pim_pre
    # the refresh (due at `interval`) cannot close a PIM row: it goes tRP after the precharge
    assert refs[0] == pim_pre + mem.timing.tRP
