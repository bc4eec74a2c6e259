"""Attention on the NPU: Q.K^T and S.V per head as GEMMs, softmax on the vector units.

Prefill (q_len > 1) attention runs on the NPU in every system mode, and decode attention
does in npu-only mode; both take this one path, decode being q_len = 1. Per request and
layer, with the shard's heads as a batch of same-shape GEMMs sharing the arrays:

    Q.K^T   M = q_len, K = head_dim, N = kv_len     (gemm.gemm_timing)
    softmax q_len rows per head, causal: row i has kv_len - q_len + i + 1 scores
    S.V     M = q_len, K = kv_len,   N = head_dim

run one after the other. The GEMMs are dense (masked scores are computed, then dropped by
the softmax), so each costs 2 * q_len * head_dim * kv_len FLOPs per head.
"""

from typing import NamedTuple

from neupims_py.config import NpuConfig
from neupims_py.errors import UserError
from neupims_py.npu.gemm import gemm_timing
from neupims_py.npu.vector import VectorOp, rows_cycles, softmax_row_lengths


class AttentionTiming(NamedTuple):
    qk: int  # cycles of Q.K^T
    softmax: int  # cycles of the (causal) softmax
    sv: int  # cycles of S.V
    cycles: int  # qk + softmax + sv
    flops: int  # of the two GEMMs


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an (m x k) @ (k x n) product: a multiply and an add per MAC."""
    return 2 * m * k * n


def attention_flops(q_len: int, kv_len: int, head_dim: int, heads: int = 1) -> int:
    """FLOPs of Q.K^T and S.V: 2 * q_len * head_dim * kv_len per head per matmul."""
    return heads * (matmul_flops(q_len, head_dim, kv_len) + matmul_flops(q_len, kv_len, head_dim))


def attention_timing(npu: NpuConfig, q_len: int, kv_len: int, heads: int, head_dim: int, *,
                     causal: bool = True, name: str = "attention") -> AttentionTiming:
    """Cycles of one request's attention over ``heads`` heads; kv_len includes the q_len
    new tokens."""
    if q_len < 1 or heads < 1 or head_dim < 1:
        raise UserError(f"{name}: q_len, heads and head_dim must be at least 1, got "
                        f"{q_len}, {heads}, {head_dim}")
    if kv_len < q_len:
        raise UserError(f"{name}: kv_len {kv_len} must include the {q_len} query tokens")
    qk = gemm_timing(npu, q_len, head_dim, kv_len, batch=heads, name=f"{name}.qk")
    softmax = rows_cycles(npu, VectorOp.SOFTMAX,
                          softmax_row_lengths(q_len, kv_len, heads, causal=causal))
    sv = gemm_timing(npu, q_len, kv_len, head_dim, batch=heads, name=f"{name}.sv")
    return AttentionTiming(qk=qk.cycles, softmax=softmax, sv=sv.cycles,
                           cycles=qk.cycles + softmax + sv.cycles,
                           flops=attention_flops(q_len, kv_len, head_dim, heads))


def decode_attention_timing(npu: NpuConfig, kv_len: int, heads: int, head_dim: int, *,
                            name: str = "attention") -> AttentionTiming:
    """Decode attention on the NPU (npu-only mode): the prefill path with one query."""
    return attention_timing(npu, 1, kv_len, heads, head_dim, name=name)
