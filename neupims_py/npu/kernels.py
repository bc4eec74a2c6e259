"""Numba kernels of the NPU timing model; twins of the pure-Python functions in ``gemm.py``.

Like the engine's kernels they take only integers and arrays, write their results into
arrays the caller owns, and import nothing from the package (``neupims_py.formats`` is the
only module they may use). The formulas are documented once, in ``gemm.py``.
"""

from numba import njit

# Rows of the per-array state a GEMM kernel fills (state[row, array]).
FINISH = 0  # cycle the array's last output leaves it, from the GEMM's start (0: never used)
LAST_START = 1  # cycle the array's last pass started streaming activation rows
LAST_STREAM = 2  # stream cycles of that pass: max(rows streamed, MIN_STREAM)
STATE_ROWS = 3

# A pass occupies the array's input for at least 4 cycles (the artifact's MAX(size, 4)).
MIN_STREAM = 4


@njit(cache=True, nogil=True)
def gemm_schedule(m, k, n, batch, m_tile, array_rows, array_cols, double_buffered, state):
    """Schedule a (batch of) M x K x N GEMM(s) on the arrays of ``state``; return its cycles.

    ``state`` is int64[STATE_ROWS, arrays]; it is overwritten. Weight tiles go, in
    (batch, N tile, K tile) order, to the array where they start earliest (ties: lowest index).
    """
    arrays = state.shape[1]
    for a in range(arrays):
        state[FINISH, a] = 0
        state[LAST_START, a] = 0
        state[LAST_STREAM, a] = 0
    fill = array_rows + array_cols - 2
    chunks = (m + m_tile - 1) // m_tile
    chunk_stream = max(m_tile, MIN_STREAM)
    last_stream = max(m - (chunks - 1) * m_tile, MIN_STREAM)
    streams = (chunks - 1) * chunk_stream + last_stream
    k_tiles = (k + array_rows - 1) // array_rows
    n_tiles = (n + array_cols - 1) // array_cols
    total = 0
    for _ in range(batch):
        for _ni in range(n_tiles):
            for ki in range(k_tiles):
                preload = min(array_rows, k - ki * array_rows)
                best = 0
                best_start = -1
                for a in range(arrays):
                    if state[FINISH, a] == 0:
                        start = preload
                    elif double_buffered:
                        start = state[LAST_START, a] + max(state[LAST_STREAM, a], preload)
                    else:
                        start = state[FINISH, a] + preload
                    if best_start < 0 or start < best_start:
                        best = a
                        best_start = start
                finish = best_start + streams + fill
                state[FINISH, best] = finish
                state[LAST_START, best] = best_start + streams - last_stream
                state[LAST_STREAM, best] = last_stream
                if finish > total:
                    total = finish
    return total
