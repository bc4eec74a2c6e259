"""Compiled generation of the per-request command streams of a phase: the PIM decode GEMV
(NeuPIMs mapping) and the DRAM bursts of a request's cached K and V.

These are the loops of `IterationSimulator._pim_gemv` and `_kv_token_bursts` written once,
for many requests per call: a counting pass sizes the output, which the caller allocates,
and a filling pass writes it in exactly the order the per-request loops emit. The layout of
the streams is documented where they are used (compiler/iteration.py, compiler/layout.py);
`tests/test_compiler_lowering_jit.py` compares both kernels with the plain Python loops,
command for command and burst for burst.

A PIM command is one row of an int64 array, columns `P_*` below (what `Phase.pim_cmd`
takes: channel, opcode, rank, bank group, bank, row, COMPs, duration, task it waits for, op).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from neupims_py.engine.jit import kernel
from neupims_py.formats import Cmd

# columns of a PIM command row
P_CH, P_CMD, P_RANK, P_BG, P_BA, P_ROW, P_K, P_DUR, P_AFTER, P_OP = range(10)
P_COLS = 10

GWRITE = int(Cmd.GWRITE)
G_ACT = int(Cmd.G_ACT)
COMPS_READRES = int(Cmd.COMPS_READRES)
PIM_HEADER = int(Cmd.PIM_HEADER)
PIM_PRECHARGE = int(Cmd.PIM_PRECHARGE)


class PimGeo(NamedTuple):
    """What the PIM GEMV stream of a request depends on besides the request."""

    heads: int  # heads of the shard
    head_dim: int
    k_chunks: int  # K rows per token group: ceil(E / elements per row)
    heads_per_row: int  # heads whose key fits a K row
    v_rows_per_block: int  # V rows per 512-token block: ceil(E / banks)
    banks: int  # banks per channel
    elems_per_row: int
    multipliers: int  # per bank (elements a COMP multiplies)
    min_k: int  # COMPS_READRES costs at least this many COMPs
    ranks: int
    bankgroups: int
    tfaw: int


class KvGeo(NamedTuple):
    """What the K/V bursts of a request's tokens depend on besides the request."""

    e: int  # the shard's embedding (heads x head dim)
    k_chunks: int
    v_rows_per_block: int
    banks: int
    elems_per_row: int
    bursts_per_row: int
    burst_bytes: int
    bankgroups: int
    banks_per_group: int
    ch_shift: int
    ra_shift: int
    bg_shift: int
    ba_shift: int
    ro_shift: int
    co_shift: int


@kernel
def _tile_cmds(g, heads_in_tile):
    return 1 + 2 * g.ranks * g.bankgroups + g.ranks * heads_in_tile


@kernel
def pim_gemv_counts(g, kvn, out):
    """out[i] = commands of the decode GEMV of request i over kvn[i] tokens."""
    for i in range(kvn.shape[0]):
        n = kvn[i]
        groups = (n + g.banks - 1) // g.banks
        blocks = (n + g.elems_per_row - 1) // g.elems_per_row
        dim_rows = (g.head_dim + g.banks - 1) // g.banks
        c = 0
        for chunk in range(g.k_chunks):
            hic = min(g.heads_per_row, g.heads - chunk * g.heads_per_row)
            c += 1 + groups * _tile_cmds(g, hic)
        c += g.heads * blocks * (1 + dim_rows * _tile_cmds(g, 1))
        out[i] = c


@kernel
def _put(out, j, ch, cmd, rank, bg, ba, row, k, dur, after, op):
    out[j, P_CH] = ch
    out[j, P_CMD] = cmd
    out[j, P_RANK] = rank
    out[j, P_BG] = bg
    out[j, P_BA] = ba
    out[j, P_ROW] = row
    out[j, P_K] = k
    out[j, P_DUR] = dur
    out[j, P_AFTER] = after
    out[j, P_OP] = op
    return j + 1


@kernel
def _tile(g, out, j, ch, row, heads_in_tile, k, after, op):
    """One PIM tile: header, a G_ACT per rank and bank group, a COMPS_READRES per rank and
    head, a PIM_PRECHARGE per rank and bank group."""
    dur = g.bankgroups * g.tfaw + g.ranks * heads_in_tile * 2 * (max(k, g.min_k) + 1) + 64
    j = _put(out, j, ch, PIM_HEADER, 0, 0, 0, 0, 0, dur, after, op)
    for r in range(g.ranks):
        for b in range(g.bankgroups):
            j = _put(out, j, ch, G_ACT, r, b, 0, row, 0, 0, after, op)
    for r in range(g.ranks):
        for _ in range(heads_in_tile):
            j = _put(out, j, ch, COMPS_READRES, r, 0, 0, 0, k, 0, after, op)
    for r in range(g.ranks):
        for b in range(g.bankgroups):
            j = _put(out, j, ch, PIM_PRECHARGE, r, b, 0, 0, 0, 0, after, op)
    return j


@kernel
def pim_gemv_fill(g, ch, base, kvn, k_rows, scratch, after, op, out):
    """The decode GEMVs of the requests one after the other into out (sized by
    pim_gemv_counts): logits q.K^T one query chunk at a time, then attend per head, per
    512-token block, per `banks` head dimensions."""
    j = 0
    k_per_head = (g.head_dim + g.multipliers - 1) // g.multipliers
    dim_rows = (g.head_dim + g.banks - 1) // g.banks
    for i in range(kvn.shape[0]):
        n = kvn[i]
        c_, a_, o_ = ch[i], after[i], op[i]
        groups = (n + g.banks - 1) // g.banks
        for chunk in range(g.k_chunks):
            j = _put(out, j, c_, GWRITE, 0, 0, 0, scratch[i], 0, 0, a_, o_)
            hic = min(g.heads_per_row, g.heads - chunk * g.heads_per_row)
            for tg in range(groups):
                j = _tile(g, out, j, c_, base[i] + tg * g.k_chunks + chunk, hic, k_per_head, a_, o_)
        blocks = (n + g.elems_per_row - 1) // g.elems_per_row
        for h in range(g.heads):
            for blk in range(blocks):
                tokens = min(g.elems_per_row, n - blk * g.elems_per_row)
                kk = (tokens + g.multipliers - 1) // g.multipliers
                j = _put(out, j, c_, GWRITE, 0, 0, 0, scratch[i], 0, 0, a_, o_)
                for dr in range(dim_rows):
                    row = base[i] + k_rows[i] + blk * g.v_rows_per_block + (h * g.head_dim) // g.banks + dr
                    j = _tile(g, out, j, c_, row, 1, kk, a_, o_)
    return j


@kernel
def _k_cols(g, chunk):
    """Bursts of a K row a token's key chunk `chunk` occupies."""
    elems = min(g.elems_per_row, g.e - chunk * g.elems_per_row)
    return min(g.bursts_per_row, (elems * 2 + g.burst_bytes - 1) // g.burst_bytes)


@kernel
def _v_pairs(g, t0, t1):
    """Distinct (512-token block, burst column) pairs of tokens t0 .. t1 - 1."""
    tpb = g.burst_bytes // 2
    n = 0
    last = -1
    for t in range(t0, t1):
        key = (t // g.elems_per_row) * g.bursts_per_row + (t % g.elems_per_row) // tpb
        if key != last:
            n += 1
            last = key
    return n


@kernel
def kv_burst_counts(g, t0, t1, out):
    """out[i] = bursts of the K and V of tokens t0[i] .. t1[i] - 1 of request i."""
    for i in range(t0.shape[0]):
        if t1[i] <= t0[i]:
            out[i] = 0
            continue
        c = 0
        for chunk in range(g.k_chunks):
            c += _k_cols(g, chunk) * (t1[i] - t0[i])
        out[i] = c + _v_pairs(g, t0[i], t1[i]) * g.e


@kernel
def _compose(g, ch, bank, row, col):
    per_rank = g.bankgroups * g.banks_per_group
    ra = bank // per_rank
    bg = (bank // g.banks_per_group) % g.bankgroups
    ba = bank % g.banks_per_group
    return ((ch << g.ch_shift) | (ra << g.ra_shift) | (bg << g.bg_shift) | (ba << g.ba_shift)
            | (row << g.ro_shift) | (col << g.co_shift))


@kernel
def kv_burst_fill(g, ch, base, k_rows, t0, t1, out):
    """Burst addresses of the K and V of tokens t0[i] .. t1[i] - 1 of each request i, in
    the order of `IterationSimulator._kv_token_bursts`: K chunk by chunk, token by token,
    burst by burst; then V by 512-token block, row (`banks` dimensions), bank, burst."""
    j = 0
    tpb = g.burst_bytes // 2
    dim_rows = (g.e + g.banks - 1) // g.banks
    for i in range(t0.shape[0]):
        a, b = t0[i], t1[i]
        if b <= a:
            continue
        for chunk in range(g.k_chunks):
            cols = _k_cols(g, chunk)
            for t in range(a, b):
                row = base[i] + (t // g.banks) * g.k_chunks + chunk
                bank = t % g.banks
                for col in range(cols):
                    out[j] = _compose(g, ch[i], bank, row, col)
                    j += 1
        # V: the (block, burst column) pairs come in increasing order for a token range
        t = a
        while t < b:
            blk = t // g.elems_per_row
            t_end = min(b, (blk + 1) * g.elems_per_row)  # the tokens of this block
            cb0 = (t % g.elems_per_row) // tpb
            cb1 = ((t_end - 1) % g.elems_per_row) // tpb
            for dr in range(dim_rows):
                row = base[i] + k_rows[i] + blk * g.v_rows_per_block + dr
                for bank in range(g.banks):
                    if dr * g.banks + bank >= g.e:
                        break
                    for cb in range(cb0, cb1 + 1):
                        out[j] = _compose(g, ch[i], bank, row, cb)
                        j += 1
            t = t_end
    return j


def pim_gemv_stream(g: PimGeo, ch, base, kvn, k_rows, scratch, after, op) -> np.ndarray:
    """The PIM commands [n, P_COLS] of the decode GEMVs of several requests, in order."""
    kvn = np.ascontiguousarray(kvn, np.int64)
    counts = np.zeros(len(kvn), np.int64)
    pim_gemv_counts(g, kvn, counts)
    out = np.empty((int(counts.sum()), P_COLS), np.int64)
    args = [np.ascontiguousarray(x, np.int64) for x in (ch, base, kvn, k_rows, scratch, after, op)]
    n = pim_gemv_fill(g, *args, out)
    assert n == len(out)
    return out


def kv_bursts(g: KvGeo, ch, base, k_rows, t0, t1) -> tuple[np.ndarray, np.ndarray]:
    """Burst addresses of tokens t0[i] .. t1[i] - 1 of each request i, concatenated in
    request order, and the bursts per request."""
    t0 = np.ascontiguousarray(t0, np.int64)
    t1 = np.ascontiguousarray(t1, np.int64)
    counts = np.zeros(len(t0), np.int64)
    kv_burst_counts(g, t0, t1, counts)
    out = np.empty(int(counts.sum()), np.int64)
    args = [np.ascontiguousarray(x, np.int64) for x in (ch, base, k_rows)]
    n = kv_burst_fill(g, *args, t0, t1, out)
    assert n == len(out)
    return out, counts
