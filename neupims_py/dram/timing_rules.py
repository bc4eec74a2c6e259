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


def dram_rules(mem) -> list[TimingRule]:
    """The timing rules of a memory configuration (``MemoryConfig``), DRAMsim3 semantics."""
    d = derived_timings(mem)
    rules = [TimingRule(level, prev, nxt, d[name], name) for level, prev, nxt, name in _RULES]
    if mem.protocol.startswith(("GDDR", "LPDDR4")):
        # tPPD between precharges exists on GDDR5/6 and LPDDR4 only.
        for level in (Level.OTHER_BANKS_SAME_BANKGROUP, Level.OTHER_BANKGROUPS_SAME_RANK):
            rules.append(TimingRule(level, Cmd.PRE, Cmd.PRE, d["precharge_to_precharge"], "precharge_to_precharge"))
    return rules
