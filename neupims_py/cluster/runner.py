"""The cluster's discrete-event loop: requests arrive, are routed to devices, prefilled,
handed over (KV transfer) and decoded, until every one has finished or been rejected.

Time is one clock for every device (the NPU clock all pools share), in cycles from the
start of the trace. Events: a device's iteration ends, a KV transfer arrives, a request
arrives. At each event time, in this order:

1. iterations ending now finish (device order): tokens are emitted, finished requests free
   their KV rows; a prefill device's request whose first token was just produced is
   handed to a decode device (`decode_routing`) and queues there for room;
2. transfers arriving now end: the request joins its decode device's running set, and the
   prefill device frees its KV rows;
3. requests whose time has come are routed (arrival routing) and released into their
   device's queue, or rejected (a later turn of a conversation: `think_time_ns` after
   the previous turn finished, as in the single-device loop);
4. queued transfers start, FIFO per decode device, as soon as the device has a batch slot
   and KV rows for the request's prompt + output (reserved when the transfer starts, so
   KV capacity on the decode pool blocks transfers until memory frees); the bytes go on
   the link between the two devices (link.py);
5. idle devices with work start their next iteration.

With one mixed device this is the single-device loop, decision for decision.

KV bytes of a transfer, per tensor-parallel shard (each shard has its own link, in
parallel): 2 (K and V) x layers x heads per shard x head_dim x dtype_bytes x (history +
prompt tokens), split by layers between the stage devices when a pool is pipelined (the
share of layer l goes from the prefill stage holding l to the decode stage holding l, on
the link of that pair; the transfer ends with its last piece). By default the transfer
starts after the prefill iteration ended. With
`cluster.kv_overlap`, the decode device is chosen when the iteration that completes the
prefill starts; if it has room then (and no transfer queued before), the KV cache leaves
layer by layer: layer l's share is ready ceil((l + 1) x iteration / layers) cycles into the
iteration (the layers of an iteration cost the same) and queues on the link; the transfer
ends when the last layer's share has arrived. Otherwise it waits as without overlap.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass

from neupims_py.cluster.device import Device, Pipeline
from neupims_py.cluster.link import Link
from neupims_py.cluster.routing import make_router
from neupims_py.errors import UserError
from neupims_py.serving.cost_model import ExactCost, ReuseCost
from neupims_py.serving.orchestrator import request_states
from neupims_py.serving.request_state import FINISHED, RequestState, TurnChain, reject


def kv_bytes(model, tokens: int) -> int:
    """Bytes of one tensor-parallel shard's KV cache of `tokens` tokens, every layer."""
    return 2 * model.layers * model.heads_per_shard * model.head_dim * model.dtype_bytes * tokens


@dataclass(eq=False)
class Transfer:
    """A prefilled request's KV cache on its way to a decode device (cycles)."""

    req: RequestState  # the request (cluster-wide record)
    leg: RequestState  # its state on the decode device
    src: Device
    dst: Device
    nbytes: int
    queued: int  # the prefill ended
    start: int = -1  # on the link
    end: int = -1  # arrived


@dataclass
class ClusterResult:
    requests: list[RequestState]  # one per trace row, the whole request's times
    devices: list[Device]
    served_by: dict[int, Device]  # request index -> its (mixed or prefill) device
    legs: dict[int, list]  # device name -> the request states it ran
    transfers: dict[int, Transfer]  # request index -> its KV transfer
    links: dict[tuple[str, str], Link]
    end_cycle: int


class Cluster:
    """The devices of a ClusterConfig for one model; `run(rows)` serves a trace, once (the
    devices and routers keep the state it leaves)."""

    def __init__(self, cfg, model, *, exact: bool = False, exact_tokens: bool = False, seed: int = 0,
                 reuse_cost=None):
        """`reuse_cost(hw, model)`, if given, supplies the ReuseCost of a pool (a caller that
        runs many clusters can keep the measured pieces between them)."""
        self.cfg = cfg
        self.model = model
        self.devices: list[Device] = []
        self.pool_devices: dict[str, list[Device]] = {}
        self.routers = {}
        k = 0
        for pool in cfg.pools:
            pp = pool.cfg.pp
            stage_model = dataclasses.replace(model, pp=pp) if pp > 1 else model
            # ReuseCost keeps no request state: one per pool; ExactCost: one per device
            shared = None
            if not exact:
                shared = (reuse_cost(pool.hw, stage_model) if reuse_cost is not None
                          else ReuseCost(pool.hw, stage_model, exact_tokens=exact_tokens))

            def make_cost(hw=pool.hw, m=stage_model, shared=shared):
                return ExactCost(hw, m) if shared is None else shared

            devs = []
            for i in range(pool.cfg.replicas):
                name = f"{pool.cfg.name}.{i}"
                if pp > 1:
                    d = Pipeline(name, pool, model, [make_cost() for _ in range(pp)], seed=seed + k)
                else:
                    d = Device(name, pool, model, make_cost(), seed=seed + k)
                devs.append(d)
                k += 1
            self.pool_devices[pool.cfg.name] = devs
            self.devices += devs
            self.routers[pool.cfg.name] = make_router(pool.routing)
        entry_pools = cfg.pools_of("prefill") or cfg.pools_of("mixed")
        self.entry = [d for p in entry_pools for d in self.pool_devices[p.cfg.name]]
        self.entry_router = (self.routers[entry_pools[0].cfg.name] if len(entry_pools) == 1
                             else make_router(cfg.header.arrival_routing))
        dec = cfg.pools_of("decode")
        self.decode = self.pool_devices[dec[0].cfg.name] if dec else []
        self.decode_router = self.routers[dec[0].cfg.name] if dec else None
        self.cycles_per_ns = cfg.pools[0].hw.npu.clock_mhz / 1000.0
        self._ran = False

    def to_cycles(self, ns: int) -> int:
        return int(math.ceil(ns * self.cycles_per_ns - 1e-9))

    def run(self, rows, progress=None) -> ClusterResult:
        """Serve the trace rows; `progress(now, done, total, iterations, running)` is called
        after every event time (the single-device loop's progress line takes it)."""
        if self._ran:
            raise RuntimeError("a Cluster serves one trace; build a new one for another")
        self._ran = True
        reqs = request_states(rows)
        arrivals: list[tuple[int, int]] = []
        turns = TurnChain(reqs, self.to_cycles, lambda at, i: heapq.heappush(arrivals, (at, i)))
        end = turns.end
        for r in reqs:
            if r.turn <= 0:
                heapq.heappush(arrivals, (self.to_cycles(r.arrival_ns), r.index))
        in_flight: list[tuple[int, int, Transfer]] = []
        transfers: dict[int, Transfer] = {}
        links: dict[tuple[str, str], Link] = {}
        served_by: dict[int, Device] = {}
        legs: dict[str, list] = {d.name: [] for d in self.devices}
        prefill_legs: dict[int, RequestState] = {}
        planned: dict[int, Device] = {}  # decode device chosen as the prefill started (kv_overlap)
        now = 0
        overlap = self.cfg.header.kv_overlap

        def release(r: RequestState, at: int) -> None:
            d = self.entry_router.choose(self.entry)
            served_by[r.index] = d
            if d.role == "mixed":
                legs[d.name].append(r)
                if d.submit(r, at):
                    end(r, at)
                return
            r.release = at
            if r.output > 1:
                probe = RequestState(index=r.index, id=r.id, session=r.session, turn=r.turn,
                                     arrival_ns=r.arrival_ns, think_ns=r.think_ns,
                                     context=r.context, output=r.output)
                reason = self.decode[0].never_fits_decode(probe)
                if reason:
                    reject(r, reason)
                    end(r, at)
                    return
            leg = RequestState(index=r.index, id=r.id, session=r.session, turn=r.turn,
                               arrival_ns=r.arrival_ns, think_ns=r.think_ns,
                               context=r.context, output=min(r.output, 1))
            prefill_legs[r.index] = leg
            legs[d.name].append(leg)
            reason = d.submit(leg, at)
            if reason:
                reject(r, reason)
                end(r, at)

        def prefill_done(d: Device, leg: RequestState, at: int) -> None:
            r = reqs[leg.index]
            r.status, r.channel = leg.status, leg.channel
            r.first_scheduled, r.prefilled = leg.first_scheduled, leg.prefilled
            r.generated, r.first_token = leg.generated, leg.first_token
            r.token_cycles = list(leg.token_cycles)
            if r.output <= 1:
                r.finish = at
                end(r, at)
                return
            r.status = "transferring"
            if r.index in transfers:  # already on its way, layer by layer
                transfers[r.index].leg.release = at
                return
            dst = planned.pop(r.index, None) or self.decode_router.choose(self.decode)
            t = Transfer(r, decode_leg(r, at), d, dst, kv_bytes(self.model, r.context), at)
            transfers[r.index] = t
            legs[dst.name].append(t.leg)
            dst.pending.append(t)

        def decode_leg(r: RequestState, at: int) -> RequestState:
            return RequestState(index=r.index, id=r.id, session=r.session, turn=r.turn,
                                arrival_ns=r.arrival_ns, think_ns=r.think_ns, context=r.context,
                                output=r.output, prefilled=r.context, generated=1, release=at)

        def link(src: str, dst: str) -> Link:
            if (src, dst) not in links:
                links[(src, dst)] = Link(self.cfg.link, self.cycles_per_ns)
            return links[(src, dst)]

        def send(t: Transfer, ready) -> None:
            """Put `t`'s bytes on the links, layer by layer from prefill stage to decode
            stage (one link per pair of stage devices; one stage without pp); layer l is
            ready at `ready(l)`. Layers sharing a link and ready together go as one piece."""
            layers = self.model.layers
            per_layer = t.nbytes // layers
            src = [st.name for st in t.src.stats]
            dst = [st.name for st in t.dst.stats]
            pieces: dict[tuple, int] = {}
            for k in range(layers):
                key = (src[k * len(src) // layers], dst[k * len(dst) // layers], ready(k))
                pieces[key] = pieces.get(key, 0) + 1
            starts, ends = [], []
            for (a, b, at), n in pieces.items():
                start, end = link(a, b).send(at, n * per_layer)
                starts.append(start)
                ends.append(end)
            t.start, t.end = min(starts), max(ends)
            heapq.heappush(in_flight, (t.end, t.req.index, t))

        def overlap_transfers(d: Device, at: int) -> None:
            """Requests whose prefill completes in the iteration `d` just started at `at`:
            pick their decode device now and, where it has room (and nothing queued before
            them), send their KV layer by layer as the layers finish."""
            span = d.busy_until - at
            layers = self.model.layers
            for leg, q in d.batch:
                r = reqs[leg.index]
                if leg.prefilled + q < leg.context or r.output <= 1:
                    continue
                dst = self.decode_router.choose(self.decode)
                dleg = decode_leg(r, d.busy_until)
                if dst.pending or not dst.reserve(dleg):
                    planned[r.index] = dst
                    continue
                t = Transfer(r, dleg, d, dst, kv_bytes(self.model, r.context), at)
                send(t, lambda k: at + -(-(k + 1) * span // layers))
                transfers[r.index] = t
                legs[dst.name].append(dleg)

        def start_transfers(at: int) -> None:
            for dst in self.decode:
                while dst.pending:
                    t = dst.pending[0]
                    if not dst.reserve(t.leg):
                        if dst.idle and not dst.running and not dst.incoming:  # pragma: no cover
                            raise UserError(f"internal: request {t.req.id} never fits {dst.name}")
                        break
                    dst.pending.popleft()
                    send(t, lambda k: at)

        while True:
            times = [d.busy_until for d in self.devices if not d.idle]
            if arrivals:
                times.append(arrivals[0][0])
            if in_flight:
                times.append(in_flight[0][0])
            if not times:
                break
            now = min(times)
            for d in self.devices:
                if d.busy_until != now:
                    continue
                _, finished = d.finish()
                for leg in finished:
                    if d.role == "mixed":
                        end(leg, now)
                    elif d.role == "prefill":
                        prefill_done(d, leg, now)
                    else:
                        r = reqs[leg.index]
                        r.status, r.finish, r.generated = FINISHED, now, leg.generated
                        r.token_cycles = r.token_cycles + leg.token_cycles
                        end(r, now)
            while in_flight and in_flight[0][0] == now:
                _, _, t = heapq.heappop(in_flight)
                t.dst.arrive(t.leg)
                t.src.release_held(prefill_legs[t.req.index])
                t.req.status, t.req.channel = "decoding", t.leg.channel
            while arrivals and arrivals[0][0] <= now:
                at, i = heapq.heappop(arrivals)
                release(reqs[i], at)
            start_transfers(now)
            for d in self.devices:
                if d.idle:
                    for leg in d.start(now):
                        r = reqs[leg.index]
                        if r is not leg:
                            r.release = leg.release
                            reject(r, leg.reason)
                        end(r, now)
                    if overlap and d.role == "prefill" and not d.idle:
                        overlap_transfers(d, now)
            if progress is not None:
                progress(now, turns.ended, len(reqs), sum(len(d.records) for d in self.devices),
                         sum(len(d.running) for d in self.devices))
        if turns.ended != len(reqs):  # pragma: no cover - every path ends each request
            raise UserError(f"internal: {len(reqs) - turns.ended} requests never ended")
        return ClusterResult(reqs, self.devices, served_by, legs, transfers, links, now)
