"""The NPU timing model: systolic-array GEMMs, vector-unit operators, SRAM checks, attention.

    gemm_timing(hw.npu, m, k, n, name="layer.qkv")        # GemmTiming: cycles, per array
    vector_cycles(hw.npu, VectorOp.LAYERNORM, tokens, d_model)
    attention_timing(hw.npu, q_len, kv_len, heads, head_dim)

The formulas and their source (the NeuPIMs artifact) are documented in ``gemm.py`` and
``vector.py``; ``kernels.py`` holds the Numba kernel twins.
"""

from neupims_py.npu.attention import (
    AttentionTiming,
    attention_flops,
    attention_timing,
    decode_attention_timing,
    matmul_flops,
)
from neupims_py.npu.gemm import (
    GemmTiming,
    check_gemm_sram,
    gemm_schedule_reference,
    gemm_timing,
    max_m_tile,
)
from neupims_py.npu.vector import (
    ROW_OPS,
    VECTOR_OPS,
    Scope,
    Step,
    VectorOp,
    row_cycles,
    rows_cycles,
    softmax_row_lengths,
    tree_issues,
    vector_cycles,
)

__all__ = [
    "ROW_OPS",
    "VECTOR_OPS",
    "AttentionTiming",
    "GemmTiming",
    "Scope",
    "Step",
    "VectorOp",
    "attention_flops",
    "attention_timing",
    "check_gemm_sram",
    "decode_attention_timing",
    "gemm_schedule_reference",
    "gemm_timing",
    "matmul_flops",
    "max_m_tile",
    "row_cycles",
    "rows_cycles",
    "softmax_row_lengths",
    "tree_issues",
    "vector_cycles",
]
