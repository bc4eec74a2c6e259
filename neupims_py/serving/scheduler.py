"""Iteration-level schedulers: which requests run in the next iteration, with how many tokens.

A scheduler sees the running requests (admission order) and the FCFS queue of waiting
ones, and returns the batch as (request, new tokens) pairs. Admission goes through
`admit(request)`, which the orchestrator backs with the KV limits and channel placement
and which refuses (False) when the request has to wait; FCFS then stops there. Variants
live in `<name>_scheduler.py` and are found by name through `make_scheduler`.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from neupims_py.config.hw import SCHEDULER_POLICIES
from neupims_py.errors import UserError
from neupims_py.serving.request_state import RequestState


@dataclass(frozen=True, slots=True)
class Limits:
    """The admission limits in force (SchedulerConfig with derived values filled in)."""

    max_batch_size: int
    max_batch_tokens: int
    max_total_tokens: int
    max_request_tokens: int
    max_prompt_tokens: int  # 0: none of its own


Batch = list[tuple[RequestState, int]]


class Scheduler:
    """Base class: FCFS admission into a running set of at most max_batch_size requests."""

    name = "base"

    def __init__(self, limits: Limits):
        self.limits = limits

    def reject_reason(self, r: RequestState) -> str | None:
        """A reason this policy can never run `r`, or None."""
        return None

    def next_batch(self, running: list[RequestState], waiting: deque,
                   admit: Callable[[RequestState], bool]) -> Batch:
        raise NotImplementedError

    def _decodes(self, running, budget: int) -> Batch:
        """Every running request that is generating, one token each, in admission order,
        as far as the token budget goes."""
        out = []
        for r in running:
            if r.decoding and len(out) < budget:
                out.append((r, 1))
        return out

    def _admit_next(self, running, waiting: deque, admit) -> RequestState | None:
        if not waiting or len(running) >= self.limits.max_batch_size:
            return None
        r = waiting[0]
        if not admit(r):
            return None
        waiting.popleft()
        return r


def make_scheduler(name: str, limits: Limits) -> Scheduler:
    """The scheduler called `name` (module neupims_py.serving.<name>_scheduler)."""
    if name not in SCHEDULER_POLICIES:
        raise UserError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULER_POLICIES)}")
    module = importlib.import_module(f"neupims_py.serving.{name}_scheduler")
    return module.SCHEDULER(limits)
