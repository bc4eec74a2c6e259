"""Vector-unit timing: each operator's cost as a table of primitive steps, and one evaluator.

The NPU has ``vector_units`` units of ``vector_width`` lanes; a primitive (add, mul, exp,
gelu, add_tree, sqrt) costs ``vector_op_cycles.<primitive>`` cycles per issue. A step of an
operator is a primitive repeated ``count`` times over one row of n elements, at one of
three scopes:

    LANES   element-wise over the row:        ceil(n / vector_width) issues
    TREE    a reduction of the row to one:    tree(n) issues, tree(n) = 1 if n <= width,
                                              else ceil(n / width) + tree(ceil(n / width))
    SCALAR  once on the row's scalar:         1 issue

Row operators (they reduce: norms, softmax) run each row on one unit, rows dealt
round-robin (row r on unit r mod units), and cost the busiest unit's sum. Element-wise
operators spread their elements over every lane of every unit:
ceil(elements / (units * width)) * sum of their step latencies.

Source: the NeuPIMs artifact (github.com/casys-kaist/NeuPIMs), src/NeuPIMSystolicWS.cc
``get_vector_compute_cycles``, ``calculate_vector_op_iterations`` and
``calculate_add_tree_iterations``: LAYERNORM, SOFTMAX, ADD and GELU are its formulas step
for step (one instruction per row on the least-filled unit, src/operations/LayerNorm.cc,
Softmax.cc). RMSNORM, SWIGLU and ROTARY are not in the artifact; they are written here in
the same terms, a division counted as a multiplication as the artifact does.
"""

from enum import Enum
from typing import NamedTuple

import numpy as np

from neupims_py.config import NpuConfig
from neupims_py.errors import UserError


class Scope(Enum):
    LANES = "lanes"
    TREE = "tree"
    SCALAR = "scalar"


class Step(NamedTuple):
    primitive: str  # a field of VectorOpCycles: add, mul, exp, gelu, add_tree, sqrt
    count: int
    scope: Scope


class VectorOp(Enum):
    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"
    SOFTMAX = "softmax"
    GELU = "gelu"
    SWIGLU = "swiglu"
    ADD = "add"
    ROTARY = "rotary"


L, T, S = Scope.LANES, Scope.TREE, Scope.SCALAR

# Per row (row operators) or per element (element-wise operators).
VECTOR_OPS: dict[VectorOp, tuple[Step, ...]] = {
    # mean and variance (two add trees, two divisions by n), sqrt; x - mean, square,
    # / sigma, * gamma, + beta  (artifact: 2 add trees, 2 scalar mul, sqrt, 2 add + 3 mul)
    VectorOp.LAYERNORM: (Step("add_tree", 2, T), Step("mul", 2, S), Step("sqrt", 1, S),
                         Step("add", 2, L), Step("mul", 3, L)),
    # mean of squares (square, add tree, / n), sqrt; * 1/rms, * gamma
    VectorOp.RMSNORM: (Step("add_tree", 1, T), Step("mul", 1, S), Step("sqrt", 1, S),
                       Step("mul", 3, L)),
    # max (a compare tree, costed as an add tree) and sum; x - max, exp, / sum
    VectorOp.SOFTMAX: (Step("add_tree", 2, T), Step("add", 1, L), Step("exp", 1, L),
                       Step("mul", 1, L)),
    VectorOp.GELU: (Step("gelu", 1, L),),
    # silu(g) * u = g / (1 + exp(-g)) * u: exp, add, then / (1 + e), * g, * u
    VectorOp.SWIGLU: (Step("exp", 1, L), Step("add", 1, L), Step("mul", 3, L)),
    VectorOp.ADD: (Step("add", 1, L),),
    # x * cos + rotate_half(x) * sin, over every element of Q and K (the rotation is wiring)
    VectorOp.ROTARY: (Step("mul", 2, L), Step("add", 1, L)),
}

ROW_OPS = frozenset(op for op, steps in VECTOR_OPS.items()
                    if any(s.scope is not Scope.LANES for s in steps))


def row_cycles(npu: NpuConfig, op: VectorOp, row_len) -> np.ndarray:
    """Cycles of ``op`` on one row on one unit, for each length in ``row_len`` (int64)."""
    n = np.asarray(row_len, dtype=np.int64)
    width = npu.vector_width
    issues = {Scope.LANES: -(-n // width), Scope.TREE: tree_issues(n, width),
              Scope.SCALAR: np.ones_like(n)}
    total = np.zeros_like(n)
    for step in VECTOR_OPS[op]:
        total += step.count * getattr(npu.vector_op_cycles, step.primitive) * issues[step.scope]
    return total


def tree_issues(n, width: int) -> np.ndarray:
    """The artifact's add-tree iterations for rows of n elements (see the module docstring)."""
    cur = np.asarray(n, dtype=np.int64)
    total = np.zeros_like(cur)
    wide = cur > width
    while wide.any():
        cur = np.where(wide, -(-cur // width), cur)
        total += np.where(wide, cur, 0)
        wide = cur > width
    return total + 1


def vector_cycles(npu: NpuConfig, op: VectorOp, rows: int, row_len: int) -> int:
    """Cycles of ``op`` over ``rows`` rows of ``row_len`` elements (e.g. tokens x features).

    Element-wise operators count the elements they produce: SWIGLU tokens x ffn_shard,
    ROTARY tokens x (Q and K features of the shard), ADD tokens x d_model.
    """
    if rows < 1 or row_len < 1:
        raise UserError(f"{op.value}: needs at least one row of one element, got {rows} rows "
                        f"of {row_len}")
    if op in ROW_OPS:
        return rows_cycles(npu, op, np.full(rows, row_len, dtype=np.int64))
    lanes = npu.vector_units * npu.vector_width
    per_issue = sum(s.count * getattr(npu.vector_op_cycles, s.primitive) for s in VECTOR_OPS[op])
    return -(-rows * row_len // lanes) * per_issue


def rows_cycles(npu: NpuConfig, op: VectorOp, row_lens) -> int:
    """Cycles of row operator ``op`` over rows of the given lengths, dealt round-robin."""
    if op not in ROW_OPS:
        raise UserError(f"{op.value} is element-wise; use vector_cycles")
    costs = row_cycles(npu, op, row_lens)
    units = npu.vector_units
    padded = np.zeros(-(-costs.size // units) * units, dtype=np.int64)
    padded[:costs.size] = costs
    return int(padded.reshape(-1, units).sum(axis=0).max(initial=0))


def softmax_row_lengths(q_len: int, kv_len: int, heads: int, *, causal: bool = True
                        ) -> np.ndarray:
    """Lengths of the score rows softmax normalises, head by head.

    Causal: query i (0-based) of the q_len newest tokens sees kv_len - q_len + i + 1 keys.
    """
    if causal:
        one_head = np.arange(kv_len - q_len + 1, kv_len + 1, dtype=np.int64)
    else:
        one_head = np.full(q_len, kv_len, dtype=np.int64)
    return np.tile(one_head, heads)
