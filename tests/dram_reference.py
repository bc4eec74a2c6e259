"""A slow, obviously correct twin of the DRAM engine, for the tests: DRAMsim3's controller
ticked every cycle.

Written from DRAMsim3's own classes (TraceBasedCPU, Controller, CommandQueue, ChannelState,
BankState, Refresh) with plain lists, dicts and no event skipping, so each method can be read
against the C++ method it is named after. It shares nothing with ``neupims_py.engine``: the
timing latencies come from ``dram_rules(mem)`` (checked on their own in test_dram_rules.py)
and the address mapping from ``mem.address_fields``.

``run(mem, addr, is_write, cycle, max_inject)`` replays a request trace and returns every
request's accepted and done cycles and the issued commands. DRAMsim3 stops when its cycle
budget ends; like the engine, this model keeps going after the last read has returned (the
end of DRAMsim3's run) until the writes still buffered have been issued: from then on every
channel treats its write buffer as due for draining.

Commands are logged as tuples (cycle, Cmd, channel, rank, bank group, bank, row, column).
A precharge or refresh issued for a refresh carries no request; DRAMsim3 prints -1 for its
missing fields, this model (like the engine) logs the row a precharge closes with column 0,
and a refresh at bank group 0, bank 0, row -1, column 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neupims_py.dram.timing_rules import Level, dram_rules
from neupims_py.formats import Cmd

_READS = (Cmd.RD, Cmd.RDA)
_WRITES = (Cmd.WR, Cmd.WRA)


def is_read_write(kind: Cmd) -> bool:
    return kind in _READS or kind in _WRITES


@dataclass(slots=True)
class Request:
    """One transaction of the trace, decoded (DRAMsim3 Transaction + Address)."""

    index: int
    addr: int
    is_write: bool
    cycle: int  # earliest cycle the front end offers it
    ch: int
    rank: int
    bg: int
    ba: int
    row: int
    col: int
    added: int = -1  # controller cycle it was accepted at
    done: int = -1  # read data returned / write acknowledged


@dataclass(slots=True)
class Command:
    kind: Cmd
    rank: int
    bg: int
    ba: int
    row: int
    col: int
    req: Request | None  # the transaction a read/write/ACT/PRE serves; None for refresh


@dataclass(slots=True)
class BankState:
    open_row: int | None = None
    row_hit_count: int = 0
    cmd_timing: dict = field(default_factory=dict)  # Cmd -> earliest issue cycle

    def earliest(self, kind: Cmd) -> int:
        return self.cmd_timing.get(kind, 0)

    def update_timing(self, kind: Cmd, time: int) -> None:
        self.cmd_timing[kind] = max(self.earliest(kind), time)


class Controller:
    """One channel: Controller + CommandQueue + ChannelState + Refresh of DRAMsim3."""

    def __init__(self, ch: int, mem, log: list, stats: dict):
        g, t, c = mem.geometry, mem.timing, mem.controller
        if c.refresh_policy not in ("rank-staggered", "off"):
            raise NotImplementedError(c.refresh_policy)
        self.ch = ch
        self.log = log
        self.stats = stats
        self.ranks = g.ranks
        self.bankgroups = g.bankgroups
        self.banks_per_group = g.banks_per_group
        self.banks = g.bankgroups * g.banks_per_group  # per rank: DRAMsim3's config.banks
        self.bank_states = [
            [[BankState() for _ in range(g.banks_per_group)] for _ in range(g.bankgroups)]
            for _ in range(g.ranks)
        ]
        self.tFAW = t.tFAW
        self.four_aw = [[] for _ in range(g.ranks)]  # per rank: ACT issue + tFAW, oldest first
        self.read_delay = mem.read_delay
        self.open_page = c.row_buffer_policy == "open-page"
        self.dual_cmd = c.dual_command_issue
        self.row_hit_cap = c.row_hit_cap
        # rules[level][prev] = [(next, latency), ...]: DRAMsim3's Timing lists
        self.rules = {level: {} for level in Level}
        for r in dram_rules(mem):
            self.rules[r.level].setdefault(r.prev, []).append((r.next, r.latency))
        # CommandQueue
        self.per_bank = c.queue_structure == "per-bank"
        self.num_queues = g.ranks * self.banks if self.per_bank else g.ranks
        self.queues = [[] for _ in range(self.num_queues)]  # queued Requests (their R/W command)
        self.queue_size = c.cmd_queue_size
        self.queue_idx = 0
        self.is_in_ref = False
        self.ref_q_indices = set()
        # Refresh
        self.refresh_interval = t.tREFI // g.ranks if c.refresh_policy == "rank-staggered" else 0
        self.next_rank = 0
        self.refresh_q = []  # ranks waiting for a refresh, oldest first
        # transaction queues
        self.trans_queue_size = c.trans_queue_size
        self.write_buffer_size = c.write_buffer_size
        self.write_drain_threshold = c.write_drain_threshold
        self.read_queue = []
        self.write_buffer = []
        self.pending_rd = {}  # addr -> [Request], a multimap
        self.pending_wr = {}  # addr -> Request
        self.write_draining = 0

    # ------------------------------------------------------------------ ChannelState

    def bank(self, rank, bg, ba) -> BankState:
        return self.bank_states[rank][bg][ba]

    def rw_kind(self, req: Request) -> Cmd:
        """Controller::TransToCommand."""
        if req.is_write:
            return Cmd.WR if self.open_page else Cmd.WRA
        return Cmd.RD if self.open_page else Cmd.RDA

    def ready_command(self, req: Request, clk: int) -> Cmd | None:
        """ChannelState::GetReadyCommand (BankState::GetReadyCommand + tFAW) for a queued R/W."""
        bank = self.bank(req.rank, req.bg, req.ba)
        if bank.open_row is None:
            need = Cmd.ACT
        elif bank.open_row == req.row:
            need = self.rw_kind(req)
        else:
            need = Cmd.PRE
        if clk < bank.earliest(need):
            return None
        if need == Cmd.ACT and not self.activation_window_ok(req.rank, clk):
            return None
        return need

    def activation_window_ok(self, rank, clk) -> bool:
        """ChannelState::IsFAWReady."""
        window = self.four_aw[rank]
        return not (window and clk < window[0] and len(window) >= 4)

    def update_activation_times(self, rank, clk) -> None:
        window = self.four_aw[rank]
        if window and clk >= window[0]:
            window.pop(0)
        window.append(clk + self.tFAW)

    def banks_at(self, level: Level, rank, bg, ba):
        """The banks a rule of `level` reaches from a command to (rank, bg, ba)."""
        for r in range(self.ranks):
            for j in range(self.bankgroups):
                for k in range(self.banks_per_group):
                    if level == Level.SAME_BANK:
                        hit = (r, j, k) == (rank, bg, ba)
                    elif level == Level.OTHER_BANKS_SAME_BANKGROUP:
                        hit = r == rank and j == bg and k != ba
                    elif level == Level.OTHER_BANKGROUPS_SAME_RANK:
                        hit = r == rank and j != bg
                    elif level == Level.OTHER_RANKS:
                        hit = r != rank
                    else:  # SAME_RANK
                        hit = r == rank
                    if hit:
                        yield self.bank_states[r][j][k]

    def update_timing(self, cmd: Command, clk: int) -> None:
        """ChannelState::UpdateTiming: a refresh sets rank-wide timings, anything else the
        same-bank, same-bank-group, same-rank and other-rank lists."""
        if cmd.kind == Cmd.ACT:
            self.update_activation_times(cmd.rank, clk)
        if cmd.kind == Cmd.REF:
            levels = (Level.SAME_RANK,)
        else:
            levels = (
                Level.SAME_BANK,
                Level.OTHER_BANKS_SAME_BANKGROUP,
                Level.OTHER_BANKGROUPS_SAME_RANK,
                Level.OTHER_RANKS,
            )
        for level in levels:
            for nxt, latency in self.rules[level].get(cmd.kind, ()):
                for bank in self.banks_at(level, cmd.rank, cmd.bg, cmd.ba):
                    bank.update_timing(nxt, clk + latency)

    def update_state(self, cmd: Command) -> None:
        """ChannelState::UpdateState / BankState::UpdateState."""
        if cmd.kind == Cmd.REF:
            for j in range(self.bankgroups):
                for k in range(self.banks_per_group):
                    assert self.bank(cmd.rank, j, k).open_row is None
            self.refresh_q.remove(cmd.rank)  # the first entry of that rank
            return
        bank = self.bank(cmd.rank, cmd.bg, cmd.ba)
        if cmd.kind == Cmd.ACT:
            assert bank.open_row is None
            bank.open_row = cmd.row
        elif cmd.kind in (Cmd.RD, Cmd.WR):
            bank.row_hit_count += 1
        else:  # RDA, WRA, PRE
            bank.open_row = None
            bank.row_hit_count = 0

    # ------------------------------------------------------------------ CommandQueue

    def queue_index(self, rank, bg, ba) -> int:
        if self.per_bank:
            return rank * self.banks + bg * self.banks_per_group + ba
        return rank

    def get_command_to_issue(self, clk: int) -> Command | None:
        """Round-robin over the command queues from the one after the last served; a R/W
        command found is taken out of its queue here (as DRAMsim3 does)."""
        for _ in range(self.num_queues):
            self.queue_idx += 1
            if self.queue_idx == self.num_queues:
                self.queue_idx = 0
            if self.is_in_ref and self.queue_idx in self.ref_q_indices:
                continue
            queue = self.queues[self.queue_idx]
            found = self.first_ready_in_queue(queue, clk)
            if found is not None:
                kind, pos = found
                req = queue[pos]
                if is_read_write(kind):
                    del queue[pos]
                return Command(kind, req.rank, req.bg, req.ba, req.row, req.col, req)
        return None

    def first_ready_in_queue(self, queue: list, clk: int):
        for pos, req in enumerate(queue):
            kind = self.ready_command(req, clk)
            if kind is None:
                continue
            if kind == Cmd.PRE:
                if not self.arbitrate_precharge(queue, pos):
                    continue
            elif kind in _WRITES:
                if self.has_rw_dependency(queue, pos):
                    continue
            return kind, pos
        return None

    def arbitrate_precharge(self, queue: list, pos: int) -> bool:
        req = queue[pos]
        here = (req.rank, req.bg, req.ba)
        for prev in queue[:pos]:
            if (prev.rank, prev.bg, prev.ba) == here:
                return False
        bank = self.bank(*here)
        pending_row_hits = any(
            r.row == bank.open_row and (r.rank, r.bg, r.ba) == here for r in queue[pos:]
        )
        return not pending_row_hits or bank.row_hit_count >= self.row_hit_cap

    def has_rw_dependency(self, queue: list, pos: int) -> bool:
        """A read of the same location queued ahead of this write goes first."""
        w = queue[pos]
        return any(
            not r.is_write and r.row == w.row and r.col == w.col and r.ba == w.ba and r.bg == w.bg
            for r in queue[:pos]
        )

    def finish_refresh(self, clk: int) -> Command | None:
        """CommandQueue::FinishRefresh: precharge an open bank of the rank, or refresh it."""
        rank = self.refresh_q[0]
        if not self.is_in_ref:
            if self.per_bank:
                self.ref_q_indices = {q for q in range(self.num_queues) if q // self.banks == rank}
            else:
                self.ref_q_indices = {rank}
            self.is_in_ref = True
        num_ready = 0
        for j in range(self.bankgroups):
            for k in range(self.banks_per_group):
                bank = self.bank(rank, j, k)
                need = Cmd.PRE if bank.open_row is not None else Cmd.REF
                if clk < bank.earliest(need):
                    continue
                if need == Cmd.PRE:
                    return Command(Cmd.PRE, rank, j, k, bank.open_row, 0, None)
                num_ready += 1
        if num_ready == self.banks:
            self.ref_q_indices = set()
            self.is_in_ref = False
            return Command(Cmd.REF, rank, 0, 0, -1, 0, None)
        return None

    # ------------------------------------------------------------------ Controller

    def will_accept_transaction(self, is_write: bool) -> bool:
        if is_write:
            return len(self.write_buffer) < self.write_buffer_size
        return len(self.read_queue) < self.trans_queue_size

    def add_transaction(self, req: Request, clk: int) -> None:
        req.added = clk
        if req.is_write:
            if req.addr not in self.pending_wr:  # else merged into the pending write
                self.pending_wr[req.addr] = req
                self.write_buffer.append(req)
            req.done = clk + 1
            return
        if req.addr in self.pending_wr:  # served from the write buffer
            req.done = clk + 1
            self.stats["reads_forwarded"] += 1
            return
        same = self.pending_rd.setdefault(req.addr, [])
        same.append(req)
        if len(same) == 1:
            self.read_queue.append(req)

    def schedule_transaction(self, flush: bool) -> None:
        """Move one transaction into its command queue (reads, or writes while draining)."""
        if self.write_draining == 0:
            n = len(self.write_buffer)
            if (
                n >= self.write_buffer_size
                or (n > self.write_drain_threshold and not any(self.queues))
                or (flush and n > 0)
            ):
                self.write_draining = n
        queue = self.write_buffer if self.write_draining > 0 else self.read_queue
        for i, req in enumerate(queue):
            cq = self.queues[self.queue_index(req.rank, req.bg, req.ba)]
            if len(cq) < self.queue_size:
                if req.is_write:
                    if req.addr in self.pending_rd:  # a read of it is pending: reads first
                        self.write_draining = 0
                        # (DRAMsim3 stops here for this cycle, which livelocks when the
                        # buffer is full; the engine serves the read queue at once)
                        self.schedule_from(self.read_queue)
                        break
                    self.write_draining -= 1
                cq.append(req)
                del queue[i]
                break

    def schedule_from(self, queue: list) -> None:
        for i, req in enumerate(queue):
            cq = self.queues[self.queue_index(req.rank, req.bg, req.ba)]
            if len(cq) < self.queue_size:
                cq.append(req)
                del queue[i]
                return

    def issue_command(self, cmd: Command, clk: int) -> None:
        self.log.append((clk, cmd.kind, self.ch, cmd.rank, cmd.bg, cmd.ba, cmd.row, cmd.col))
        if cmd.kind in _READS:
            for r in self.pending_rd.pop(cmd.req.addr):
                r.done = clk + self.read_delay
        elif cmd.kind in _WRITES:
            del self.pending_wr[cmd.req.addr]
        if is_read_write(cmd.kind) and self.bank(cmd.rank, cmd.bg, cmd.ba).row_hit_count != 0:
            self.stats["write_row_hits" if cmd.kind in _WRITES else "read_row_hits"] += 1
        self.update_state(cmd)
        self.update_timing(cmd, clk)

    def idle(self) -> bool:
        """Nothing queued anywhere: a tick without a refresh due would change nothing."""
        return not (self.refresh_q or self.read_queue or self.write_buffer or any(self.queues))

    def clock_tick(self, clk: int, flush: bool) -> None:
        refresh_due = self.refresh_interval and clk % self.refresh_interval == 0 and clk > 0
        if not refresh_due and self.idle():
            return
        if refresh_due:  # Refresh::ClockTick, rank-staggered
            self.refresh_q.append(self.next_rank)
            self.next_rank = (self.next_rank + 1) % self.ranks
        cmd = None
        if self.refresh_q:
            cmd = self.finish_refresh(clk)
        if cmd is None:
            cmd = self.get_command_to_issue(clk)
        if cmd is not None:
            self.issue_command(cmd, clk)
            if self.dual_cmd:
                second = self.get_command_to_issue(clk)
                if second is not None:
                    if is_read_write(second.kind) != is_read_write(cmd.kind):
                        self.issue_command(second, clk)
                    elif is_read_write(second.kind):
                        # DRAMsim3 has already taken it out of its queue: it would be lost
                        raise AssertionError(f"second read/write dropped at {clk}: {second}")
        self.schedule_transaction(flush)


class Livelock(RuntimeError):
    """Work is pending but nothing can move: e.g. a full write buffer whose first drainable
    write has a pending read that is still in the read queue (each cycle the drain starts,
    stops at that write, and no read is scheduled)."""


@dataclass
class RunResult:
    added: list  # per request, controller cycle it was accepted
    done: list  # per request, cycle its data returned / it was acknowledged
    commands: list  # (cycle, Cmd, ch, rank, bg, bank, row, col) in issue order
    stats: list  # per channel: read_row_hits, write_row_hits, reads_forwarded


def decode(mem, addr: int) -> dict:
    f = mem.address_fields
    return {k: (addr >> f[k][0]) & f[k][1] for k in ("ch", "ra", "bg", "ba", "ro", "co")}


def run(mem, addr, is_write, cycle, max_inject: int = 1, stall_limit: int = 100_000) -> RunResult:
    """TraceBasedCPU over a MemorySystem, every cycle: the memory ticks, then the front end
    offers up to `max_inject` requests in order (none before its cycle); one the controller
    cannot take blocks the rest, one it takes is added at the controller's next cycle.

    Raises ``Livelock`` when for `stall_limit` cycles no request was accepted and no read or
    write issued while a read waits or a request is due (DRAMsim3 itself stalls for good)."""
    reqs = []
    for i, (a, w, c) in enumerate(zip(addr, is_write, cycle)):
        d = decode(mem, int(a))
        reqs.append(
            Request(i, int(a), bool(w), int(c), d["ch"], d["ra"], d["bg"], d["ba"], d["ro"], d["co"])
        )
    log = []
    stats = [
        {"read_row_hits": 0, "write_row_hits": 0, "reads_forwarded": 0}
        for _ in range(mem.geometry.channels)
    ]
    ctrls = [Controller(ch, mem, log, stats[ch]) for ch in range(mem.geometry.channels)]
    n = len(reqs)
    offered_all = 0  # requests accepted so far (they are offered in order)
    end = -1  # last read return / write acknowledgement
    clk = 0
    progress = 0  # last cycle a request was accepted or a read/write issued
    while True:
        flush = False
        if offered_all == n and all(r.done >= 0 for r in reqs):
            end = max((r.done for r in reqs), default=-1)
            if clk > end:
                # DRAMsim3's run is over: drain what is still buffered, then stop
                if not any(c.pending_wr for c in ctrls):
                    break
                flush = True
        if clk - progress > stall_limit:
            due = offered_all < n and reqs[offered_all].cycle <= clk
            if due or any(r.done < 0 for r in reqs[:offered_all]):
                raise Livelock(f"no request accepted and no read/write issued in cycles {progress}..{clk}")
        issued = len(log)
        for ctrl in ctrls:
            ctrl.clock_tick(clk, flush)
        if any(is_read_write(c[1]) for c in log[issued:]):
            progress = clk
        offered = 0
        while offered_all < n and offered < max_inject:
            req = reqs[offered_all]
            if req.cycle > clk:
                break
            ctrl = ctrls[req.ch]
            if not ctrl.will_accept_transaction(req.is_write):
                break
            ctrl.add_transaction(req, clk + 1)
            offered_all += 1
            progress = clk
            offered += 1
        clk += 1
    return RunResult(
        added=[r.added for r in reqs],
        done=[r.done for r in reqs],
        commands=log,
        stats=stats,
    )
