"""new_batch fills the request table in one compiled pass (engine/dram.py `_fill`): every
column must equal the inputs, in the order the front end offers them (per channel when
asked), and the address fields the kernels decode inline must be those of lower_memory."""

import numpy as np
import pytest

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng

pytestmark = pytest.mark.nojit


def expected(addr, cycle, group, after):
    """The request table column by column."""
    a = np.asarray(addr, np.int64)
    cols = {
        eng.RQ_ADDR: a,
        eng.RQ_CYCLE: np.asarray(cycle, np.int64),
        eng.RQ_ADDED: np.full(len(a), -1),
        eng.RQ_ISSUED: np.full(len(a), -1),
        eng.RQ_DONE: np.full(len(a), -1),
        eng.RQ_DUP: np.full(len(a), -1),
        eng.RQ_GROUP: np.full(len(a), -1) if group is None else np.asarray(group),
        eng.RQ_AFTER: np.full(len(a), -1) if after is None else np.asarray(after),
    }
    assert sorted(cols) == list(range(eng.RQ_COLS))
    return np.stack([cols[c] for c in range(eng.RQ_COLS)], axis=1)


@pytest.mark.parametrize("preset", ["hbm2-8gb-x128", "neupims"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_table_holds_the_inputs_in_offer_order(preset, per_channel):
    p = lower_memory(load_hw(preset).memory)
    rng = np.random.default_rng(7)
    n = 500
    addr = rng.integers(0, 1 << 33, n, dtype=np.int64) & ~np.int64(63)
    is_write = rng.random(n) < 0.3
    cycle = np.sort(rng.integers(0, 10_000, n))
    group = rng.integers(-1, 20, n) if per_channel else None
    after = rng.integers(-1, 5, n) if per_channel else None
    batch = eng.new_batch(p, addr, is_write, cycle, group=group, after=after, per_channel=per_channel)
    if per_channel:
        order = np.argsort((addr >> p.ch_shift) & p.ch_mask, kind="stable")
        want = expected(addr[order], cycle[order], group[order], after[order])
        want_w = is_write[order]
        counts = np.bincount((addr >> p.ch_shift) & p.ch_mask, minlength=p.channels)
        assert batch.inj[:, eng.IJ_END].tolist() == np.cumsum(counts).tolist()
        assert batch.reads_per_task.tolist() == np.bincount(group[group >= 0]).tolist()
    else:
        want = expected(addr, cycle, None, None)
        want_w = is_write
        assert batch.inj.tolist() == [[0, n, 0, 0]]
    assert batch.req.dtype == np.int64
    np.testing.assert_array_equal(batch.req, want)
    assert batch.write.tolist() == want_w.astype(int).tolist()
    # one 64-byte line per request
    assert batch.req.strides == (64, 8) and batch.req.ctypes.data % 64 == 0


@pytest.mark.parametrize("preset", ["hbm2-8gb-x128", "neupims"])
def test_inline_decode_matches_address_fields(preset):
    """The kernels' command-queue key and column (``_key``, ``_col``, ``_key_queue``) and
    ``decode`` against the fields worked out from lower_memory's shifts and masks."""
    p = lower_memory(load_hw(preset).memory)
    s = eng.new_state(p)
    rng = np.random.default_rng(3)
    addr = rng.integers(0, 1 << 33, 300, dtype=np.int64) & ~np.int64(63)
    f = lambda a, shift, mask: int((a >> shift) & mask)  # noqa: E731
    d = eng.decode(p, addr)
    for i, a in enumerate(addr.tolist()):
        ch, ra, bg, ba = (f(a, p.ch_shift, p.ch_mask), f(a, p.ra_shift, p.ra_mask), f(a, p.bg_shift, p.bg_mask),
                          f(a, p.ba_shift, p.ba_mask))
        row, col = f(a, p.ro_shift, p.ro_mask), f(a, p.co_shift, p.co_mask)
        local = (ra * p.bankgroups + bg) * p.banks_per_group + ba
        gb = ch * p.ranks * p.bankgroups * p.banks_per_group + local
        q = local if p.per_bank_queues else ra
        w = i % 2
        key = eng._key(p, a, ch, w)
        assert (key >> eng.KEY_BANK_SHIFT, (key >> 1) & eng.KEY_ROW_MASK, key & 1) == (gb, row, w)
        assert eng._col(p, a) == col
        assert eng._key_queue(p, s, ch, key) == q
        assert s.bank[gb, eng.BK_RANK] == ra and s.bank[gb, eng.BK_BG] == bg and s.bank[gb, eng.BK_BA] == ba
        got = {k: int(v[i]) for k, v in d.items()}
        assert got == dict(ch=ch, rank=ra, bg=bg, ba=ba, row=row, col=col, bank=gb, queue=q)


def test_decode_accepts_other_dtypes():
    """uint64 addresses, int flags and int32 cycles give the same table as int64/bool."""
    p = lower_memory(load_hw("hbm2-8gb-x128").memory)
    addr = np.array([0, 64, 1 << 20, (1 << 32) + 128], np.int64)
    w = np.array([0, 1, 0, 1])
    c = np.array([0, 1, 5, 9], np.int32)
    a = eng.new_batch(p, addr.astype(np.uint64), w, c)
    b = eng.new_batch(p, addr, w.astype(bool), c.astype(np.int64))
    np.testing.assert_array_equal(a.req, b.req)
    np.testing.assert_array_equal(a.write, b.write)
    assert len(eng.new_batch(p, addr[:0], w[:0], c[:0]).req) == 0


def test_batches_from_a_buffer_equal_new_ones_and_reuse_its_memory():
    p = lower_memory(load_hw("neupims").memory)
    rng = np.random.default_rng(5)
    buf = eng.RequestBuffer()
    first = None
    for n in (400, 250, 400, 900):
        addr = rng.integers(0, 1 << 33, n, dtype=np.int64) & ~np.int64(63)
        w = rng.random(n) < 0.2
        c = np.zeros(n, np.int64)
        g = rng.integers(-1, 9, n)
        got = eng.new_batch(p, addr, w, c, group=g, per_channel=True, buffer=buf)
        want = eng.new_batch(p, addr, w, c, group=g, per_channel=True)
        for x, y in zip(got, want):
            np.testing.assert_array_equal(x, y)
        assert got.req.ctypes.data % 64 == 0
        if first is None:
            first = got.req.ctypes.data
        elif n <= 400:
            assert got.req.ctypes.data == first  # the same memory


def test_presorted_pim_batch_equals_the_sorted_one():
    """new_pim_batch(presorted=True) on commands already in channel order (stable) gives the
    batch it builds by sorting them itself."""
    p = lower_memory(load_hw("neupims").memory)
    rng = np.random.default_rng(11)
    n = 200
    cols = {k: rng.integers(0, 9, n) for k in ("cmd", "rank", "bg", "ba", "row", "k", "dur", "cycle", "after")}
    ch = rng.integers(0, p.channels, n)
    want = eng.new_pim_batch(p, ch=ch, **cols)
    order = np.argsort(ch, kind="stable")
    got = eng.new_pim_batch(p, ch=ch[order], **{k: v[order] for k, v in cols.items()}, presorted=True)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    assert want.ch.tolist() == sorted(ch.tolist())
