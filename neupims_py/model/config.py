"""A transformer decoder as data: its shape, and the weight matrices of one tensor-parallel shard.

The simulated hardware is one device of a tensor-parallel group (as in NeuPIMs): it holds
``1/tp`` of every layer's weights, split Megatron-style — QKV-generation and the first FFN
matrices by output columns, the projection and the last FFN matrix by input rows — and, with
pipeline parallelism, ``layers/pp`` consecutive layers. Derived values are properties, so
``dataclasses.replace`` never leaves one stale, and construction validates, so a
``ModelConfig`` that exists is a consistent one. Load them with ``neupims_py.model.load_model``.
"""

from dataclasses import dataclass
from typing import NamedTuple

from neupims_py.config.schema import ConfigError, check_fields, spec

FFN_KINDS = ("gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")


class WeightMatrix(NamedTuple):
    """One weight matrix of one layer, as one shard holds it: activations (M x rows) times it."""

    name: str  # qkv, proj, ffn1, ffn2 (GELU) or qkv, proj, gate, up, down (SwiGLU)
    rows: int  # K: the input features
    cols: int  # N: the output features


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """A decoder-only transformer and how it is split over devices."""

    name: str = spec("short name of the model, e.g. gpt3-7b")
    description: str = spec("what the model is", default="")
    source: str = spec("paper, model card or config file the values come from", default="")
    layers: int = spec("decoder layers", "layers", minimum=1)
    d_model: int = spec("embedding (hidden) size", "features", minimum=1)
    heads: int = spec("attention heads; head_dim = d_model / heads", "heads", minimum=1)
    ffn_dim: int = spec("FFN intermediate size (4 * d_model for GPT-3)", "features", minimum=1)
    ffn_kind: str = spec(
        "gelu: two matrices with GELU between them (GPT); swiglu: gate and up matrices, "
        "silu(gate) * up, then down (LLaMA)", "", choices=FFN_KINDS)
    norm: str = spec("normalisation before attention and before the FFN", "", choices=NORMS)
    rotary: bool = spec("rotary position embedding applied to Q and K (a vector op per layer)")
    vocab: int = spec("vocabulary size (padded, as the embedding table is stored)", "tokens",
                      minimum=1)
    tied_embeddings: bool = spec(
        "the output projection reuses the input embedding table (GPT); false: a separate "
        "LM-head matrix (LLaMA)", default=True)
    dtype_bytes: int = spec("bytes per weight and activation element (2 = FP16)", "bytes",
                            minimum=1)
    tp: int = spec("tensor-parallel degree: devices sharing every layer; one is simulated",
                   "devices", minimum=1)
    pp: int = spec("pipeline-parallel degree: the simulated device holds layers / pp layers",
                   "stages", default=1, minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.d_model % self.heads:
            raise ConfigError(
                f"{self.heads} heads do not divide d_model {self.d_model} into whole heads",
                field="heads", related=("d_model",))
        if self.heads % self.tp:
            raise ConfigError(
                f"tensor-parallel degree {self.tp} does not divide the {self.heads} heads",
                field="tp", related=("heads",))
        if self.ffn_dim % self.tp:
            raise ConfigError(
                f"tensor-parallel degree {self.tp} does not divide ffn_dim {self.ffn_dim}",
                field="tp", related=("ffn_dim",))
        if self.layers % self.pp:
            raise ConfigError(
                f"pipeline-parallel degree {self.pp} does not divide the {self.layers} layers",
                field="pp", related=("layers",))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def heads_per_shard(self) -> int:
        return self.heads // self.tp

    @property
    def d_shard(self) -> int:
        """Attention features of one shard: its heads times head_dim (= d_model / tp)."""
        return self.d_model // self.tp

    @property
    def qkv_shard(self) -> int:
        """Output columns of the shard's QKV-generation matrix (= 3 * d_model / tp)."""
        return 3 * self.d_shard

    @property
    def ffn_shard(self) -> int:
        return self.ffn_dim // self.tp

    @property
    def layers_per_stage(self) -> int:
        """Layers one device runs per iteration (all of them unless pipeline-parallel)."""
        return self.layers // self.pp

    def weight_matrices(self) -> tuple[WeightMatrix, ...]:
        """The shard's weight matrices of one layer, in execution order (biases excluded)."""
        d, f = self.d_model, self.ffn_shard
        attention = (WeightMatrix("qkv", d, self.qkv_shard), WeightMatrix("proj", self.d_shard, d))
        if self.ffn_kind == "gelu":
            return attention + (WeightMatrix("ffn1", d, f), WeightMatrix("ffn2", f, d))
        return attention + (WeightMatrix("gate", d, f), WeightMatrix("up", d, f),
                            WeightMatrix("down", f, d))

    def params_per_shard_per_layer(self) -> int:
        """Weights of one layer held by one shard: the sum of rows * cols of its matrices."""
        return sum(w.rows * w.cols for w in self.weight_matrices())

    def embedding_params_per_shard(self) -> int:
        """Embedding table (and a separate LM head, if untied), split over tp by vocabulary."""
        tables = 1 if self.tied_embeddings else 2
        return tables * -(-self.vocab // self.tp) * self.d_model

    def total_params(self) -> int:
        """Weights of the whole model: every layer of every shard plus the embedding tables.

        Biases, norm scales and learned position embeddings are not counted (each is under
        0.1% of the total).
        """
        tables = 1 if self.tied_embeddings else 2
        return (self.layers * self.tp * self.params_per_shard_per_layer()
                + tables * self.vocab * self.d_model)

    def layer_weight_bytes_per_shard(self) -> int:
        return self.params_per_shard_per_layer() * self.dtype_bytes

    def weight_bytes_per_shard(self, *, embeddings: bool = True) -> int:
        """Weight bytes one device stores: its layers (layers / pp) and, unless told not to,
        its slice of the embedding tables (with pp > 1 only the first and last stages hold
        them; counting them on every device makes this an upper bound)."""
        total = self.layers_per_stage * self.params_per_shard_per_layer()
        if embeddings:
            total += self.embedding_params_per_shard()
        return total * self.dtype_bytes
