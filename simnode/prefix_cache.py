"""Which prompt blocks a node has cached, like vLLM's automatic prefix caching.

vLLM keeps the KV cache in blocks of ``block_size`` tokens and, for a new prompt, finds
the longest prefix of blocks it already holds; prefill then computes only the tokens
after it. A simnode keeps no KV, only the block hashes, so that a benchmark sees what
cache-affine routing buys: hits in ``/metrics`` and a shorter time to first token.

The rules are vLLM's (``vllm/v1/core/kv_cache_utils.py``, ``kv_cache_manager.py``):

* only full blocks are hashed, and each block's hash chains the previous block's, so a
  block matches only when the whole prefix up to it matches;
* a lookup hits the leading cached blocks, at most ``(prompt_tokens - 1) // block_size``
  of them: vLLM always computes the last prompt token again, for its logits;
* the prompt's blocks are then cached or refreshed, least recently used evicted first.
  They are refreshed last block first, as vLLM frees a request's blocks in reverse, so
  a prompt's tail goes before its head (a head evicted first would strand the tail).

A block counts as cached once its request has entered the batch, not after its
prefill: two identical prompts sent at once both find the first one's blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["PrefixCache", "block_hashes"]

#: The parent hash of a prompt's first block (vLLM's ``NONE_HASH``).
_ROOT_HASH = 0


def block_hashes(ids: Sequence[int], block_size: int) -> list[int]:
    """Return the chained hash of each full block of ``ids``, first block first.

    Python's ``hash`` of a tuple of ints is the same in every process, so two nodes
    given the same prompt compute the same hashes.
    """
    hashes = []
    parent = _ROOT_HASH
    for end in range(block_size, len(ids) + 1, block_size):
        parent = hash((parent, tuple(ids[end - block_size : end])))
        hashes.append(parent)
    return hashes


class PrefixCache:
    """An LRU of block hashes, at most ``capacity`` blocks; 0 turns caching off.

    Counters are in tokens and owned by one event loop (one worker process), like the
    scheduler's.
    """

    def __init__(self, capacity: int, block_size: int) -> None:
        self.capacity = capacity
        self.block_size = block_size
        #: Prompt tokens looked up, over all requests (``vllm:prefix_cache_queries``).
        self.queries_total = 0
        #: Prompt tokens found cached (``vllm:prefix_cache_hits``).
        self.hits_total = 0
        self._blocks: OrderedDict[int, None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether the node caches prefixes at all (``--prefix-cache-blocks`` above 0)."""
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._blocks)

    def query(self, ids: Sequence[int]) -> int:
        """Return how many leading tokens of the prompt ``ids`` are cached, then cache it.

        Counts the lookup (all of ``ids``) and the hit. With caching off nothing is
        counted, as vLLM skips the lookup.

        Returns:
            The cached tokens (int), a multiple of ``block_size`` below ``len(ids)``.
        """
        if not self.enabled:
            return 0
        size = self.block_size
        hashes = block_hashes(ids, size)
        blocks = self._blocks
        hit = 0
        for block in hashes[: (len(ids) - 1) // size]:
            if block not in blocks:
                break
            hit += 1
        for block in reversed(hashes):
            blocks[block] = None
            blocks.move_to_end(block)
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
        self.queries_total += len(ids)
        self.hits_total += hit * size
        return hit * size
