"""Where data lives in memory: weights, KV caches in the PIM layout, scratch rows.

Weights of every layer are laid out tile by tile from byte address 0, so the address
mapping spreads each 128 x 128 weight tile over the channels exactly as a real linear
layout would (with `rorabgbachco` and 1 KiB pages: one KiB per channel). KV caches live
above the weights, in the request's own channel, in the NeuPIMs PIM layout (DESIGN.md):

- K: bank b of the channel holds token t with t % banks == b; a row holds that token's key
  for 512 / d_head heads; ceil(E / 512) rows per group of `banks` tokens.
- V: bank b holds head dimension j with j % banks == b; a row holds 512 tokens of it;
  ceil(E / banks) rows per 512 tokens.

E is the shard's embedding (heads per shard x head dim).
"""

from __future__ import annotations

import numpy as np

from neupims_py.errors import UserError


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class AddressLayout:
    """Composes byte addresses from (channel, rank, bank group, bank, row, burst column)."""

    def __init__(self, mem):
        g = mem.geometry
        self.mem = mem
        self.f = mem.address_fields
        self.channels = g.channels
        self.ranks = g.ranks
        self.bankgroups = g.bankgroups
        self.banks_per_group = g.banks_per_group
        self.banks = g.ranks * g.banks  # banks per channel
        self.rows = g.rows
        self.burst_bytes = g.burst_bytes
        self.bursts_per_row = g.bursts_per_row
        self.row_bytes = g.bursts_per_row * g.burst_bytes
        self.elems_per_row = self.row_bytes // 2  # FP16

    def compose(self, ch, bank, row, col):
        """Byte addresses of burst column `col` of `row` in channel-local bank `bank`."""
        f = self.f
        bank = np.asarray(bank, np.int64)
        ra = bank // (self.bankgroups * self.banks_per_group)
        bg = (bank // self.banks_per_group) % self.bankgroups
        ba = bank % self.banks_per_group
        return (
            (np.asarray(ch, np.int64) << f["ch"].shift)
            | (ra << f["ra"].shift)
            | (bg << f["bg"].shift)
            | (ba << f["ba"].shift)
            | (np.asarray(row, np.int64) << f["ro"].shift)
            | (np.asarray(col, np.int64) << f["co"].shift)
        )

    def bank_coords(self, bank: int) -> tuple[int, int, int]:
        per_rank = self.bankgroups * self.banks_per_group
        return bank // per_rank, (bank % per_rank) // self.banks_per_group, bank % self.banks_per_group


class KvLayout:
    """Rows of one request's KV cache in its channel (relative to the request's first row)."""

    def __init__(self, layout: AddressLayout, e: int, head_dim: int):
        self.L = layout
        self.e = e
        self.head_dim = head_dim
        self.k_chunks = _ceil(e, layout.elems_per_row)  # rows per token group for K
        self.v_rows_per_block = _ceil(e, layout.banks)  # rows per 512-token block for V
        self.heads_per_row = max(1, layout.elems_per_row // head_dim)

    def rows_for(self, tokens: int) -> int:
        """Rows (in every bank of the channel) a cache of `tokens` tokens needs, plus one
        scratch row for the query / logits the PIM reads with GWRITE."""
        L = self.L
        k = _ceil(tokens, L.banks) * self.k_chunks
        v = _ceil(tokens, L.elems_per_row) * self.v_rows_per_block
        return k + v + 1

    def k_row(self, base: int, token_group: int, chunk: int) -> int:
        return base + token_group * self.k_chunks + chunk

    def v_row(self, base: int, k_rows: int, block: int, dim_row: int) -> int:
        return base + k_rows + block * self.v_rows_per_block + dim_row


class RowAllocator:
    """Per-channel allocation of KV rows above the weight region (first fit, freed on
    request completion)."""

    def __init__(self, layout: AddressLayout, first_row: int):
        if first_row >= layout.rows:
            raise UserError(
                f"the weights fill all {layout.rows} rows of every bank: no room for KV caches; "
                "use a larger memory or more tensor parallelism"
            )
        self.first_row = first_row
        self.limit = layout.rows
        self.free: list[list[tuple[int, int]]] = [[(first_row, layout.rows)] for _ in range(layout.channels)]
        self.owned: dict[int, tuple[int, int, int]] = {}

    def rows_free(self, ch: int) -> int:
        return sum(e - s for s, e in self.free[ch])

    def allocate(self, req: int, ch: int, rows: int) -> int | None:
        spans = self.free[ch]
        for i, (s, e) in enumerate(spans):
            if e - s >= rows:
                spans[i] = (s + rows, e)
                if spans[i][0] == e:
                    spans.pop(i)
                self.owned[req] = (ch, s, rows)
                return s
        return None

    def base(self, req: int) -> int:
        return self.owned[req][1]

    def release(self, req: int) -> None:
        ch, s, rows = self.owned.pop(req)
        spans = self.free[ch]
        spans.append((s, s + rows))
        spans.sort()
        merged = [spans[0]]
        for a, b in spans[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.free[ch] = merged
