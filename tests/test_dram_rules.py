"""Every DRAM timing rule is tight in the engine, and the rule table holds the latencies worked
out by hand from the datasheet timings.

Tightness (Ramulator 2 style), one generated case per rule of ``dram_rules(mem)``: on a fresh
engine state, `prev` issued to one bank at cycle T makes `next` illegal at T + latency - 1 and
legal at T + latency in every bank the rule's level reaches (where two rules for the same
commands reach a bank, the longer one), and constrains nothing else. The hand table is
independent of ``derived_timings``: DRAMsim3's formulas evaluated on the preset numbers in
the comments. tFAW, which is not a pairwise rule, is checked on a replayed trace.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.dram.replay import replay
from neupims_py.dram.timing_rules import Level, dram_rules
from neupims_py.engine import dram as eng
from neupims_py.formats import Cmd

PRESETS = ("hbm2-8gb-x128", "neupims")
T = 1000  # issue cycle of the preceding command
ISSUER = (1, 1, 2, 3)  # (channel, rank, bank group, bank) it goes to; rank 0 when 1 rank

L = Level
# (level, prev, next): latency. Both presets share the HBM2 timings: CL 14, CWL 4, AL 0,
# burst BL4/2 = 2 (RL 14, WL 4, read_delay 16, write_delay 6), tRCD 14, tRP 14, tRAS 34,
# tRC 48, tRRD_S 4, tRRD_L 6, tWTR_S 6, tWTR_L 8, tWR 16, tRTP 5, tCCD_S 1, tCCD_L 2,
# tRTRS 2, tRFC 260.
HAND = {
    (L.SAME_BANK, Cmd.RD, Cmd.RD): 2,  # max(burst 2, tCCD_L 2)
    (L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.RD): 2,  # max(burst 2, tCCD_L 2)
    (L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.RD): 2,  # max(burst 2, tCCD_S 1)
    (L.SAME_BANK, Cmd.RD, Cmd.WR): 14,  # RL 14 + burst 2 - WL 4 + tRTRS 2
    (L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.WR): 14,  # same bus turnaround
    (L.SAME_BANK, Cmd.RD, Cmd.PRE): 5,  # AL 0 + tRTP 5
    (L.SAME_BANK, Cmd.WR, Cmd.RD): 14,  # WL 4 + burst 2 + tWTR_L 8
    (L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.RD): 14,  # WL 4 + burst 2 + tWTR_L 8
    (L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.RD): 12,  # WL 4 + burst 2 + tWTR_S 6
    (L.SAME_BANK, Cmd.WR, Cmd.WR): 2,  # max(burst 2, tCCD_L 2)
    (L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.WR): 2,  # max(burst 2, tCCD_S 1)
    (L.SAME_BANK, Cmd.WR, Cmd.PRE): 22,  # WL 4 + burst 2 + tWR 16
    (L.SAME_BANK, Cmd.ACT, Cmd.RD): 14,  # tRCD
    (L.SAME_BANK, Cmd.ACT, Cmd.WR): 14,  # tRCD
    (L.SAME_BANK, Cmd.ACT, Cmd.PRE): 34,  # tRAS
    (L.SAME_BANK, Cmd.ACT, Cmd.ACT): 48,  # tRC
    (L.OTHER_BANKS_SAME_BANKGROUP, Cmd.ACT, Cmd.ACT): 6,  # tRRD_L
    (L.OTHER_BANKGROUPS_SAME_RANK, Cmd.ACT, Cmd.ACT): 4,  # tRRD_S
    (L.SAME_BANK, Cmd.PRE, Cmd.ACT): 14,  # tRP
    (L.SAME_BANK, Cmd.PRE, Cmd.REF): 14,  # tRP
    (L.SAME_RANK, Cmd.REF, Cmd.ACT): 260,  # tRFC
    (L.SAME_RANK, Cmd.REF, Cmd.REF): 260,  # tRFC
    (L.SAME_BANK, Cmd.RDA, Cmd.ACT): 21,  # AL 0 + burst 2 + tRTP 5 + tRP 14
    (L.SAME_BANK, Cmd.RDA, Cmd.REF): 19,  # tRTP 5 + tRP 14
    (L.SAME_BANK, Cmd.WRA, Cmd.ACT): 36,  # WL 4 + burst 2 + tWR 16 + tRP 14
    # other rank (the neupims preset has 2): data-bus turnarounds
    (L.OTHER_RANKS, Cmd.RD, Cmd.RD): 4,  # burst 2 + tRTRS 2
    (L.OTHER_RANKS, Cmd.RD, Cmd.WR): 14,  # read_delay 16 + burst 2 + tRTRS 2 - write_delay 6
    (L.OTHER_RANKS, Cmd.WR, Cmd.WR): 2,  # burst 2
    (L.OTHER_RANKS, Cmd.WR, Cmd.RD): -6,  # write_delay 6 + burst 2 + tRTRS 2 - read_delay 16
}


@functools.cache
def memory(preset):
    return load_hw(preset).memory


def issuer(p):
    ch, rank, bg, ba = ISSUER
    return ch, min(rank, p.ranks - 1), bg, ba


def global_bank(p, ch, rank, bg, ba):
    return ((ch * p.ranks + rank) * p.bankgroups + bg) * p.banks_per_group + ba


def banks_reached(p, level):
    """Global indices of the banks a rule of `level` constrains, from the issuing bank."""
    ch, rank, bg, ba = issuer(p)
    out = []
    for r in range(p.ranks):
        for g in range(p.bankgroups):
            for b in range(p.banks_per_group):
                if level == L.SAME_BANK:
                    hit = (r, g, b) == (rank, bg, ba)
                elif level == L.OTHER_BANKS_SAME_BANKGROUP:
                    hit = (r, g) == (rank, bg) and b != ba
                elif level == L.OTHER_BANKGROUPS_SAME_RANK:
                    hit = r == rank and g != bg
                elif level == L.OTHER_RANKS:
                    hit = r != rank
                elif level == L.SAME_RANK:
                    hit = r == rank
                elif level == L.SAME_BANKGROUP:
                    hit = (r, g) == (rank, bg)
                else:
                    raise ValueError(level)
                if hit:
                    out.append(global_bank(p, ch, r, g, b))
    return out


def issue(p, prev):
    """A fresh state after `prev` issued to the issuing bank at T."""
    st = eng.new_state(p)
    eng._apply_rules(p, st, *issuer(p), int(prev), T)
    return st


def rule_cases():
    for preset in PRESETS:
        mem = memory(preset)
        never = eng.never_issued(lower_memory(mem))
        for r in dram_rules(mem):
            if r.latency <= 0 or (r.level == L.OTHER_RANKS and mem.geometry.ranks == 1):
                continue
            if r.next in never:
                continue  # test_untracked_commands_stay_free
            key = (r.level, r.prev, r.next)
            marks = [pytest.mark.nojit] if key in HAND and preset == "neupims" else []
            if key in SHADOWED and preset in SHADOWED[key]:
                marks.append(pytest.mark.xfail(strict=True, reason=SHADOWED[key][preset]))
            name = f"{preset}-{r.level.name}-{r.prev.name}-{r.next.name}"
            yield pytest.param(preset, r, marks=marks, id=name)


# Rules of the table that can never bind: another rule for the same commands reaches every
# bank they reach with a longer latency. Dead data; listed here until the table drops them.
SHADOWED = {
    (L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.ACT): {
        "neupims": "G_ACT->ACT same bank group (tRRD_L 6) is covered by G_ACT->ACT same rank (tFAW 30)",
    },
}


def binding_latency(mem, p, prev, nxt) -> dict:
    """Global bank -> the longest latency of the rules (prev, nxt) that reach it."""
    out = {}
    for r in dram_rules(mem):
        if (r.prev, r.next) == (prev, nxt):
            for gb in banks_reached(p, r.level):
                out[gb] = max(out.get(gb, r.latency), r.latency)
    return out


@pytest.mark.parametrize("preset, rule", list(rule_cases()))
def test_rule_is_tight(preset, rule):
    """`next` becomes legal exactly when the longest rule reaching a bank allows, and this
    rule is that longest one in at least one bank."""
    mem = memory(preset)
    p = lower_memory(mem)
    st = issue(p, rule.prev)
    binding = binding_latency(mem, p, rule.prev, rule.next)
    targets = banks_reached(p, rule.level)
    assert targets
    for gb in targets:
        earliest = st.bank_next[gb, int(rule.next)]
        legal = lambda t: earliest <= t  # noqa: E731
        assert not legal(T + binding[gb] - 1), (rule, gb)
        assert legal(T + binding[gb]), (rule, gb)
    assert any(binding[gb] == rule.latency for gb in targets), f"{rule} never binds"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("prev", list(Cmd), ids=lambda c: c.name)
def test_command_constrains_nothing_but_its_rules(preset, prev):
    """After `prev`, every (bank, command) earliest cycle is what the rules say and no more:
    the other channels and the pairs without a rule stay free."""
    mem = memory(preset)
    p = lower_memory(mem)
    st = issue(p, prev)
    expected = np.zeros_like(st.bank_next)
    never = eng.never_issued(p)
    for r in dram_rules(mem):
        if r.prev == prev and r.next not in never:
            for gb in banks_reached(p, r.level):
                expected[gb, r.next] = max(expected[gb, r.next], T + r.latency)
    np.testing.assert_array_equal(st.bank_next, expected)


@pytest.mark.nojit
@pytest.mark.parametrize("preset", PRESETS)
def test_rule_table_matches_hand_computation(preset):
    mem = memory(preset)
    table = {(r.level, r.prev, r.next): r.latency for r in dram_rules(mem)}
    assert len(table) == len(dram_rules(mem))  # one latency per (level, prev, next)
    for key, latency in HAND.items():
        if key[0] == L.OTHER_RANKS and mem.geometry.ranks == 1:
            continue
        assert table[key] == latency, key


@pytest.mark.parametrize("preset", PRESETS)
def test_untracked_commands_stay_free(preset):
    """The column commands an open-page controller never issues (RDA, WRA) keep no earliest
    cycle: no command raises them, though the rule table constrains them."""
    mem = memory(preset)
    p = lower_memory(mem)
    assert not p.close_page
    assert eng.never_issued(p) == {Cmd.RDA, Cmd.WRA}
    assert any(r.next == Cmd.RDA and r.latency > 0 for r in dram_rules(mem))
    for prev in Cmd:
        st = issue(p, prev)
        assert not st.bank_next[:, [Cmd.RDA, Cmd.WRA]].any(), prev


@pytest.mark.nojit
@pytest.mark.parametrize("preset", PRESETS)
def test_engine_applies_hand_latencies(preset):
    p = lower_memory(memory(preset))
    for (level, prev, nxt), latency in HAND.items():
        if latency <= 0 or (level == L.OTHER_RANKS and p.ranks == 1) or nxt in eng.never_issued(p):
            continue
        st = issue(p, prev)
        for gb in banks_reached(p, level):
            assert st.bank_next[gb, nxt] == T + latency, (level, prev, nxt, gb)


def test_hand_table_covers_the_main_pairs():
    assert {(k[1], k[2]) for k in HAND} >= {
        (Cmd.RD, Cmd.RD), (Cmd.RD, Cmd.WR), (Cmd.RD, Cmd.PRE), (Cmd.WR, Cmd.RD), (Cmd.WR, Cmd.PRE),
        (Cmd.ACT, Cmd.RD), (Cmd.ACT, Cmd.PRE), (Cmd.ACT, Cmd.ACT), (Cmd.PRE, Cmd.ACT),
        (Cmd.REF, Cmd.ACT), (Cmd.RDA, Cmd.ACT), (Cmd.WRA, Cmd.ACT),
    }


@pytest.mark.nojit
def test_tfaw_window_slides(hbm2_mem):
    """Six ACTs to distinct banks: the fifth and sixth wait for tFAW = 30 after the first and
    second, later than tRRD alone would allow."""
    BA, BG = 1 << 14, 1 << 16  # hbm2 preset address bits
    addr = [0, BG, 2 * BG, 3 * BG, BA, BG + BA]
    cycle = [1000, 1010, 1020, 1025, 1026, 1027]
    res = replay(
        lower_memory(hbm2_mem),
        np.array(addr, np.uint64),
        np.zeros(6, bool),
        np.array(cycle, np.int64),
        log_commands=True,
    )
    (chunk,) = res.commands
    acts = chunk.cycle[chunk.cmd == Cmd.ACT].tolist()
    # each request can ACT two cycles after its offer (accepted, queued, issued):
    # 1002, 1012, 1022, 1027; the fifth: tRRD_S after 1027 is 1031, tFAW after 1002 is 1032;
    # the sixth: tRRD_S after 1032 is 1036, tFAW after 1012 is 1042
    assert acts == [1002, 1012, 1022, 1027, 1032, 1042]
