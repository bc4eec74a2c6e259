"""Open-addressing hash table (int64 key -> int64 value) in two arrays, for njit code.

Used for the controller's pending-read and pending-write address maps: linear probing with
backward-shift deletion, so no tombstones accumulate over a long run.

The functions are inlined into engine/dram.py's kernels, whose on-disk Numba cache is
checked against dram.py alone: after editing this file, change dram.py too (a comment will
do) or delete neupims_py/engine/__pycache__, or the cached kernels keep the old code.
"""

from __future__ import annotations

import numpy as np
from neupims_py.engine.jit import kernel

EMPTY = -1


def new_table(min_capacity: int) -> tuple[np.ndarray, np.ndarray]:
    size = 16
    while size < 2 * min_capacity:
        size *= 2
    return np.full(size, EMPTY, dtype=np.int64), np.zeros(size, dtype=np.int64)


@kernel(inline="always")
def _slot(key, mask):
    """Home slot of a key: an xor-shift of its 64-byte line number (addresses are line
    aligned; no multiplication, so it cannot overflow when the kernels run as plain Python,
    NUMBA_DISABLE_JIT=1), doubled: homes are even slots. A stream's pending lines are
    consecutive, so they have consecutive hashes; in consecutive slots they made one run
    of occupied slots that every deletion walked to its end (backward shift: tens of
    slots a deletion on a weight stream). With a free odd slot after each home, a deletion
    stops at the next slot, and consecutive lines still share cache lines (four to a line).
    """
    x = key >> 6
    return ((x ^ (x >> 13) ^ (x >> 29)) << 1) & mask


@kernel(inline="always")  # a call would pass both arrays field by field
def ht_get(keys, vals, key):
    """Value stored for key, or -1."""
    mask = keys.shape[0] - 1
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return vals[i]
        if k == EMPTY:
            return -1
        i = (i + 1) & mask


@kernel(inline="always")  # a call would pass both arrays field by field
def ht_put(keys, vals, key, val):
    mask = keys.shape[0] - 1
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == key or k == EMPTY:
            keys[i] = key
            vals[i] = val
            return
        i = (i + 1) & mask


@kernel(inline="always")  # a call would pass both arrays field by field
def ht_del(keys, vals, key):
    """Remove key if present (backward-shift deletion keeps probe chains intact)."""
    mask = keys.shape[0] - 1
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == EMPTY:
            return
        if k == key:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == EMPTY:
            break
        home = _slot(k, mask)
        # move k back into the hole at i unless its home lies cyclically in (i, j]
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            keys[i] = k
            vals[i] = vals[j]
            i = j
    keys[i] = EMPTY
