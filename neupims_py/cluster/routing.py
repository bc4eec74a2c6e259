"""Routing policies: which device (or pipeline replica) of a pool takes a request.

Used for arrivals (mixed and prefill pools) and for prefill -> decode hand-offs. A policy
sees the candidate devices in pool order and picks one; ties go to the first. Found by
name through `make_router`; a wrong name lists the valid ones.

- round-robin: devices in turn (the turn advances on every choice);
- least-loaded: the device with the fewest requests on it (waiting, running, or with a KV
  transfer towards it under way or queued);
- least-kv: the device with the fewest KV tokens reserved (running requests' prompt +
  output, plus those of transfers queued or under way towards it).
"""

from __future__ import annotations

from neupims_py.errors import UserError


class RoundRobin:
    name = "round-robin"

    def __init__(self):
        self.turn = 0

    def choose(self, devices):
        d = devices[self.turn % len(devices)]
        self.turn += 1
        return d


class LeastLoaded:
    name = "least-loaded"

    def choose(self, devices):
        return min(devices, key=lambda d: d.load_requests())


class LeastKv:
    name = "least-kv"

    def choose(self, devices):
        return min(devices, key=lambda d: d.load_kv_tokens())


ROUTING_POLICIES = {c.name: c for c in (RoundRobin, LeastLoaded, LeastKv)}


def make_router(name: str):
    if name not in ROUTING_POLICIES:
        raise UserError(f"unknown routing policy {name!r}; valid: {', '.join(ROUTING_POLICIES)}")
    return ROUTING_POLICIES[name]()
