"""Replay a DRAM request trace through the engine: the Python tier around ``run_requests``.

Validates and prepares the request arrays, drives the kernel (draining the command log in
chunks when asked for one), and turns the counters into a summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neupims_py.engine import dram as eng
from neupims_py.formats import READ_LAT_BIN, Stat

LOG_CHUNK = 1 << 20


@dataclass
class ReplayResult:
    """What one replay produced; per-channel counters are ``stats[channel, Stat.X]``."""

    cycles: int  # cycles simulated up to and including the one in which the last read
    # returned / the last write was acknowledged (DRAMsim3's count)
    last_write_issue: int  # last buffered write issued, after the final drain
    stats: np.ndarray  # counters at `cycles`
    final_stats: np.ndarray  # counters after the final write drain
    lat_hist: np.ndarray
    added: np.ndarray
    issued: np.ndarray
    done: np.ndarray
    clock_mhz: float
    burst_bytes: int
    commands: list = field(default_factory=list)  # CmdLog chunks when logged

    def channel_summary(self, stats: np.ndarray) -> dict:
        reads = int(stats[Stat.READS_DONE])
        writes = int(stats[Stat.WRITES_DONE])
        col = int(stats[Stat.RD] + stats[Stat.RDA] + stats[Stat.WR] + stats[Stat.WRA])
        hits = int(stats[Stat.READ_ROW_HITS] + stats[Stat.WRITE_ROW_HITS])
        seconds = self.cycles / (self.clock_mhz * 1e6) if self.cycles else 0.0
        bytes_moved = col * self.burst_bytes
        return {
            "reads": reads,
            "writes": writes,
            "act": int(stats[Stat.ACT]),
            "pre": int(stats[Stat.PRE]),
            "ref": int(stats[Stat.REF]),
            "rd_cmds": int(stats[Stat.RD] + stats[Stat.RDA]),
            "wr_cmds": int(stats[Stat.WR] + stats[Stat.WRA]),
            "row_hits": hits,
            "row_hit_rate": hits / col if col else 0.0,
            "ondemand_precharges": int(stats[Stat.ONDEMAND_PRE]),
            "reads_forwarded": int(stats[Stat.READS_FORWARDED]),
            "avg_read_latency": float(stats[Stat.READ_LATENCY_SUM]) / reads if reads else 0.0,
            "bandwidth_gbps": bytes_moved / seconds / 1e9 if seconds else 0.0,
            "data_bus_utilization": float(stats[Stat.DATA_BUS_CYCLES]) / self.cycles if self.cycles else 0.0,
            "rank_active_cycles": int(stats[Stat.RANK_ACTIVE_CYCLES]),
            "dual_issue_cycles": int(stats[Stat.DUAL_CMDS]),
        }

    def summary(self) -> dict:
        total = self.channel_summary(self.stats.sum(axis=0))
        total["cycles"] = self.cycles
        total["last_write_issue_cycle"] = self.last_write_issue
        total["channels"] = [self.channel_summary(s) for s in self.stats]
        hist = self.lat_hist.sum(axis=0)
        total["read_latency_histogram"] = {
            "bin_cycles": READ_LAT_BIN,
            "counts": [int(x) for x in hist],
        }
        return total


def replay(
    params: eng.DramParams,
    addr: np.ndarray,
    is_write: np.ndarray,
    cycle: np.ndarray,
    *,
    state: eng.DramState | None = None,
    max_inject_per_cycle: int = 1,
    log_commands: bool = False,
    clock_mhz: float = 1000.0,
    burst_bytes: int = 64,
    on_log_chunk=None,
    pim: eng.PimBatch | None = None,
) -> ReplayResult:
    """Run requests (in order, none before its cycle) to completion on `state` (fresh if
    None). Command log chunks go to `on_log_chunk(CmdLog, n)` or are kept in the result."""
    if state is None:
        state = eng.new_state(params)
    batch = eng.new_batch(params, addr, is_write, cycle)
    if pim is None:
        pim = eng.new_pim_batch(params)
    npu = eng.new_npu_tasks()
    start = int(state.clk[0])
    ctl = eng.new_ctl(start, max_inject_per_cycle, log_commands)
    log = eng.new_log(LOG_CHUNK if log_commands else 1)
    stats_at_end = np.zeros_like(state.stats)
    stats_before = state.stats.copy()
    hist_before = state.lat_hist.copy()
    chunks = []
    while True:
        status = eng.run_requests(params, state, batch, pim, npu, ctl, log, stats_at_end)
        if log_commands and ctl[eng.C_LOG_N] > 0:
            n = int(ctl[eng.C_LOG_N])
            if on_log_chunk is not None:
                on_log_chunk(log, n)
            else:
                chunks.append(eng.CmdLog(*(a[:n].copy() for a in log)))
            ctl[eng.C_LOG_N] = 0
        if status == 0:
            break
    if ctl[eng.C_PHASE] < 2:  # empty batch
        stats_at_end[:] = state.stats
    end = int(ctl[eng.C_END]) - start + 1 if len(addr) or len(pim.cmd) else 0
    return ReplayResult(
        cycles=max(end, 0),
        last_write_issue=int(ctl[eng.C_LAST_WRITE_ISSUE]) - start if ctl[eng.C_LAST_WRITE_ISSUE] else -1,
        stats=stats_at_end - stats_before,
        final_stats=state.stats - stats_before,
        lat_hist=state.lat_hist - hist_before,
        added=batch.added,
        issued=batch.issued,
        done=batch.done,
        clock_mhz=clock_mhz,
        burst_bytes=burst_bytes,
        commands=chunks,
    )
