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
