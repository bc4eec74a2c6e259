"""One request's life in the serving loop: what it needs, how far it got, when things happened.

Times are NPU cycles from the start of the trace (the loop's clock); `metrics.py` turns
them into nanoseconds for the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# status values, in the order a request can go through them
PENDING, WAITING, RUNNING, FINISHED, REJECTED = "pending", "waiting", "running", "finished", "rejected"


@dataclass(slots=True, eq=False)
class RequestState:
    index: int  # row in the trace
    id: int
    session: int
    turn: int
    arrival_ns: int  # from the trace (for a later turn: the earliest it may arrive)
    think_ns: int
    context: int  # tokens to prefill: history + this turn's prompt
    output: int  # tokens to generate
    status: str = PENDING
    reason: str = ""  # why it was rejected
    release: int = -1  # cycle it entered the queue (arrival, or previous turn + think time)
    channel: int = -1
    prefilled: int = 0  # context tokens whose K/V are cached
    generated: int = 0
    first_scheduled: int = -1
    first_token: int = -1
    finish: int = -1
    token_cycles: list = field(default_factory=list)

    @property
    def reserved(self) -> int:
        """KV tokens reserved at admission: everything it will ever cache."""
        return self.context + self.output

    @property
    def decoding(self) -> bool:
        return self.prefilled == self.context and self.generated < self.output


def reject(r: RequestState, reason: str) -> None:
    """Turn `r` away at its release cycle, with the reason the outputs report."""
    r.status, r.reason = REJECTED, reason
    r.finish = r.release


def count_tokens(batch, now: int, placement) -> tuple[list, list]:
    """The iteration that ran `batch` ((request, query tokens) pairs) ended at cycle `now`:
    count each request's prefilled or generated tokens, stamp its tokens at `now`, and grow
    a decoding request's KV by its new token in `placement`. Returns (requests whose prefill
    ended with their first token, requests that now have every output token)."""
    first, finished = [], []
    for r, q in batch:
        if r.prefilled < r.context:
            r.prefilled += q
            if r.prefilled == r.context and r.output > 0:
                r.generated = 1
                r.first_token = now
                r.token_cycles.append(now)
                first.append(r)
        else:
            r.generated += 1
            r.token_cycles.append(now)
            placement.grow(r.index, 1)
        if r.prefilled == r.context and r.generated >= r.output:
            finished.append(r)
    return first, finished


class TurnChain:
    """Multi-turn sessions. When a turn ends (finished or rejected), `end` releases the same
    session's next turn its think time later (never before its own arrival) through
    `push(cycle, row index)`, or, if the turn was rejected, rejects the next turns too (no
    history to carry on with). `ended` counts the requests that have ended."""

    def __init__(self, reqs: list[RequestState], to_cycles, push):
        self.reqs = reqs
        self.next_turn = next_turns(reqs)
        self.to_cycles = to_cycles
        self.push = push
        self.ended = 0

    def end(self, r: RequestState, at: int) -> None:
        while True:
            self.ended += 1
            nxt = self.next_turn.get(r.index)
            if nxt is None:
                return
            n = self.reqs[nxt]
            if r.status != REJECTED:
                self.push(max(self.to_cycles(n.arrival_ns), at + self.to_cycles(n.think_ns)), nxt)
                return
            n.release = at
            reject(n, f"turn {r.turn} of session {r.session} was rejected")
            r = n


def next_turns(reqs: list[RequestState]) -> dict[int, int]:
    """Row index of each turn -> row index of the same session's next turn."""
    last: dict[int, int] = {}
    nxt: dict[int, int] = {}
    for r in reqs:
        if r.session < 0:
            continue
        if r.session in last:
            nxt[last[r.session]] = r.index
        last[r.session] = r.index
    return nxt
