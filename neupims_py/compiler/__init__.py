"""The operator compiler: one iteration of a model lowered to NPU tasks, DRAM requests at
real addresses and PIM command streams, and executed on the engine."""

from neupims_py.compiler.iteration import BatchEntry, IterationResult, IterationSimulator, simulate_iteration

__all__ = ["BatchEntry", "IterationResult", "IterationSimulator", "simulate_iteration"]
