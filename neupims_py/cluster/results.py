"""What a cluster run measured: the single-device summary of the whole trace, plus sections
per pool, per device and for the KV transfers, the cost of the configuration, and the
files they go to.

- summary.json: as `neupims-sim run`'s (requests, throughput, latency percentiles, energy,
  every device's iterations together), with `utilization` taken over the run's span
  (busy cycles / (span x units), summed over devices), `limits` per pool, and the
  sections `cost`, `pools`, `devices`, `transfers`;
- requests.csv: `run`'s columns plus the device that served the request (mixed) or
  prefilled it, its decode device, and its KV transfer: bytes, queued (prefill ended),
  start, end, transfer_ns (end - start: occupancy + latency) and transfer_wait_ns
  (start - queued: waiting for room on the decode device and for the link);
- tokens.csv: as `run`'s (the first token comes from the prefill device);
- devices.csv: one row per physical device (a pipeline stage is one);
- iterations.csv: `run`'s columns with the device (replica) first.
"""

from __future__ import annotations

import json

import numpy as np

from neupims_py.cluster.device import Pipeline
from neupims_py.config import hw_to_dict
from neupims_py.serving.metrics import (
    REQUEST_FIELDS,
    Clock,
    csv_text,
    to_ms,
    distribution,
    request_rows,
    summarize,
)
from neupims_py.serving.orchestrator import ITERATION_FIELDS, ServingResult

CLUSTER_REQUEST_FIELDS = (
    *REQUEST_FIELDS, "device", "decode_device", "kv_transfer_bytes", "transfer_queued_ns",
    "transfer_start_ns", "transfer_end_ns", "transfer_ns", "transfer_wait_ns",
)
DEVICE_FIELDS = (
    "device", "pool", "role", "stage", "hw", "mode", "iterations", "busy_cycles", "busy_fraction",
    "array_utilization", "vector_utilization", "pim_utilization", "energy_j", "requests",
    "mean_queue_ns", "cost_per_hour",
)


def _iterations(result) -> np.ndarray:
    its = [np.asarray(d.records, dtype=np.float64).reshape(len(d.records), len(ITERATION_FIELDS))
           for d in result.devices]
    return np.concatenate(its) if its else np.zeros((0, len(ITERATION_FIELDS)))


def _queue_delays(d, result) -> list[int]:
    """Cycles each request waited on device `d`: from release into its queue (mixed,
    prefill) or from the end of its KV transfer (decode) to its first iteration there."""
    out = []
    for leg in result.legs[d.name]:
        if leg.first_scheduled < 0:
            continue
        if d.role == "decode":
            t = result.transfers[leg.index]
            out.append(leg.first_scheduled - t.end)
        else:
            out.append(leg.first_scheduled - leg.release)
    return out


def device_rows(result, clock: Clock) -> list[dict]:
    span = result.end_cycle
    rows = []
    for d in result.devices:
        delays = _queue_delays(d, result)
        for st in d.stats:
            rows.append({
                "device": st.name, "pool": st.pool, "role": st.role, "stage": st.stage,
                "hw": d.pool.hw.name, "mode": d.pool.hw.system.mode,
                "iterations": st.iterations, "busy_cycles": st.busy,
                "busy_fraction": st.busy / span if span else 0.0,
                "array_utilization": st.array_busy / (span * st.arrays) if span else 0.0,
                "vector_utilization": st.vector_busy / span if span else 0.0,
                "pim_utilization": st.pim_busy / (span * st.channels) if span else 0.0,
                "energy_j": st.energy_pj / 1e12,
                "requests": len(result.legs[d.name]),
                "mean_queue_ns": (clock.ns(sum(delays) / len(delays)) if delays else None),
                "cost_per_hour": d.pool.cfg.cost_per_hour,
            })
    return rows


def cluster_request_rows(result, clock: Clock) -> list[dict]:
    rows = request_rows(ServingResult(result.requests, np.zeros((0, len(ITERATION_FIELDS))),
                                      None, result.end_cycle), clock)
    for r, row in zip(result.requests, rows):
        d = result.served_by.get(r.index)
        t = result.transfers.get(r.index)
        row["device"] = d.name if d is not None else None
        row["decode_device"] = t.dst.name if t is not None else None
        row["kv_transfer_bytes"] = t.nbytes if t is not None else None
        for key, v in (("transfer_queued_ns", t and t.queued), ("transfer_start_ns", t and t.start),
                       ("transfer_end_ns", t and t.end)):
            row[key] = clock.ns(v) if t is not None else None
        started = t is not None and t.start >= 0
        row["transfer_ns"] = clock.ns(t.end - t.start) if started else None
        row["transfer_wait_ns"] = clock.ns(t.start - t.queued) if started else None
    return rows


def summarize_cluster(result, clock: Clock, *, cfg, meta: dict) -> dict:
    its = _iterations(result)
    first = result.devices[0]
    base = summarize(ServingResult(result.requests, its, first.limits, result.end_cycle), clock,
                     hw=first.pool.hw, meta=meta)
    devs = device_rows(result, clock)
    span = result.end_cycle
    stats = [st for d in result.devices for st in d.stats]

    def over_span(busy: str, units) -> float:
        total = sum(units(st) for st in stats) * span
        return sum(getattr(st, busy) for st in stats) / total if total else 0.0

    base["limits"] = {}
    for p in cfg.pools:
        lim = next(d.limits for d in result.devices if d.pool is p)
        base["limits"][p.cfg.name] = {k: getattr(lim, k) for k in lim.__dataclass_fields__}
    base["utilization"] = {
        "basis": "busy cycles / (run span x units), over every device",
        "systolic_arrays": over_span("array_busy", lambda st: st.arrays),
        "vector_units": over_span("vector_busy", lambda st: 1),
        "pim": over_span("pim_busy", lambda st: st.channels),
        "busy_fraction": over_span("busy", lambda st: 1),
    }
    seconds = base["simulated_seconds"]
    per_hour = sum(p.cfg.count * p.cfg.cost_per_hour for p in cfg.pools)
    dollars = per_hour * seconds / 3600.0
    out_tokens = base["throughput"]["output_tokens"]
    finished = base["requests"]["finished"]
    base["cost"] = {
        "per_hour": per_hour,
        "run_dollars": dollars,
        "output_tokens_per_dollar": out_tokens / dollars if dollars else None,
        "requests_per_dollar": finished / dollars if dollars else None,
        "output_tokens_per_s_per_dollar_per_hour":
            base["throughput"]["output_tokens_per_s"] / per_hour if per_hour else None,
    }
    pools = {}
    for p in cfg.pools:
        name = p.cfg.name
        prow = [r for r in devs if r["pool"] == name]
        pdevs = [d for d in result.devices if d.pool is p]
        delays = [x for d in pdevs for x in _queue_delays(d, result)]

        def mean(key: str) -> float:
            return float(np.mean([r[key] for r in prow])) if prow else 0.0

        entry = {
            "role": p.cfg.role, "hw": p.hw.name, "mode": p.hw.system.mode, "devices": p.cfg.count,
            "replicas": p.cfg.replicas, "pp": p.cfg.pp, "micro_batches": p.cfg.micro_batches,
            "routing": p.routing, "cost_per_hour": p.cfg.cost_per_hour,
            "requests": sum(len(result.legs[d.name]) for d in pdevs),
            "iterations": sum(len(d.records) for d in pdevs),
            "busy_fraction": mean("busy_fraction"),
            "utilization": {"systolic_arrays": mean("array_utilization"),
                            "vector_units": mean("vector_utilization"), "pim": mean("pim_utilization")},
            "queue_delay_ms": to_ms(distribution([clock.ns(x) for x in delays])),
            "energy_j": sum(r["energy_j"] for r in prow),
        }
        if p.cfg.pp > 1:
            entry["pipeline_bubble"] = float(np.mean([d.bubble() for d in pdevs if isinstance(d, Pipeline)]))
        pools[name] = entry
    base["pools"] = pools
    base["devices"] = devs
    ts = [t for t in result.transfers.values() if t.start >= 0]
    base["transfers"] = {
        "count": len(ts),
        "bytes": int(sum(t.nbytes for t in ts)),
        "transfer_ms": to_ms(distribution([clock.ns(t.end - t.start) for t in ts])),
        "wait_ms": to_ms(distribution([clock.ns(t.start - t.queued) for t in ts])),
        "links": [{"from": a, "to": b, "transfers": link.transfers, "bytes": link.bytes,
                   "busy_fraction": link.busy / span if span else 0.0}
                  for (a, b), link in sorted(result.links.items())],
    }
    return base


def cluster_meta(cfg) -> dict:
    """The configuration as results record it."""
    return {
        "cluster": cfg.header.name,
        "cluster_file": str(cfg.path).replace("\\", "/").rsplit("/", 1)[-1],
        "link": None if cfg.link is None else {"bandwidth_gbps": cfg.link.bandwidth_gbps,
                                                "latency_us": cfg.link.latency_us},
        "pool_configs": {p.cfg.name: {"hw": p.cfg.hw, "params": list(p.params),
                                      "scheduler": hw_to_dict(p.hw)["scheduler"]}
                         for p in cfg.pools},
    }


def output_texts(result, summary: dict, clock: Clock) -> dict[str, str]:
    rows = cluster_request_rows(result, clock)
    it_rows = []
    start_i, cyc_i = ITERATION_FIELDS.index("start_cycle"), ITERATION_FIELDS.index("cycles")
    for d in result.devices:
        for rec in d.records:
            it_rows.append([d.name, *rec, clock.ns(rec[start_i]), clock.ns(rec[start_i] + rec[cyc_i])])
    tokens = ((r.id, k, clock.ns(c)) for r in result.requests for k, c in enumerate(r.token_cycles))
    devs = device_rows(result, clock)
    return {
        "summary.json": json.dumps(summary, indent=2, sort_keys=False) + "\n",
        "requests.csv": csv_text(CLUSTER_REQUEST_FIELDS, ([r[f] for f in CLUSTER_REQUEST_FIELDS] for r in rows)),
        "tokens.csv": csv_text(("request_id", "token", "time_ns"), tokens),
        "devices.csv": csv_text(DEVICE_FIELDS, ([r[f] for f in DEVICE_FIELDS] for r in devs)),
        "iterations.csv": csv_text(("device", *ITERATION_FIELDS, "start_ns", "end_ns"), it_rows),
    }
