"""Admission of sequences into the simulated batch, and the counters ``/metrics`` reports."""

from __future__ import annotations

import asyncio
import time

__all__ = ["Scheduler"]


class Scheduler:
    """Runs at most ``max_num_seqs`` sequences at once; the rest wait, as in vLLM.

    Counters are plain integers owned by one event loop (one worker process).
    """

    def __init__(self, max_num_seqs: int) -> None:
        self.max_num_seqs = max_num_seqs
        #: Sequences generating now.
        self.running = 0
        #: Sequences admitted by HTTP but waiting for a batch slot.
        self.waiting = 0
        #: Prompt tokens of every sequence that entered the batch.
        self.prompt_tokens_total = 0
        #: Tokens generated so far, over all sequences.
        self.generation_tokens_total = 0
        #: Finished sequences, by finish reason ("stop", "length").
        self.success_total: dict[str, int] = {"stop": 0, "length": 0}
        #: Unix time the counters started, for the ``_created`` samples.
        self.created = time.time()
        self._slots = asyncio.Semaphore(max_num_seqs)

    async def admit(self, prompt_tokens: int) -> None:
        """Wait for a batch slot, then count the sequence as running and its prompt as prefilled.

        Every successful ``admit`` must be paired with one :meth:`release`.
        """
        if self._slots.locked():
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.running += 1
        self.prompt_tokens_total += prompt_tokens

    def release(self) -> None:
        """Give the batch slot back."""
        self.running -= 1
        self._slots.release()

    def generated(self, tokens: int) -> None:
        """Count generated tokens."""
        self.generation_tokens_total += tokens

    def finished(self, finish_reason: str) -> None:
        """Count a sequence that finished normally."""
        self.success_total[finish_reason] = self.success_total.get(finish_reason, 0) + 1
