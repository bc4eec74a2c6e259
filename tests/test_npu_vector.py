"""Vector-unit operators: the step table, and cycles worked out by hand from it.

The preset has 8 units of 128 lanes and every primitive at 1 cycle; SLOW gives each
primitive its own latency so that a formula counting the wrong primitive fails.
"""

import dataclasses

import numpy as np
import pytest

from neupims_py.config import VectorOpCycles, load_hw
from neupims_py.errors import UserError
from neupims_py.npu import (
    ROW_OPS,
    VECTOR_OPS,
    VectorOp,
    rows_cycles,
    softmax_row_lengths,
    tree_issues,
    vector_cycles,
)

NPU = load_hw("neupims").npu
SLOW = dataclasses.replace(
    NPU, vector_op_cycles=VectorOpCycles(add=2, mul=3, exp=4, gelu=6, add_tree=5, sqrt=7))


def test_every_operator_has_a_table_of_known_primitives():
    primitives = {f.name for f in dataclasses.fields(VectorOpCycles)}
    assert set(VECTOR_OPS) == set(VectorOp)
    for steps in VECTOR_OPS.values():
        assert steps and all(s.primitive in primitives and s.count > 0 for s in steps)
    assert ROW_OPS == {VectorOp.LAYERNORM, VectorOp.RMSNORM, VectorOp.SOFTMAX}


@pytest.mark.parametrize("n, issues", [
    (1, 1), (128, 1),
    (129, 2 + 1),  # two 128-wide groups, then one
    (4096, 32 + 1),
    (16384, 128 + 1),
    (16385, 129 + 2 + 1),
])
def test_add_tree_iterations(n, issues):
    assert tree_issues(n, 128) == issues


def test_add_is_spread_over_every_lane():
    # 3 tokens x 4096 = 12288 elements over 8 x 128 lanes: 12 issues
    assert vector_cycles(NPU, VectorOp.ADD, 3, 4096) == 12
    assert vector_cycles(SLOW, VectorOp.ADD, 3, 4096) == 12 * 2
    assert vector_cycles(NPU, VectorOp.ADD, 1, 1000) == 1


def test_gelu():
    assert vector_cycles(SLOW, VectorOp.GELU, 2, 4096) == 8 * 6


def test_swiglu():
    # 8 x 2752 = 22016 elements: ceil(22016 / 1024) = 22 issues of exp + add + 3 mul
    assert vector_cycles(SLOW, VectorOp.SWIGLU, 8, 2752) == 22 * (4 + 2 + 3 * 3)


def test_rotary():
    # 4 tokens x 2048 (Q and K of a 1024-wide shard): 8 issues of 2 mul + add
    assert vector_cycles(SLOW, VectorOp.ROTARY, 4, 2048) == 8 * (2 * 3 + 2)


def test_layernorm_per_row():
    # 2 add trees of 33 issues, 2 scalar mul, a sqrt, 32 issues of 2 add + 3 mul
    one_row = 2 * 33 * 5 + 2 * 3 + 7 + 32 * (2 * 2 + 3 * 3)
    assert one_row == 759
    assert vector_cycles(SLOW, VectorOp.LAYERNORM, 1, 4096) == one_row
    assert vector_cycles(NPU, VectorOp.LAYERNORM, 8, 4096) == 2 * 33 + 3 + 32 * 5 == 229


def test_rows_are_dealt_round_robin_over_the_units():
    # 9 rows on 8 units: unit 0 runs two
    assert vector_cycles(NPU, VectorOp.LAYERNORM, 9, 4096) == 2 * 229
    assert vector_cycles(NPU, VectorOp.LAYERNORM, 16, 4096) == 2 * 229
    assert vector_cycles(NPU, VectorOp.LAYERNORM, 17, 4096) == 3 * 229


def test_rmsnorm():
    # one add tree, a scalar mul and sqrt, 32 issues of 3 mul
    assert vector_cycles(SLOW, VectorOp.RMSNORM, 1, 4096) == 33 * 5 + 3 + 7 + 32 * 3 * 3


def test_softmax():
    # tree(512) = 4 + 1; 2 trees, then 4 issues of add + exp + mul
    assert vector_cycles(SLOW, VectorOp.SOFTMAX, 1, 512) == 2 * 5 * 5 + 4 * (2 + 4 + 3)


def test_causal_softmax_rows():
    assert list(softmax_row_lengths(2, 129, 2)) == [128, 129, 128, 129]
    assert list(softmax_row_lengths(2, 129, 1, causal=False)) == [129, 129]
    # 128 keys: 2 trees of 1 + 1 issue of 3 = 5; 129 keys: 2 trees of 3 + 2 issues of 3 = 12
    one_unit = dataclasses.replace(NPU, vector_units=1)
    assert rows_cycles(one_unit, VectorOp.SOFTMAX, softmax_row_lengths(2, 129, 1)) == 5 + 12
    assert rows_cycles(NPU, VectorOp.SOFTMAX, softmax_row_lengths(2, 129, 1)) == 12


def test_row_costs_follow_lengths():
    # a row of 256 (tree 2 + 1) costs more than one of 128
    costs = [rows_cycles(NPU, VectorOp.SOFTMAX, np.array([n])) for n in (128, 256)]
    assert costs == [2 + 3, 2 * 3 + 2 * 3]


def test_element_wise_ops_are_not_row_ops():
    with pytest.raises(UserError, match="element-wise"):
        rows_cycles(NPU, VectorOp.ADD, np.array([4]))


def test_empty_op_is_an_error():
    with pytest.raises(UserError, match="^layernorm:"):
        vector_cycles(NPU, VectorOp.LAYERNORM, 0, 4096)
