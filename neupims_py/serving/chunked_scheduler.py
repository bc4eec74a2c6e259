"""Chunked prefill (Sarathi-Serve, Agrawal et al., OSDI 2024): each iteration has a token
budget (max_batch_tokens). Decodes take one token each; what is left goes to prefill
chunks, first of requests already part-way through their prompt, then of newly admitted
ones (FCFS), so a long prompt rides along with the decodes over several iterations."""

from __future__ import annotations

from neupims_py.serving.scheduler import Batch, Scheduler


class ChunkedScheduler(Scheduler):
    name = "chunked"

    def next_batch(self, running, waiting, admit) -> Batch:
        budget = self.limits.max_batch_tokens
        batch = self._decodes(running, budget)
        budget -= len(batch)
        for r in running:
            if budget <= 0:
                break
            left = r.context - r.prefilled
            if left > 0:
                chunk = min(left, budget)
                batch.append((r, chunk))
                budget -= chunk
        while budget > 0:
            r = self._admit_next(running, waiting, admit)
            if r is None:
                break
            chunk = min(r.context, budget)
            batch.append((r, chunk))
            budget -= chunk
        return batch


SCHEDULER = ChunkedScheduler
