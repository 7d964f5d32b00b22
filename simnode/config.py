"""The node's fixed settings and its runtime-changeable fault switches."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "USAGE_MODES", "Faults", "SimConfig"]

#: What a node's one model does, like vLLM's runner and task: ``generate`` text (chat,
#: completions, responses, messages), ``embed`` (embeddings, and score/rerank by cosine
#: similarity) or ``rerank`` (a cross-encoder: score and rerank only).
KINDS = ("generate", "embed", "rerank")

#: How a node reports usage: ``vllm`` as vLLM does; ``none`` never (llama.cpp's server,
#: old vLLM releases): no per-chunk usage, no final usage chunk, no ``usage`` in answers.
USAGE_MODES = ("vllm", "none")


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """What a simnode serves and how it behaves at start; fixed for the process's life.

    Times are in seconds, rates in tokens per second, lengths in tokens.
    """

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    tokens_per_second: float = 0.0
    ttft: float = 0.0
    reply_tokens: int = 16
    max_model_len: int = 8192
    max_num_seqs: int = 256
    api_key: str | None = None
    startup_delay: float = 0.0
    workers: int = 1
    keep_alive_timeout: float = 5.0
    fail_after: int | None = None
    fail_status: int | None = None
    fail_count: int | None = None
    hang: bool = False
    usage: str = "vllm"
    tokenize: bool = True
    kind: str = "generate"
    embedding_dim: int = 384
    #: Tokens per KV cache block, the unit the prefix cache matches (vLLM's ``--block-size``).
    block_size: int = 16
    #: Blocks the prefix cache remembers, least recently used evicted first; 0 turns it off.
    prefix_cache_blocks: int = 8192
    #: Pace of prefill, over the prompt tokens the prefix cache did not have; 0 = instant.
    prefill_tokens_per_second: float = 0.0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must not be empty")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if not 1 <= self.embedding_dim <= 65536:
            raise ValueError("embedding_dim must be in [1, 65536]")
        if self.usage not in USAGE_MODES:
            raise ValueError(f"usage must be one of {', '.join(USAGE_MODES)}")
        if self.reply_tokens < 1:
            raise ValueError("reply_tokens must be at least 1")
        if self.max_model_len < 2:
            raise ValueError("max_model_len must be at least 2")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not 1 <= self.block_size <= 4096:
            raise ValueError("block_size must be in [1, 4096]")
        if self.prefix_cache_blocks < 0:
            raise ValueError("prefix_cache_blocks must be at least 0")
        for name in ("tokens_per_second", "ttft", "startup_delay", "keep_alive_timeout",
                     "prefill_tokens_per_second"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        Faults(
            fail_after=self.fail_after,
            fail_status=self.fail_status,
            fail_count=self.fail_count,
            hang=self.hang,
        )  # validates the initial faults


def _check_optional_int(name: str, value: Any, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be null or an integer in [{low}, {high}]")
    return value


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number >= 0")
    rate = float(value)
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return rate


@dataclass(kw_only=True)
class Faults:
    """Fault injection and pacing switches, changeable at runtime through ``/sim/faults``.

    They live in one process: with several workers each has its own copy.
    """

    #: Break a stream (close the connection, no ``[DONE]``) after this many content tokens;
    #: a non-streaming request that would generate more answers 500.
    fail_after: int | None = None
    #: Answer every completion request with this HTTP status, in vLLM's error shape.
    fail_status: int | None = None
    #: With ``fail_status``: fail only this many more requests, then answer again
    #: (None: all of them). A refusal to the first try, say, is ``fail_count=1``.
    fail_count: int | None = None
    #: Accept completion requests and do not answer while this is on.
    hang: bool = False
    #: Pace of generation after the first token; 0 means as fast as possible.
    tokens_per_second: float = 0.0
    #: Delay before the first token, in seconds.
    ttft: float = 0.0
    #: Status that ``GET /health`` answers.
    health_status: int = 200
    _resume: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.update(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """Return the public switches, as ``/sim/faults`` shows them."""
        return {
            "fail_after": self.fail_after,
            "fail_status": self.fail_status,
            "fail_count": self.fail_count,
            "hang": self.hang,
            "tokens_per_second": self.tokens_per_second,
            "ttft": self.ttft,
            "health_status": self.health_status,
        }

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; validates everything before changing anything.

        Raises:
            ValueError: on an unknown key or a value of the wrong type or range.
        """
        unknown = set(changes) - set(self.as_dict())
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        new = self.as_dict() | changes
        fail_after = _check_optional_int("fail_after", new["fail_after"], 0, 2**31)
        fail_status = _check_optional_int("fail_status", new["fail_status"], 100, 599)
        fail_count = _check_optional_int("fail_count", new["fail_count"], 0, 2**31)
        health_status = _check_optional_int("health_status", new["health_status"], 100, 599)
        if health_status is None:
            raise ValueError("health_status must be an integer in [100, 599]")
        if not isinstance(new["hang"], bool):
            raise ValueError("hang must be a boolean")
        tokens_per_second = _check_rate("tokens_per_second", new["tokens_per_second"])
        ttft = _check_rate("ttft", new["ttft"])

        self.fail_after = fail_after
        self.fail_status = fail_status
        self.fail_count = fail_count
        self.health_status = health_status
        self.tokens_per_second = tokens_per_second
        self.ttft = ttft
        self.hang = new["hang"]
        if self.hang:
            self._resume.clear()
        else:
            self._resume.set()

    def take_failure(self) -> bool:
        """Whether this request gets ``fail_status`` (counting down ``fail_count``)."""
        if self.fail_status is None:
            return False
        if self.fail_count is None:
            return True
        if self.fail_count <= 0:
            return False
        self.fail_count -= 1
        return True

    async def wait_while_hung(self) -> None:
        """Block while ``hang`` is on; requests held here go on once it is switched off."""
        if self.hang:
            await self._resume.wait()
