"""Models as data: the transformer shapes in ``programs/*.yaml`` and their per-shard weights.

    model = load_model("gpt3-7b")                 # or a path, with "key=value" overrides
    model.heads_per_shard, model.ffn_shard        # derived values are properties
    for w in model.weight_matrices(): w.name, w.rows, w.cols
"""

from neupims_py.model.config import FFN_KINDS, NORMS, ModelConfig, WeightMatrix
from neupims_py.model.loader import list_models, load_model, programs_dir

__all__ = [
    "FFN_KINDS",
    "NORMS",
    "ModelConfig",
    "WeightMatrix",
    "list_models",
    "load_model",
    "programs_dir",
]
