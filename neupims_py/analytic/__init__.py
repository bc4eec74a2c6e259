"""Quick analytic mode: per-token latencies from a roofline model beside the cycle-level
simulator (`neupims-sim latency`).

    from neupims_py.analytic import latency
    r = latency("neupims", "gpt3-7b", prompt=1024, response=512, batch=8)
    r.roofline, r.simulated, r.ratios   # seconds per token: [prefill, decode 1, ...]
"""

from neupims_py.analytic.latency import LatencyResult, latency
from neupims_py.analytic.roofline import Peaks, roofline_latencies

__all__ = ["LatencyResult", "Peaks", "latency", "roofline_latencies"]
