"""new_batch decodes addresses in one compiled pass (engine/dram.py `_decode`): every column
of the request table must equal the address fields worked out here with numpy, in the
order the front end offers them (per channel when asked)."""

import numpy as np
import pytest

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng

pytestmark = pytest.mark.nojit


def expected(p, addr, is_write, cycle, group, after):
    """The request table column by column, from the address fields of lower_memory."""
    a = np.asarray(addr, np.int64)
    f = lambda shift, mask: (a >> shift) & mask  # noqa: E731
    ch, ra, bg, ba = f(p.ch_shift, p.ch_mask), f(p.ra_shift, p.ra_mask), f(p.bg_shift, p.bg_mask), f(p.ba_shift, p.ba_mask)
    local = (ra * p.bankgroups + bg) * p.banks_per_group + ba
    cols = {
        eng.RQ_ADDR: a,
        eng.RQ_WRITE: np.asarray(is_write, bool).astype(np.int64),
        eng.RQ_CYCLE: np.asarray(cycle, np.int64),
        eng.RQ_CH: ch,
        eng.RQ_RANK: ra,
        eng.RQ_BG: bg,
        eng.RQ_BA: ba,
        eng.RQ_ROW: f(p.ro_shift, p.ro_mask),
        eng.RQ_COL: f(p.co_shift, p.co_mask),
        eng.RQ_BANK: ch * p.ranks * p.bankgroups * p.banks_per_group + local,
        eng.RQ_QUEUE: local if p.per_bank_queues else ra,
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
def test_decode_matches_address_fields(preset, per_channel):
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
        want = expected(p, addr[order], is_write[order], cycle[order], group[order], after[order])
        counts = np.bincount((addr >> p.ch_shift) & p.ch_mask, minlength=p.channels)
        assert batch.inj[:, eng.IJ_END].tolist() == np.cumsum(counts).tolist()
    else:
        want = expected(p, addr, is_write, cycle, None, None)
        assert batch.inj.tolist() == [[0, n, 0, 0]]
    assert batch.req.dtype == np.int64
    np.testing.assert_array_equal(batch.req, want)


def test_decode_accepts_other_dtypes():
    """uint64 addresses, int flags and int32 cycles give the same table as int64/bool."""
    p = lower_memory(load_hw("hbm2-8gb-x128").memory)
    addr = np.array([0, 64, 1 << 20, (1 << 32) + 128], np.int64)
    w = np.array([0, 1, 0, 1])
    c = np.array([0, 1, 5, 9], np.int32)
    a = eng.new_batch(p, addr.astype(np.uint64), w, c)
    b = eng.new_batch(p, addr, w.astype(bool), c.astype(np.int64))
    np.testing.assert_array_equal(a.req, b.req)
    assert len(eng.new_batch(p, addr[:0], w[:0], c[:0]).req) == 0
