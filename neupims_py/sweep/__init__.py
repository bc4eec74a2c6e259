"""Design sweeps: a grid (or list) of `neupims-sim run` configurations, run locally or on
Ray, gathered into one table (`neupims-sim sweep SWEEP.yaml`).

    from neupims_py.sweep import load_sweep, run_sweep
    results = run_sweep(load_sweep("sweeps/batch-size.yaml"), Path("out"), jobs=2)
    results.rows[0]["throughput.output_tokens_per_s"]
"""

from neupims_py.sweep.runner import Results, run_point, run_sweep
from neupims_py.sweep.spec import Sweep, load_sweep

__all__ = ["Results", "Sweep", "load_sweep", "run_point", "run_sweep"]
