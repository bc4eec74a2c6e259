"""The per-bank command queues' hit counts (QU_HITS) against a recount of their items.

QU_HITS is kept as items come and go and rows open and close; the ready bounds and the
hit searches trust it. Stopping the replay often (a small command log) exposes the state
mid-run, with full queues, and each time every queue's count must equal the number of its
items (reads, writes) on its bank's open row."""

import numpy as np
import pytest

from neupims_py.config import load_hw
from neupims_py.dram.lower import lower_memory
from neupims_py.engine import dram as eng


def recount(s, ch, q):
    n = s.queue[ch, q, eng.QU_LEN]
    base = eng.QU_ITEMS + 2 * s.queue[ch, q, eng.QU_HEAD]
    keys = s.queue[ch, q, base + 1 : base + 2 * n : 2]
    rows = (keys >> 1) & eng.KEY_ROW_MASK
    hit = rows == s.bank[keys >> eng.KEY_BANK_SHIFT, eng.BK_OPEN_ROW]
    return int(np.sum(hit & (keys & 1 == 0))), int(np.sum(hit & (keys & 1 == 1)))


@pytest.mark.parametrize("preset", ["hbm2-8gb-x128", "neupims"])
def test_queue_hit_counts_match_a_recount_mid_run(preset):
    p = lower_memory(load_hw(preset).memory)
    assert p.per_bank_queues
    rng = np.random.default_rng(1)
    n = 6000
    # few rows per bank (hits and misses), every channel and bank: fields set one by one
    f = dict(ch=rng.integers(0, p.ch_mask + 1, n), ra=rng.integers(0, p.ra_mask + 1, n),
             bg=rng.integers(0, p.bg_mask + 1, n), ba=rng.integers(0, p.ba_mask + 1, n),
             ro=rng.integers(0, 3, n), co=rng.integers(0, p.co_mask + 1, n))
    addr = sum(f[k].astype(np.int64) << getattr(p, k + "_shift") for k in f)
    is_write = rng.random(n) < 0.3
    s = eng.new_state(p)
    b = eng.new_batch(p, addr, is_write, np.arange(n) // 2)
    ctl = eng.new_ctl(0, 4, True)
    log = eng.new_log(2 * p.channels + 6)
    snap = np.zeros_like(s.stats)
    stops = seen_hits = 0
    while eng.run_requests(p, s, b, eng.new_pim_batch(p), eng.new_npu_tasks(), ctl, log, snap) == 1:
        ctl[eng.C_LOG_N] = 0
        stops += 1
        if stops % 5:
            continue  # (every fifth stop: the recount is slow)
        for ch in range(p.channels):
            for q in range(s.queue.shape[1]):
                rd, wr = recount(s, ch, q)
                h = s.queue[ch, q, eng.QU_HITS]
                assert (h & eng.HIT_MASK, h >> eng.HIT_BITS) == (rd, wr), (stops, ch, q)
                seen_hits += rd + wr
    assert stops > 100 and seen_hits > 0
    assert (b.done >= 0).all() and (s.queue[:, :, eng.QU_HITS] == 0).all()
