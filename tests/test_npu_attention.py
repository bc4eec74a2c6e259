"""Attention on the NPU: Q.K^T and S.V through the GEMM tiling, causal softmax, FLOPs."""

import dataclasses

import pytest

from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.model import load_model
from neupims_py.npu import (
    attention_flops,
    attention_timing,
    decode_attention_timing,
    gemm_timing,
    matmul_flops,
)

NPU = load_hw("neupims").npu  # 8 arrays of 128 x 128, 8 vector units of 128, 1-cycle ops


def test_flops():
    # 2 * q * d * kv per head per matmul
    assert matmul_flops(7, 128, 300) == 2 * 7 * 128 * 300 == 537_600
    assert attention_flops(7, 300, 128) == 2 * 537_600
    assert attention_flops(7, 300, 128, heads=3) == 3 * 2 * 537_600
    assert attention_timing(NPU, 7, 300, 3, 128).flops == 3_225_600


def test_decode_attention_by_hand():
    # q=1, kv=512, 2 heads of 128:
    #   Q.K^T: K=128, N=512: 4 tiles per head, 8 tiles, one per array: 128 + 254 + 4
    #   softmax: 2 rows of 512, 2 trees of 4 + 1, 4 issues of add + exp + mul: 10 + 12
    #   S.V:   K=512, N=128: 4 tiles per head, 8 in all: 128 + 254 + 4
    t = decode_attention_timing(NPU, 512, 2, 128)
    assert (t.qk, t.softmax, t.sv) == (386, 22, 386)
    assert t.cycles == 794


def test_one_query_prefill_is_decode():
    for kv_len, heads in ((1, 1), (77, 8), (2048, 12)):
        assert attention_timing(NPU, 1, kv_len, heads, 128) == decode_attention_timing(
            NPU, kv_len, heads, 128)


def test_causal_prefill_by_hand():
    # q = kv = 256, one head:
    #   Q.K^T: M=256, K=128, N=256: 2 tiles on 2 arrays, 128 + 254 + 256 = 638
    #   softmax: row i has i + 1 keys; 1..128 keys cost 2 + 3 = 5, 129..256 cost 6 + 6 = 12;
    #            each unit gets 16 rows of each kind: 16 * 5 + 16 * 12 = 272
    #   S.V:   M=256, K=256, N=128: 2 tiles on 2 arrays, 638
    t = attention_timing(NPU, 256, 256, 1, 128)
    assert (t.qk, t.softmax, t.sv) == (638, 272, 638)
    assert t.cycles == 1548
    # without the mask every row has 256 keys: 32 rows of 12 per unit
    assert attention_timing(NPU, 256, 256, 1, 128, causal=False).softmax == 32 * 12


def test_attention_gemms_are_the_tiled_gemms():
    q, kv, heads, d = 96, 640, 8, 128
    t = attention_timing(NPU, q, kv, heads, d)
    assert t.qk == gemm_timing(NPU, q, d, kv, batch=heads, name="qk").cycles
    assert t.sv == gemm_timing(NPU, q, kv, d, batch=heads, name="sv").cycles


def test_chunked_prefill_sees_the_earlier_keys():
    # 64 new tokens after 1000 in the cache: rows of 937..1000 keys, wider than one head
    assert attention_timing(NPU, 64, 1000, 1, 128).softmax > attention_timing(
        NPU, 64, 64, 1, 128).softmax


def test_model_shard_attention():
    m = load_model("gpt3-7b")
    t = attention_timing(NPU, 512, 512, m.heads_per_shard, m.head_dim)
    assert t.flops == 8 * 2 * 2 * 512 * 128 * 512


def test_kv_shorter_than_q_is_an_error():
    with pytest.raises(UserError, match=r"^layer0\.attention: kv_len 3"):
        attention_timing(NPU, 4, 3, 1, 128, name="layer0.attention")


def test_sram_overflow_names_the_attention_gemm():
    small = dataclasses.replace(NPU, scratchpad_kib=64)
    with pytest.raises(UserError, match=r"^attention\.qk: GEMM 4096x128x4096 tiles"):
        attention_timing(small, 4096, 4096, 1, 128)
