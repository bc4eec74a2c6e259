"""Cycle-level pieces of an iteration, simulated once on the engine and memoised.

`ReuseCost` (cost_model.py) composes an iteration from these instead of simulating it
whole. Each piece is a small engine run on a fresh engine state (so a value never depends
on what was measured before it, nor on the order requests arrive in):

- the weight stream of a phase: the GEMM weight tiles of one layer's operators (`pre`:
  QKV generation; `post`: projection and FFN; `layer`: post of one layer then pre of the
  next, as an interleaved sub-batch runs them; `fused`: pre then post, as npu-only runs a
  layer), every tile's weights read from DRAM. Its result is, per GEMM, the cycle its last
  tile ends (before the GEMM's join). A tile costs max(stream, tile rows) + preload, so
  every token count with stream = max(T, 4) <= the smallest tile's rows (128) gives the
  very same tile schedule: one run covers them all, exactly. Above that, the stream is run
  at grid points (ratio `grid_ratio`) and interpolated linearly, and once three grid points
  are collinear (within COLLINEAR_TOLERANCE) for every GEMM (compute-bound: tiles no
  longer wait for DRAM) the line is extended instead of simulating more; `exact_tokens`
  runs every distinct count instead.
- per request, the serial work it puts on its own channel: its decode attention as PIM
  GEMVs, keyed by the command stream (same key = same commands: K-tile count, V blocks,
  COMPs of the last block); the K/V writes of its new tokens, keyed by (tokens, alignment)
  up to `banks` tokens, linear in the tokens and the V burst columns above (`kv_write`);
  the reads of its cached K/V for attention on the NPU, measured at multiples of `banks`
  tokens and interpolated in between. Each is run as 1 and as `copies` requests on one
  channel (distinct rows), giving `base` (alone) and `step` (each further one), so a
  channel's work is sum(step) + max(base - step).

A short piece (under SHORT_RUN_INTERVALS refresh intervals) is averaged over
REFRESH_OFFSETS starts spread over the refresh period, each from a state that idled a
period first (the refresh schedule a serving run is in: every rank's refreshes, staggered,
some perhaps still going on), or, where ReuseCost knows the engine cycle it starts at
(weight streams and decode pieces of small models), measured at the middle of the one of
REFRESH_BINS bins of the refresh period it starts in, from such a state (`run_phase`,
`refresh_bin`). (Averaged from fresh states over the first interval, as before, every
start met rank 0's first refresh next: the micro model's pre stream averaged 655 cycles
so, 705 over its 32 bins.)

What is *not* cycle-level here, and is composed in cost_model.py instead: how these pieces
overlap inside one phase (vector operators are replayed exactly from their analytic
costs; channel work and NPU work are combined with max/sum per the phase structure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from neupims_py.compiler.iteration import BatchEntry, IterationSimulator
from neupims_py.compiler.program import Phase
from neupims_py.engine import dram as eng
from neupims_py.formats import NUM_STATS

STREAM_KINDS = ("pre", "post", "layer", "fused")

# Fractions of a weight stream that a mixed PIM load beside it covers, at which its slowdown
# is measured (Components.mixed_slowdown); above the last one the slowdown is taken as there.
MIXED_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.5)

# Position patterns of n decode K/V writes on one channel measured per n
# (Components.decode_writes): how long the writes take to be accepted varies by pattern.
WRITE_PATTERNS = 32

# Positions (of as many equal parts of a `banks`-token class) at which
# Components.decode_overlap measures a decode's write overlapping its reads.
OVERLAP_POSITIONS = range(4)

# K/V writes longer than `banks` tokens: the extra V column is measured at up to this many
# times `banks` tokens (Components.kv_write).
COLUMN_PIECE_BANKS = 4


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class StreamMeasure(NamedTuple):
    """One weight stream: where each GEMM's last tile ends, what it cost the memory."""

    ends: tuple[float, ...]  # per GEMM, in program order: cycle its last tile ends (phase-relative)
    array_busy: float  # systolic-array busy cycles, all arrays
    stats: np.ndarray  # float64 [Stat], summed over channels
    read_bytes: float  # weight bytes read
    long: bool = False  # long enough to be measured from one refresh offset only
    # per weight tile in program order, (GEMM index, array, start, end), phase-relative:
    # float64 [tile, 4], or for an interpolated stream the _Tiles to compute it from
    # (`tile_array`; only npu-only asks, and a real model's streams have thousands of tiles)
    tiles: object = None


class _Tiles(NamedTuple):
    """Tiles of a stream at `f` along the line from `a`'s to `b`'s (0: a, 1: b)."""

    a: np.ndarray
    b: np.ndarray
    f: float


def tile_array(sm: StreamMeasure) -> np.ndarray:
    """`sm.tiles` as float64 [tile, 4] (GEMM index, array, start, end)."""
    t = sm.tiles
    if isinstance(t, _Tiles):
        return t.a + (t.b - t.a) * t.f  # GEMM and array columns alike in both
    return t


class ChannelWork(NamedTuple):
    """Serial work one request puts on its channel. A phase ends with its buffered writes
    drained into the banks (compiler/program.py Phase.run), so `base`/`step` (the phase's
    cycles) and `drained_base`/`drained_step` (until buffered writes were written) are the
    same measure now; both are kept for the composition's two uses (phase end, traffic
    queued behind the writes)."""

    base: float  # cycles alone on an idle channel
    step: float  # cycles each further such request adds on the same channel
    drained_base: float  # as base, until buffered writes have been written
    drained_step: float
    pim_busy: float  # PIM busy cycles per request
    stats: np.ndarray  # float64 [Stat] per request


ZERO_WORK = ChannelWork(0.0, 0.0, 0.0, 0.0, 0.0, np.zeros(NUM_STATS))


@dataclass
class Components:
    """Measures and memoises the pieces; `measured` counts engine runs per kind."""

    hw: object
    model: object
    exact_tokens: bool = False
    grid_ratio: float = 2 ** 0.25
    copies: int = 3
    sim: IterationSimulator = field(init=False)
    measured: dict = field(init=False)

    def __post_init__(self) -> None:
        self.sim = IterationSimulator(self.hw, self.model)
        self.measured = {k: 0 for k in ("stream", "pim", "write", "read")}
        self._streams: dict[tuple[str, int, int], StreamMeasure] = {}
        self._stream_layers: dict[tuple[str, int], int] = {}
        self._pim: dict[tuple, ChannelWork] = {}
        self._decode: dict[tuple, ChannelWork] = {}
        self._write: dict[tuple, ChannelWork] = {}
        self._read: dict[int, ChannelWork] = {}
        self._read_many: dict[int, tuple[float, np.ndarray]] = {}
        self._read_post: dict[tuple[int, int], ChannelWork] = {}
        self._overlap: dict[tuple[int, int], float] = {}
        self._prefix: dict[int, tuple[np.ndarray, float]] = {}
        self._beta: dict[bool, float] = {}
        self._mixed: dict[tuple[str, int, int], list] = {}
        self._dec_writes: dict[int, np.ndarray] = {}
        self._dec_extra: dict[tuple[int, int], float] = {}
        npu = self.hw.npu
        mats = self.model.weight_matrices()
        self.pre_mats = mats[:1]
        self.post_mats = mats[1:]
        # the smallest tile K extent: below it, the token count does not change any tile
        self.min_rows = min(min(npu.array_rows, w.rows % npu.array_rows or npu.array_rows) for w in mats)
        self._fake = -1
        L = self.sim.layout
        self.banks = L.banks
        # address bits below the row field: with the row on top (rorabgbachco) one row of
        # every bank of every channel; a mapping with fields above the row lumps more
        # together (at worst every layer streams as the first, as taken before)
        self.weight_period = 1 << int(self.sim.params.ro_shift)
        self.elems_per_row = L.elems_per_row
        self.tokens_per_burst = L.burst_bytes // 2  # V: a burst holds this many tokens of one dimension

    # ------------------------------------------------------------------ weight streams
    def stream_class(self, tokens: int) -> int:
        """The stream value a token count is simulated at (all T with max(T, 4) <= min_rows
        share one class)."""
        s = max(tokens, 4)
        return self.min_rows if s <= self.min_rows else s

    def gemms(self, kind: str, layer: int = 0) -> tuple:
        """(layer, WeightMatrix) of each GEMM of a stream kind of `layer`, in program order
        ('layer': its post, then the next layer's pre)."""
        nxt = layer + 1 if layer + 1 < self.model.layers_per_stage else layer
        pre = [(layer, w) for w in self.pre_mats]
        post = [(layer, w) for w in self.post_mats]
        return {
            "pre": pre,
            "post": post,
            "layer": post + [(nxt, w) for w in self.pre_mats],
            "fused": pre + post,
        }[kind]

    def stream_layer(self, kind: str, layer: int) -> int:
        """The first layer whose stream of `kind` is the same as `layer`'s: weights at the
        same addresses modulo `weight_period` (what the address mapping repeats with: one
        row of every bank of every channel) hit the same channels, banks and relative rows,
        so they stream alike. Layers of a real model all line up (their weights are whole
        multiples of the period); a small model's need not, and its odd and even layers
        then stream differently (the micro test model's post stream by 4 %)."""
        key = (kind, layer)
        got = self._stream_layers.get(key)
        if got is None:
            def sig(l):
                return tuple(self.sim.w_base[(x, w.name)] % self.weight_period for x, w in self.gemms(kind, l))
            mine = sig(layer)
            got = next(l for l in range(layer + 1) if sig(l) == mine)
            self._stream_layers[key] = got
        return got

    def stream(self, kind: str, tokens: int, layer: int = 0, at: int | None = None) -> StreamMeasure:
        """The weight stream of `kind` of `layer` for `tokens` tokens (see the module
        docstring); measured for the first layer that streams alike (`stream_layer`).
        `at`: the refresh bin it starts in (`refresh_bin`; None: averaged over offsets).

        Grid points are measured from the bottom up to the pair around the token count, so
        what a count gets never depends on which counts came before it."""
        layer = self.stream_layer(kind, layer)
        s = self.stream_class(tokens)
        if s == self.min_rows or self.exact_tokens:
            return self._stream_at(kind, s, layer, at)
        seen: list[tuple[int, StreamMeasure]] = []
        for p in self._grid():
            if p >= s:
                if p == s:
                    return self._stream_at(kind, s, layer, at)
                lo, a = seen[-1]
                return _interpolate(a, lo, self._stream_at(kind, p, layer, at), p, s)
            seen.append((p, self._stream_at(kind, p, layer, at)))
            if len(seen) >= 3 and _collinear(seen[-3:]) and self._compute_bound(kind, seen[-2:]):
                return _extend(seen[-2], seen[-1], s)
        raise AssertionError("unreachable: the grid is unbounded")

    def _compute_bound(self, kind: str, pts) -> bool:
        """The stream's end grows by one cycle per token for every tile on the busiest
        array (within COLLINEAR_TOLERANCE * 10): no tile waits for its weights any more.
        (A flat stretch, where DRAM bounds every tile, is collinear too, and says nothing
        about larger counts.)"""
        npu = self.hw.npu
        tiles = sum(_ceil(w.rows, npu.array_rows) * _ceil(w.cols, npu.array_cols) for _, w in self.gemms(kind))
        per_array = _ceil(tiles, npu.systolic_arrays)
        (p1, a), (p2, b) = pts
        slope = (b.ends[-1] - a.ends[-1]) / (p2 - p1)
        return abs(slope - per_array) <= 10 * COLLINEAR_TOLERANCE * per_array

    def _grid_until(self, s: int) -> list[int]:
        out = []
        for p in self._grid():
            out.append(p)
            if p >= s:
                return out

    def _grid(self):
        """min_rows * grid_ratio^k, rounded, strictly increasing, without end."""
        p, k = self.min_rows, 0
        while True:
            yield p
            k += 1
            p = max(p + 1, int(round(self.min_rows * self.grid_ratio ** k)))

    def refresh_bin(self, cycle: float) -> int | None:
        """The bin (of REFRESH_BINS equal ones) of the refresh period (`refresh_period`)
        an engine cycle falls in; None without refresh."""
        period = refresh_period(self.sim.params)
        if not period:
            return None
        return min(int((cycle % period) * REFRESH_BINS // period), REFRESH_BINS - 1)

    def bin_offset(self, at: int) -> int:
        """The cycle offset within the refresh period a bin is measured at: its middle."""
        return (2 * at + 1) * refresh_period(self.sim.params) // (2 * REFRESH_BINS)

    def stream_is_short(self, kind: str, tokens: int, layer: int = 0) -> bool:
        """Whether the stream meets refreshes at offsets that matter: shorter than
        SHORT_RUN_INTERVALS refresh intervals (longer ones are measured once)."""
        sm = self.stream(kind, tokens, layer)
        return not sm.long

    def _stream_at(self, kind: str, s: int, layer: int = 0, at: int | None = None) -> StreamMeasure:
        if at is not None:
            avg = self._stream_at(kind, s, layer)
            if avg.long:
                return avg
        key = (kind, s, layer, at)
        got = self._streams.get(key)
        if got is not None:
            return got
        hw = self.hw
        npu = hw.npu
        ph = _new_phase(hw)
        T = 1 if s == self.min_rows else s
        for lay, w in self.gemms(kind, layer):
            ph.gemm(npu, f"{lay}.{w.name}", T, w.rows, w.cols, self.sim.w_base[(lay, w.name)])
        res = run_phase(ph, self.sim, None if at is None else self.bin_offset(at))
        tail = join_tail(npu, T)
        ends = tuple(res.ends[f"{lay}.{w.name}"] - tail for lay, w in self.gemms(kind, layer))
        t = ph._task_arrays()
        tile = t[0] >= 0  # the others are joins, one after each GEMM's tiles
        tiles = np.stack([np.cumsum(~tile)[tile], t[0][tile], res.task_end[tile] - t[1][tile],
                          res.task_end[tile]], axis=1).astype(np.float64)
        got = StreamMeasure(
            ends=ends,
            array_busy=res.array_busy,
            stats=res.stats,
            read_bytes=res.reads * hw.memory.geometry.burst_bytes,
            long=res.offsets == 1 and at is None,
            tiles=tiles,
        )
        self._streams[key] = got
        self.measured["stream"] += 1
        return got

    def kv_class(self, kv_len: float) -> int:
        """The power of two nearest (in ratio) to a mean KV length: what `mixed_slowdown`
        measures a PIM load of such requests at."""
        return 1 << max(0, int(round(np.log2(max(kv_len, 1.0)))))

    def mixed_slowdown(self, kind: str, tokens: int, fraction: float, kv_len: float) -> float:
        """How much longer the weight stream of `kind` takes, as a fraction of its time
        alone, beside the PIM load a batch really puts beside it:
        decodes of different lengths on each channel (drawn uniformly from 0.5 to 1.5 times
        `kv_len`'s class, `kv_class`, with a seed per channel, back to back until the
        channel's PIM covers about `fraction` of the stream alone). The channels' GEMVs do
        not start and end together then, so a weight tile, which needs all channels, meets
        one channel's PIM commands after another's: the stream slows down much more (a
        GPT3-7B 'layer' stream covered to 67 %: 8.6 % against 2.1 % with the same GEMV on
        every channel in step, which is what an earlier model measured). `fraction` is the
        busiest channel's PIM time over the stream alone. Measured per (kind, stream class,
        KV class) at MIXED_FRACTIONS, interpolated linearly (0 at 0), held above the last."""
        return self._mixed_curve(kind, tokens, fraction, kv_len, 1)

    def mixed_lateness(self, kind: str, tokens: int, fraction: float, kv_len: float) -> float:
        """How much later the busiest channel's PIM GEMVs end beside the weight stream of
        `kind` than alone, as a fraction of the stream's time alone: the same runs as
        `mixed_slowdown` (the stream's weight reads and the GEMVs take turns at the banks),
        against the GEMVs alone."""
        return self._mixed_curve(kind, tokens, fraction, kv_len, 2)

    def _mixed_curve(self, kind: str, tokens: int, fraction: float, kv_len: float, col: int) -> float:
        s = self.stream_class(tokens)
        if s != self.min_rows and not self.exact_tokens:
            s = max(p for p in self._grid_until(s) if p <= s)
        m = self.kv_class(kv_len)
        key = (kind, s, m)
        pts = self._mixed.get(key)
        if pts is None:
            pts = [(0.0, 0.0, 0.0)] + [self._mixed_at(kind, s, m, f) for f in MIXED_FRACTIONS]
            pts.sort()
            self._mixed[key] = pts
        if fraction >= pts[-1][0]:
            return pts[-1][col]
        for a, b in zip(pts, pts[1:]):
            if fraction <= b[0]:
                return a[col] + (b[col] - a[col]) * (fraction - a[0]) / max(b[0] - a[0], 1e-12)
        return pts[-1][col]

    def _mixed_at(self, kind: str, s: int, m: int, frac: float) -> tuple[float, float, float]:
        """(busiest channel's PIM time over the stream alone, slowdown, PIM lateness) of the stream of
        `kind` at stream class s beside mixed decodes of KV class m filling about `frac`
        of it on every channel."""
        alone = self._stream_at(kind, s)
        S = alone.ends[-1]
        T = 1 if s == self.min_rows else s
        ph = _new_phase(self.hw)
        for layer, mat in self.gemms(kind):
            ph.gemm(self.hw.npu, f"{layer}.{mat.name}", T, mat.rows, mat.cols, self.sim.w_base[(layer, mat.name)])
        fakes = []
        busiest = 0.0
        pim_only = _new_phase(self.hw)
        for ch in range(self.sim.layout.channels):
            rng = np.random.default_rng((m, ch))
            works: list[ChannelWork] = []
            t = 0.0
            while t < frac * S:
                kv = max(1, int(m * rng.uniform(0.5, 1.5)))
                works.append(self.pim(kv))
                t = sum(w.step for w in works) + max(w.base - w.step for w in works)
                e = self._fake_entry(1, kv, ch)
                fakes.append(e.req)
                self.sim._pim_gemv(ph, e, "attention_pim", -1)
                self.sim._pim_gemv(pim_only, e, "attention_pim", -1)
            busiest = max(busiest, t)
        res = run_phase(ph, self.sim)
        pim_alone = run_phase(pim_only, self.sim).pim_end
        for r in fakes:
            self.sim.release(r)
        layer, mat = self.gemms(kind)[-1]
        contended = res.ends[f"{layer}.{mat.name}"] - join_tail(self.hw.npu, T)
        self.measured["stream"] += 1
        self.measured["pim"] += 1
        return busiest / S, max(0.0, (contended - S) / S), max(0.0, (res.pim_end - pim_alone) / S)

    def decode_writes(self, n: int, channels: int) -> float:
        """Cycles until the K/V writes of n decodes on one channel are accepted, taken as
        the slowest of `channels` channels that write alike (a phase waits for its last
        channel). Each decode writes one burst of V into every bank plus its K into the
        bank of its position, and whether these overflow a bank's command queue, so that
        later writes wait for the drain, depends on where the decodes are: four decodes
        take 4,195 to 12,236 cycles on GPT3-7B. So it is measured for WRITE_PATTERNS
        seeded random positions per n (each a run of n decodes on a fresh channel) and the
        expected maximum of `channels` draws from these is returned."""
        xs = self._dec_writes.get(n)
        if xs is None:
            rng = np.random.default_rng(n)

            def write(ph, e):
                ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + 1)))
            xs = np.sort([self._run_on_channel([(write, 1, int(o)) for o in rng.integers(0, self.elems_per_row, n)]).cycles
                          for _ in range(WRITE_PATTERNS)])
            self._dec_writes[n] = xs
            self.measured["write"] += WRITE_PATTERNS
        R = len(xs)
        i = np.arange(1, R + 1)
        return float(np.sum(xs * ((i / R) ** channels - ((i - 1) / R) ** channels)))

    def decode_writes_beside_pim(self, n: int, kv_len: float) -> float:
        """Cycles the K/V writes of n decodes add to their PIM GEMVs on one channel when
        both start together (a single row buffer: the write drains and the GEMVs take turns
        at the banks). Measured with n decodes of KV class `kv_class(kv_len)` (lengths drawn
        as `mixed_slowdown` draws them, seeded by n and the class), writes and GEMVs against
        the GEMVs alone. Per request pieces (`decode`, measured as 1 and 3 copies) miss it:
        8 decodes on a GPT3-7B channel add 20-24k cycles, 3 copies' increments 1-4k."""
        m = self.kv_class(kv_len)
        key = (n, m)
        got = self._dec_extra.get(key)
        if got is None:
            rng = np.random.default_rng(key)
            lens = [max(1, int(m * rng.uniform(0.5, 1.5))) for _ in range(n)]

            def pim(ph, e):
                self.sim._pim_gemv(ph, e, "attention_pim", -1)

            def both(ph, e):
                ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + 1)))
                self.sim._pim_gemv(ph, e, "attention_pim", -1)
            alone = self._run_on_channel([(pim, 1, kv) for kv in lens]).cycles
            got = max(0.0, self._run_on_channel([(both, 1, kv) for kv in lens]).cycles - alone)
            self._dec_extra[key] = got
            self.measured["pim"] += 2
        return got

    def write_pim_overlap(self, q_len: int) -> float:
        """beta: on one channel, K/V writes W and PIM GEMVs P take max(W, P) + beta *
        min(W, P). How much writes get in PIM's way depends on the row buffers and on
        whether the writes fit the write buffer, so beta is measured per row-buffer kind
        for a decode's write (q_len 1) and for a prompt's (q_len > banks: `banks` * 8
        tokens), against a GEMV over one V row of tokens. W is counted drained with dual
        row buffers (the writes go to the banks while PIM computes) and accepted with a
        single one (they are buffered, and drain after it)."""
        big = q_len > self.banks
        if big not in self._beta:
            q = 8 * self.banks if big else 1

            def pim(ph, e):
                self.sim._pim_gemv(ph, e, "attention_pim", -1)

            def write(ph, e):
                ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + e.q_len)))
            P = self._run_on_channel([(pim, 1, self.elems_per_row)]).cycles
            w = self._run_on_channel([(write, q, 0)])
            W = w.drained if self.hw.memory.pim.row_buffers == "dual" else w.cycles
            both = self._run_on_channel([(pim, 1, self.elems_per_row), (write, q, 0)]).cycles
            self._beta[big] = (both - max(P, W)) / max(1.0, min(P, W))
            self.measured["write"] += 3
        return self._beta[big]

    # ------------------------------------------------------------------ channel work
    def pim_key(self, kvn: int) -> tuple[int, int, int]:
        """Everything the PIM command stream of a decode over kvn cached tokens depends on."""
        pim = self.hw.memory.pim
        blocks = _ceil(kvn, self.elems_per_row)
        last = kvn - (blocks - 1) * self.elems_per_row
        return (_ceil(kvn, self.banks), blocks, max(_ceil(last, pim.multipliers_per_bank), pim.comps_readres_min_k))

    def _canonical_kv(self, kv_len: int) -> int:
        """The smallest KV length with the same PIM key: what a key is measured at, so the
        value of a key does not depend on which request met it first."""
        key = self.pim_key(kv_len + 1)
        while kv_len > 0 and self.pim_key(kv_len) == key:
            kv_len -= 1
        return kv_len

    def pim(self, kv_len: int) -> ChannelWork:
        """PIM attention of one decode (q_len 1) over kv_len cached tokens."""
        key = self.pim_key(kv_len + 1)
        got = self._pim.get(key)
        if got is None:
            def build(ph, e):
                self.sim._pim_gemv(ph, e, "attention_pim", -1)
            got = self._channel_work(build, 1, self._canonical_kv(kv_len))
            self._pim[key] = got
            self.measured["pim"] += 1
        return got

    def decode(self, kv_len: int, at: int | None = None) -> ChannelWork:
        """A decode's channel work when its K/V write and its PIM attention start together
        (no sub-batches: both wait for QKV): measured as one piece, keyed by the PIM
        command stream, at the key's smallest KV length (the write's position within its
        32-token K row group, which moves the write by a few percent, is that one's).
        `at`: the refresh bin it starts in (None: averaged over offsets)."""
        key = (self.pim_key(kv_len + 1), at)
        got = self._decode.get(key)
        if got is None:
            def build(ph, e):
                ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + 1)))
                self.sim._pim_gemv(ph, e, "attention_pim", -1)
            got = self._channel_work(build, 1, self._canonical_kv(kv_len), at)
            self._decode[key] = got
            self.measured["pim"] += 1
        return got

    def kv_write(self, q_len: int, kv_len: int) -> ChannelWork:
        """Writing q_len new tokens' K and V after kv_len cached ones. Up to `banks` new
        tokens the key is (tokens, position modulo `banks`): the banks and rows the K
        writes hit relative to each other repeat with that period, and a V write touches
        one burst column of every dimension's row wherever the token is (a chunk that
        crosses a 512-token V block boundary is taken as one that does not).

        Above `banks` tokens the writes stream, and what they cost is linear in two counts:
        the tokens (K: a token's key fills whole bursts of one row, row after row) and the
        V burst columns the chunk spans (each one a burst in every dimension's row, one
        activation apiece), which steps with the chunk's position: 40 tokens span two
        columns, 32 aligned ones one. Per octave lo = banks * 2^k <= q_len < 2 lo, (lo, 0)
        and (2 lo, 0) are measured, and a column costs what (c, 1) - (c, 0) measure (one
        more column, the same tokens) with c = min(lo, COLUMN_PIECE_BANKS * banks): the
        work is W(lo, 0) + per_token * (q_len - lo) + per_column * (columns - lo /
        tokens_per_burst). (Measuring the column at every octave would cost as much again
        as the octave's pieces, for a column that matters less the longer the chunk.)"""
        g = self.banks
        if q_len <= g:
            return self._write_at(q_len, kv_len % g)
        lo = g
        while lo * 2 <= q_len:
            lo *= 2
        tpb = self.tokens_per_burst
        cols = _ceil(kv_len + q_len, tpb) - kv_len // tpb
        a = self._write_at(lo, 0)
        if q_len == lo and cols == lo // tpb:
            return a
        c = min(lo, COLUMN_PIECE_BANKS * g)
        per_col = _sub(self._write_at(c, 1), self._write_at(c, 0))
        dq = _sub(_sub(self._write_at(2 * lo, 0), a), per_col, lo // tpb)
        return _add(_add(a, dq, (q_len - lo) / lo), per_col, cols - lo // tpb)

    def _write_at(self, q_len: int, offset: int) -> ChannelWork:
        key = (q_len, offset)
        got = self._write.get(key)
        if got is None:
            def build(ph, e):
                ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + e.q_len)))
            got = self._channel_work(build, q_len, offset)
            self._write[key] = got
            self.measured["write"] += 1
        return got

    def kv_read(self, kv_len: int) -> ChannelWork:
        """Reading the cached K and V of kv_len tokens (attention on the NPU). K is read
        token by token (linear in tokens), V a burst column of 32 tokens at a time in every
        dimension's row, so the reads step up at every multiple of `banks` (= the tokens of
        a V burst column here) tokens: 33 tokens read as many V bursts as 64. Measured at
        the multiples m of `banks` and one token above each; between m + 1 and the next
        multiple (the same V columns) interpolated linearly. Below `banks` tokens (a few
        hundred bursts, where latency rather than bandwidth counts) measured at each
        count."""
        if kv_len <= 0:
            return ZERO_WORK
        g = self.banks
        lo = (kv_len // g) * g
        if lo == kv_len or lo == 0:
            return self._read_at(kv_len)
        a = self._read_at(lo + 1)
        if kv_len == lo + 1:
            return a
        return _mix(a, self._read_at(lo + g), (kv_len - lo - 1) / (g - 1))

    def _build_read(self, ph, e) -> None:
        """A request's K/V reads of all its tokens (npu-only attention's operands)."""
        ph.reads(self.sim._kv_token_bursts(e, range(0, e.kv_len)), -1)

    def _read_at(self, kv_len: int) -> ChannelWork:
        got = self._read.get(kv_len)
        if got is None:
            got = self._channel_work(self._build_read, 1, kv_len)
            self._read[kv_len] = got
            self.measured["read"] += 1
        return got

    def _read_counters(self, kv_len: int) -> tuple[float, np.ndarray]:
        """The PIM busy cycles and counters per request of `_read_at(kv_len)` (taken from
        its run of `copies` requests) without its run of one request when only these are
        asked for (npu-only, `kv_read_beside_post`): the same run, so the same values."""
        got = self._read.get(kv_len)
        if got is not None:
            return got.pim_busy, got.stats
        c = self._read_many.get(kv_len)
        if c is None:
            n = self.copies
            many = self._run_on_channel([(self._build_read, 1, kv_len)] * n)
            c = self._read_many[kv_len] = (many.pim_busy / n, many.stats / n)
            self.measured["read"] += 1
        return c

    def post_prefix(self, layer: int = 0) -> tuple[np.ndarray, float]:
        """The post stream's weight reads in channel 0 that no weight tile gates (a GEMM's
        first 2 x arrays tiles load without waiting for a buffer), in channel order up to
        the first one that waits for a tile, and the cycles they take alone on the channel
        (every channel holds as many: the tiles stripe over all of them). In npu-only a
        channel queues these behind its K/V reads (program order) and the rest only once
        post tiles run. Of the first layer that streams alike (`stream_layer`)."""
        layer = self.stream_layer("post", layer)
        got = self._prefix.get(layer)
        if got is None:
            ph = _new_phase(self.hw)
            for lay, w in self.gemms("post", layer):
                ph.gemm(self.hw.npu, f"{lay}.{w.name}", 1, w.rows, w.cols, self.sim.w_base[(lay, w.name)])
            addr, _, _, aft = ph.request_arrays()
            p = self.sim.params
            mine = ((addr >> p.ch_shift) & p.ch_mask) == 0
            a, gated = addr[mine], np.nonzero(aft[mine] >= 0)[0]
            a = a[: gated[0] if len(gated) else len(a)].copy()

            def weights(ph, e):
                ph.reads(a, -1)
            got = (a, self._run_on_channel([(weights, 1, 0)]).cycles)
            self._prefix[layer] = got
            self.measured["read"] += 1
        return got

    def kv_read_beside_post(self, kv_len: int, layer: int = 0) -> ChannelWork:
        """`kv_read` in npu-only, where the channel's ungated post weights (`post_prefix`)
        queue behind the reads: the controller serves both together (the weights' row
        hits first), so the reads end when the weights are in too. `base` is one
        request's reads with the weights, `step` what each further request's reads add;
        busy cycles and counters are the reads' own (the weights count in the stream).
        Interpolated between the lengths `kv_read` measures at."""
        if kv_len <= 0:
            return ZERO_WORK
        g = self.banks
        lo = (kv_len // g) * g
        if lo == kv_len or lo == 0:
            return self._read_post_at(kv_len, layer)
        a = self._read_post_at(lo + 1, layer)
        if kv_len == lo + 1:
            return a
        return _mix(a, self._read_post_at(lo + g, layer), (kv_len - lo - 1) / (g - 1))

    def _read_post_at(self, kv_len: int, layer: int) -> ChannelWork:
        prefix, _ = self.post_prefix(layer)
        key = (kv_len, self.stream_layer("post", layer))
        got = self._read_post.get(key)
        if got is None:
            def build(ph, e):
                ph.reads(self.sim._kv_token_bursts(e, range(0, e.kv_len)), -1)

            def weights(ph, e):
                ph.reads(prefix, -1)
            one = self._run_on_channel([(build, 1, kv_len), (weights, 1, 0)])
            n = self.copies
            many = self._run_on_channel([(build, 1, kv_len)] * n + [(weights, 1, 0)])
            own_busy, own_stats = self._read_counters(kv_len)
            got = ChannelWork(
                base=one.cycles,
                step=(many.cycles - one.cycles) / (n - 1),
                drained_base=one.drained,
                drained_step=(many.drained - one.drained) / (n - 1),
                pim_busy=own_busy,
                stats=own_stats,
            )
            self._read_post[key] = got
            self.measured["read"] += 2
        return got

    def decode_overlap(self, kv_len: int, layer: int = 0) -> float:
        """How much shorter a decode's K/V work in npu-only is than its write (drained) and
        its reads with the post weights behind them (`kv_read_beside_post`) one after the
        other: the reads start once the write is accepted and overlap its drain (and
        they read rows it wrote). It moves by a few hundred cycles with where the token
        falls, so it is measured per `banks`-token class of kv_len, as the mean over
        OVERLAP_POSITIONS positions in the class of (write + reads) - (write then reads
        measured together, one decode on a channel)."""
        g = self.banks
        lo = (kv_len // g) * g
        key = (lo, self.stream_layer("post", layer))
        got = self._overlap.get(key)
        if got is None:
            prefix, _ = self.post_prefix(layer)
            diffs = []
            for o in OVERLAP_POSITIONS:
                kv = lo + o * g // len(OVERLAP_POSITIONS) + 1

                def both(ph, e):
                    ph.writes(self.sim._kv_token_bursts(e, range(e.kv_len, e.kv_len + 1)))
                    ph.reads(self.sim._kv_token_bursts(e, range(0, e.kv_len)), -1)
                    ph.reads(prefix, -1)
                joint = self._run_on_channel([(both, 1, kv)]).cycles
                apart = self.kv_write(1, kv).drained_base + self.kv_read_beside_post(kv, layer).base
                diffs.append(apart - joint)
            got = self._overlap[key] = float(np.mean(diffs))
            self.measured["read"] += len(OVERLAP_POSITIONS)
        return got

    def _fake_entry(self, q_len: int, kv_len: int, channel: int) -> BatchEntry:
        e = BatchEntry(self._fake, q_len, kv_len, channel)
        self._fake -= 1
        self.sim.ensure_kv(e, kv_len + q_len)
        return e

    def _run_on_channel(self, parts, at: int | None = None):
        """One engine run of `parts` [(build, q_len, kv_len)], each a fresh request on
        channel 0, from a fresh engine state (at refresh bin `at`; None: averaged)."""
        ph = _new_phase(self.hw)
        fakes = []
        for build, q_len, kv_len in parts:
            e = self._fake_entry(q_len, kv_len, 0)
            fakes.append(e.req)
            build(ph, e)
        res = run_phase(ph, self.sim, None if at is None else self.bin_offset(at))
        for r in fakes:
            self.sim.release(r)
        return res

    def _channel_work(self, build, q_len: int, kv_len: int, at: int | None = None) -> ChannelWork:
        """Run `build` for 1 and for `copies` requests (distinct rows) on channel 0 (at
        refresh bin `at`; None: averaged over offsets)."""
        one = self._run_on_channel([(build, q_len, kv_len)], at)
        n = self.copies
        many = self._run_on_channel([(build, q_len, kv_len)] * n, at)
        return ChannelWork(
            base=one.cycles,
            step=(many.cycles - one.cycles) / (n - 1),
            drained_base=one.drained,
            drained_step=(many.drained - one.drained) / (n - 1),
            pim_busy=many.pim_busy / n,
            stats=many.stats / n,
        )


class Run(NamedTuple):
    """An engine run of one phase, averaged over where in the refresh period it starts."""

    cycles: float  # the phase's cycles (to the last read returned / write accepted)
    drained: float  # until buffered writes were written as well
    ends: dict  # op name -> end cycle (phase-relative)
    stats: np.ndarray  # float64 [Stat], summed over channels
    array_busy: float
    pim_busy: float
    reads: float
    offsets: int  # how many refresh offsets it was averaged over
    task_end: np.ndarray  # per NPU task, its end (phase-relative)
    pim_end: float = 0.0  # the last PIM command's completion (phase-relative; 0: none)


# A run shorter than this many refresh intervals is repeated from REFRESH_OFFSETS evenly
# spaced starts over the refresh period (each after a period of idling) and averaged: a
# short run meets a refresh or not depending on where it starts.
SHORT_RUN_INTERVALS = 4
REFRESH_OFFSETS = 4

# Where ReuseCost knows the engine cycle a short piece starts at, the piece is measured at
# the middle of the one of this many equal bins of the refresh period it starts in.
REFRESH_BINS = 32


def refresh_period(p) -> int:
    """Cycles after which the engine's refresh schedule repeats, rank included: it
    refreshes a channel at every multiple of the refresh interval, rank-staggered one rank
    after the other (the first refresh rank 0's); 0 without refresh. Which rank a refresh
    takes matters: a short weight stream reads one rank's rows at a time."""
    if p.refresh_policy == eng.REFRESH_OFF:
        return 0
    return p.refresh_interval * (p.ranks if p.refresh_policy == eng.REFRESH_RANK_STAGGERED else 1)


def run_phase(ph: Phase, sim: IterationSimulator, offset: int | None = None) -> Run:
    """Run a phase from new engine states (the same phase, the same result, whatever ran
    before). Once from a fresh state at cycle 0; if that is short (under
    SHORT_RUN_INTERVALS refresh intervals), instead averaged over REFRESH_OFFSETS starts
    spread over the refresh period, each after a refresh period of idling (so the
    refreshes are where a run that went on for a while has them). With `offset`: once,
    after the idling, started that many cycles into the refresh period."""
    p = sim.params
    interval = p.refresh_interval
    refresh = p.refresh_policy != eng.REFRESH_OFF

    def once(o: int, warm: bool):
        state = eng.new_state(p)
        state.glob[eng.G_CLK] = o
        if warm and refresh:
            # as in a run that went on for a while: one refresh period without work first,
            # so the refreshes before the start have been (and perhaps are still going on)
            idle = sim._new_phase()
            idle.vector("idle", refresh_period(p) - 1)
            idle.run(p, state, sim.max_inject)
            o = int(state.glob[eng.G_CLK])
        res = ph.run(p, state, sim.max_inject)
        return res, max(float(res.cycles), float(state.glob[eng.G_CLK] - o))

    if offset is not None:
        runs = [once(offset, True)]
    else:
        runs = [once(0, False)]
        if refresh and runs[0][0].cycles < SHORT_RUN_INTERVALS * interval:
            period = refresh_period(p)
            runs = [once((2 * k + 1) * period // (2 * REFRESH_OFFSETS), True) for k in range(REFRESH_OFFSETS)]
    n = len(runs)
    names = runs[0][0].ops.keys()
    return Run(
        cycles=sum(r.cycles for r, _ in runs) / n,
        drained=sum(d for _, d in runs) / n,
        ends={k: sum(r.ops[k]["end"] for r, _ in runs) / n for k in names},
        stats=sum(r.stats.sum(axis=0).astype(np.float64) for r, _ in runs) / n,
        array_busy=sum(float(r.npu_busy[:-1].sum()) for r, _ in runs) / n,
        pim_busy=sum(float(r.pim_busy.sum()) for r, _ in runs) / n,
        reads=sum(r.reads for r, _ in runs) / n,
        offsets=n,
        task_end=sum(np.asarray(r.task_end, np.float64) for r, _ in runs) / n,
        pim_end=sum(float(r.pim_end) for r, _ in runs) / n,
    )


def _new_phase(hw) -> Phase:
    npu = hw.npu
    return Phase(arrays=npu.systolic_arrays, array_rows=npu.array_rows, array_cols=npu.array_cols,
                 double_buffered=npu.double_buffered, burst_bytes=hw.memory.geometry.burst_bytes)


def join_tail(npu, tokens: int) -> int:
    """Cycles of a GEMM's join task after its last tile (compiler/program.py Phase.gemm)."""
    R, C = npu.array_rows, npu.array_cols
    stream = max(tokens, 4)
    tail = R + C - 2 + stream - (max(stream, R) if npu.double_buffered else stream)
    return max(tail, 0)


def _mix(a: ChannelWork, b: ChannelWork, f: float) -> ChannelWork:
    return ChannelWork(
        base=a.base + (b.base - a.base) * f,
        step=a.step + (b.step - a.step) * f,
        drained_base=a.drained_base + (b.drained_base - a.drained_base) * f,
        drained_step=a.drained_step + (b.drained_step - a.drained_step) * f,
        pim_busy=a.pim_busy + (b.pim_busy - a.pim_busy) * f,
        stats=a.stats + (b.stats - a.stats) * f,
    )


def _sub(a: ChannelWork, b: ChannelWork, f: float = 1.0) -> ChannelWork:
    """a - f * b, field by field."""
    return ChannelWork(*(x - f * y for x, y in zip(a, b)))


def _add(a: ChannelWork, b: ChannelWork, f: float = 1.0) -> ChannelWork:
    """a + f * b, field by field."""
    return ChannelWork(*(x + f * y for x, y in zip(a, b)))


def _interpolate(a: StreamMeasure, lo: int, b: StreamMeasure, hi: int, s: int) -> StreamMeasure:
    f = (s - lo) / (hi - lo)
    return StreamMeasure(
        ends=tuple(x + (y - x) * f for x, y in zip(a.ends, b.ends)),
        array_busy=a.array_busy + (b.array_busy - a.array_busy) * f,
        stats=a.stats,  # weight traffic does not depend on the token count
        read_bytes=a.read_bytes,
        long=a.long and b.long,
        tiles=_Tiles(a.tiles, b.tiles, f),
    )


# Three grid points are "on one line" when the third is within this fraction of the line
# through the first two (for every GEMM end): compute-bound streams vary by a few cycles.
COLLINEAR_TOLERANCE = 1e-3


def _collinear(pts) -> bool:
    """Three (grid point, measure) pairs on one line for every GEMM end."""
    (p0, m0), (p1, m1), (p2, m2) = pts
    return all(abs(e1 + (e1 - e0) * (p2 - p1) / (p1 - p0) - e2) <= COLLINEAR_TOLERANCE * e2
               for e0, e1, e2 in zip(m0.ends, m1.ends, m2.ends))


def _extend(first, last, s: int) -> StreamMeasure:
    """The line through two measured points, at s (compute-bound streams are linear)."""
    (p1, a), (p2, b) = first, last
    f = (s - p2) / (p2 - p1)
    return StreamMeasure(
        ends=tuple(y + (y - x) * f for x, y in zip(a.ends, b.ends)),
        array_busy=b.array_busy + (b.array_busy - a.array_busy) * f,
        stats=b.stats,
        read_bytes=b.read_bytes,
        long=a.long and b.long,
        tiles=_Tiles(a.tiles, b.tiles, 1 + f),  # b + (b - a) f
    )
