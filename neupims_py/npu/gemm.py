"""GEMM timing on weight-stationary systolic arrays, and the SRAM check of its tiles.

The model (NeuPIMs' cycle formulas, per array):

An M x K x N GEMM is cut into weight tiles of at most ``array_rows`` rows of K by
``array_cols`` columns of N. A weight tile is preloaded into one array, then the M
activation rows stream through it, ``m_tile`` rows per pass (one pass when m_tile >= M);
partial sums over K tiles accumulate in the accumulator SRAM. On one array, with
R x C = array_rows x array_cols:

    stream(pass) = max(rows streamed, 4)
    finish(pass) = start(pass) + (R + C - 2) + stream(pass)       # fill + drain, then rows
    start of a weight tile's first pass (its preload = the tile's K extent, r <= R cycles):
        on an idle array                  r
        after a pass, double buffered     start(prev) + max(stream(prev), r)
        after a pass, single buffered     finish(prev) + r
    start of a further pass over the same weight tile:  start(prev) + stream(prev)

so back-to-back tiles pipeline: in steady state a tile costs max(stream, preload) and the
R + C - 2 fill/drain latency is paid once per array. Weight tiles are taken in
(batch, N tile, K tile) order and each goes, with all its passes, to the array where it
starts earliest (ties: lowest index); with equal tiles that is round-robin. A GEMM's cycles
are the latest finish over the arrays.

Source: the NeuPIMs artifact (github.com/casys-kaist/NeuPIMs), src/NeuPIMSystolicWS.cc:
``get_inst_compute_cycles`` = core_height + core_width - 2 + MAX(size, 4); ``issue_ex_inst``
starts a GEMM at back.start + MAX(back.size, 4), a GEMM_PRELOAD at back.start +
core_height, and a GEMM_PRELOAD on an idle array at now + 2 * core_height - 1. Where this
model differs: the preload is the tile's K extent (the artifact always charges
core_height), an idle array waits only that preload (not 2 * core_height - 1), and a
preload waits for the previous pass's stream when that is longer (the artifact never has
one: its size is fixed). The artifact also drives the 8 arrays as one pipeline whose
instructions each stream 128 rows as ``size = 128 / 8`` (src/operations/MatMul.cc, "fixed
to systolic array size 8"), and transposes every MatMul (the activation tile stays in the
array and weight columns stream); call with m and n swapped for that schedule.
"""

from typing import NamedTuple

import numpy as np

from neupims_py.config import NpuConfig
from neupims_py.errors import UserError
from neupims_py.npu.kernels import FINISH, MIN_STREAM, STATE_ROWS, gemm_schedule


class GemmTiming(NamedTuple):
    """The timing of one GEMM (or a batch of same-shape GEMMs) on the NPU."""

    cycles: int  # NPU cycles from the first preload to the last output
    array_cycles: tuple[int, ...]  # per systolic array: cycle its last output leaves (0: idle)
    tiles: int  # weight tiles (preloads)
    macs: int  # multiply-accumulates: batch * m * k * n


def gemm_timing(npu: NpuConfig, m: int, k: int, n: int, *, name: str, batch: int = 1,
                m_tile: int | None = None) -> GemmTiming:
    """The cycles of ``batch`` independent (m x k) @ (k x n) GEMMs on the NPU's arrays.

    ``m_tile`` (default: all m rows in one pass) is the number of activation rows streamed
    per pass; the SRAM must hold the tiles it implies (``check_gemm_sram``), else a
    ``UserError`` naming ``name`` (the operator, e.g. "layer.qkv").
    """
    for label, value in (("m", m), ("k", k), ("n", n), ("batch", batch)):
        if value < 1:
            raise UserError(f"{name}: GEMM {label} must be at least 1, got {value}")
    m_tile = m if m_tile is None else m_tile
    if m_tile < 1:
        raise UserError(f"{name}: m_tile must be at least 1, got {m_tile}")
    m_tile = min(m_tile, m)
    check_gemm_sram(npu, m, k, n, name=name, batch=batch, m_tile=m_tile)
    state = np.zeros((STATE_ROWS, npu.systolic_arrays), dtype=np.int64)
    cycles = gemm_schedule(m, k, n, batch, m_tile, npu.array_rows, npu.array_cols,
                           int(npu.double_buffered), state)
    return GemmTiming(
        cycles=int(cycles),
        array_cycles=tuple(int(c) for c in state[FINISH]),
        tiles=batch * _ceil(k, npu.array_rows) * _ceil(n, npu.array_cols),
        macs=batch * m * k * n,
    )


def gemm_schedule_reference(m: int, k: int, n: int, batch: int, m_tile: int, array_rows: int,
                            array_cols: int, arrays: int, double_buffered: bool
                            ) -> tuple[list[int], int]:
    """The slow, pass-by-pass twin of ``kernels.gemm_schedule``: (per-array finish, cycles).

    It issues every pass as the artifact issues instructions (start = previous start +
    offset) instead of the kernel's per-tile closed form; the two must agree exactly.
    """
    fill = array_rows + array_cols - 2
    # per array, its passes so far as (start, stream, finish)
    passes: list[list[tuple[int, int, int]]] = [[] for _ in range(arrays)]

    def first_start(a: int, preload: int) -> int:
        if not passes[a]:
            return preload
        start, stream, finish = passes[a][-1]
        return start + max(stream, preload) if double_buffered else finish + preload

    for _ in range(batch):
        for _n0 in range(0, n, array_cols):
            for k0 in range(0, k, array_rows):
                preload = min(array_rows, k - k0)
                starts = [first_start(a, preload) for a in range(arrays)]
                a = starts.index(min(starts))
                start = starts[a]
                for m0 in range(0, m, m_tile):
                    if m0 > 0:
                        prev_start, prev_stream, _ = passes[a][-1]
                        start = prev_start + prev_stream
                    stream = max(min(m_tile, m - m0), MIN_STREAM)
                    passes[a].append((start, stream, start + fill + stream))
    finish = [p[-1][2] if p else 0 for p in passes]
    return finish, max(finish)


def check_gemm_sram(npu: NpuConfig, m: int, k: int, n: int, *, name: str, batch: int = 1,
                    m_tile: int | None = None) -> None:
    """Raise a ``UserError`` if the tiles in flight do not fit one half of the SRAM.

    Every array works on its own tile, so ``min(arrays, tiles)`` tiles are in flight; each
    needs its weights (r x c) and activation rows (m_tile x r) in the scratchpad and its
    partial sums (m_tile x c) in the accumulator, all of precision_bytes (as the artifact's
    ``MatMul::sram_size_needed``). Double buffering leaves half of each SRAM for them.
    """
    m_tile = m if m_tile is None else min(m_tile, m)
    need_spad, need_acc, in_flight = _sram_need(npu, m_tile, k, n, batch)
    halves = 2 if npu.double_buffered else 1
    which = "one half of the double-buffered" if npu.double_buffered else "the"
    r, c, p = min(npu.array_rows, k), min(npu.array_cols, n), npu.precision_bytes
    have_spad = npu.scratchpad_kib * 1024 // halves
    have_acc = npu.accumulator_kib * 1024 // halves
    if need_spad <= have_spad and need_acc <= have_acc:
        return
    fit = max_m_tile(npu, k, n, batch=batch)
    advice = (f"use m_tile <= {fit}" if fit else "no m_tile fits") + " or enlarge the SRAM"
    if need_spad > have_spad:
        raise UserError(
            f"{name}: GEMM {m}x{k}x{n} tiles do not fit the scratchpad: {in_flight} tiles in "
            f"flight x (weights {r}x{c} + activations {m_tile}x{r}) x {p} B = {need_spad} B, "
            f"but {which} {npu.scratchpad_kib} KiB scratchpad holds {have_spad} B; {advice}")
    raise UserError(
        f"{name}: GEMM {m}x{k}x{n} tiles do not fit the accumulator: {in_flight} tiles in "
        f"flight x partial sums {m_tile}x{c} x {p} B = {need_acc} B, but {which} "
        f"{npu.accumulator_kib} KiB accumulator holds {have_acc} B; {advice}")


def max_m_tile(npu: NpuConfig, k: int, n: int, *, batch: int = 1) -> int:
    """The most activation rows per pass whose tiles fit the SRAM (0 if not even one row)."""
    in_flight = _in_flight(npu, k, n, batch)
    r, c, p = min(npu.array_rows, k), min(npu.array_cols, n), npu.precision_bytes
    halves = 2 if npu.double_buffered else 1
    spad_rows = (npu.scratchpad_kib * 1024 // halves // (in_flight * p) - r * c) // r
    acc_rows = npu.accumulator_kib * 1024 // halves // (in_flight * p * c)
    return max(0, min(spad_rows, acc_rows))


def _in_flight(npu: NpuConfig, k: int, n: int, batch: int) -> int:
    tiles = batch * _ceil(k, npu.array_rows) * _ceil(n, npu.array_cols)
    return min(npu.systolic_arrays, tiles)


def _sram_need(npu: NpuConfig, m_tile: int, k: int, n: int, batch: int) -> tuple[int, int, int]:
    in_flight = _in_flight(npu, k, n, batch)
    r, c, p = min(npu.array_rows, k), min(npu.array_cols, n), npu.precision_bytes
    return in_flight * (r * c + m_tile * r) * p, in_flight * m_tile * c * p, in_flight


def _ceil(a: int, b: int) -> int:
    return -(-a // b)

