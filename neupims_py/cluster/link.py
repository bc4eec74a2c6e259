"""A point-to-point link between two devices, in the cluster's clock (NPU cycles).

A transfer of B bytes started at cycle t occupies the link for ceil(B / bandwidth) and
arrives a latency later: arrival = t + ceil(B / bandwidth) + ceil(latency). Transfers on
one link are serialized (first come, first served) by the occupancy; the latency is
propagation and does not hold the link, so back-to-back transfers overlap their latencies.
Each ordered pair of devices has its own link (no shared switch is modelled).
"""

from __future__ import annotations

import math


def to_cycles(ns: float, cycles_per_ns: float) -> int:
    return int(math.ceil(ns * cycles_per_ns - 1e-9))


class Link:
    def __init__(self, cfg, cycles_per_ns: float):
        self.cfg = cfg
        self.cycles_per_ns = cycles_per_ns
        self.latency = to_cycles(cfg.latency_us * 1000.0, cycles_per_ns)
        self.free = 0  # cycle the link can start the next transfer
        self.busy = 0  # cycles occupied in total
        self.transfers = 0
        self.bytes = 0

    def occupancy(self, nbytes: int) -> int:
        """Cycles `nbytes` hold the link (GB/s = bytes per ns)."""
        return to_cycles(nbytes / self.cfg.bandwidth_gbps, self.cycles_per_ns)

    def send(self, at: int, nbytes: int) -> tuple[int, int]:
        """Queue `nbytes` at cycle `at`: (start, arrival) cycles."""
        start = max(at, self.free)
        occ = self.occupancy(nbytes)
        self.free = start + occ
        self.busy += occ
        self.transfers += 1
        self.bytes += nbytes
        return start, start + occ + self.latency
