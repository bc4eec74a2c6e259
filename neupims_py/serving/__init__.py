"""The serving loop: requests from a trace through iteration-level batches on the simulated
device (DESIGN.md, 'The serving loop').

    cost = ReuseCost(hw, model)            # or ExactCost: every iteration simulated whole
    result = Orchestrator(hw, model, cost, seed=0).run(load_trace(path).requests)
    result.requests, result.iterations     # per-request states, per-iteration records

`neupims-sim run HW.yaml TRACE.h5` (cli.py) does this and writes the outputs (metrics.py).
"""

from neupims_py.serving.cost_model import CostModel, ExactCost, IterationCost, ReuseCost
from neupims_py.serving.orchestrator import ITERATION_FIELDS, Orchestrator, ServingResult

__all__ = ["ITERATION_FIELDS", "CostModel", "ExactCost", "IterationCost", "Orchestrator",
           "ReuseCost", "ServingResult"]
