"""ORCA (Yu et al., OSDI 2022): iteration-level batching with selective batching. Every
running request decodes one token per iteration; a newly admitted request is prefilled
whole in the iteration it joins, so its prompt must fit the token budget
(max_batch_tokens) left by the decodes."""

from __future__ import annotations

from neupims_py.serving.scheduler import Batch, Scheduler


class OrcaScheduler(Scheduler):
    name = "orca"

    def reject_reason(self, r):
        if r.context > self.limits.max_batch_tokens:
            return (f"orca prefills a prompt in one iteration: history + prompt {r.context} "
                    f"tokens > max_batch_tokens {self.limits.max_batch_tokens}")
        return None

    def next_batch(self, running, waiting, admit) -> Batch:
        batch = self._decodes(running, self.limits.max_batch_tokens)
        tokens = len(batch)
        while waiting and tokens + waiting[0].context <= self.limits.max_batch_tokens:
            r = self._admit_next(running, waiting, admit)
            if r is None:
                break
            batch.append((r, r.context))
            tokens += r.context
        return batch


SCHEDULER = OrcaScheduler
