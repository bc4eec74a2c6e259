"""The serving loop: requests arrive, are admitted or rejected, and run in iteration-level
batches on the simulated device until every one has finished (DESIGN.md, 'The serving
loop').

Time is the NPU clock, in cycles from the start of the trace, and advances by iterations:
an iteration's batch is fixed when it starts and its cost comes from the cost model; a
request that arrives meanwhile waits for the next one. Per iteration, in order:

1. release: requests whose time has come join the FCFS queue, or are rejected with a
   reason if they can never run (limits below); a later turn of a conversation is released
   only `think_time_ns` after the previous turn finished (and never before its own
   arrival_ns), with the conversation history prefilled as part of its prompt;
2. schedule: the scheduler (`scheduler.policy`) picks decodes, prefills and prefill chunks;
   admitting a request reserves KV rows for all it will cache (history + prompt + output)
   in the channel `scheduler.channel_policy` picks, within `max_total_tokens`;
3. run: the batch's cost advances the clock; a request whose prefill completes emits its
   first token at the end of that iteration, a decode emits one token;
4. finish: a request with all its output tokens frees its rows.

Limits (SchedulerConfig), each checked at release and enforced at admission:
max_batch_size (running requests), max_batch_tokens (tokens per iteration),
max_total_tokens (reserved KV tokens of the running requests; 0: channels x what one
channel holds), max_request_tokens (history + prompt + output; 0: what one channel
holds), max_prompt_tokens (history + prompt; 0: none).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neupims_py.compiler.iteration import BatchEntry
from neupims_py.errors import UserError
from neupims_py.formats import Stat
from neupims_py.serving.cost_model import OP_GROUPS, CostModel
from neupims_py.serving.energy import ENERGY_PARTS, EnergyModel
from neupims_py.serving.kv_placement import KvPlacement
from neupims_py.serving.request_state import (FINISHED, RUNNING, WAITING, RequestState, TurnChain,
                                              count_tokens, reject)
from neupims_py.serving.scheduler import Limits, make_scheduler

# One row per iteration (iterations.csv); cycles are NPU cycles. dram_busy: cycles the
# channels' data buses carried bursts, summed over channels (DRAM utilisation over time);
# dram_column_cmds / dram_row_hits: RD/WR(A) commands and those that hit an open row.
ITERATION_FIELDS = (
    "iteration", "start_cycle", "cycles", "requests", "prefill_requests", "decode_requests",
    "prefill_tokens", "decode_tokens", "kv_tokens", "max_channel_kv_tokens", "sub_batches",
    *(f"{g}_cycles" for g in OP_GROUPS), "overlap_cycles", "array_busy", "vector_busy",
    "pim_busy", *(f"energy_{p}_pj" for p in ENERGY_PARTS), "dram_busy",
    "dram_column_cmds", "dram_row_hits",
)


@dataclass
class ServingResult:
    requests: list[RequestState]
    iterations: np.ndarray  # float64 [iteration, ITERATION_FIELDS]
    limits: Limits
    end_cycle: int


def derive_limits(cfg, placement: KvPlacement) -> Limits:
    """The SchedulerConfig limits with the 0 = derived ones filled in from memory."""
    per_channel = placement.channel_token_capacity()
    return Limits(
        max_batch_size=cfg.max_batch_size,
        max_batch_tokens=cfg.max_batch_tokens,
        max_total_tokens=cfg.max_total_tokens or per_channel * placement.channels,
        max_request_tokens=cfg.max_request_tokens or per_channel,
        max_prompt_tokens=cfg.max_prompt_tokens,
    )


class Orchestrator:
    """Runs one trace through one cost model. `observer`, if given, is called after every
    iteration with (index, start cycle, IterationCost, batch entries): the Chrome trace
    writer (neupims_py/results/chrome_trace.py) listens there."""

    def __init__(self, hw, model, cost: CostModel, *, seed: int = 0, observer: Callable | None = None):
        self.hw = hw
        self.cost = cost
        self.observer = observer
        cfg = hw.scheduler
        sim = cost.sim
        self.placement = KvPlacement(sim.layout, sim.kv, sim.rows.first_row,
                                     policy=cfg.channel_policy, channel_full=cfg.channel_full, seed=seed)
        self.limits = derive_limits(cfg, self.placement)
        self.scheduler = make_scheduler(cfg.policy, self.limits)
        self.energy = EnergyModel.of(hw, model)
        self.pim_attention = hw.system.mode != "npu-only"
        self.cycles_per_ns = hw.npu.clock_mhz / 1000.0

    def to_cycles(self, ns: int) -> int:
        return int(math.ceil(ns * self.cycles_per_ns - 1e-9))

    def run(self, rows: np.ndarray, progress: Callable | None = None) -> ServingResult:
        reqs = request_states(rows)
        heap: list[tuple[int, int]] = []
        turns = TurnChain(reqs, self.to_cycles, lambda at, i: heapq.heappush(heap, (at, i)))
        end = turns.end
        for r in reqs:
            if r.turn <= 0:
                heapq.heappush(heap, (self.to_cycles(r.arrival_ns), r.index))
        running: list[RequestState] = []
        waiting: deque = deque()
        reserved = [0]
        records: list[tuple] = []
        now = 0

        def admit(r: RequestState) -> bool:
            if reserved[0] + r.reserved > self.limits.max_total_tokens:
                return False
            ch = self.placement.place(r.index, r.reserved, r.context)
            if ch is None:
                return False
            r.channel, r.status = ch, RUNNING
            running.append(r)
            reserved[0] += r.reserved
            self.cost.admit(r.index, ch, r.reserved)
            return True

        while True:
            while heap and heap[0][0] <= now:
                at, i = heapq.heappop(heap)
                r = reqs[i]
                r.release = at
                reason = self._never_fits(r)
                if reason:
                    reject(r, reason)
                    end(r, at)
                else:
                    r.status = WAITING
                    waiting.append(r)
            if not running and not waiting:
                if not heap:
                    break
                now = heap[0][0]
                continue
            batch = self.scheduler.next_batch(running, waiting, admit)
            if not batch:
                # nothing runs, so no rows will free up: the head can never be admitted
                r = waiting.popleft()
                reject(r, "does not fit the free KV rows or max_total_tokens even with "
                          "nothing else running")
                end(r, now)
                continue
            entries = [BatchEntry(r.index, q, r.prefilled if r.prefilled < r.context else r.context + r.generated - 1,
                                  r.channel) for r, q in batch]
            cost = self.cost.iteration_cycles(entries, start=now)
            start, now = now, now + cost.cycles
            energy = self.energy.iteration(cost, entries, self.pim_attention)
            records.append(self._record(len(records), start, cost, batch, entries, energy))
            if self.observer is not None:
                self.observer(len(records) - 1, start, cost, entries)
            for r, _ in batch:
                if r.first_scheduled < 0:
                    r.first_scheduled = start
            _, finished = count_tokens(batch, now, self.placement)
            for r in finished:
                r.status, r.finish = FINISHED, now
                running.remove(r)
                reserved[0] -= r.reserved
                self.placement.release(r.index)
                self.cost.release(r.index)
                end(r, now)
            if progress is not None:
                progress(now, turns.ended, len(reqs), len(records), len(batch))
        if turns.ended != len(reqs):  # pragma: no cover - every path ends each request
            raise UserError(f"internal: {len(reqs) - turns.ended} requests never ended")
        its = np.asarray(records, dtype=np.float64).reshape(len(records), len(ITERATION_FIELDS))
        return ServingResult(requests=reqs, iterations=its, limits=self.limits, end_cycle=now)

    def _never_fits(self, r: RequestState) -> str:
        lim = self.limits
        if r.context < 1:
            return "no prompt tokens to prefill"
        if lim.max_prompt_tokens and r.context > lim.max_prompt_tokens:
            return f"history + prompt {r.context} tokens > max_prompt_tokens {lim.max_prompt_tokens}"
        return self._never_holds(r) or self.scheduler.reject_reason(r) or ""

    def _never_holds(self, r: RequestState, where: str = "") -> str:
        """Why this device can never hold `r`'s whole KV cache (history + prompt + output),
        or ''; `where` names the device in the message (" of the decode devices")."""
        lim = self.limits
        if r.reserved > lim.max_request_tokens:
            return (f"history + prompt + output {r.reserved} tokens > max_request_tokens "
                    f"{lim.max_request_tokens}{where}")
        if not self.placement.fits_empty_channel(r.reserved):
            return (f"history + prompt + output {r.reserved} tokens need "
                    f"{self.placement.rows_for(r.reserved)} KV rows per bank, a channel{where} "
                    f"has {self.placement.rows_per_channel}")
        if r.reserved > lim.max_total_tokens:
            return (f"history + prompt + output {r.reserved} tokens > max_total_tokens "
                    f"{lim.max_total_tokens}{where}")
        return ""

    def _record(self, index, start, cost, batch, entries, energy) -> tuple:
        """The iterations.csv row; called before the batch's progress is applied."""
        prefill = [e for (r, _), e in zip(batch, entries) if r.prefilled < r.context]
        kv_by_ch: dict[int, int] = {}
        for e in entries:
            kv_by_ch[e.channel] = kv_by_ch.get(e.channel, 0) + e.kv_len + e.q_len
        return (
            index, start, cost.cycles, len(entries), len(prefill), len(entries) - len(prefill),
            sum(e.q_len for e in prefill), sum(e.q_len for e in entries) - sum(e.q_len for e in prefill),
            sum(kv_by_ch.values()), max(kv_by_ch.values()), cost.sub_batches,
            *(cost.ops.get(g, 0) for g in OP_GROUPS), cost.overlap, cost.array_busy,
            cost.vector_busy, cost.pim_busy, *(energy[p] for p in ENERGY_PARTS),
            float(cost.stats[Stat.DATA_BUS_CYCLES]),
            float(cost.stats[[Stat.RD, Stat.WR, Stat.RDA, Stat.WRA]].sum()),
            float(cost.stats[[Stat.READ_ROW_HITS, Stat.WRITE_ROW_HITS]].sum()),
        )


def request_states(rows) -> list[RequestState]:
    """One RequestState per trace row (the trace.h5 request table), in row order."""
    return [
        RequestState(index=i, id=int(r["id"]), session=int(r["session_id"]), turn=int(r["turn"]),
                     arrival_ns=int(r["arrival_ns"]), think_ns=int(r["think_time_ns"]),
                     context=int(r["history_tokens"]) + int(r["prompt_tokens"]),
                     output=int(r["output_tokens"]))
        for i, r in enumerate(rows)
    ]
