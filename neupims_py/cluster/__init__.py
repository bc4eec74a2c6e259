"""Several devices: pools of devices with roles (mixed, prefill, decode), pipeline-parallel
stages, KV-cache transfers between prefill and decode devices over links, request routing,
and results per device, per pool and per dollar.

    cfg = load_cluster("hwconfigs/cluster-disagg.yaml", model)   # the `cluster:` section
    result = Cluster(cfg, model, seed=0).run(load_trace(path).requests)
    summary = summarize_cluster(result, Clock(1000.0), cfg=cfg, meta={})

A device is what `neupims-sim run` simulates: one tensor-parallel shard of the model,
standing for its tp group (the shards run in lockstep, each with its own links), so KV
and activation bytes are per shard, and `cost_per_hour` is the price of what one device
stands for.

`neupims-sim run CLUSTER.yaml TRACE.h5` does this (cli.py). Modules: config.py (schema,
loader), routing.py (policies), link.py, device.py (a device, a pipeline replica),
runner.py (the event loop), results.py (summary and files).
"""

from neupims_py.cluster.config import ClusterConfig, is_cluster_file, load_cluster
from neupims_py.cluster.results import summarize_cluster
from neupims_py.cluster.runner import Cluster, ClusterResult, kv_bytes

__all__ = ["Cluster", "ClusterConfig", "ClusterResult", "is_cluster_file", "kv_bytes",
           "load_cluster", "summarize_cluster"]
