"""Event-driven DRAM channel controllers with DRAMsim3's semantics, compiled with Numba.

One call to ``run_requests`` replays a batch of memory requests on every channel. The
controller per channel is DRAMsim3's: a transaction queue and a posted-write buffer, one
command queue per bank (or per rank) served round-robin, FR-FCFS with a cap on row hits
before an on-demand precharge, write drains, rank-staggered refresh and HBM dual issue.
Each channel is only ticked at cycles where something can change; between those, its
next event is the earliest cycle at which a queued command's timing is met, so idle cycles
cost nothing while the issued command stream stays cycle-exact. Within a tick, the scan of
the command queues visits only the non-empty ones (a bitmask per channel) and, until the
channel's least ready bound comes, only those whose bound was reset by a change.

The order of work inside one cycle is written once, in ``_tick_channel``:
refresh insertion, (refresh | queued) command issue, optional second command, then one
transaction moved from the transaction queues into the command queues. The front end
offers requests after the memory has ticked, so a request accepted at cycle c is seen by
the controller at c + 1 (DRAMsim3's TraceBasedCPU).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from neupims_py.engine.hashtable import ht_del, ht_get, ht_put, new_table  # inlined where called
from neupims_py.engine.jit import ctz, kernel, prefetch_row
from neupims_py.formats import NUM_CMDS, NUM_STATS, READ_LAT_BIN, READ_LAT_BINS, Cmd, Stat

INF = np.int64(2**62)

# Opcodes as plain ints for the kernels.
ACT = int(Cmd.ACT)
RD = int(Cmd.RD)
WR = int(Cmd.WR)
RDA = int(Cmd.RDA)
WRA = int(Cmd.WRA)
PRE = int(Cmd.PRE)
REF = int(Cmd.REF)
GWRITE = int(Cmd.GWRITE)
G_ACT = int(Cmd.G_ACT)
COMP = int(Cmd.COMP)
READRES = int(Cmd.READRES)
COMPS_READRES = int(Cmd.COMPS_READRES)
PIM_HEADER = int(Cmd.PIM_HEADER)
PIM_PRECHARGE = int(Cmd.PIM_PRECHARGE)

# Relation of a bank to the bank a command went to (rank-wide rules fold into the first three).
REL_SAME_BANK, REL_SAME_BG, REL_SAME_RANK, REL_OTHER_RANK = 0, 1, 2, 3
NUM_RELS = 4
NO_RULE = -(2**40)

REFRESH_OFF, REFRESH_RANK_STAGGERED, REFRESH_RANK_SIMULTANEOUS = 0, 1, 2

# Stats as ints
S_READS_DONE = int(Stat.READS_DONE)
S_WRITES_DONE = int(Stat.WRITES_DONE)
S_READ_LATENCY_SUM = int(Stat.READ_LATENCY_SUM)
S_ACT = int(Stat.ACT)
S_RD = int(Stat.RD)
S_WR = int(Stat.WR)
S_RDA = int(Stat.RDA)
S_WRA = int(Stat.WRA)
S_PRE = int(Stat.PRE)
S_REF = int(Stat.REF)
S_READ_ROW_HITS = int(Stat.READ_ROW_HITS)
S_WRITE_ROW_HITS = int(Stat.WRITE_ROW_HITS)
S_ONDEMAND_PRE = int(Stat.ONDEMAND_PRE)
S_DUAL_CMDS = int(Stat.DUAL_CMDS)
S_DATA_BUS_CYCLES = int(Stat.DATA_BUS_CYCLES)
S_RANK_ACTIVE_CYCLES = int(Stat.RANK_ACTIVE_CYCLES)
S_WRITES_ISSUED = int(Stat.WRITES_ISSUED)
S_READS_FORWARDED = int(Stat.READS_FORWARDED)
S_GWRITE = int(Stat.GWRITE)
S_G_ACT = int(Stat.G_ACT)
S_COMP = int(Stat.COMP)
S_READRES = int(Stat.READRES)
S_COMPS_READRES = int(Stat.COMPS_READRES)
S_PIM_PRECHARGE = int(Stat.PIM_PRECHARGE)
S_PIM_HEADER = int(Stat.PIM_HEADER)
S_PIM_COMPS = int(Stat.PIM_COMPS)
S_PIM_BUSY_CYCLES = int(Stat.PIM_BUSY_CYCLES)
S_PIM_BLOCKED_CYCLES = int(Stat.PIM_BLOCKED_CYCLES)

# Run-control scalars (``RunCtl``): one int64 array per call.
C_MOVE_DELTA = 0  # added to the address of each request in a row below C_MOVE_BELOW_ROW...
C_OUTSTANDING_READS = 1  # reads accepted and not yet given a return cycle
C_PHASE = 2  # 0 running, 1 all reads issued: run to END, 2 flushing writes, 3 done
C_END = 3  # cycle the last read returned / last write was acknowledged
C_LAST_WRITE_ISSUE = 4  # cycle the last buffered write was issued
C_MAX_INJECT = 5  # requests the front end may offer per cycle
C_START = 6  # cycle of request time 0
C_QUIET = 7  # a step without ticks still to make (run_requests), -1: none
C_LOG_N = 8  # commands recorded in the log so far
C_LOG_ON = 9
C_PENDING_WRITES = 10  # writes in buffers / command queues, not yet issued
C_MOVE_BELOW_ROW = 11  # ...when the controller accepts it (the table keeps the moved address)
C_STEPS = 12  # cycles the event loop visited
C_TICKS = 13  # channel ticks (a channel visited at a cycle)
C_NPU_PROGRESS = 14  # set when NPU tasks got their start/end cycles during a cycle
C_SEARCHES = 15  # queue searches of the scans (diagnostic)
C_GATED = 16  # ranks' gated queues the scans passed over at once (diagnostic)
C_DISTINCT = 17  # 1: the caller vouches that no two requests of the call share an address
# (and none is pending from before: every call drains): no pending-address tables
NUM_CTL = 18


class DramParams(NamedTuple):
    """Everything the kernels need to know about the memory, as ints and int arrays."""

    channels: int
    ranks: int
    bankgroups: int
    banks_per_group: int
    ch_shift: int
    ch_mask: int
    ra_shift: int
    ra_mask: int
    bg_shift: int
    bg_mask: int
    ba_shift: int
    ba_mask: int
    ro_shift: int
    ro_mask: int
    co_shift: int
    co_mask: int
    # Timing rules, dense: rel_lat[rel, prev, next] is the latency from `prev` issued at one
    # bank to `next` at a bank in relation `rel` to it (REL_*), NO_RULE where none applies.
    # Only the first `n_timed` commands have rules as `next`.
    rel_lat: np.ndarray
    n_timed: int
    tFAW: int
    read_delay: int  # RD issue to data fully returned (RL + burst)
    write_delay: int
    burst_cycles: int
    refresh_policy: int
    refresh_interval: int
    per_bank_queues: bool
    close_page: bool
    dual_issue: bool
    cmd_queue_size: int
    trans_queue_size: int
    write_buffer_size: int
    row_hit_cap: int
    write_drain_threshold: int
    pim_enabled: bool
    pim_dual: bool  # separate PIM row buffers (NeuPIMs) or the normal ones (Newton)
    comps_min_k: int  # COMPS_READRES(k) occupies the PIM units 2 * (max(k, this) + 1) cycles
    comp_cycles: int  # one COMP per this many cycles per channel
    gwrite_cycles: int


# Column layouts of the packed state arrays. A few dense 2-D arrays instead of one array
# per field: every array argument costs registers and stack traffic in each kernel.
# The earliest issue cycle of command c at bank b is the largest of three values: the bank's
# own tnext[c, b], its bank group's floor[c, bank[b, BK_FBG]] and its rank's
# floor[c, bank[b, BK_FRK]] (``_ready_at``). A rule that reaches every bank of a bank group
# or a rank raises one floor instead of each bank (``rule_plans``).
BK_OPEN_ROW = 0  # bank[b, BK_OPEN_ROW]: the open row, -1 if none
BK_HITS = 1  # column commands since the row opened
BK_PIM_ROW = 2  # row open in the PIM row buffer, -1 if none
BK_RANK, BK_BG, BK_BA = 3, 4, 5  # the bank's place (fixed):
# rank in its channel, bank group, bank; kept so the hot path needs no integer division
BK_FBG, BK_FRK = 6, 7  # the bank's columns of `floor`: its bank group's, its rank's (fixed)
BK_COLS = 8

RK_OPEN, RK_SINCE, RK_FAW_HEAD, RK_FAW_N, RK_PIM_OPEN = 0, 1, 2, 3, 4
RK_FAW = 5  # four slots: cycles of the last four ACTs (ring)
RK_COLS = RK_FAW + 4

(
    CH_CQ_TOTAL,
    CH_RQ_LEN,
    CH_WB_LEN,
    CH_DRAINING,
    CH_QIDX,
    CH_REFQ_LEN,
    CH_IN_REF,
    CH_REF_RANK,
    CH_NEXT_REF,
    CH_REF_NEXT_RANK,
    CH_WAKE,
    CH_PIM_MODE,
    CH_PIM_SINCE,
    CH_QMASK,  # bit q: command queue q is not empty (when MASKED_QUEUES, else unused)
    CH_QDIRTY,  # bit q: queue q's ready bound was reset (a change), it must be scanned
    CH_MINLB,  # at most the ready bound of every clean, non-empty queue outside a refresh
    CH_STUCK,  # bit 0 (reads) / 1 (writes): no transaction of that queue can move until a
    # command queue shrinks or a transaction arrives (every one's command queue is full)
    CH_GATE_RD,  # bit q: per-bank queue q is gated on its rank's floor for RD (RDA with a
    CH_GATE_WR,  # closed page) / WR (WRA): its last search found that only that command
    # can serve it; until a change at the queue or its bank resets its bound (which clears
    # the bit), it cannot issue while that floor is ahead (``_held``)
    CH_REFQ,  # then the refresh FIFO of ranks
) = range(20)
MASK_QUEUES = 62  # channels with at most this many command queues keep the bitmasks
MASK_CHANNELS = 62  # memories with at most this many channels tick them from a bitmask

QU_LEN, QU_LB, QU_HEAD, QU_HITS, QU_ITEMS = 0, 1, 2, 3, 4  # queue[ch, q, :]: length,
# ready bound, head offset, hits (per-bank queues: the items on their bank's open row, reads
# in the low HIT_BITS bits, writes above, kept as items come and go and rows open and
# close), then room for twice the queue's capacity of items (a window that slides on as the
# front is served, compacted when it reaches the end: taking the first item moves nothing).
# (A queue's gate is a bit of CH_GATE_RD / CH_GATE_WR.)
# Item k of a command queue is the pair queue[ch, q, QU_ITEMS + 2 (head + k)] = request id
# | column << RID_BITS and the next word = its key: (global bank << KEY_BANK_SHIFT) |
# (row << 1) | is_write, so the FR-FCFS search reads one short contiguous row instead of a
# request row (scattered over the batch) per queued request.
KEY_BANK_SHIFT = 32
HIT_BITS = 32
HIT_MASK = (1 << HIT_BITS) - 1
KEY_ROW_MASK = (1 << (KEY_BANK_SHIFT - 1)) - 1

G_CLK, G_FLUSH = 0, 1
TQ_HEAD, TQ_ITEMS = 0, 1

# The request table req[request, RQ_*]: one 64-byte line per request (the table starts on
# a line), with only what the issue path and the front end read; the address fields
# (channel, bank, row, column) are decoded from RQ_ADDR where needed (a few shifts), and
# the write flag is a separate byte array (DramBatch.write), read when a request is offered.
(
    RQ_ADDR,
    RQ_ADDED,
    RQ_ISSUED,
    RQ_DONE,
    RQ_DUP,
    RQ_GROUP,  # NPU task waiting for this read (-1: none)
    RQ_CYCLE,
    RQ_AFTER,  # NPU task whose end must come before the request is offered (-1: none)
) = range(8)
RQ_COLS = 8
# A transaction or command queue item is the pair (rid | column << RID_BITS, key): the
# command's column and the FR-FCFS key travel with it, so choosing and issuing a command
# reads the request row only to record a column command's results.
RID_BITS = 40
OFFER_AHEAD = 8  # the front end prefetches a stream's request row this many requests ahead
RID_MASK = (1 << RID_BITS) - 1


class DramState(NamedTuple):
    """Controller and bank state of every channel; survives between calls.

    bank[global bank, BK_*]: per-bank row-buffer state; tnext[cmd, global bank] and
    floor[cmd, bank group | rank] the earliest issue cycle of each command (``_ready_at``).
    rank[ch * ranks + rank, RK_*]: open banks, activity, the tFAW window, PIM rows.
    chan[ch, CH_*]: queue lengths, drain and refresh state, the next wake-up cycle.
    queue[ch, q, QU_*]: the command queues (one per bank, or per rank).
    tq[ch, 0 | 1, :]: the read transaction queue and the posted-write buffer: the head
    offset, then slot i at TQ_ITEMS + 2 (head + i) + (0 | 1), the pair its command queue item
    will be (request id | column << RID_BITS, key), in a window that slides as the command
    queues', see QU_HEAD.
    """

    glob: np.ndarray  # [G_CLK] next cycle to simulate, [G_FLUSH] drain every buffered write
    bank: np.ndarray
    tnext: np.ndarray
    floor: np.ndarray  # [cmd, global bank group], then [cmd, bank groups + global rank]
    rank: np.ndarray
    chan: np.ndarray
    queue: np.ndarray
    tq: np.ndarray
    rkeys: np.ndarray  # pending reads: address -> first request id
    rvals: np.ndarray
    wkeys: np.ndarray  # pending writes: address -> request id
    wvals: np.ndarray
    stats: np.ndarray  # [ch, Stat]
    lat_hist: np.ndarray  # [ch, READ_LAT_BINS]
    rule_plan: np.ndarray  # [cmd, :]: how a command raises the earliest-issue cycles
    # (``rule_plans``); from the params, never changes

    # Named views for Python code and tests (kernels index the packed arrays).
    @property
    def clk(self):
        return self.glob[G_CLK : G_CLK + 1]

    @property
    def bank_next(self):
        f = self.floor[:, self.bank[:, BK_FBG]]
        r = self.floor[:, self.bank[:, BK_FRK]]
        return np.maximum(np.maximum(self.tnext, f), r).T

    @property
    def open_row(self):
        return self.bank[:, BK_OPEN_ROW]

    @property
    def pim_row(self):
        return self.bank[:, BK_PIM_ROW]

    @property
    def faw(self):
        return self.rank[:, RK_FAW : RK_FAW + 4]

    @property
    def faw_head(self):
        return self.rank[:, RK_FAW_HEAD]

    @property
    def faw_n(self):
        return self.rank[:, RK_FAW_N]


class PimBatch(NamedTuple):
    """One call's PIM command streams, in order per channel (sorted by channel)."""

    cmd: np.ndarray
    ch: np.ndarray
    rank: np.ndarray
    bg: np.ndarray
    ba: np.ndarray  # GWRITE only: the bank holding the source row
    row: np.ndarray
    k: np.ndarray  # COMPS_READRES: COMPs fused before the READRES
    dur: np.ndarray  # PIM_HEADER: cycles the announced GEMV holds its rows (refresh deadline)
    cycle: np.ndarray  # earliest issue, relative to the call's start
    issued: np.ndarray  # out: issue cycle
    done: np.ndarray  # out: cycle the command's effect is complete (results returned)
    begin: np.ndarray  # [ch] first command of the channel
    end: np.ndarray  # [ch] one past the last
    pc: np.ndarray  # [ch] next command to issue
    lb: np.ndarray  # [ch] the head command cannot issue before this cycle (when waiting)
    after: np.ndarray  # NPU task whose end the command waits for (-1: none)


class NpuTasks(NamedTuple):
    """NPU work coupled to the memory: tasks on resources (systolic arrays, vector units).

    Task g starts when its reads have returned, its resource is free, task dep[g] has
    ended and the cycle `ready[g]` (relative to the call's start) has come; it then holds
    its resource for cost[g] cycles. Tasks are scheduled in index order, so dep[g] < g.
    Requests and PIM commands can wait for a task's end (double buffering, data
    dependencies) through RQ_AFTER / PimBatch.after.
    """

    res: np.ndarray
    cost: np.ndarray
    dep: np.ndarray
    ready: np.ndarray
    reads_left: np.ndarray  # reads not yet returned (initialised from the requests)
    load_done: np.ndarray  # out: cycle the last read returned (-1: no reads)
    start: np.ndarray  # out
    end: np.ndarray  # out (-1 until known)
    res_free: np.ndarray  # [resource] cycle the resource is free; the extra last slot holds
    # the latest end so far, which a join task (resource -1) waits for
    busy: np.ndarray  # [resource] busy cycles
    next: np.ndarray  # [1] next task to schedule


# Front-end streams: inj[stream, IJ_*]. One stream offers requests in trace order (a
# DRAMsim3 trace replay: a request that cannot enter blocks the ones behind it); with one
# stream per channel (an NPU's DMA engines) only that channel's requests wait.
IJ_NEXT, IJ_END, IJ_BLOCKED, IJ_AT = 0, 1, 2, 3
# IJ_BLOCKED: 0 no, 1 waiting for an NPU task's end to be known, IJ_FULL + 2 ch + w: the
# next request found channel ch's read transaction queue (w = 0) / write buffer (1) full
IJ_FULL = 2


class DramBatch(NamedTuple):
    """One call's requests and their results: req[request, RQ_*] (-1 = not yet)."""

    req: np.ndarray
    write: np.ndarray  # [request] 1: a write
    inj: np.ndarray  # [stream, IJ_*]: next request, end, blocked flag, earliest next offer
    reads_per_task: np.ndarray  # [g]: requests feeding NPU task g (their RQ_GROUP), counted
    # from the contiguous input so the kernel need not sweep the request rows for it

    @property
    def added(self):  # cycle accepted by the controller
        return self.req[:, RQ_ADDED]

    @property
    def issued(self):  # cycle of the RD/WR command (-2: write merged into a pending one)
        return self.req[:, RQ_ISSUED]

    @property
    def done(self):  # cycle the read data returned / the write was acknowledged
        return self.req[:, RQ_DONE]


class CmdLog(NamedTuple):
    cycle: np.ndarray
    cmd: np.ndarray
    ch: np.ndarray
    rank: np.ndarray
    bg: np.ndarray
    ba: np.ndarray
    row: np.ndarray
    col: np.ndarray


def banks_per_channel(p: DramParams) -> int:
    return p.ranks * p.bankgroups * p.banks_per_group


def num_queues(p: DramParams) -> int:
    return banks_per_channel(p) if p.per_bank_queues else p.ranks


def new_state(p: DramParams) -> DramState:
    if p.ro_mask > KEY_ROW_MASK:
        raise ValueError(f"rows up to {p.ro_mask} do not fit a command-queue key ({KEY_ROW_MASK} at most)")
    if p.co_mask >= 1 << (63 - RID_BITS):
        raise ValueError(f"columns up to {p.co_mask} do not fit a command-queue item ({(1 << (63 - RID_BITS)) - 1} at most)")
    nch, nr = p.channels, p.ranks
    nb = nch * banks_per_channel(p)
    nq = num_queues(p)
    pending = nch * (p.trans_queue_size + p.write_buffer_size + nq * p.cmd_queue_size)
    rkeys, rvals = new_table(pending)
    wkeys, wvals = new_table(pending)
    first_ref = p.refresh_interval if p.refresh_policy != REFRESH_OFF else INF
    bank = np.zeros((nb, BK_COLS), np.int64)
    bank[:, BK_OPEN_ROW] = -1
    bank[:, BK_PIM_ROW] = -1
    local = np.arange(nb) % banks_per_channel(p)
    bank[:, BK_RANK] = local // (p.bankgroups * p.banks_per_group)
    bank[:, BK_BG] = local % (p.bankgroups * p.banks_per_group) // p.banks_per_group
    bank[:, BK_BA] = local % p.banks_per_group
    n_groups = nch * nr * p.bankgroups
    bank[:, BK_FBG] = np.arange(nb) // p.banks_per_group
    bank[:, BK_FRK] = n_groups + np.arange(nb) // (p.bankgroups * p.banks_per_group)
    queue = np.zeros((nch, nq, QU_ITEMS + 4 * p.cmd_queue_size), np.int64)
    chan = np.zeros((nch, CH_REFQ + 4 * nr), np.int64)
    chan[:, CH_QIDX] = 0  # DRAMsim3: queue_idx_ starts at 0 and is advanced before use
    chan[:, CH_NEXT_REF] = first_ref
    chan[:, CH_WAKE] = first_ref
    return DramState(
        glob=np.zeros(2, np.int64),
        bank=bank,
        tnext=np.zeros((NUM_CMDS, nb), np.int64),
        floor=np.zeros((NUM_CMDS, n_groups + nch * nr), np.int64),
        rank=np.zeros((nch * nr, RK_COLS), np.int64),
        chan=chan,
        queue=queue,
        tq=np.zeros((nch, 2, TQ_ITEMS + 4 * max(p.trans_queue_size, p.write_buffer_size)), np.int64),
        rkeys=rkeys,
        rvals=rvals,
        wkeys=wkeys,
        wvals=wvals,
        stats=np.zeros((nch, NUM_STATS), np.int64),
        lat_hist=np.zeros((nch, READ_LAT_BINS), np.int64),
        rule_plan=rule_plans(p),
    )


# A command's plan: for each kind of target (its rank's floor, its bank group's floor, its
# bank, the other banks of its bank group, the other bank groups' floors, the other ranks'
# floors) the (command, latency) pairs that raise it, no "no rule" entries left.
PL_OWN_RANK, PL_OWN_BG, PL_BANK, PL_SIBS, PL_OTHER_BGS, PL_OTHER_RANKS = range(6)
PL_KINDS = 6
PL_PAIRS = PL_KINDS + 1  # column of the first pair


def never_issued(p: DramParams) -> frozenset:
    """Commands the controller never issues under the row-buffer policy: the column commands
    with auto-precharge on an open page, the plain ones on a closed page (the queue search
    asks for RD / WR or RDA / WRA, never both). Their earliest cycles are not kept: a
    command's plan raises none of them, so each issue skips rules nothing reads."""
    return frozenset((RD, WR) if p.close_page else (RDA, WRA))


def rule_plans(p: DramParams) -> np.ndarray:
    """[cmd] -> PL_KINDS + 1 bounds, then pairs (n, latency): the pairs of kind k (PL_*) are
    pairs plan[cmd, k] .. plan[cmd, k + 1] - 1, for each command n that `cmd` constrains the
    latency to apply to its rank's floor, its bank group's floor, the issuing bank, the other
    banks of its bank group (one by one), the floors of the rank's other bank groups and the
    other ranks' floors. Targets that do not exist (one rank, one bank group, one bank per
    group) and latencies a wider floor already covers get no pair.

    With Lb, Lg, Lr, Lo the latencies of the rules (cmd, n) at the same bank, same bank
    group, same rank and the other ranks: the rank floor gets min(Lb, Lg, Lr), the bank
    group floor min(Lb, Lg), the other bank groups Lr, and the banks what the floors leave
    short. Every bank ends at exactly the largest latency of the rules that reach it (a
    floor is never above a rule of a bank it covers), so the cycles are those of raising
    each bank; raising takes a maximum, so the order of the pairs does not matter. Rules
    whose following command the policy never issues (``never_issued``) get no pair."""
    plan = np.zeros((NUM_CMDS, PL_PAIRS + 2 * PL_KINDS * p.n_timed), np.int64)
    never = never_issued(p)
    for cmd in range(NUM_CMDS):
        pairs = [[] for _ in range(PL_KINDS)]
        for n in range(p.n_timed):
            if n in never:
                continue
            lb, lg, lr, lo = (int(p.rel_lat[rel, cmd, n]) for rel in range(NUM_RELS))
            if max(lb, lg, lr, lo) == NO_RULE:
                continue
            fr = min(lb, lg, lr)
            fg = min(lb, lg)
            floor_own = max(fr, fg)
            lat = [NO_RULE] * PL_KINDS
            lat[PL_OWN_RANK] = fr
            lat[PL_OWN_BG] = fg if fg > fr else NO_RULE
            lat[PL_BANK] = lb if lb > floor_own else NO_RULE
            if p.banks_per_group > 1:
                lat[PL_SIBS] = lg if lg > floor_own else NO_RULE
            if p.bankgroups > 1:
                lat[PL_OTHER_BGS] = lr if lr > fr else NO_RULE
            if p.ranks > 1:
                lat[PL_OTHER_RANKS] = lo
            for k in range(PL_KINDS):
                if lat[k] != NO_RULE:
                    pairs[k].append((n, lat[k]))
        e = 0
        for k in range(PL_KINDS):
            plan[cmd, k] = e
            for n, lat in pairs[k]:
                plan[cmd, PL_PAIRS + 2 * e] = n
                plan[cmd, PL_PAIRS + 2 * e + 1] = lat
                e += 1
        plan[cmd, PL_KINDS] = e
    return plan


@kernel
def _fill(p, a, is_write, cycle, group, after, req, write, pos):
    """Fill the row of request j: row j, or, with per-channel positions pos (the first row
    of each channel's block), the next row of its channel's block (a stable counting sort
    by channel in the same pass)."""
    by_channel = pos.shape[0] > 0
    for j in range(a.shape[0]):
        x = a[j]
        i = j
        if by_channel:
            ch = (x >> p.ch_shift) & p.ch_mask
            i = pos[ch]
            pos[ch] += 1
        req[i, RQ_ADDR] = x
        req[i, RQ_ADDED] = -1
        req[i, RQ_ISSUED] = -1
        req[i, RQ_DONE] = -1
        req[i, RQ_DUP] = -1
        req[i, RQ_GROUP] = group[j] if group.shape[0] else -1
        req[i, RQ_CYCLE] = cycle[j]
        req[i, RQ_AFTER] = after[j] if after.shape[0] else -1
        write[i] = 1 if is_write[j] else 0


@kernel
def _count_channels(p, a, counts):
    for j in range(a.shape[0]):
        counts[(a[j] >> p.ch_shift) & p.ch_mask] += 1


@kernel
def _count_groups(group, counts):
    for j in range(group.shape[0]):
        if group[j] >= 0:
            counts[group[j]] += 1


def _line_aligned_table(n: int) -> np.ndarray:
    """An uninitialised [n, RQ_COLS] int64 table whose rows start on 64-byte lines."""
    buf = np.empty(n * RQ_COLS + 8, np.int64)
    skip = (-buf.ctypes.data % 64) // 8
    return buf[skip : skip + n * RQ_COLS].reshape(n, RQ_COLS)


class RequestBuffer:
    """Memory for request tables, reused by successive batches (``new_batch(buffer=)``): a
    batch taken from it is valid until the next one is taken. Writing into pages already
    mapped costs a fraction of a fresh table's (the kernel clears every new page)."""

    def __init__(self):
        self.req = _line_aligned_table(0)
        self.write = np.empty(0, np.int8)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.req) < n:
            self.req = self.write = None  # let the old memory go first
            self.req = _line_aligned_table(n)
            self.write = np.empty(n, np.int8)
        return self.req[:n], self.write[:n]


def decode(p: DramParams, addr) -> dict:
    """The address fields of byte addresses (numpy; the kernels decode them inline with
    ``_fields``): channel, rank, bank group, bank, row, column, global bank, command queue."""
    a = np.asarray(addr, np.int64)
    f = lambda shift, mask: (a >> shift) & mask  # noqa: E731
    ch, ra, bg, ba = f(p.ch_shift, p.ch_mask), f(p.ra_shift, p.ra_mask), f(p.bg_shift, p.bg_mask), f(p.ba_shift, p.ba_mask)
    local = (ra * p.bankgroups + bg) * p.banks_per_group + ba
    return dict(ch=ch, rank=ra, bg=bg, ba=ba, row=f(p.ro_shift, p.ro_mask), col=f(p.co_shift, p.co_mask),
                bank=ch * banks_per_channel(p) + local, queue=local if p.per_bank_queues else ra)


def new_batch(
    p: DramParams,
    addr: np.ndarray,
    is_write: np.ndarray,
    cycle: np.ndarray,
    group=None,
    after=None,
    per_channel: bool = False,
    buffer: RequestBuffer | None = None,
) -> DramBatch:
    """The request table of byte addresses (decoded as the requests are offered).

    per_channel: one front-end stream per channel (requests reordered by channel, order
    kept within a channel) instead of one stream in the given order. buffer: the table's
    memory (the previous batch taken from it is overwritten), else a new table."""
    a = np.ascontiguousarray(addr, dtype=np.int64)
    is_write = np.ascontiguousarray(np.asarray(is_write) != 0)
    cycle = np.ascontiguousarray(cycle, dtype=np.int64)
    none = np.zeros(0, np.int64)
    group = none if group is None else np.ascontiguousarray(group, dtype=np.int64)
    after = none if after is None else np.ascontiguousarray(after, dtype=np.int64)
    if per_channel:
        counts = np.zeros(p.channels, np.int64)
        _count_channels(p, a, counts)
        end = np.cumsum(counts)
        pos = end - counts
    if a.shape[0] > RID_MASK:
        raise ValueError(f"{a.shape[0]} requests in one batch: at most {RID_MASK}")
    if buffer is not None:
        req, write = buffer.take(a.shape[0])
    else:
        req = _line_aligned_table(a.shape[0])
        write = np.empty(a.shape[0], np.int8)
    # one row-major pass (numpy column assignments would sweep the whole array per column);
    # per channel, each request goes straight to its place in its channel's block
    _fill(p, a, is_write, cycle, group, after, req, write, pos if per_channel else none)
    if per_channel:
        inj = np.zeros((p.channels, 4), np.int64)
        inj[:, IJ_NEXT] = end - counts
        inj[:, IJ_END] = end
    else:
        inj = np.zeros((1, 4), np.int64)
        inj[0, IJ_END] = len(req)
    # requests feeding each task (np.bincount of the group >= 0, without temporaries)
    g_max = int(group.max()) if len(group) else -1
    reads_per_task = np.zeros(g_max + 1, np.int64)
    if g_max >= 0:
        _count_groups(group, reads_per_task)
    return DramBatch(req, write, inj, reads_per_task)


def new_pim_batch(
    p: DramParams, ch=(), cmd=(), rank=(), bg=(), ba=(), row=(), k=(), dur=(), cycle=(), after=None,
    presorted: bool = False,
) -> PimBatch:
    """PIM command streams; commands keep their order within a channel. presorted: the
    commands are already in channel order (then the columns are used as they are)."""
    ch = np.asarray(ch, np.int64)
    if after is None:
        after = np.full(len(ch), -1, np.int64)
    cols = (cmd, ch, rank, bg, ba, row, k, dur, cycle, after)
    if presorted or not len(ch):
        cols = [np.ascontiguousarray(x, np.int64) if len(ch) else np.zeros(0, np.int64) for x in cols]
    else:
        order = np.argsort(ch, kind="stable")
        cols = [np.asarray(x, np.int64)[order] for x in cols]
    after = cols.pop()
    n = len(ch)
    counts = np.bincount(cols[1], minlength=p.channels) if n else np.zeros(p.channels, np.int64)
    end = np.cumsum(counts).astype(np.int64)
    begin = end - counts
    return PimBatch(
        *cols, np.full(n, -1, np.int64), np.full(n, -1, np.int64), begin, end, begin.copy(),
        np.zeros(p.channels, np.int64), after,
    )


def new_npu_tasks(res=(), cost=(), dep=None, ready=None, n_resources: int = 1) -> NpuTasks:
    n = len(res)
    z = lambda: np.zeros(n, np.int64)  # noqa: E731
    return NpuTasks(
        res=np.asarray(res, np.int64),
        cost=np.asarray(cost, np.int64),
        dep=np.full(n, -1, np.int64) if dep is None else np.asarray(dep, np.int64),
        ready=z() if ready is None else np.asarray(ready, np.int64),
        reads_left=z(),
        load_done=np.full(n, -1, np.int64),
        start=np.full(n, -1, np.int64),
        end=np.full(n, -1, np.int64),
        res_free=np.zeros(n_resources + 1, np.int64),
        busy=np.zeros(n_resources + 1, np.int64),
        next=np.zeros(1, np.int64),
    )


def new_log(capacity: int) -> CmdLog:
    return CmdLog(*(np.zeros(capacity, np.int64) for _ in CmdLog._fields))


def new_ctl(start: int, max_inject: int, log_on: bool, move_delta: int = 0, move_below_row: int = 0,
            distinct: bool = False) -> np.ndarray:
    """Run control of one call. move_delta, move_below_row: each request whose address lies
    in a row below `move_below_row` enters `move_delta` bytes further (a request table
    lowered for one layer's weights run for another layer's); the table keeps the moved
    address, and a request's outputs (added, issued, done, next duplicate) are set anew when
    it is accepted, so one table can be run again without a copy.

    distinct: every request of the call has an address of its own (after the move). Then
    no read can join a pending one or be served from the write buffer, no write can merge
    into a pending one or wait for a read of its address, so the controller keeps no
    pending-address tables (their look-ups, on tables of every request the command queues
    can hold, missed the cache at each request). Only a caller that knows it may say so:
    with shared addresses the results would be wrong."""
    ctl = np.zeros(NUM_CTL, np.int64)
    ctl[C_DISTINCT] = 1 if distinct else 0
    ctl[C_MOVE_DELTA] = move_delta
    ctl[C_MOVE_BELOW_ROW] = move_below_row
    ctl[C_MAX_INJECT] = max_inject
    ctl[C_START] = start
    ctl[C_LOG_ON] = 1 if log_on else 0
    ctl[C_QUIET] = -1
    return ctl


# --------------------------------------------------------------------------- kernels


@kernel(inline="always")
def _window_take(row, head_col, items_col, k, n):
    """Take item k (of n) out of a window of pairs row[items_col + 2 * (head + i) + 0|1]
    whose head offset is row[head_col]: the shorter side moves one place (the items before
    k move back and the window starts one later, or the items after k move forward)."""
    h = row[head_col]
    base = items_col + 2 * h
    if n == 1:
        row[head_col] = 0
    elif 2 * k < n:
        for j in range(base + 2 * k - 1, base - 1, -1):
            row[j + 2] = row[j]
        row[head_col] = h + 1
    else:
        for j in range(base + 2 * k, base + 2 * n - 2):
            row[j] = row[j + 2]


@kernel(inline="always")
def _is_rw(cmd):
    return cmd == RD or cmd == WR or cmd == RDA or cmd == WRA


@kernel(inline="always")
def _faw_ready(p, s, rk):
    """Cycle from which a new ACT in rank rk satisfies tFAW."""
    if s.rank[rk, RK_FAW_N] < 4:
        return 0
    return s.rank[rk, RK_FAW + s.rank[rk, RK_FAW_HEAD]] + p.tFAW


@kernel(inline="always")
def _ready_at(bank, tnext, floor, cmd, gb):
    """Earliest issue cycle of `cmd` at bank gb: its own, its bank group's, its rank's."""
    t = tnext[cmd, gb]
    f = floor[cmd, bank[gb, BK_FBG]]
    if f > t:
        t = f
    f = floor[cmd, bank[gb, BK_FRK]]
    if f > t:
        t = f
    return t


@kernel(inline="always")
def _raise(a, n, i, t):
    if t > a[n, i]:
        a[n, i] = t


@kernel(inline="always")
def _apply_rules(p, s, ch, rank, bg, ba, cmd, clk):
    """Raise the earliest-issue cycles that `cmd` constrains, as its plan says
    (``rule_plans``): floors of bank groups and ranks, and single banks."""
    bpg = p.banks_per_group
    nbg = p.bankgroups
    rk = ch * p.ranks + rank
    grp = (rk * nbg + bg) * bpg  # the bank group's first bank
    me = grp + ba
    g0 = rk * nbg  # floor column of the rank's first bank group
    rcol = p.channels * p.ranks * nbg  # floor column of the channel's first rank...
    r0 = rcol + ch * p.ranks
    plan = s.rule_plan[cmd]
    for e in range(plan[PL_OWN_RANK], plan[PL_OWN_BG]):
        _raise(s.floor, plan[PL_PAIRS + 2 * e], r0 + rank, clk + plan[PL_PAIRS + 2 * e + 1])
    for e in range(plan[PL_OWN_BG], plan[PL_BANK]):
        _raise(s.floor, plan[PL_PAIRS + 2 * e], g0 + bg, clk + plan[PL_PAIRS + 2 * e + 1])
    for e in range(plan[PL_BANK], plan[PL_SIBS]):
        _raise(s.tnext, plan[PL_PAIRS + 2 * e], me, clk + plan[PL_PAIRS + 2 * e + 1])
    for e in range(plan[PL_SIBS], plan[PL_OTHER_BGS]):
        n = plan[PL_PAIRS + 2 * e]
        t = clk + plan[PL_PAIRS + 2 * e + 1]
        for tb in range(grp, grp + bpg):
            if tb != me:
                _raise(s.tnext, n, tb, t)
    for e in range(plan[PL_OTHER_BGS], plan[PL_OTHER_RANKS]):
        n = plan[PL_PAIRS + 2 * e]
        t = clk + plan[PL_PAIRS + 2 * e + 1]
        for g in range(nbg):
            if g != bg:
                _raise(s.floor, n, g0 + g, t)
    for e in range(plan[PL_OTHER_RANKS], plan[PL_KINDS]):
        n = plan[PL_PAIRS + 2 * e]
        t = clk + plan[PL_PAIRS + 2 * e + 1]
        for r in range(p.ranks):
            if r != rank:
                _raise(s.floor, n, r0 + r, t)


@kernel(inline="always")
def _log(ctl, log, clk, cmd, ch, rank, bg, ba, row, col):
    if ctl[C_LOG_ON] == 0:
        return
    n = ctl[C_LOG_N]
    log.cycle[n] = clk
    log.cmd[n] = cmd
    log.ch[n] = ch
    log.rank[n] = rank
    log.bg[n] = bg
    log.ba[n] = ba
    log.row[n] = row
    log.col[n] = col
    ctl[C_LOG_N] = n + 1


@kernel(inline="always")
def _read_returned(s, b, ch, rid, done):
    lat = done - b.req[rid, RQ_ADDED]
    s.stats[ch, S_READS_DONE] += 1
    s.stats[ch, S_READ_LATENCY_SUM] += lat
    k = lat // READ_LAT_BIN
    if k >= READ_LAT_BINS:
        k = READ_LAT_BINS - 1
    s.lat_hist[ch, k] += 1
    b.req[rid, RQ_DONE] = done



@kernel
def _npu_advance(nt, ctl):
    """Give start/end cycles to the tasks, in order, whose inputs are all known."""
    g = nt.next[0]
    n = nt.res.shape[0]
    while g < n:
        if nt.reads_left[g] > 0:
            break
        t = ctl[C_START] + nt.ready[g]
        if nt.load_done[g] > t:
            t = nt.load_done[g]
        r = nt.res[g]
        last = nt.res_free.shape[0] - 1
        if r < 0:
            r = last  # join: after every earlier task
        if nt.res_free[r] > t:
            t = nt.res_free[r]
        d = nt.dep[g]
        if d >= 0 and nt.end[d] > t:
            t = nt.end[d]
        e = t + nt.cost[g]
        nt.start[g] = t
        nt.end[g] = e
        nt.res_free[r] = e
        nt.busy[r] += nt.cost[g]
        if e > nt.res_free[last]:
            nt.res_free[last] = e
        if t + nt.cost[g] > ctl[C_END]:
            ctl[C_END] = t + nt.cost[g]
        ctl[C_NPU_PROGRESS] = 1
        g += 1
    nt.next[0] = g


@kernel(inline="always")
def _read_for_task(nt, ctl, g, done):
    if g < 0:
        return
    if done > nt.load_done[g]:
        nt.load_done[g] = done
    nt.reads_left[g] -= 1
    if nt.reads_left[g] == 0:
        _npu_advance(nt, ctl)


@kernel(inline="always")
def _reset_all_bounds(s, ch):
    """Every command queue of the channel must be scanned again (a refresh ended, PIM rows
    closed)."""
    nq = s.queue.shape[1]
    for qq in range(nq):
        s.queue[ch, qq, QU_LB] = 0
    s.chan[ch, CH_GATE_RD] = 0
    s.chan[ch, CH_GATE_WR] = 0
    if nq <= MASK_QUEUES:
        s.chan[ch, CH_QDIRTY] = (1 << nq) - 1


@kernel(inline="always")
def _count_hits(queue, ch, q, row):
    """QU_HITS of command queue q when `row` is its bank's open row (per-bank queues)."""
    base = QU_ITEMS + 2 * queue[ch, q, QU_HEAD]
    h = 0
    for j in range(queue[ch, q, QU_LEN]):
        key = queue[ch, q, base + 2 * j + 1]
        if (key >> 1) & KEY_ROW_MASK == row:
            h += 1 << (HIT_BITS * (key & 1))
    return h


@kernel(inline="always")
def _issue(p, s, b, nt, ctl, log, ch, cmd, gb, row, col, rid, q, k, clk):
    """Issue one normal DRAM command (request `rid` at queue position (q, k), or -1 for
    refresh / PIM housekeeping): results, statistics, timing, bank state, queues."""
    rank = s.bank[gb, BK_RANK]
    bg = s.bank[gb, BK_BG]
    ba = s.bank[gb, BK_BA]
    rk = ch * p.ranks + rank
    banks_in_channel = p.ranks * p.bankgroups * p.banks_per_group
    _log(ctl, log, clk, cmd, ch, rank, bg, ba, row, col)
    st = s.stats
    if cmd == RD or cmd == RDA:
        st[ch, S_RD if cmd == RD else S_RDA] += 1
        if s.bank[gb, BK_HITS] != 0:
            st[ch, S_READ_ROW_HITS] += 1
        st[ch, S_DATA_BUS_CYCLES] += p.burst_cycles
        done = clk + p.read_delay
        # the queued request is the first of its address (later reads of it were chained
        # behind it by _try_add): the whole chain returns
        if ctl[C_DISTINCT] == 0:
            ht_del(s.rkeys, s.rvals, b.req[rid, RQ_ADDR])
        r = rid
        while r >= 0:
            b.req[r, RQ_ISSUED] = clk
            _read_returned(s, b, ch, r, done)
            ctl[C_OUTSTANDING_READS] -= 1
            _read_for_task(nt, ctl, b.req[r, RQ_GROUP], done)
            r = b.req[r, RQ_DUP]
        if done > ctl[C_END]:
            ctl[C_END] = done
    elif cmd == WR or cmd == WRA:
        st[ch, S_WR if cmd == WR else S_WRA] += 1
        if s.bank[gb, BK_HITS] != 0:
            st[ch, S_WRITE_ROW_HITS] += 1
        st[ch, S_DATA_BUS_CYCLES] += p.burst_cycles
        st[ch, S_WRITES_ISSUED] += 1
        if ctl[C_DISTINCT] == 0:
            ht_del(s.wkeys, s.wvals, b.req[rid, RQ_ADDR])
        b.req[rid, RQ_ISSUED] = clk
        ctl[C_PENDING_WRITES] -= 1
        ctl[C_LAST_WRITE_ISSUE] = clk
    elif cmd == ACT:
        st[ch, S_ACT] += 1
        h = s.rank[rk, RK_FAW_HEAD]
        if s.rank[rk, RK_FAW_N] < 4:
            s.rank[rk, RK_FAW + (h + s.rank[rk, RK_FAW_N]) % 4] = clk
            s.rank[rk, RK_FAW_N] += 1
        else:
            s.rank[rk, RK_FAW + h] = clk
            s.rank[rk, RK_FAW_HEAD] = (h + 1) % 4
    elif cmd == PRE:
        st[ch, S_PRE] += 1
    elif cmd == REF:
        st[ch, S_REF] += 1

    _apply_rules(p, s, ch, rank, bg, ba, cmd, clk)

    if cmd == ACT:
        s.bank[gb, BK_OPEN_ROW] = row
        s.bank[gb, BK_HITS] = 0
        if s.rank[rk, RK_OPEN] == 0:
            s.rank[rk, RK_SINCE] = clk
        s.rank[rk, RK_OPEN] += 1
    elif cmd == RD or cmd == WR:
        s.bank[gb, BK_HITS] += 1
    elif cmd == RDA or cmd == WRA or cmd == PRE:
        s.bank[gb, BK_OPEN_ROW] = -1
        s.bank[gb, BK_HITS] = 0
        s.rank[rk, RK_OPEN] -= 1
        if s.rank[rk, RK_OPEN] == 0:
            st[ch, S_RANK_ACTIVE_CYCLES] += clk - s.rank[rk, RK_SINCE]
    elif cmd == REF:
        # the refresh of this rank is done: drop it from the refresh FIFO
        n = s.chan[ch, CH_REFQ_LEN]
        for i in range(n):
            if s.chan[ch, CH_REFQ + i] == rank:
                for j in range(i, n - 1):
                    s.chan[ch, CH_REFQ + j] = s.chan[ch, CH_REFQ + j + 1]
                s.chan[ch, CH_REFQ_LEN] = n - 1
                break
        s.chan[ch, CH_IN_REF] = 0

    if cmd == REF:
        _reset_all_bounds(s, ch)
    else:
        qb = gb - ch * banks_in_channel if p.per_bank_queues else rank
        s.queue[ch, qb, QU_LB] = 0
        if s.queue.shape[1] <= MASK_QUEUES:
            _ungate(s.chan, ch, qb)
            s.chan[ch, CH_QDIRTY] |= 1 << qb
        if p.per_bank_queues:
            # the bank's queue's hits on its open row (q == qb for a column command)
            if cmd == RD or cmd == WR:
                key = s.queue[ch, q, QU_ITEMS + 2 * (s.queue[ch, q, QU_HEAD] + k) + 1]
                s.queue[ch, q, QU_HITS] -= 1 << (HIT_BITS * (key & 1))
            elif cmd == ACT:
                s.queue[ch, qb, QU_HITS] = _count_hits(s.queue, ch, qb, row)
            else:
                s.queue[ch, qb, QU_HITS] = 0
    if _is_rw(cmd):
        n = s.queue[ch, q, QU_LEN]
        _window_take(s.queue[ch, q], QU_HEAD, QU_ITEMS, k, n)
        s.queue[ch, q, QU_LEN] = n - 1
        s.chan[ch, CH_CQ_TOTAL] -= 1
        s.chan[ch, CH_STUCK] = 0
        if n == 1 and s.queue.shape[1] <= MASK_QUEUES:
            s.chan[ch, CH_QMASK] &= ~(1 << q)
    if cmd != REF and p.per_bank_queues and (p.pim_dual or not p.pim_enabled) and s.queue.shape[1] <= MASK_QUEUES:
        qb = gb - ch * banks_in_channel
        if s.queue[ch, qb, QU_LEN] > 0:
            # the bank's queue was reset above; with the timing just raised, the least
            # earliest cycle of the commands the bank can take next bounds it instead (the
            # search at the next cycles would find nothing before it)
            lb = _bank_queue_bound(s, ch, gb, p.close_page, p.ranks, p.tFAW)
            s.queue[ch, qb, QU_LB] = lb
            s.chan[ch, CH_QDIRTY] &= ~(1 << qb)
            if lb < s.chan[ch, CH_MINLB]:
                s.chan[ch, CH_MINLB] = lb
    if rid >= 0:
        # the queue's item at k (the next one after a column command, else the one whose
        # row this ACT / PRE serves) is likely the next to issue there: with deep queues its
        # request row has long left the cache, so start loading it now
        n = s.queue[ch, q, QU_LEN]
        if n > 0:
            j = k if k < n else n - 1
            prefetch_row(b.req, s.queue[ch, q, QU_ITEMS + 2 * (s.queue[ch, q, QU_HEAD] + j)] & RID_MASK)


@kernel(inline="always")
def _bank_queue_bound(s, ch, gb, close_page, ranks, tfaw):
    """A ready bound of bank gb's command queue (per-bank queues) from the bank's state
    alone: a closed bank needs ACT (its timing and tFAW), an open one RD / WR (a hit) or PRE
    (a miss). Conditions (hits, arbitration, rows held by PIM) only delay a command, so the
    least of those cycles bounds every item; it holds until the bank or the queue changes,
    as every bound does. Only with dual PIM row buffers or none: a single one's G_ACT
    opens rows without resetting bounds."""
    if s.bank[gb, BK_OPEN_ROW] < 0:
        return _act_ready_at(s.bank, s.tnext, s.floor, s.rank, ch, ranks, tfaw, gb)
    t = _ready_at(s.bank, s.tnext, s.floor, PRE, gb)
    v = _ready_at(s.bank, s.tnext, s.floor, RDA if close_page else RD, gb)
    if v < t:
        t = v
    v = _ready_at(s.bank, s.tnext, s.floor, WRA if close_page else WR, gb)
    if v < t:
        t = v
    return t


@kernel
def _issue_call(p, s, b, nt, ctl, log, ch, cmd, gb, row, col, rid, q, k, clk):
    """_issue as a call (the PIM path's PRE/ACT), so it is inlined only in _tick_channel."""
    _issue(p, s, b, nt, ctl, log, ch, cmd, gb, row, col, rid, q, k, clk)


@kernel(inline="always")
def _first_ready_in_queue(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, per_bank):
    """DRAMsim3 GetFirstReadyInQueue: (command, position) or (-1, -1).

    When nothing is ready it records in q_lb a cycle before which no command of the queue
    can become ready by timing alone (at most the earliest such cycle); commands that are
    timing-ready but held (precharge arbitration, read-before-write) wait for a queue or
    bank change instead, which resets q_lb. (Hot: it takes only the arrays it reads, since
    every array passed to a kernel is copied into the call.) The requests are known by their
    keys (bank, row, read or write) and columns, never by their request rows. Items of one queue share channel and rank, so
    equal (bank group, bank) there means the same global bank.
    """
    n = queue[ch, q, QU_LEN]
    base = QU_ITEMS + 2 * queue[ch, q, QU_HEAD]
    if per_bank:
        return _first_ready_one_bank(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw,
                                     row_hit_cap, n, base)
    lb = INF
    for k in range(n):
        key = queue[ch, q, base + 2 * k + 1]
        gb = key >> KEY_BANK_SHIFT
        row = (key >> 1) & KEY_ROW_MASK
        # the command the request needs next, given its bank's state
        orow = bank[gb, BK_OPEN_ROW]
        if orow < 0:
            need = ACT
        elif row != orow:
            need = PRE
        elif key & 1:
            need = WRA if close_page else WR
        else:
            need = RDA if close_page else RD
        if need == ACT:
            bt = _act_ready_at(bank, tnext, floor, rank, ch, ranks, tfaw, gb)
        else:
            bt = _ready_at(bank, tnext, floor, need, gb)
        if clk < bt:
            if bt < lb:
                lb = bt
            continue
        if need == ACT:
            if bank[gb, BK_PIM_ROW] == row:
                continue  # the row is open in the PIM buffer: wait for its PIM_PRECHARGE
        elif need == PRE:
            # ArbitratePrecharge: no earlier command to this bank, and either no pending
            # hit on the open row behind it or the row-hit cap reached.
            blocked = False
            for j in range(k):
                if queue[ch, q, base + 2 * j + 1] >> KEY_BANK_SHIFT == gb:
                    blocked = True
                    break
            if blocked:
                continue
            hits = False
            for j in range(k, n):
                k2 = queue[ch, q, base + 2 * j + 1]
                if k2 >> KEY_BANK_SHIFT == gb and (k2 >> 1) & KEY_ROW_MASK == orow:
                    hits = True
                    break
            if hits and bank[gb, BK_HITS] < row_hit_cap:
                continue
        elif need == WR or need == WRA:
            if _rw_dependency(queue, ch, q, base, k, key):
                continue
        return need, k
    queue[ch, q, QU_LB] = lb
    return -1, -1


@kernel(inline="always")
def _rw_dependency(queue, ch, q, base, k, key):
    """HasRWDependency: an earlier read of the same location (bank, row, column) goes first."""
    rkey = key - 1  # a read of the same bank and row
    for j in range(k):
        if queue[ch, q, base + 2 * j + 1] == rkey:
            if queue[ch, q, base + 2 * j] >> RID_BITS == queue[ch, q, base + 2 * k] >> RID_BITS:
                return True  # same column
    return False


@kernel(inline="always")
def _act_ready_at(bank, tnext, floor, rank, ch, ranks, tfaw, gb):
    """Earliest cycle of an ACT at bank gb: its timing rules and its rank's tFAW window."""
    bt = _ready_at(bank, tnext, floor, ACT, gb)
    rk = ch * ranks + bank[gb, BK_RANK]
    if rank[rk, RK_FAW_N] >= 4:
        f = rank[rk, RK_FAW + rank[rk, RK_FAW_HEAD]] + tfaw
        if f > bt:
            bt = f
    return bt


@kernel(inline="always")
def _first_ready_one_bank(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, n, base):
    """_first_ready_in_queue for a per-bank queue: every item goes to one bank, so an item
    needs ACT (bank closed), PRE (a miss) or RD/WR (a hit), with one earliest cycle each.
    A miss behind the first item is always held (ArbitratePrecharge: an earlier command to
    its bank), so only hits are searched past the first item, and only when their timing
    is met and the queue holds hits of that kind (QU_HITS): a queue waiting on timing costs
    O(1). The bound left when nothing is ready is the least cycle of the commands the
    queue can use (PRE only when the first item's precharge is not held, RD / WR only with
    read / write hits), so the channel is not woken for a command nothing waits for; what
    decides (hits, the open row, the bank's hit count) changes only with an issue at the
    bank or a new item, both of which reset the bound."""
    gb = ch * queue.shape[1] + q  # (the bank of every item: no load of an item first)
    orow = bank[gb, BK_OPEN_ROW]
    if orow < 0:
        bt = _act_ready_at(bank, tnext, floor, rank, ch, ranks, tfaw, gb)
        if clk < bt:
            queue[ch, q, QU_LB] = bt
            if queue.shape[1] <= MASK_QUEUES:
                _ungate(chan, ch, q)
            return -1, -1
        prow = bank[gb, BK_PIM_ROW]
        for k in range(n):
            if (queue[ch, q, base + 2 * k + 1] >> 1) & KEY_ROW_MASK != prow:
                return ACT, k
        queue[ch, q, QU_LB] = INF  # rows open in the PIM buffer: wait for PIM_PRECHARGE
        if queue.shape[1] <= MASK_QUEUES:
            _ungate(chan, ch, q)
        return -1, -1
    rd = RDA if close_page else RD
    wr = WRA if close_page else WR
    hits = queue[ch, q, QU_HITS]
    # a precharge only ever serves the first item, when it is a miss and no hit on the open
    # row comes first (row-hit cap)
    t_pre = INF
    if (hits == 0 or bank[gb, BK_HITS] >= row_hit_cap) and (queue[ch, q, base + 1] >> 1) & KEY_ROW_MASK != orow:
        t_pre = _ready_at(bank, tnext, floor, PRE, gb)
        if clk >= t_pre:
            return PRE, 0
    t_rd = _ready_at(bank, tnext, floor, rd, gb) if hits & HIT_MASK else INF
    t_wr = _ready_at(bank, tnext, floor, wr, gb) if hits >> HIT_BITS else INF
    rd_ok = clk >= t_rd
    wr_ok = clk >= t_wr
    if rd_ok or wr_ok:
        for k in range(n):
            key = queue[ch, q, base + 2 * k + 1]
            if (key >> 1) & KEY_ROW_MASK != orow:
                continue
            if key & 1:
                if wr_ok and not _rw_dependency(queue, ch, q, base, k, key):
                    return wr, k
            elif rd_ok:
                return rd, k
    # nothing ready: the least of the cycles still to come (INF: none) bounds every item's
    lb = t_pre
    if not rd_ok and t_rd < lb:
        lb = t_rd
    if not wr_ok and t_wr < lb:
        lb = t_wr
    queue[ch, q, QU_LB] = lb
    # the gate: with no precharge to make and hits of one kind only, the queue can use that
    # column command alone, and it cannot issue while its rank's floor for it is ahead
    if queue.shape[1] <= MASK_QUEUES:
        _ungate(chan, ch, q)
        if t_pre == INF:
            if t_wr == INF:
                chan[ch, CH_GATE_RD] |= 1 << q
            elif t_rd == INF and not wr_ok:
                chan[ch, CH_GATE_WR] |= 1 << q
    return -1, -1


@kernel(inline="always")
def _ungate(chan, ch, q):
    """Queue q has no gate (its bound was reset, or its search set none)."""
    chan[ch, CH_GATE_RD] &= ~(1 << q)
    chan[ch, CH_GATE_WR] &= ~(1 << q)


@kernel(inline="always")
def _held(floor, chan, ch, cand, clk, ranks, per_rank_q, rd, wr):
    """The gated queues among `cand` that cannot issue at clk, and the least cycle at which
    one of them may (INF: none): per rank, those gated on its floor for RD (`rd`) or WR
    (`wr`) while that floor is ahead. A gate was set by the search that set its queue's
    bound, and any change at the queue or its bank since (an item joining that can make a
    command ready, an issue at the bank, a refresh, PIM rows closing) cleared it; a rank's
    floor only rises, while other banks issue, so a search would find nothing before it. One
    floor per rank and command stands for all its gated queues (a rank's banks take turns on
    its data bus: each column command raises the floor the others wait on)."""
    held = 0
    least = INF
    g_rd = chan[ch, CH_GATE_RD] & cand
    g_wr = chan[ch, CH_GATE_WR] & cand
    if (g_rd | g_wr) != 0:
        col = floor.shape[1] - chan.shape[0] * ranks + ch * ranks  # the channel's first rank
        ones = (1 << per_rank_q) - 1
        for r in range(ranks):
            mine = ones << (r * per_rank_q)
            if g_rd & mine:
                f = floor[rd, col + r]
                if f > clk:
                    held |= g_rd & mine
                    if f < least:
                        least = f
            if g_wr & mine:
                f = floor[wr, col + r]
                if f > clk:
                    held |= g_wr & mine
                    if f < least:
                        least = f
    return held, least


@kernel
def _first_ready_call(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, per_bank):
    """_first_ready_in_queue as a call, for the rare channels with over MASK_QUEUES queues."""
    return _first_ready_in_queue(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, per_bank)


@kernel(inline="always")
def _queue_in_ref(p, s, ch, q):
    if s.chan[ch, CH_IN_REF] == 0:
        return False
    if p.per_bank_queues:
        return q // (p.bankgroups * p.banks_per_group) == s.chan[ch, CH_REF_RANK]
    return q == s.chan[ch, CH_REF_RANK]


@kernel(inline="always")
def _scan_queues(bank, tnext, floor, rank, chan, queue, ctl, ch, clk, close_page, ranks, tfaw, row_hit_cap, per_rank_q, per_bank):
    """DRAMsim3 GetCommandToIssue: round-robin over the command queues; (cmd, queue, pos).

    per_rank_q: command queues per rank (the queues a refresh of that rank skips).
    A queue is looked at only if it is non-empty and its ready bound has come; with the
    bitmasks (MASK_QUEUES) only the non-empty queues are visited, and before the channel's
    least bound (CH_MINLB) only those whose bound was reset (CH_QDIRTY)."""
    nq = queue.shape[1]
    in_ref = chan[ch, CH_IN_REF]
    ref_rank = chan[ch, CH_REF_RANK]
    q = chan[ch, CH_QIDX]
    if nq > MASK_QUEUES:
        for _ in range(nq):
            q += 1
            if q == nq:
                q = 0
            if queue[ch, q, QU_LEN] == 0 or queue[ch, q, QU_LB] > clk:
                continue
            if in_ref != 0 and q // per_rank_q == ref_rank:
                continue
            need, k = _first_ready_call(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, per_bank)
            if need >= 0:
                chan[ch, CH_QIDX] = q
                return need, q, k
        return -1, -1, -1
    live = chan[ch, CH_QMASK]
    if in_ref != 0:
        live &= ~(((1 << per_rank_q) - 1) << (ref_rank * per_rank_q))
    full = clk >= chan[ch, CH_MINLB]
    least = INF
    if full:
        cand = live
        if per_bank:
            # (a queue with a gate has been searched since its bound's reset: never dirty)
            held, least = _held(floor, chan, ch, cand, clk, ranks, per_rank_q, RDA if close_page else RD,
                                WRA if close_page else WR)
            if held != 0:
                ctl[C_GATED] += 1
                cand &= ~held
    else:
        cand = live & chan[ch, CH_QDIRTY]
    start = q + 1
    if start == nq:
        start = 0
    # round robin from `start`: the candidates at or above it, then those below it
    upper = cand & ~((1 << start) - 1)
    lower = cand & ((1 << start) - 1)
    for part in range(2):
        m = upper if part == 0 else lower
        while m != 0:
            q = ctz(m)
            m &= m - 1
            lbq = queue[ch, q, QU_LB]
            if lbq > clk:
                if lbq < least:
                    least = lbq
                continue
            ctl[C_SEARCHES] += 1
            need, k = _first_ready_in_queue(bank, tnext, floor, rank, chan, queue, ch, q, clk, close_page, ranks, tfaw, row_hit_cap, per_bank)
            if need >= 0:
                chan[ch, CH_QIDX] = q
                if full:
                    # the queues not reached keep their bounds: with those (and the held
                    # queues' floors), the least bound of every live queue but q (the issue
                    # resets q's bound and marks it, as _tick_channel does when it does not
                    # issue it), so the next tick need not look at every queue again
                    rest = m | (lower if part == 0 else 0)
                    while rest != 0:
                        q2 = ctz(rest)
                        rest &= rest - 1
                        if queue[ch, q2, QU_LB] < least:
                            least = queue[ch, q2, QU_LB]
                    chan[ch, CH_MINLB] = least
                elif least < chan[ch, CH_MINLB]:
                    chan[ch, CH_MINLB] = least  # the queues cleaned on the way
                return need, q, k
            chan[ch, CH_QDIRTY] &= ~(1 << q)
            lbq = queue[ch, q, QU_LB]
            if lbq < least:
                least = lbq
    if full:
        chan[ch, CH_MINLB] = least  # every live queue was looked at
    elif least < chan[ch, CH_MINLB]:
        chan[ch, CH_MINLB] = least
    return -1, -1, -1


@kernel(inline="always")
def _command_to_issue(p, s, b, ctl, ch, clk):
    per_rank_q = p.bankgroups * p.banks_per_group if p.per_bank_queues else 1
    return _scan_queues(s.bank, s.tnext, s.floor, s.rank, s.chan, s.queue, ctl, ch, clk, p.close_page, p.ranks,
                        p.tFAW, p.row_hit_cap, per_rank_q, p.per_bank_queues)


@kernel(inline="always")
def _finish_refresh(p, s, ch, clk):
    """DRAMsim3 FinishRefresh: a precharge of an open bank, the refresh, or nothing."""
    rank = s.chan[ch, CH_REFQ + 0]
    if s.chan[ch, CH_IN_REF] == 0:
        s.chan[ch, CH_IN_REF] = 1
        s.chan[ch, CH_REF_RANK] = rank
    if s.rank[ch * p.ranks + rank, RK_PIM_OPEN] > 0:
        return -1, -1  # a GEMV holds PIM rows: its PIM_PRECHARGE comes first
    per_rank = p.bankgroups * p.banks_per_group
    base = (ch * p.ranks + rank) * per_rank
    ready = 0
    for i in range(per_rank):
        gb = base + i
        need = PRE if s.bank[gb, BK_OPEN_ROW] >= 0 else REF
        if clk < _ready_at(s.bank, s.tnext, s.floor, need, gb):
            continue
        if need == PRE:
            return PRE, gb
        ready += 1
    if ready == per_rank:
        return REF, base
    return -1, -1


MOVED_NONE, MOVED_ONE, MOVED_STOPPED = 0, 1, 2


@kernel(inline="always")
def _key_queue(p, s, ch, key):
    """The command queue of a request with this key (its bank's, or its rank's)."""
    gb = key >> KEY_BANK_SHIFT
    if p.per_bank_queues:
        return gb - ch * (p.ranks * p.bankgroups * p.banks_per_group)
    return s.bank[gb, BK_RANK]


@kernel(inline="always")
def _bound_stands(p, s, ch, q, n, key):
    """Whether per-bank command queue q (n items) keeps its ready bound when a read with
    this key joins it at the end (else the bound is reset and the queue searched again).

    A bound is set by a search that found nothing (``_first_ready_one_bank``); every later
    change at the bank (an issue there, a refresh, PIM rows closing) has reset it, so the
    bank's row and hit count are those the search saw and its timing can only have
    risen. The new read, behind n >= 1 items, cannot make a command ready earlier when
    the bank is closed (the bound is the ACT's timing; INF, rows held by PIM, is not
    kept), when it misses the open row (a precharge serves the first item only) or when
    it hits the open row and read hits were already queued (their RD bound counts). A
    write can release a held one (no read of its location before it): never kept. With
    a single PIM row buffer G_ACT opens rows without a reset: never kept."""
    if not p.per_bank_queues or n == 0 or key & 1 or (p.pim_enabled and not p.pim_dual):
        return False
    lb = s.queue[ch, q, QU_LB]
    if lb == 0 or lb >= INF:
        return False
    orow = s.bank[key >> KEY_BANK_SHIFT, BK_OPEN_ROW]
    if orow < 0 or (key >> 1) & KEY_ROW_MASK != orow:
        return True
    return (s.queue[ch, q, QU_HITS] & HIT_MASK) != 0


@kernel(inline="always")
def _move_one(p, s, b, ch, writes, distinct):
    """Move the first transaction of the read queue (writes=0) or write buffer (writes=1)
    whose command queue has room. A write with a pending read of its address stops there."""
    if s.chan[ch, CH_STUCK] & (1 << writes):
        return MOVED_NONE
    n = s.chan[ch, CH_WB_LEN] if writes else s.chan[ch, CH_RQ_LEN]
    h = s.tq[ch, writes, TQ_HEAD]
    base = TQ_ITEMS + 2 * h
    for i in range(n):
        key = s.tq[ch, writes, base + 2 * i + 1]
        q = _key_queue(p, s, ch, key)
        if s.queue[ch, q, QU_LEN] >= p.cmd_queue_size:
            continue
        w = s.tq[ch, writes, base + 2 * i]
        if writes:
            if distinct == 0 and ht_get(s.rkeys, s.rvals, b.req[w & RID_MASK, RQ_ADDR]) >= 0:
                return MOVED_STOPPED
            s.chan[ch, CH_DRAINING] -= 1
        _window_take(s.tq[ch, writes], TQ_HEAD, TQ_ITEMS, i, n)
        if writes:
            s.chan[ch, CH_WB_LEN] = n - 1
        else:
            s.chan[ch, CH_RQ_LEN] = n - 1
        h = s.queue[ch, q, QU_HEAD]
        nq_len = s.queue[ch, q, QU_LEN]
        if 2 * (h + nq_len) + QU_ITEMS >= s.queue.shape[2]:
            # the window reached the end: move the items to the front
            for j in range(2 * nq_len):
                s.queue[ch, q, QU_ITEMS + j] = s.queue[ch, q, QU_ITEMS + 2 * h + j]
            h = 0
            s.queue[ch, q, QU_HEAD] = 0
        at = QU_ITEMS + 2 * (h + nq_len)
        s.queue[ch, q, at] = w
        s.queue[ch, q, at + 1] = key
        stands = _bound_stands(p, s, ch, q, nq_len, key)
        if p.per_bank_queues and (key >> 1) & KEY_ROW_MASK == s.bank[key >> KEY_BANK_SHIFT, BK_OPEN_ROW]:
            s.queue[ch, q, QU_HITS] += 1 << (HIT_BITS * (key & 1))
        s.queue[ch, q, QU_LEN] += 1
        s.chan[ch, CH_CQ_TOTAL] += 1
        if not stands:
            s.queue[ch, q, QU_LB] = 0
            if s.queue.shape[1] <= MASK_QUEUES:
                _ungate(s.chan, ch, q)
                s.chan[ch, CH_QMASK] |= 1 << q
                s.chan[ch, CH_QDIRTY] |= 1 << q
        return MOVED_ONE
    s.chan[ch, CH_STUCK] |= 1 << writes
    return MOVED_NONE


@kernel(inline="always")
def _schedule_transaction(p, s, b, ctl, ch):
    """DRAMsim3 ScheduleTransaction: move one transaction into its command queue.

    One departure: when a drain stops at a write whose address has a pending read ("reads
    first"), the read queue is served in the same cycle. DRAMsim3 moves nothing then and
    restarts the drain next cycle, so with a full write buffer it never schedules that read
    again (a livelock: its reads never return); elsewhere the two agree.
    """
    wl = s.chan[ch, CH_WB_LEN]
    if s.chan[ch, CH_DRAINING] == 0 and wl > 0:
        if (
            wl >= p.write_buffer_size
            or (wl > p.write_drain_threshold and s.chan[ch, CH_CQ_TOTAL] == 0)
            or s.glob[G_FLUSH] != 0
        ):
            s.chan[ch, CH_DRAINING] = wl
    if s.chan[ch, CH_DRAINING] > 0:
        moved = _move_one(p, s, b, ch, 1, ctl[C_DISTINCT])
        if moved != MOVED_STOPPED:
            return moved == MOVED_ONE
        s.chan[ch, CH_DRAINING] = 0  # the pending read goes first
        _move_one(p, s, b, ch, 0, ctl[C_DISTINCT])
        return True
    return _move_one(p, s, b, ch, 0, ctl[C_DISTINCT]) == MOVED_ONE


@kernel(inline="always")
def _bank_ready(bank, tnext, floor, first, count, cmd):
    """Latest earliest-issue cycle of `cmd` over `count` banks from `first`."""
    t = 0
    for i in range(count):
        v = _ready_at(bank, tnext, floor, cmd, first + i)
        if v > t:
            t = v
    return t


@kernel
def _hold_pim_units(p, s, ch, rank, until):
    """COMPS_READRES keeps the rank's PIM units busy until `until`."""
    col = p.channels * p.ranks * p.bankgroups + ch * p.ranks + rank  # the rank's floor
    for c in (COMP, READRES, COMPS_READRES, PIM_PRECHARGE):
        if s.floor[c, col] < until:
            s.floor[c, col] = until


@kernel(inline="always")
def _pim_issue(p, s, pb, ctl, log, ch, i, clk):
    """Issue PIM command i of the batch: results, statistics, timing, PIM row state."""
    cmd = pb.cmd[i]
    rank = pb.rank[i]
    bg = pb.bg[i]
    bpg = p.banks_per_group
    per_rank = p.bankgroups * bpg
    rk = ch * p.ranks + rank
    base = rk * per_rank
    st = s.stats
    _log(ctl, log, clk, cmd, ch, rank, bg, pb.ba[i], pb.row[i], pb.k[i])
    done = clk
    if cmd == PIM_HEADER:
        st[ch, S_PIM_HEADER] += 1
        if s.chan[ch, CH_PIM_MODE] == 0:
            s.chan[ch, CH_PIM_MODE] = 1
            s.chan[ch, CH_PIM_SINCE] = clk
    elif cmd == GWRITE:
        st[ch, S_GWRITE] += 1
        st[ch, S_DATA_BUS_CYCLES] += p.gwrite_cycles
        done = clk + p.gwrite_cycles
    elif cmd == G_ACT:
        st[ch, S_G_ACT] += 1
        row = pb.row[i]
        for b in range(bpg):
            gb = base + bg * bpg + b
            s.bank[gb, BK_PIM_ROW] = row
            s.rank[rk, RK_PIM_OPEN] += 1
            if not p.pim_dual:
                # Newton: the PIM row lives in the normal row buffer
                s.bank[gb, BK_OPEN_ROW] = row
                s.bank[gb, BK_HITS] = 0
                if p.per_bank_queues:
                    qb = gb - ch * per_rank * p.ranks
                    s.queue[ch, qb, QU_HITS] = _count_hits(s.queue, ch, qb, row)
                if s.rank[rk, RK_OPEN] == 0:
                    s.rank[rk, RK_SINCE] = clk
                s.rank[rk, RK_OPEN] += 1
    elif cmd == COMP or cmd == READRES or cmd == COMPS_READRES:
        if cmd == COMP:
            st[ch, S_COMP] += 1
            st[ch, S_PIM_COMPS] += 1
            done = clk + p.comp_cycles
        elif cmd == READRES:
            st[ch, S_READRES] += 1
            st[ch, S_DATA_BUS_CYCLES] += p.burst_cycles
            done = clk + p.read_delay
        else:
            k = pb.k[i]
            st[ch, S_COMPS_READRES] += 1
            st[ch, S_PIM_COMPS] += k
            st[ch, S_DATA_BUS_CYCLES] += p.burst_cycles
            kk = k if k > p.comps_min_k else p.comps_min_k
            _hold_pim_units(p, s, ch, rank, clk + p.comp_cycles * (kk + 1))
            done = clk + p.comp_cycles * kk + p.read_delay
    elif cmd == PIM_PRECHARGE:
        st[ch, S_PIM_PRECHARGE] += 1
        for b in range(bpg):
            gb = base + bg * bpg + b
            if s.bank[gb, BK_PIM_ROW] >= 0:
                s.bank[gb, BK_PIM_ROW] = -1
                s.rank[rk, RK_PIM_OPEN] -= 1
                if not p.pim_dual:
                    s.bank[gb, BK_OPEN_ROW] = -1
                    s.bank[gb, BK_HITS] = 0
                    if p.per_bank_queues:
                        s.queue[ch, gb - ch * per_rank * p.ranks, QU_HITS] = 0
                    s.rank[rk, RK_OPEN] -= 1
                    if s.rank[rk, RK_OPEN] == 0:
                        st[ch, S_RANK_ACTIVE_CYCLES] += clk - s.rank[rk, RK_SINCE]
        # rows and (single buffer) the whole channel come back to the normal scheduler
        _reset_all_bounds(s, ch)
        if s.chan[ch, CH_PIM_MODE] != 0:
            still_open = 0
            for r in range(p.ranks):
                still_open += s.rank[ch * p.ranks + r, RK_PIM_OPEN]
            if still_open == 0:
                s.chan[ch, CH_PIM_MODE] = 0
                st[ch, S_PIM_BUSY_CYCLES] += clk - s.chan[ch, CH_PIM_SINCE]
                if not p.pim_dual:
                    st[ch, S_PIM_BLOCKED_CYCLES] += clk - s.chan[ch, CH_PIM_SINCE]
    if cmd != PIM_HEADER:
        # the timing rules (raises only, so their order among the updates above is free):
        # GWRITE at its bank, G_ACT / PIM_PRECHARGE at a bank group, the rest rank-wide
        rbg = bg if cmd == GWRITE or cmd == G_ACT or cmd == PIM_PRECHARGE else 0
        rba = pb.ba[i] if cmd == GWRITE else 0
        _apply_rules(p, s, ch, rank, rbg, rba, cmd, clk)
    pb.issued[i] = clk
    pb.done[i] = done
    if done > ctl[C_END]:
        ctl[C_END] = done
    pb.pc[ch] = i + 1


@kernel(inline="always")
def _pim_step(p, s, b, pb, nt, ctl, log, ch, clk):
    """Advance the channel's PIM stream by at most one bus command at clk.

    Returns True if a command issued on the command bus (then no normal command issues
    this cycle). PIM_HEADER takes no bus slot. GWRITE opens its source row and G_ACT
    closes conflicting normal rows first, with ordinary PRE/ACT commands. When the head
    command must wait, pb.lb[ch] holds the cycle it may issue (INF: waits for an event).
    """
    bpg = p.banks_per_group
    per_rank = p.bankgroups * bpg
    while True:
        i = pb.pc[ch]
        pb.lb[ch] = INF
        if i >= pb.end[ch]:
            return False
        t0 = pb.cycle[i] + ctl[C_START]
        a = pb.after[i]
        if a >= 0:
            if nt.end[a] < 0:
                return False  # waits for an NPU task (woken when tasks progress)
            if nt.end[a] > t0:
                t0 = nt.end[a]
        if clk < t0:
            pb.lb[ch] = t0
            return False
        cmd = pb.cmd[i]
        rank = pb.rank[i]
        base = (ch * p.ranks + rank) * per_rank
        if cmd == PIM_HEADER:
            # refresh deadline: never start a GEMV that a refresh would cut through
            if s.chan[ch, CH_REFQ_LEN] > 0:
                return False
            if (
                p.refresh_policy != REFRESH_OFF
                and clk + pb.dur[i] > s.chan[ch, CH_NEXT_REF]
                and pb.dur[i] <= p.refresh_interval
            ):
                pb.lb[ch] = s.chan[ch, CH_NEXT_REF]
                return False
            t = clk  # takes no bus slot: the next command may follow in the same cycle
        elif cmd == GWRITE:
            gb = base + pb.bg[i] * bpg + pb.ba[i]
            row = pb.row[i]
            orow = s.bank[gb, BK_OPEN_ROW]
            if orow != row:
                if orow >= 0:
                    t = _ready_at(s.bank, s.tnext, s.floor, PRE, gb)
                    if clk < t:
                        pb.lb[ch] = t
                        return False
                    _issue_call(p, s, b, nt, ctl, log, ch, PRE, gb, orow, 0, -1, -1, -1, clk)
                    return True
                t = _ready_at(s.bank, s.tnext, s.floor, ACT, gb)
                f = _faw_ready(p, s, ch * p.ranks + rank)
                if f > t:
                    t = f
                if clk < t:
                    pb.lb[ch] = t
                    return False
                _issue_call(p, s, b, nt, ctl, log, ch, ACT, gb, row, 0, -1, -1, -1, clk)
                return True
            t = _ready_at(s.bank, s.tnext, s.floor, GWRITE, gb)
        elif cmd == G_ACT:
            first = base + pb.bg[i] * bpg
            row = pb.row[i]
            lb = INF
            for bb in range(bpg):
                gb = first + bb
                orow = s.bank[gb, BK_OPEN_ROW]
                if orow >= 0 and (orow == row or not p.pim_dual):
                    # the normal row buffer must give the row (dual) or the bank (single) up
                    t = _ready_at(s.bank, s.tnext, s.floor, PRE, gb)
                    if clk >= t:
                        _issue_call(p, s, b, nt, ctl, log, ch, PRE, gb, orow, 0, -1, -1, -1, clk)
                        return True
                    if t < lb:
                        lb = t
            if lb < INF:
                pb.lb[ch] = lb
                return False
            t = _bank_ready(s.bank, s.tnext, s.floor, first, bpg, G_ACT)
        elif cmd == PIM_PRECHARGE:
            t = _bank_ready(s.bank, s.tnext, s.floor, base + pb.bg[i] * bpg, bpg, PIM_PRECHARGE)
        else:  # COMP, READRES, COMPS_READRES: every bank of the rank
            t = _bank_ready(s.bank, s.tnext, s.floor, base, per_rank, cmd)
        if clk < t:
            pb.lb[ch] = t
            return False
        _pim_issue(p, s, pb, ctl, log, ch, i, clk)  # the one call site: inlined
        if cmd != PIM_HEADER:
            return True


@kernel(inline="always")
def _queue_item(s, ch, q, k):
    """Item k of command queue q: request id, global bank, row, column."""
    at = QU_ITEMS + 2 * (s.queue[ch, q, QU_HEAD] + k)
    w = s.queue[ch, q, at]
    key = s.queue[ch, q, at + 1]
    return w & RID_MASK, key >> KEY_BANK_SHIFT, (key >> 1) & KEY_ROW_MASK, w >> RID_BITS


@kernel(inline="always")
def _tick_channel(p, s, b, pb, nt, ctl, log, ch, clk):
    """One controller cycle of one channel. Returns True if its state changed."""
    if p.refresh_policy != REFRESH_OFF:
        while clk >= s.chan[ch, CH_NEXT_REF]:
            if p.refresh_policy == REFRESH_RANK_STAGGERED:
                s.chan[ch, CH_REFQ + s.chan[ch, CH_REFQ_LEN]] = s.chan[ch, CH_REF_NEXT_RANK]
                s.chan[ch, CH_REFQ_LEN] += 1
                s.chan[ch, CH_REF_NEXT_RANK] = (s.chan[ch, CH_REF_NEXT_RANK] + 1) % p.ranks
            else:
                for r in range(p.ranks):
                    s.chan[ch, CH_REFQ + s.chan[ch, CH_REFQ_LEN]] = r
                    s.chan[ch, CH_REFQ_LEN] += 1
            s.chan[ch, CH_NEXT_REF] += p.refresh_interval
    changed = False
    cmd = -1
    gb = -1
    row = 0
    col = 0
    rid = -1
    q = -1
    k = -1
    if s.chan[ch, CH_REFQ_LEN] > 0:
        was_in_ref = s.chan[ch, CH_IN_REF]
        cmd, gb = _finish_refresh(p, s, ch, clk)
        changed = was_in_ref != s.chan[ch, CH_IN_REF]
        if cmd >= 0:
            row = s.bank[gb, BK_OPEN_ROW]
    if cmd < 0 and pb.pc[ch] < pb.end[ch]:
        pc0 = pb.pc[ch]
        if _pim_step(p, s, b, pb, nt, ctl, log, ch, clk):
            return True
        changed = pb.pc[ch] != pc0
    if cmd < 0 and (p.pim_dual or s.chan[ch, CH_PIM_MODE] == 0):
        cmd, q, k = _command_to_issue(p, s, b, ctl, ch, clk)
        if cmd >= 0:
            rid, gb, row, col = _queue_item(s, ch, q, k)
            if cmd == PRE:
                s.stats[ch, S_ONDEMAND_PRE] += 1
    if cmd >= 0:
        changed = True
        first_rw = _is_rw(cmd)
        # the (refresh or queued) command, then with dual issue a second one of the other
        # kind (column vs row command); one _issue call site, as it is inlined
        for slot in range(2):
            _issue(p, s, b, nt, ctl, log, ch, cmd, gb, row, col, rid, q, k, clk)
            if slot == 1:
                s.stats[ch, S_DUAL_CMDS] += 1
                break
            if not p.dual_issue:
                break
            cmd, q, k = _command_to_issue(p, s, b, ctl, ch, clk)
            if cmd < 0 or _is_rw(cmd) == first_rw:
                if cmd >= 0:
                    # found, not issued: its queue must be searched again (see _scan_queues)
                    s.queue[ch, q, QU_LB] = 0
                    if s.queue.shape[1] <= MASK_QUEUES:
                        _ungate(s.chan, ch, q)
                        s.chan[ch, CH_QDIRTY] |= 1 << q
                break
            rid, gb, row, col = _queue_item(s, ch, q, k)
            if cmd == PRE:
                s.stats[ch, S_ONDEMAND_PRE] += 1
    if _schedule_transaction(p, s, b, ctl, ch):
        changed = True
    return changed


@kernel(inline="always")
def _may_move(p, s, ch):
    """Whether _schedule_transaction could move a transaction now (False: certainly not)."""
    wl = s.chan[ch, CH_WB_LEN]
    if s.chan[ch, CH_DRAINING] > 0 or (
        wl > 0
        and (
            wl >= p.write_buffer_size
            or (wl > p.write_drain_threshold and s.chan[ch, CH_CQ_TOTAL] == 0)
            or s.glob[G_FLUSH] != 0
        )
    ):
        return (s.chan[ch, CH_STUCK] & 2) == 0
    return s.chan[ch, CH_RQ_LEN] > 0 and (s.chan[ch, CH_STUCK] & 1) == 0


REFRESH_BOUNDS = 3  # least ready bounds that a wake-up after a change searches again


@kernel(inline="always")
def _next_wake(p, s, b, pb, ch, c, changed):
    """The next cycle to tick a channel ticked at cycle c (after `changed`: its state
    changed): the earliest cycle after c at which its state could change.

    After a change that is c + 1 if anything may happen then; refresh, PIM streams and
    channels without the queue bitmasks simply come back at c + 1. Otherwise it is the
    least of the refresh and PIM cycles and of the command queues' ready bounds, with the
    queues whose bound the change reset searched now, as at c + 1, and the bound that
    decides refreshed: a bound is a cycle before which the queue cannot issue, set when it
    was last searched; timing raised since (commands at other banks) may have overtaken
    it, so the queue holding the least bound is searched at that cycle, until one is found
    ready there (no tick that finds nothing to do)."""
    nxt = c + 1
    nq = s.queue.shape[1]
    if changed:
        if (
            s.chan[ch, CH_REFQ_LEN] > 0
            or s.chan[ch, CH_NEXT_REF] <= nxt
            or s.chan[ch, CH_PIM_MODE] != 0
            or nq > MASK_QUEUES
            or _may_move(p, s, ch)
        ):
            return nxt
        t = s.chan[ch, CH_NEXT_REF]
        live = s.chan[ch, CH_QMASK]
        dirty = live & s.chan[ch, CH_QDIRTY]
        if p.per_bank_queues:
            # gated queues that cannot issue at nxt wait for their rank's floor
            held, f = _held(s.floor, s.chan, ch, live, nxt, p.ranks, p.bankgroups * p.banks_per_group,
                            RDA if p.close_page else RD, WRA if p.close_page else WR)
            live &= ~held
            if f < t:
                t = f
    else:
        t = s.chan[ch, CH_NEXT_REF]
        if pb.pc[ch] < pb.end[ch] and c < pb.lb[ch] < t:
            t = pb.lb[ch]
        if s.chan[ch, CH_REFQ_LEN] > 0:
            rank = s.chan[ch, CH_REFQ + 0]
            per_rank = p.bankgroups * p.banks_per_group
            base = (ch * p.ranks + rank) * per_rank
            for i in range(per_rank):
                gb = base + i
                bt = _ready_at(s.bank, s.tnext, s.floor, PRE if s.bank[gb, BK_OPEN_ROW] >= 0 else REF, gb)
                if c < bt < t:
                    t = bt
        if nq > MASK_QUEUES:
            for q in range(nq):
                # every non-empty queue outside a refresh was scanned this cycle and set q_lb
                if s.queue[ch, q, QU_LEN] == 0 or _queue_in_ref(p, s, ch, q):
                    continue
                bt = s.queue[ch, q, QU_LB]
                if c < bt < t:
                    t = bt
            return t
        m = s.chan[ch, CH_QMASK]
        if p.per_bank_queues:
            # gated queues wait for their rank's floor too (a queue held at the scan kept its
            # older bound)
            held, f = _held(s.floor, s.chan, ch, m, c, p.ranks, p.bankgroups * p.banks_per_group,
                            RDA if p.close_page else RD, WRA if p.close_page else WR)
            if f < t:
                t = f
        while m != 0:
            q = ctz(m)
            m &= m - 1
            if _queue_in_ref(p, s, ch, q):
                continue
            bt = s.queue[ch, q, QU_LB]
            if c < bt < t:
                t = bt
        return t
    # one search call site (it is inlined): the dirty queues at nxt, then the least bound,
    # refreshed at most REFRESH_BOUNDS times (with many queues, many bounds may be stale)
    refresh = REFRESH_BOUNDS
    while True:
        if dirty != 0:
            q = ctz(dirty)
            dirty &= dirty - 1
            at = nxt
            if s.queue[ch, q, QU_LB] > nxt:
                s.chan[ch, CH_QDIRTY] &= ~(1 << q)
                if s.queue[ch, q, QU_LB] < s.chan[ch, CH_MINLB]:
                    s.chan[ch, CH_MINLB] = s.queue[ch, q, QU_LB]
                continue
        else:
            q = -1
            at = t
            m = live
            while m != 0:
                q2 = ctz(m)
                m &= m - 1
                if s.queue[ch, q2, QU_LB] < at:
                    at = s.queue[ch, q2, QU_LB]
                    q = q2
            if q < 0 or refresh == 0:
                t = at
                break
            refresh -= 1
            if at < nxt:
                at = nxt
        need, k = _first_ready_in_queue(s.bank, s.tnext, s.floor, s.rank, s.chan, s.queue, ch, q, at, p.close_page,
                                        p.ranks, p.tFAW, p.row_hit_cap, p.per_bank_queues)
        if need >= 0:
            return at
        if s.chan[ch, CH_QDIRTY] & (1 << q):
            s.chan[ch, CH_QDIRTY] &= ~(1 << q)
            if s.queue[ch, q, QU_LB] < s.chan[ch, CH_MINLB]:
                s.chan[ch, CH_MINLB] = s.queue[ch, q, QU_LB]
    return t if t > nxt else nxt


@kernel(inline="always")
def _tq_append(s, ch, w, n, item, key):
    """Put (item, key) after the n transactions of tq[ch, w] (compacting the window at its end)."""
    h = s.tq[ch, w, TQ_HEAD]
    if TQ_ITEMS + 2 * (h + n) >= s.tq.shape[2]:
        for j in range(2 * n):
            s.tq[ch, w, TQ_ITEMS + j] = s.tq[ch, w, TQ_ITEMS + 2 * h + j]
        h = 0
        s.tq[ch, w, TQ_HEAD] = 0
    s.tq[ch, w, TQ_ITEMS + 2 * (h + n)] = item
    s.tq[ch, w, TQ_ITEMS + 2 * (h + n) + 1] = key


@kernel(inline="always")
def _col(p, a):
    return (a >> p.co_shift) & p.co_mask


@kernel(inline="always")
def _key(p, a, ch, is_write):
    """The command-queue key of a request at byte address a on channel ch."""
    ra = (a >> p.ra_shift) & p.ra_mask
    bg = (a >> p.bg_shift) & p.bg_mask
    ba = (a >> p.ba_shift) & p.ba_mask
    gb = ((ch * p.ranks + ra) * p.bankgroups + bg) * p.banks_per_group + ba
    return (gb << KEY_BANK_SHIFT) | (((a >> p.ro_shift) & p.ro_mask) << 1) | is_write


@kernel(inline="always")
def _accept(p, b, ctl, rid, at):
    """A request accepted at `at`: its address moved as the call says (C_MOVE_DELTA), its
    outputs set anew; returns the address."""
    a = b.req[rid, RQ_ADDR]
    if ctl[C_MOVE_DELTA] != 0 and ((a >> p.ro_shift) & p.ro_mask) < ctl[C_MOVE_BELOW_ROW]:
        a += ctl[C_MOVE_DELTA]
        b.req[rid, RQ_ADDR] = a
    b.req[rid, RQ_ADDED] = at
    b.req[rid, RQ_ISSUED] = -1
    b.req[rid, RQ_DONE] = -1
    b.req[rid, RQ_DUP] = -1
    return a


@kernel(inline="always")
def _try_add(p, s, b, nt, ctl, rid, ch, at):
    """WillAcceptTransaction + AddTransaction; `at` is the controller cycle it lands. (The
    channel is the same before and after a move: C_MOVE_DELTA changes only rows.)"""
    if b.write[rid]:
        if s.chan[ch, CH_WB_LEN] >= p.write_buffer_size:
            return False
        a = _accept(p, b, ctl, rid, at)
        # (C_PENDING_WRITES counts the pending-write table's entries: a run ends with none)
        distinct = ctl[C_DISTINCT] != 0
        if distinct or ctl[C_PENDING_WRITES] == 0 or ht_get(s.wkeys, s.wvals, a) < 0:
            if not distinct:
                ht_put(s.wkeys, s.wvals, a, rid)
            key = _key(p, a, ch, 1)
            _tq_append(s, ch, 1, s.chan[ch, CH_WB_LEN], rid | (_col(p, a) << RID_BITS), key)
            s.chan[ch, CH_WB_LEN] += 1
            if s.queue[ch, _key_queue(p, s, ch, key), QU_LEN] < p.cmd_queue_size:
                s.chan[ch, CH_STUCK] &= ~2  # (when its queue is full, it is stuck as well)
            ctl[C_PENDING_WRITES] += 1
        else:
            b.req[rid, RQ_ISSUED] = -2  # merged into the write already pending
        b.req[rid, RQ_DONE] = at + 1  # posted: acknowledged on the next cycle
        s.stats[ch, S_WRITES_DONE] += 1
        if at + 1 > ctl[C_END]:
            ctl[C_END] = at + 1
        return True
    if s.chan[ch, CH_RQ_LEN] >= p.trans_queue_size:
        return False
    a = _accept(p, b, ctl, rid, at)
    distinct = ctl[C_DISTINCT] != 0
    if not distinct and ctl[C_PENDING_WRITES] > 0 and ht_get(s.wkeys, s.wvals, a) >= 0:
        # served from the write buffer
        s.stats[ch, S_READS_FORWARDED] += 1
        _read_returned(s, b, ch, rid, at + 1)
        _read_for_task(nt, ctl, b.req[rid, RQ_GROUP], at + 1)
        if at + 1 > ctl[C_END]:
            ctl[C_END] = at + 1
        return True
    ctl[C_OUTSTANDING_READS] += 1
    head = -1 if distinct else ht_get(s.rkeys, s.rvals, a)
    if head >= 0:
        b.req[rid, RQ_DUP] = b.req[head, RQ_DUP]
        b.req[head, RQ_DUP] = rid
    else:
        if not distinct:
            ht_put(s.rkeys, s.rvals, a, rid)
        key = _key(p, a, ch, 0)
        _tq_append(s, ch, 0, s.chan[ch, CH_RQ_LEN], rid | (_col(p, a) << RID_BITS), key)
        s.chan[ch, CH_RQ_LEN] += 1
        if s.queue[ch, _key_queue(p, s, ch, key), QU_LEN] < p.cmd_queue_size:
            s.chan[ch, CH_STUCK] &= ~1  # (when its queue is full, it is stuck as well)
    return True


@kernel(inline="always")
def _offer(p, s, b, nt, ctl, c):
    """The front end at cycle c (after the memory ticked): each stream offers up to
    C_MAX_INJECT requests in order; returns how many requests are still to offer."""
    left = 0
    for k in range(b.inj.shape[0]):
        bl = b.inj[k, IJ_BLOCKED]
        if bl >= IJ_FULL:
            # its next request came and could go but for a full queue: while that is full,
            # it is refused again (no need to look at the request)
            full_ch = (bl - IJ_FULL) >> 1
            if (s.chan[full_ch, CH_WB_LEN] >= p.write_buffer_size if bl & 1 else
                    s.chan[full_ch, CH_RQ_LEN] >= p.trans_queue_size):
                b.inj[k, IJ_AT] = c + 1
                left += b.inj[k, IJ_END] - b.inj[k, IJ_NEXT]
                continue
        offered = 0
        b.inj[k, IJ_BLOCKED] = 0
        at = c + 1
        while b.inj[k, IJ_NEXT] < b.inj[k, IJ_END] and offered < ctl[C_MAX_INJECT]:
            rid = b.inj[k, IJ_NEXT]
            t = ctl[C_START] + b.req[rid, RQ_CYCLE]
            if t > c:
                break
            a = b.req[rid, RQ_AFTER]
            if a >= 0:
                if nt.end[a] < 0:
                    b.inj[k, IJ_BLOCKED] = 1  # its buffer frees when task a ends: not known yet
                    break
                if nt.end[a] > c:
                    at = nt.end[a]
                    break
            ch = (b.req[rid, RQ_ADDR] >> p.ch_shift) & p.ch_mask
            if not _try_add(p, s, b, nt, ctl, rid, ch, c + 1):
                b.inj[k, IJ_BLOCKED] = IJ_FULL + 2 * ch + (1 if b.write[rid] else 0)
                break
            # the controller sees it at c + 1; only a transaction that can move there
            # changes anything (else the channel's next event stands)
            if s.chan[ch, CH_WAKE] > c + 1 and _may_move(p, s, ch):
                s.chan[ch, CH_WAKE] = c + 1
            b.inj[k, IJ_NEXT] = rid + 1
            offered += 1
            # each stream reads its rows in order, one line per request: load a few ahead
            # (the hardware prefetcher does not follow tens of streams)
            if rid + OFFER_AHEAD < b.inj[k, IJ_END]:
                prefetch_row(b.req, rid + OFFER_AHEAD)
        b.inj[k, IJ_AT] = at
        left += b.inj[k, IJ_END] - b.inj[k, IJ_NEXT]
    return left


@kernel
def _close_active_intervals(s, clk, stats_out):
    """Stats snapshot with the rank-active intervals still open at clk counted to clk."""
    nch = stats_out.shape[0]
    for ch in range(nch):
        for i in range(stats_out.shape[1]):
            stats_out[ch, i] = s.stats[ch, i]
    nr = s.rank.shape[0] // nch
    for rk in range(s.rank.shape[0]):
        if s.rank[rk, RK_OPEN] > 0:
            stats_out[rk // nr, S_RANK_ACTIVE_CYCLES] += clk - s.rank[rk, RK_SINCE]


@kernel
def run_requests(p, s, b, pb, nt, ctl, log, stats_at_end):
    """Replay the batch (normal requests `b`, PIM command streams `pb`, NPU tasks `nt`)
    until every read returned, every write was accepted, every PIM command issued and
    every NPU task was scheduled, then drain the buffered writes. Returns 0 when finished, 1 when the command log is full (drain it, reset
    ctl[C_LOG_N] and call again: the state carries on).

    ``stats_at_end`` receives the counters at the cycle the last read returned or the
    last write was acknowledged (before the final write drain), as DRAMsim3 reports them.
    """
    nch = p.channels
    log_cap = log.cycle.shape[0]
    clk = s.glob[G_CLK]
    for g in range(b.reads_per_task.shape[0]):
        nt.reads_left[g] += b.reads_per_task[g]
    _npu_advance(nt, ctl)
    for k in range(b.inj.shape[0]):
        if b.inj[k, IJ_AT] < clk:
            b.inj[k, IJ_AT] = clk
    for ch in range(nch):
        if pb.pc[ch] < pb.end[ch]:
            t = ctl[C_START] + pb.cycle[pb.pc[ch]]
            if t < clk:
                t = clk
            if t < s.chan[ch, CH_WAKE]:
                s.chan[ch, CH_WAKE] = t
    # no memory work at all (NPU tasks only, all scheduled above): the phase ends with its
    # last task, not at the memory's next event (a refresh far after it)
    if ctl[C_PHASE] == 0 and ctl[C_OUTSTANDING_READS] == 0 and nt.next[0] == nt.res.shape[0]:
        idle = True
        for k in range(b.inj.shape[0]):
            if b.inj[k, IJ_NEXT] < b.inj[k, IJ_END]:
                idle = False
        for ch in range(nch):
            if pb.pc[ch] < pb.end[ch]:
                idle = False
        if idle:
            ctl[C_PHASE] = 1
    # A channel whose state changed at cycle c is visited again at c + 1 only if something
    # can happen then (``_next_wake``). The loop still visits c + 1 as a step without
    # ticks (ctl[C_QUIET]), as if every changed channel came back then: the front end offers, the phases
    # and the clock left in the state are those of a visit of every changed channel at c + 1.
    while True:
        if ctl[C_LOG_ON] != 0 and ctl[C_LOG_N] + 2 * nch > log_cap:
            s.glob[G_CLK] = clk
            return 1
        c = INF
        for ch in range(nch):
            if s.chan[ch, CH_WAKE] < c:
                c = s.chan[ch, CH_WAKE]
        if 0 <= ctl[C_QUIET] < c:
            c = ctl[C_QUIET]
        for k in range(b.inj.shape[0]):
            if b.inj[k, IJ_NEXT] < b.inj[k, IJ_END] and b.inj[k, IJ_BLOCKED] == 0:
                t = ctl[C_START] + b.req[b.inj[k, IJ_NEXT], RQ_CYCLE]
                if t < b.inj[k, IJ_AT]:
                    t = b.inj[k, IJ_AT]
                if t < c:
                    c = t
        if ctl[C_PHASE] == 1 and c > ctl[C_END]:
            _close_active_intervals(s, ctl[C_END] + 1, stats_at_end)
            ctl[C_PHASE] = 2
            s.glob[G_FLUSH] = 1
            for ch in range(nch):
                if s.chan[ch, CH_WB_LEN] > 0:
                    s.chan[ch, CH_WAKE] = max(clk, ctl[C_END] + 1)
            continue
        if ctl[C_PHASE] == 2 and ctl[C_PENDING_WRITES] == 0:
            s.glob[G_FLUSH] = 0
            ctl[C_PHASE] = 3
            s.glob[G_CLK] = clk
            return 0
        if c >= INF:
            # nothing can happen any more (cannot occur with work pending)
            s.glob[G_CLK] = clk
            return 0
        ctl[C_STEPS] += 1
        ctl[C_QUIET] = -1
        # the channels due at c, in order: from a bitmask made without branches (a branch
        # per channel was mispredicted often), or by a plain walk past MASK_CHANNELS
        due = 0
        if nch <= MASK_CHANNELS:
            for ch in range(nch):
                due |= (1 if s.chan[ch, CH_WAKE] <= c else 0) << ch
        ch = -1
        while True:
            if nch <= MASK_CHANNELS:
                if due == 0:
                    break
                ch = ctz(due)
                due &= due - 1
            else:
                ch += 1
                if ch == nch:
                    break
                if s.chan[ch, CH_WAKE] > c:
                    continue
            ctl[C_TICKS] += 1
            changed = _tick_channel(p, s, b, pb, nt, ctl, log, ch, c)
            if changed and pb.pc[ch] < pb.end[ch]:
                s.chan[ch, CH_WAKE] = c + 1
            else:
                s.chan[ch, CH_WAKE] = _next_wake(p, s, b, pb, ch, c, changed)
                if changed and s.chan[ch, CH_WAKE] > c + 1:
                    ctl[C_QUIET] = c + 1
        # the front end offers requests after the memory ticked
        left = _offer(p, s, b, nt, ctl, c)
        if ctl[C_NPU_PROGRESS] != 0:
            # PIM streams waiting for an NPU task may go now
            ctl[C_NPU_PROGRESS] = 0
            for ch in range(nch):
                if pb.pc[ch] < pb.end[ch] and s.chan[ch, CH_WAKE] > c + 1:
                    s.chan[ch, CH_WAKE] = c + 1
        if (
            ctl[C_PHASE] == 0
            and left == 0
            and ctl[C_OUTSTANDING_READS] == 0
            and nt.next[0] == nt.res.shape[0]
        ):
            pim_left = False
            for ch in range(nch):
                if pb.pc[ch] < pb.end[ch]:
                    pim_left = True
            if not pim_left:
                ctl[C_PHASE] = 1
        clk = c + 1
