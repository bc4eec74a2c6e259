"""One device of a cluster as an event source: the single-device serving loop
(`serving.orchestrator.Orchestrator`) cut into steps the cluster's event loop calls.

`submit` puts a request in the device's FCFS queue (or rejects it, as the single-device
loop does at release); `start(now)` fixes the next iteration's batch with the device's
scheduler, KV placement and limits and costs it (the device is then busy until
`busy_until`); `finish()` applies the iteration's progress at its end. Driven one event at
a time in time order, with arrivals released after the completions of the same cycle, a
device makes exactly the decisions `Orchestrator.run` makes.

Roles add two things:
- prefill: a request's leg here generates only the first token; its KV rows stay reserved
  after it (`held`) until the cluster has sent them to a decode device (`free`);
- decode: a request arrives prefilled with its first token; `reserve` takes its KV rows
  and a batch slot before the transfer starts, `arrive` makes it run when the transfer
  ends.

`Pipeline` is a device whose iteration runs on pp stage devices (the model's layers split
evenly), the batch split into micro-batches, GPipe-style, activations sent on the links
between stages; its per-stage busy time gives the bubble.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np

from neupims_py.cluster.link import Link
from neupims_py.compiler.iteration import BatchEntry
from neupims_py.serving.cost_model import OP_GROUPS, IterationCost
from neupims_py.serving.energy import ENERGY_PARTS
from neupims_py.serving.orchestrator import Orchestrator
from neupims_py.serving.request_state import FINISHED, RUNNING, WAITING, count_tokens, reject


@dataclass
class DeviceStats:
    """What one physical device did (a pipeline stage is a device)."""

    name: str
    pool: str
    role: str
    stage: int
    arrays: int
    vector_units: int
    channels: int
    iterations: int = 0
    busy: float = 0.0  # cycles computing (sum of its iterations or micro-batches)
    array_busy: float = 0.0  # summed over arrays
    vector_busy: float = 0.0
    pim_busy: float = 0.0  # summed over channels
    energy_pj: float = 0.0

    def add(self, cost: IterationCost, energy: dict) -> None:
        self.busy += cost.cycles
        self.array_busy += cost.array_busy
        self.vector_busy += cost.vector_busy
        self.pim_busy += cost.pim_busy
        self.energy_pj += sum(energy.values())


class Device(Orchestrator):
    """A device (or, as `Pipeline`, a pipeline replica) stepping the serving loop."""

    def __init__(self, name: str, pool, model, cost, *, seed: int = 0, stage_names=None):
        super().__init__(pool.hw, model, cost, seed=seed)
        self.name = name
        self.pool = pool
        self.role = pool.cfg.role
        self.running: list = []
        self.waiting: deque = deque()
        self.reserved = 0
        self.records: list[tuple] = []
        self.incoming: list = []  # decode legs whose KV transfer is under way
        self.pending: deque = deque()  # transfers towards this device waiting for room
        self.busy_until = -1  # end of the iteration in flight; -1: idle
        self.batch = None
        self.held: list = []  # prefill legs done, KV not yet sent
        hw = pool.hw
        self.stats = [DeviceStats(n, pool.cfg.name, self.role, s, hw.npu.systolic_arrays,
                                  hw.npu.vector_units, hw.memory.geometry.channels)
                      for s, n in enumerate(stage_names or [name])]

    # ------------------------------------------------------------------ load (routing)
    def load_requests(self) -> int:
        return len(self.running) + len(self.waiting) + len(self.incoming) + len(self.pending)

    def load_kv_tokens(self) -> int:
        return self.reserved + sum(t.leg.reserved for t in self.pending)

    # ------------------------------------------------------------------ admission
    def admit(self, r) -> bool:
        """The single-device loop's admission: KV rows and max_total_tokens."""
        if not self._reserve_kv(r):
            return False
        self.running.append(r)
        return True

    def _reserve_kv(self, r) -> bool:
        if self.reserved + r.reserved > self.limits.max_total_tokens:
            return False
        ch = self.placement.place(r.index, r.reserved, r.context)
        if ch is None:
            return False
        r.channel, r.status = ch, RUNNING
        self.reserved += r.reserved
        self._cost_admit(r.index, ch, r.reserved)
        return True

    def reserve(self, r) -> bool:
        """Room for a prefilled request about to be transferred here: a batch slot and its
        KV rows; False when it has to wait."""
        if len(self.running) + len(self.incoming) >= self.limits.max_batch_size:
            return False
        if not self._reserve_kv(r):
            return False
        self.incoming.append(r)
        return True

    def arrive(self, r) -> None:
        """The KV transfer of `r` ended: it decodes from the next iteration on."""
        self.incoming.remove(r)
        self.running.append(r)

    def free(self, r) -> None:
        self.reserved -= r.reserved
        self.placement.release(r.index)
        self._cost_release(r.index)

    def _cost_admit(self, req, ch, tokens) -> None:
        self.cost.admit(req, ch, tokens)

    def _cost_release(self, req) -> None:
        self.cost.release(req)

    def never_fits_decode(self, r) -> str:
        """Why a prefilled request can never decode here (as `_never_fits`, without the
        prompt limits: the prompt is not prefilled here)."""
        return self._never_holds(r, " of the decode devices")

    # ------------------------------------------------------------------ steps
    def submit(self, r, at: int) -> str:
        """Release `r` into the queue at cycle `at`; the rejection reason, or ''."""
        r.release = at
        reason = self._never_fits(r)
        if reason:
            reject(r, reason)
            return reason
        r.status = WAITING
        self.waiting.append(r)
        return ""

    @property
    def idle(self) -> bool:
        return self.busy_until < 0

    def start(self, now: int) -> list:
        """Start the next iteration at `now` if there is work; returns the requests
        rejected because they could not be admitted even with nothing running."""
        rejected = []
        while self.running or self.waiting:
            batch = self.scheduler.next_batch(self.running, self.waiting, self.admit)
            if not batch:
                r = self.waiting.popleft()
                reject(r, "does not fit the free KV rows or max_total_tokens even with "
                          "nothing else running")
                rejected.append(r)
                continue
            entries = [BatchEntry(r.index, q, r.prefilled if r.prefilled < r.context
                                  else r.context + r.generated - 1, r.channel) for r, q in batch]
            cycles = self._run(now, batch, entries)
            self.batch = batch
            self.busy_until = now + cycles
            for r, _ in batch:
                if r.first_scheduled < 0:
                    r.first_scheduled = now
            break
        return rejected

    def _run(self, now: int, batch, entries) -> int:
        cost = self.cost.iteration_cycles(entries, start=now)
        energy = self.energy.iteration(cost, entries, self.pim_attention)
        self.records.append(self._record(len(self.records), now, cost, batch, entries, energy))
        self.stats[0].iterations += 1
        self.stats[0].add(cost, energy)
        return cost.cycles

    def finish(self) -> tuple[list, list]:
        """End the iteration in flight: (requests whose prefill produced their first token,
        requests that finished)."""
        now = self.busy_until
        first, finished = count_tokens(self.batch, now, self.placement)
        for r in finished:
            r.status, r.finish = FINISHED, now
            self.running.remove(r)
            if self.role == "prefill" and r.output > 0:
                self.held.append(r)  # its KV leaves with the transfer
            else:
                self.free(r)
        self.batch = None
        self.busy_until = -1
        return first, finished

    def release_held(self, r) -> None:
        self.held.remove(r)
        self.free(r)


class Pipeline(Device):
    """A pipeline replica: pp stage devices, each running layers / pp layers of every
    micro-batch. Scheduling, admission and KV placement are the first stage's (every
    stage holds the same requests' KV for its own layers, so they agree).

    An iteration at `now`: the batch (in batch order) is split into `micro_batches`
    contiguous groups of as equal request counts as possible; stage s runs micro-batch k
    when stage s-1 has sent it (tokens x d_model x dtype_bytes of activations on the link
    s-1 -> s) and stage s finished micro-batch k-1 (GPipe, forward only). The iteration
    ends when the last stage finishes the last micro-batch: decodes need the previous
    iteration's tokens, so the next one starts only then. The return of sampled tokens
    from the last stage to the first is not modelled (a few bytes per request)."""

    def __init__(self, name: str, pool, model, costs: list, *, seed: int = 0):
        n = pool.cfg.pp
        self.stage_model = dataclasses.replace(model, pp=n)
        for c in costs:
            if c.per_device and sum(d is c for d in costs) > 1:
                raise ValueError(
                    f"pipeline {name}: one {type(c).__name__} serves several stages; it holds "
                    "one device's engine state, give every stage its own")
        self.costs = costs
        super().__init__(name, pool, self.stage_model, costs[0], seed=seed,
                         stage_names=[f"{name}.s{s}" for s in range(n)])
        cpn = pool.hw.npu.clock_mhz / 1000.0
        self.links = [Link(pool.stage_link, cpn) for _ in range(n - 1)]
        self.span = 0.0  # cycles of all iterations

    def _cost_admit(self, req, ch, tokens) -> None:
        for c in dict.fromkeys(self.costs):  # a shared cost model once
            c.admit(req, ch, tokens)

    def _cost_release(self, req) -> None:
        for c in dict.fromkeys(self.costs):
            c.release(req)

    def micro_batches(self, entries) -> list[list]:
        m = min(self.pool.cfg.micro_batches, len(entries))
        q, extra = divmod(len(entries), m)
        out, i = [], 0
        for k in range(m):
            size = q + (1 if k < extra else 0)
            out.append(entries[i:i + size])
            i += size
        return out

    def _run(self, now: int, batch, entries) -> int:
        n = len(self.costs)
        m = self.stage_model
        groups = self.micro_batches(entries)
        stage_free = [now] * n
        parts: list[tuple[IterationCost, dict]] = []
        for mb in groups:
            nbytes = sum(e.q_len for e in mb) * m.d_model * m.dtype_bytes
            memo: dict[tuple[int, int], tuple] = {}
            prev_end = now
            for s in range(n):
                c = self.costs[s]
                ready = now if s == 0 else self.links[s - 1].send(prev_end, nbytes)[1]
                start = max(ready, stage_free[s])
                # each stage is costed at the cycle it starts at (its engine clock / refresh
                # schedule follows the stage's own timeline, as a single device's does)
                if (id(c), start) not in memo:
                    cost = c.iteration_cycles(mb, start=start)
                    memo[id(c), start] = (cost, self.energy.iteration(cost, mb, self.pim_attention))
                cost, energy = memo[id(c), start]
                stage_free[s] = prev_end = start + cost.cycles
                self.stats[s].add(cost, energy)
                parts.append((cost, energy))
        for st in self.stats:
            st.iterations += 1
        end = stage_free[-1]
        self.span += end - now
        total = _sum_costs(end - now, [c for c, _ in parts])
        energy = {p: sum(e[p] for _, e in parts) for p in ENERGY_PARTS}
        self.records.append(self._record(len(self.records), now, total, batch, entries, energy))
        return end - now

    def bubble(self) -> float:
        """Fraction of stage-cycles idle during the pipeline's iterations."""
        if not self.span:
            return 0.0
        return 1.0 - sum(st.busy for st in self.stats) / (len(self.stats) * self.span)


def _sum_costs(cycles: int, costs: list[IterationCost]) -> IterationCost:
    """One iteration record for a pipeline: its span, and every stage's and micro-batch's
    operator cycles, busy cycles and counters summed."""
    return IterationCost(
        cycles=int(cycles),
        ops={g: sum(c.ops.get(g, 0) for c in costs) for g in OP_GROUPS},
        array_busy=sum(c.array_busy for c in costs),
        vector_busy=sum(c.vector_busy for c in costs),
        pim_busy=sum(c.pim_busy for c in costs),
        overlap=sum(c.overlap for c in costs),
        stats=np.sum([c.stats for c in costs], axis=0),
        sub_batches=max(c.sub_batches for c in costs),
    )

