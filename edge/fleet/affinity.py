"""Cache-affine routing: calls that share a prefix go to the node that holds it.

vLLM keeps the KV cache of the prompts it served (automatic prefix caching); a call
whose prompt starts like an earlier one skips that part of the prefill, if it lands
on the same node. A call's *affinity* is a number drawn from what its prompt starts
with (:func:`prefix_affinity`), or from a chat room's name (:func:`room_affinity`).

Which node gets it is decided where its slot is taken (``take_slot.lua``, through
:class:`edge.fleet.slots.Slots`): the node that served the affinity last, while its
open calls stay within ``1 + EPSILON`` times the mean, plus one call of slack
(consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam), else
the least loaded. The
memory is Redis's, shared by every worker, and forgotten after ``PORTAL_AFFINITY_TTL``
seconds without a call, about as long as vLLM keeps an idle prefix.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["EPSILON", "PREFIX_CHARS", "PREFIX_MESSAGES", "prefix_affinity", "room_affinity"]

#: Headroom over the mean load that the affine node may carry.
EPSILON = 0.25
#: Messages of a conversation that make its prefix: the system prompt and the first
#: question are what every later turn of the same conversation starts with.
PREFIX_MESSAGES = 2
#: Characters of a plain prompt that make its prefix.
PREFIX_CHARS = 1024


def _number(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def room_affinity(room: str) -> int:
    """A chat room's affinity: every reply in the room shares its history."""
    return _number("room\0" + room)


def prefix_affinity(body: Mapping[str, Any]) -> int | None:
    """The affinity of an API call from what its prompt starts with (None: no prompt
    worth keeping a node for, as for embeddings).

    OpenAI's ``prompt_cache_key`` names the prefix outright when the client gives it.
    """
    given = body.get("prompt_cache_key")
    if isinstance(given, str) and given:
        return _number("key\0" + given)
    parts: list[Any] = []
    if isinstance(body.get("system"), (str, list)):  # Anthropic's messages
        parts.append(body["system"])
    if isinstance(body.get("instructions"), str):  # OpenAI's responses
        parts.append(body["instructions"])
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = body.get("input") if isinstance(body.get("input"), list) else None
    if isinstance(messages, list) and messages:
        parts.extend(messages[:PREFIX_MESSAGES])
    elif isinstance(body.get("prompt"), str):
        parts.append(body["prompt"][:PREFIX_CHARS])
    elif isinstance(body.get("input"), str) and parts:
        parts.append(body["input"][:PREFIX_CHARS])
    if not parts:
        return None
    try:
        text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    return _number(text)
