"""Lowering of a validated ``MemoryConfig`` into the engine's ``DramParams`` (done once)."""

from __future__ import annotations

import numpy as np

from neupims_py.dram.timing_rules import Level, dram_rules
from neupims_py.engine.dram import (
    REFRESH_OFF,
    REFRESH_RANK_SIMULTANEOUS,
    REFRESH_RANK_STAGGERED,
    NO_RULE,
    NUM_RELS,
    DramParams,
)
from neupims_py.formats import NUM_CMDS

_REFRESH = {
    "off": REFRESH_OFF,
    "rank-staggered": REFRESH_RANK_STAGGERED,
    "rank-simultaneous": REFRESH_RANK_SIMULTANEOUS,
}


# Which rule levels reach a bank in each relation to the issuing bank (REL_* order).
_LEVELS_OF_REL = (
    (Level.SAME_BANK, Level.SAME_RANK, Level.SAME_BANKGROUP),
    (Level.OTHER_BANKS_SAME_BANKGROUP, Level.SAME_RANK, Level.SAME_BANKGROUP),
    (Level.OTHER_BANKGROUPS_SAME_RANK, Level.SAME_RANK),
    (Level.OTHER_RANKS,),
)


def relation_table(rules) -> tuple[np.ndarray, int]:
    """Dense rel_lat[relation, prev, next] (max over the levels reaching that relation)
    and the number of leading commands that appear as `next` in some rule."""
    lat = np.full((NUM_RELS, NUM_CMDS, NUM_CMDS), NO_RULE, np.int64)
    for rel, levels in enumerate(_LEVELS_OF_REL):
        for r in rules:
            if r.level in levels:
                lat[rel, r.prev, r.next] = max(lat[rel, r.prev, r.next], r.latency)
    n_timed = 1 + max(int(r.next) for r in rules)
    return lat, n_timed


def lower_memory(mem) -> DramParams:
    g, t, c = mem.geometry, mem.timing, mem.controller
    f = mem.address_fields  # name -> (shift, mask) in the byte address
    rel_lat, n_timed = relation_table(dram_rules(mem))
    interval = 0
    if c.refresh_policy == "rank-staggered":
        interval = t.tREFI // g.ranks
    elif c.refresh_policy == "rank-simultaneous":
        interval = t.tREFI
    return DramParams(
        channels=g.channels,
        ranks=g.ranks,
        bankgroups=g.bankgroups,
        banks_per_group=g.banks_per_group,
        ch_shift=f["ch"][0],
        ch_mask=f["ch"][1],
        ra_shift=f["ra"][0],
        ra_mask=f["ra"][1],
        bg_shift=f["bg"][0],
        bg_mask=f["bg"][1],
        ba_shift=f["ba"][0],
        ba_mask=f["ba"][1],
        ro_shift=f["ro"][0],
        ro_mask=f["ro"][1],
        co_shift=f["co"][0],
        co_mask=f["co"][1],
        rel_lat=rel_lat,
        n_timed=n_timed,
        tFAW=t.tFAW,
        read_delay=mem.read_delay,
        write_delay=mem.write_delay,
        burst_cycles=mem.burst_cycles,
        refresh_policy=_REFRESH[c.refresh_policy],
        refresh_interval=interval,
        per_bank_queues=c.queue_structure == "per-bank",
        close_page=c.row_buffer_policy == "close-page",
        dual_issue=bool(c.dual_command_issue),
        cmd_queue_size=c.cmd_queue_size,
        trans_queue_size=c.trans_queue_size,
        write_buffer_size=c.write_buffer_size,
        row_hit_cap=c.row_hit_cap,
        write_drain_threshold=c.write_drain_threshold,
        pim_enabled=bool(mem.pim.enabled),
        pim_dual=mem.pim.row_buffers == "dual",
        comps_min_k=mem.pim.comps_readres_min_k,
        comp_cycles=mem.pim.tCOMP,
        gwrite_cycles=mem.pim.tGWRITE,
    )
