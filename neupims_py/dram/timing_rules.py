"""DRAM timing constraints as data: one record per (level, preceding command, following command).

The table is DRAMsim3's ``Timing`` class written out as records (Ramulator 2 style), so the
engine looks rules up instead of hard-coding them, and a test can check each one is tight.
Latencies are in memory cycles and may be zero or negative (then the rule never binds).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from neupims_py.formats import Cmd


class Level(IntEnum):
    """Which banks a rule constrains, relative to the bank the preceding command went to."""

    SAME_BANK = 0
    OTHER_BANKS_SAME_BANKGROUP = 1
    OTHER_BANKGROUPS_SAME_RANK = 2
    OTHER_RANKS = 3
    SAME_RANK = 4  # every bank of the rank, including the bank itself (rank commands: REF)
    SAME_BANKGROUP = 5  # every bank of the bank group, including the bank itself (G_ACT)


NUM_LEVELS = len(Level)


@dataclass(frozen=True, slots=True)
class TimingRule:
    level: Level
    prev: Cmd
    next: Cmd
    latency: int  # cycles from the issue of `prev` to the earliest issue of `next`
    name: str  # the derived timing this rule stands for, e.g. "read_to_write"


def derived_timings(mem) -> dict[str, int]:
    """Command-to-command latencies derived from the datasheet timings (DRAMsim3 Timing())."""
    t = mem.timing
    g = mem.geometry
    burst = mem.burst_cycles
    rl, wl = t.CL + t.AL, t.CWL + t.AL
    read_delay, write_delay = rl + burst, wl + burst
    d = {
        "read_to_read_l": max(burst, t.tCCD_L),
        "read_to_read_s": max(burst, t.tCCD_S),
        "read_to_read_o": burst + t.tRTRS,
        "read_to_write": rl + burst - wl + t.tRTRS,
        "read_to_write_o": read_delay + burst + t.tRTRS - write_delay,
        "read_to_precharge": t.AL + t.tRTP,
        "readp_to_activate": t.AL + burst + t.tRTP + t.tRP,
        "write_to_read_l": write_delay + t.tWTR_L,
        "write_to_read_s": write_delay + t.tWTR_S,
        "write_to_read_o": write_delay + burst + t.tRTRS - read_delay,
        "write_to_write_l": max(burst, t.tCCD_L),
        "write_to_write_s": max(burst, t.tCCD_S),
        "write_to_write_o": burst,
        "write_to_precharge": wl + burst + t.tWR,
        "precharge_to_activate": t.tRP,
        "precharge_to_precharge": t.tPPD,
        "activate_to_activate": t.tRC,
        "activate_to_activate_l": t.tRRD_L,
        "activate_to_activate_s": t.tRRD_S,
        "activate_to_precharge": t.tRAS,
        "activate_to_read": t.tRCDRD,
        "activate_to_write": t.tRCDWR,
        "activate_to_refresh": t.tRC,
        "refresh_to_activate": t.tRFC,
    }
    d["read_to_activate"] = d["read_to_precharge"] + d["precharge_to_activate"]
    d["write_to_activate"] = d["write_to_precharge"] + d["precharge_to_activate"]
    if g.bankgroups == 1:
        # No bank groups: the long (same group) timings fall back to the short ones.
        d["read_to_read_l"] = d["read_to_read_s"]
        d["write_to_read_l"] = d["write_to_read_s"]
        d["write_to_write_l"] = d["write_to_write_s"]
        d["activate_to_activate_l"] = d["activate_to_activate_s"]
    return d


# (level, prev, next, derived timing name): the rows of DRAMsim3's Timing constructor.
_L = Level
_RULES = [
    # READ
    (_L.SAME_BANK, Cmd.RD, Cmd.RD, "read_to_read_l"),
    (_L.SAME_BANK, Cmd.RD, Cmd.WR, "read_to_write"),
    (_L.SAME_BANK, Cmd.RD, Cmd.RDA, "read_to_read_l"),
    (_L.SAME_BANK, Cmd.RD, Cmd.WRA, "read_to_write"),
    (_L.SAME_BANK, Cmd.RD, Cmd.PRE, "read_to_precharge"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.RD, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.RDA, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.WRA, "read_to_write"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.RD, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.RDA, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.WRA, "read_to_write"),
    (_L.OTHER_RANKS, Cmd.RD, Cmd.RD, "read_to_read_o"),
    (_L.OTHER_RANKS, Cmd.RD, Cmd.WR, "read_to_write_o"),
    (_L.OTHER_RANKS, Cmd.RD, Cmd.RDA, "read_to_read_o"),
    (_L.OTHER_RANKS, Cmd.RD, Cmd.WRA, "read_to_write_o"),
    # WRITE
    (_L.SAME_BANK, Cmd.WR, Cmd.RD, "write_to_read_l"),
    (_L.SAME_BANK, Cmd.WR, Cmd.WR, "write_to_write_l"),
    (_L.SAME_BANK, Cmd.WR, Cmd.RDA, "write_to_read_l"),
    (_L.SAME_BANK, Cmd.WR, Cmd.WRA, "write_to_write_l"),
    (_L.SAME_BANK, Cmd.WR, Cmd.PRE, "write_to_precharge"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.RD, "write_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.WR, "write_to_write_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.RDA, "write_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.WRA, "write_to_write_l"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.RD, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.WR, "write_to_write_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.RDA, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.WRA, "write_to_write_s"),
    (_L.OTHER_RANKS, Cmd.WR, Cmd.RD, "write_to_read_o"),
    (_L.OTHER_RANKS, Cmd.WR, Cmd.WR, "write_to_write_o"),
    (_L.OTHER_RANKS, Cmd.WR, Cmd.RDA, "write_to_read_o"),
    (_L.OTHER_RANKS, Cmd.WR, Cmd.WRA, "write_to_write_o"),
    # READ with auto-precharge: as READ for other banks, closes its own bank
    (_L.SAME_BANK, Cmd.RDA, Cmd.ACT, "readp_to_activate"),
    (_L.SAME_BANK, Cmd.RDA, Cmd.REF, "read_to_activate"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RDA, Cmd.RD, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RDA, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RDA, Cmd.RDA, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RDA, Cmd.WRA, "read_to_write"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RDA, Cmd.RD, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RDA, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RDA, Cmd.RDA, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RDA, Cmd.WRA, "read_to_write"),
    (_L.OTHER_RANKS, Cmd.RDA, Cmd.RD, "read_to_read_o"),
    (_L.OTHER_RANKS, Cmd.RDA, Cmd.WR, "read_to_write_o"),
    (_L.OTHER_RANKS, Cmd.RDA, Cmd.RDA, "read_to_read_o"),
    (_L.OTHER_RANKS, Cmd.RDA, Cmd.WRA, "read_to_write_o"),
    # WRITE with auto-precharge
    (_L.SAME_BANK, Cmd.WRA, Cmd.ACT, "write_to_activate"),
    (_L.SAME_BANK, Cmd.WRA, Cmd.REF, "write_to_activate"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WRA, Cmd.RD, "write_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WRA, Cmd.WR, "write_to_write_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WRA, Cmd.RDA, "write_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WRA, Cmd.WRA, "write_to_write_l"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WRA, Cmd.RD, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WRA, Cmd.WR, "write_to_write_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WRA, Cmd.RDA, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WRA, Cmd.WRA, "write_to_write_s"),
    (_L.OTHER_RANKS, Cmd.WRA, Cmd.RD, "write_to_read_o"),
    (_L.OTHER_RANKS, Cmd.WRA, Cmd.WR, "write_to_write_o"),
    (_L.OTHER_RANKS, Cmd.WRA, Cmd.RDA, "write_to_read_o"),
    (_L.OTHER_RANKS, Cmd.WRA, Cmd.WRA, "write_to_write_o"),
    # ACTIVATE
    (_L.SAME_BANK, Cmd.ACT, Cmd.ACT, "activate_to_activate"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.RD, "activate_to_read"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.WR, "activate_to_write"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.RDA, "activate_to_read"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.WRA, "activate_to_write"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.PRE, "activate_to_precharge"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.ACT, Cmd.ACT, "activate_to_activate_l"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.ACT, Cmd.ACT, "activate_to_activate_s"),
    # PRECHARGE
    (_L.SAME_BANK, Cmd.PRE, Cmd.ACT, "precharge_to_activate"),
    (_L.SAME_BANK, Cmd.PRE, Cmd.REF, "precharge_to_activate"),
    # REFRESH (all banks of a rank)
    (_L.SAME_RANK, Cmd.REF, Cmd.ACT, "refresh_to_activate"),
    (_L.SAME_RANK, Cmd.REF, Cmd.REF, "refresh_to_activate"),
]


def pim_timings(mem) -> dict[str, int]:
    """PIM latencies of the NeuPIMs artifact (NewtonSim timing.cc): the dual row buffer
    removes the normal/PIM read interlocks that a single shared row buffer needs."""
    d = derived_timings(mem)
    dual = mem.pim.row_buffers == "dual"
    return {
        "gwrite_latency": mem.pim.tGWRITE,
        "pim_act_to_act_same_bank": d["activate_to_activate_l"] if dual else d["activate_to_activate"],
        "act_to_pim_act_same_bank": d["activate_to_activate_l"] if dual else d["activate_to_activate"],
        "read_to_pim_read_same_bank": 0 if dual else d["read_to_read_l"],
        "write_to_pim_read_same_bank": 0 if dual else d["write_to_read_l"],
        "read_to_pim_read_same_bankgroup": 0 if dual else d["read_to_read_l"],
        "write_to_pim_read_same_bankgroup": 0 if dual else d["write_to_read_l"],
        "gact_to_act_same_bankgroup": d["activate_to_activate_l"] if dual else d["activate_to_activate"],
        "pim_to_precharge": 0 if dual else d["read_to_precharge"],
        "tFAW": mem.timing.tFAW,
        "tRCDRD": mem.timing.tRCDRD,
    }


# PIM rows of NewtonSim's Timing constructor; names resolve in derived_timings | pim_timings.
_PIM_RULES = [
    # normal commands constraining PIM ones
    (_L.SAME_BANK, Cmd.RD, Cmd.GWRITE, "read_to_read_l"),
    (_L.SAME_BANK, Cmd.RD, Cmd.COMP, "read_to_pim_read_same_bank"),
    (_L.SAME_BANK, Cmd.RD, Cmd.COMPS_READRES, "read_to_pim_read_same_bank"),
    (_L.SAME_BANK, Cmd.RD, Cmd.READRES, "read_to_pim_read_same_bank"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.GWRITE, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.COMP, "read_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.COMPS_READRES, "read_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.RD, Cmd.READRES, "read_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.GWRITE, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.COMP, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.COMPS_READRES, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.RD, Cmd.READRES, "read_to_read_s"),
    (_L.OTHER_RANKS, Cmd.RD, Cmd.READRES, "read_to_read_o"),
    (_L.SAME_BANK, Cmd.WR, Cmd.GWRITE, "write_to_read_l"),
    (_L.SAME_BANK, Cmd.WR, Cmd.COMP, "write_to_pim_read_same_bank"),
    (_L.SAME_BANK, Cmd.WR, Cmd.COMPS_READRES, "write_to_pim_read_same_bank"),
    (_L.SAME_BANK, Cmd.WR, Cmd.READRES, "write_to_pim_read_same_bank"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.GWRITE, "write_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.COMP, "write_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.COMPS_READRES, "write_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.WR, Cmd.READRES, "write_to_pim_read_same_bankgroup"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.GWRITE, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.COMP, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.COMPS_READRES, "write_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.WR, Cmd.READRES, "write_to_read_s"),
    (_L.OTHER_RANKS, Cmd.WR, Cmd.READRES, "write_to_read_o"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.G_ACT, "act_to_pim_act_same_bank"),
    (_L.SAME_BANK, Cmd.ACT, Cmd.GWRITE, "activate_to_read"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.ACT, Cmd.G_ACT, "activate_to_activate_l"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.ACT, Cmd.G_ACT, "activate_to_activate_s"),
    (_L.SAME_RANK, Cmd.REF, Cmd.G_ACT, "refresh_to_activate"),
    # GWRITE: a whole row into the global buffer
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.RD, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.WR, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.PRE, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.COMP, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.COMPS_READRES, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.READRES, "gwrite_latency"),
    (_L.SAME_BANK, Cmd.GWRITE, Cmd.GWRITE, "gwrite_latency"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.RD, "read_to_read_l"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.GWRITE, "gwrite_latency"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.COMP, "gwrite_latency"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.COMPS_READRES, "gwrite_latency"),
    (_L.OTHER_BANKS_SAME_BANKGROUP, Cmd.GWRITE, Cmd.READRES, "gwrite_latency"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.RD, "read_to_read_s"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.WR, "read_to_write"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.GWRITE, "gwrite_latency"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.COMP, "gwrite_latency"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.COMPS_READRES, "gwrite_latency"),
    (_L.OTHER_BANKGROUPS_SAME_RANK, Cmd.GWRITE, Cmd.READRES, "gwrite_latency"),
    # G_ACT: opens a row in the PIM row buffers of every bank of a bank group; counts as a
    # full tFAW window for the rank
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.ACT, "gact_to_act_same_bankgroup"),
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.G_ACT, "activate_to_activate"),
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.COMP, "activate_to_read"),
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.COMPS_READRES, "activate_to_read"),
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.READRES, "activate_to_read"),
    (_L.SAME_BANKGROUP, Cmd.G_ACT, Cmd.PIM_PRECHARGE, "activate_to_precharge"),
    (_L.SAME_RANK, Cmd.G_ACT, Cmd.ACT, "tFAW"),
    (_L.SAME_RANK, Cmd.G_ACT, Cmd.G_ACT, "tFAW"),
    (_L.SAME_RANK, Cmd.G_ACT, Cmd.COMP, "tRCDRD"),
    (_L.SAME_RANK, Cmd.G_ACT, Cmd.COMPS_READRES, "tRCDRD"),
    # COMP / READRES / COMPS_READRES: rank-wide (every bank with an open PIM row)
    (_L.SAME_RANK, Cmd.COMP, Cmd.RD, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.WR, "read_to_write"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.GWRITE, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.COMP, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.READRES, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.PIM_PRECHARGE, "read_to_precharge"),
    (_L.SAME_RANK, Cmd.COMP, Cmd.PRE, "pim_to_precharge"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.RD, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.WR, "read_to_write"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.GWRITE, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.COMP, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.READRES, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.G_ACT, "read_to_activate"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.PIM_PRECHARGE, "read_to_precharge"),
    (_L.SAME_RANK, Cmd.READRES, Cmd.PRE, "pim_to_precharge"),
    (_L.OTHER_RANKS, Cmd.READRES, Cmd.RD, "read_to_read_o"),
    (_L.OTHER_RANKS, Cmd.READRES, Cmd.WR, "read_to_write_o"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.RD, "read_to_read_o"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.WR, "read_to_write_o"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.GWRITE, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.G_ACT, "read_to_activate"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.PIM_PRECHARGE, "read_to_precharge"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.PRE, "pim_to_precharge"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.COMP, "read_to_read_s"),
    (_L.SAME_RANK, Cmd.COMPS_READRES, Cmd.READRES, "read_to_read_s"),
    # PIM_PRECHARGE closes the PIM row buffers of a bank group
    (_L.SAME_BANKGROUP, Cmd.PIM_PRECHARGE, Cmd.REF, "precharge_to_activate"),
    (_L.SAME_BANKGROUP, Cmd.PIM_PRECHARGE, Cmd.G_ACT, "precharge_to_activate"),
]


def dram_rules(mem) -> list[TimingRule]:
    """The timing rules of a memory configuration (``MemoryConfig``), DRAMsim3 semantics,
    plus the NeuPIMs PIM commands when the memory has PIM. COMPS_READRES's own spacing,
    2 × (max(k, comps_readres_min_k) + 1), depends on k and is applied by the engine."""
    d = derived_timings(mem)
    rules = [TimingRule(level, prev, nxt, d[name], name) for level, prev, nxt, name in _RULES]
    if mem.pim.enabled:
        d = {**d, **pim_timings(mem)}
        rules += [TimingRule(level, prev, nxt, d[name], name) for level, prev, nxt, name in _PIM_RULES]
    if mem.protocol.startswith(("GDDR", "LPDDR4")):
        # tPPD between precharges exists on GDDR5/6 and LPDDR4 only.
        for level in (Level.OTHER_BANKS_SAME_BANKGROUP, Level.OTHER_BANKGROUPS_SAME_RANK):
            rules.append(TimingRule(level, Cmd.PRE, Cmd.PRE, d["precharge_to_precharge"], "precharge_to_precharge"))
    return rules
