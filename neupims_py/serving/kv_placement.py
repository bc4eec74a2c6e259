"""Where a request's KV cache lives: its PIM channel, chosen by a named policy, and the rows
it holds there.

A request's whole KV cache lives in one channel (DESIGN.md, the PIM KV layout), so the
channel is chosen once, at admission, and the rows for every token it will ever hold
(history + prompt + output) are reserved then: a running request never runs out of rows.
Rows are tracked per channel with the compiler's own `RowAllocator` (first fit above the
weights) and `KvLayout.rows_for`, so a placement that succeeds here succeeds in the exact
cost model's simulator too. Finished requests free their rows.

Policies (`scheduler.channel_policy`):
- round-robin: channels in turn (the turn advances on every placement);
- min-load: the channel with the least estimated attention work (NeuPIMs' greedy channel
  load balancing): the sum over its requests of `mha_estimate(current KV length)`, the
  artifact's estimate of one request's PIM attention (Scheduler::estimate_mha_latency:
  GWRITEs of the query chunks and GEMV tiles of the logits, GWRITEs of the logit chunks
  and GEMV tiles of the attend, per head); ties go to the lowest channel. The estimate has
  a fixed part per request, so short requests are not all piled onto one channel;
- random: uniformly at random, from a generator seeded with the run's seed.

When the chosen channel has too few contiguous free rows (`scheduler.channel_full`):
- wait: the request is not placed now (FCFS: nothing behind it is admitted either);
- migrate: it goes to the channel with the most free rows instead, if that one has room.
"""

from __future__ import annotations

import numpy as np

from neupims_py.compiler.layout import AddressLayout, KvLayout, RowAllocator
from neupims_py.config.hw import CHANNEL_POLICIES
from neupims_py.errors import UserError

# The weights of NeuPIMs' channel-load estimate (src/scheduler/Scheduler.cc: _gwrite_latency,
# _gemv_latency): a policy heuristic, not a timing; only their ratio matters.
GWRITE_WEIGHT = 100
GEMV_WEIGHT = 184


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def mha_estimate(kv_len: int, e: int, head_dim: int, elems_per_row: int, banks: int) -> int:
    """NeuPIMs' estimate of one request's PIM attention work at `kv_len` cached tokens
    (Scheduler::estimate_mha_latency): logits, one GWRITE per row-sized chunk of the query
    and one GEMV per chunk and tile of `banks` tokens; attend, per head one GWRITE per
    row-sized chunk of the logits and one GEMV per chunk and `banks` head dimensions."""
    chunks = _ceil(e, elems_per_row)
    work = chunks * GWRITE_WEIGHT + chunks * _ceil(kv_len, banks) * GEMV_WEIGHT
    chunks = _ceil(kv_len, elems_per_row) * (e // head_dim)
    return work + chunks * GWRITE_WEIGHT + chunks * _ceil(head_dim, banks) * GEMV_WEIGHT


class KvPlacement:
    """Channel choice and per-channel KV row tracking for the running requests."""

    def __init__(self, layout: AddressLayout, kv: KvLayout, first_row: int, *, policy: str,
                 channel_full: str, seed: int = 0):
        if policy not in CHANNEL_POLICIES:
            raise UserError(f"unknown channel policy {policy!r}; valid: {', '.join(CHANNEL_POLICIES)}")
        self.kv = kv
        self.channels = layout.channels
        self.rows = RowAllocator(layout, first_row)
        self.rows_per_channel = layout.rows - first_row
        self.policy = policy
        self.channel_full = channel_full
        self.load = [0] * self.channels  # sum of mha_estimate over each channel's requests
        self.kv_len: dict[int, int] = {}
        self.channel: dict[int, int] = {}
        self._turn = 0
        self._rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- capacity
    def rows_for(self, tokens: int) -> int:
        return self.kv.rows_for(tokens)

    def channel_token_capacity(self) -> int:
        """The most tokens one request can hold: what an empty channel's rows fit."""
        lo, hi = 0, self.rows_per_channel * self.kv.L.banks
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.rows_for(mid) <= self.rows_per_channel:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def fits_empty_channel(self, tokens: int) -> bool:
        return self.rows_for(tokens) <= self.rows_per_channel

    def mha_estimate(self, kv_len: int) -> int:
        """`mha_estimate` with this channel layout's dimensions."""
        return mha_estimate(kv_len, self.kv.e, self.kv.head_dim, self.kv.L.elems_per_row, self.kv.L.banks)

    # ---------------------------------------------------------------- placement
    def _largest_span(self, ch: int) -> int:
        return max((e - s for s, e in self.rows.free[ch]), default=0)

    def choose(self) -> int:
        """The channel the policy picks now (before checking it has room)."""
        if self.policy == "round-robin":
            return self._turn % self.channels
        if self.policy == "random":
            return int(self._rng.integers(self.channels))
        return min(range(self.channels), key=lambda c: (self.load[c], c))

    def place(self, req: int, tokens: int, context: int) -> int | None:
        """Reserve rows for `tokens` tokens of `req` (currently `context` of them to be
        prefilled): its channel, or None when it has to wait."""
        need = self.rows_for(tokens)
        ch = self.choose()
        if self._largest_span(ch) < need:
            if self.channel_full != "migrate":
                return None
            ch = max(range(self.channels), key=lambda c: (self._largest_span(c), -c))
            if self._largest_span(ch) < need:
                return None
        if self.rows.allocate(req, ch, need) is None:  # pragma: no cover - checked above
            return None
        if self.policy == "round-robin":
            self._turn += 1
        self.channel[req] = ch
        self.load[ch] += self.mha_estimate(context)
        self.kv_len[req] = context
        return ch

    def grow(self, req: int, tokens: int) -> None:
        """`req` now caches `tokens` more tokens (the estimate min-load balances)."""
        old = self.kv_len[req]
        self.kv_len[req] = old + tokens
        self.load[self.channel[req]] += self.mha_estimate(old + tokens) - self.mha_estimate(old)

    def release(self, req: int) -> None:
        ch = self.channel.pop(req)
        self.load[ch] -= self.mha_estimate(self.kv_len.pop(req))
        self.rows.release(req)

    def free_rows(self) -> list[int]:
        return [self.rows.rows_free(c) for c in range(self.channels)]
