"""Models as data: every shipped model loads, and its shapes and parameter counts are right."""

import dataclasses

import pytest

from neupims_py.config import ConfigError
from neupims_py.model import ModelConfig, WeightMatrix, list_models, load_model, programs_dir

GPT3 = {  # name: (layers, d_model, heads, tp, pp), from the brief and the NeuPIMs artifact
    "gpt3-7b": (32, 4096, 32, 4, 1),
    "gpt3-13b": (40, 5120, 40, 4, 1),
    "gpt3-30b": (48, 7168, 56, 4, 2),
    "gpt3-175b": (96, 12288, 96, 8, 4),
}
LLAMA2 = {  # name: (layers, d_model, heads, ffn_dim)
    "llama2-7b": (32, 4096, 32, 11008),
    "llama2-13b": (40, 5120, 40, 13824),
}
MODELS = tuple(GPT3) + tuple(LLAMA2)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_loads_by_name_and_by_path(name):
    by_path = load_model(programs_dir() / f"{name}.yaml")
    assert isinstance(by_path, ModelConfig)
    assert by_path.name == name
    assert by_path.source  # every shipped model cites where its values come from
    assert load_model(name) == by_path


def test_models_listed():
    assert set(MODELS) <= set(list_models())


@pytest.mark.parametrize("name", GPT3)
def test_gpt3_shapes(name):
    layers, d, heads, tp, pp = GPT3[name]
    m = load_model(name)
    assert (m.layers, m.d_model, m.heads, m.tp, m.pp) == (layers, d, heads, tp, pp)
    assert m.head_dim == 128
    assert m.ffn_dim == 4 * d
    assert (m.ffn_kind, m.norm, m.rotary, m.vocab, m.dtype_bytes) == (
        "gelu", "layernorm", False, 50304, 2)


@pytest.mark.parametrize("name", LLAMA2)
def test_llama2_shapes(name):
    layers, d, heads, ffn = LLAMA2[name]
    m = load_model(name)
    assert (m.layers, m.d_model, m.heads, m.ffn_dim, m.tp) == (layers, d, heads, ffn, 4)
    assert m.head_dim == 128
    assert (m.ffn_kind, m.norm, m.rotary, m.vocab, m.tied_embeddings) == (
        "swiglu", "rmsnorm", True, 32000, False)


def test_gpt3_7b_shard_matrices():
    m = load_model("gpt3-7b")
    assert m.heads_per_shard == 8
    assert m.d_shard == 1024
    assert m.qkv_shard == 3072
    assert m.ffn_shard == 4096
    assert m.weight_matrices() == (
        WeightMatrix("qkv", 4096, 3072),
        WeightMatrix("proj", 1024, 4096),
        WeightMatrix("ffn1", 4096, 4096),
        WeightMatrix("ffn2", 4096, 4096),
    )
    # 4096*3072 + 1024*4096 + 2 * 4096*4096 = 12582912 + 4194304 + 33554432
    assert m.params_per_shard_per_layer() == 50_331_648


def test_llama2_7b_shard_matrices():
    m = load_model("llama2-7b")
    assert m.ffn_shard == 2752
    assert [w.name for w in m.weight_matrices()] == ["qkv", "proj", "gate", "up", "down"]
    assert m.weight_matrices()[2:] == (
        WeightMatrix("gate", 4096, 2752),
        WeightMatrix("up", 4096, 2752),
        WeightMatrix("down", 2752, 4096),
    )


@pytest.mark.parametrize("name", GPT3)
def test_gpt3_layers_hold_12_L_d_squared(name):
    layers, d, _, tp, _ = GPT3[name]
    m = load_model(name)
    assert m.params_per_shard_per_layer() * tp * layers == 12 * layers * d * d


def test_gpt3_7b_total_params():
    m = load_model("gpt3-7b")
    # 12 * 32 * 4096^2 = 6_442_450_944, plus the tied 50304 x 4096 embedding 206_045_184
    assert m.total_params() == 6_648_496_128
    assert 6.4e9 <= m.total_params() <= 6.7e9


def test_llama2_7b_total_params_match_the_published_count():
    # Llama-2-7b-hf has 6_738_415_616 parameters; its RMSNorm scales (2 per layer and a
    # final one, 4096 each: 266_240) are the only ones not counted here.
    m = load_model("llama2-7b")
    assert m.total_params() == 6_738_415_616 - (2 * 32 + 1) * 4096


def test_weight_bytes_per_shard():
    m = load_model("gpt3-7b")
    layer = 50_331_648 * 2
    assert m.layer_weight_bytes_per_shard() == layer
    embedding = 50304 // 4 * 4096 * 2
    assert m.weight_bytes_per_shard(embeddings=False) == 32 * layer
    assert m.weight_bytes_per_shard() == 32 * layer + embedding


def test_pipeline_stages_hold_a_share_of_the_layers():
    m = load_model("gpt3-175b")
    assert m.layers_per_stage == 24
    assert m.heads_per_shard == 12
    assert m.weight_bytes_per_shard(embeddings=False) == (
        24 * 12 * 12288 * 12288 // 8 * 2)


def test_untied_embeddings_count_twice():
    m = load_model("llama2-7b")
    assert m.embedding_params_per_shard() == 2 * 8000 * 4096
    assert dataclasses.replace(m, tied_embeddings=True).embedding_params_per_shard() == (
        8000 * 4096)


def test_overrides_and_replace_revalidate():
    assert load_model("gpt3-7b", ["tp=8"]).heads_per_shard == 4
    m = load_model("gpt3-7b")
    with pytest.raises(ConfigError):
        dataclasses.replace(m, tp=3)
