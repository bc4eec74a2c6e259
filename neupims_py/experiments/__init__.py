"""Experiments built on the simulator: steady-state decode batches as the NeuPIMs paper
evaluates them (`steady_state`)."""
