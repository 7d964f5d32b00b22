"""Cache-affine routing: calls that share a prefix go to the node that holds it.

vLLM keeps the KV cache of the prompts it served (automatic prefix caching); a call
whose prompt starts like an earlier one skips that part of the prefill, if it lands
on the same node. A call's *affinity* is a number drawn from what its prompt starts
with (:func:`prefix_affinity`), or from a chat room's name (:func:`room_affinity`).

Which node gets it is decided where its slot is taken (``take_slot.lua``, through
:class:`edge.fleet.slots.Slots`): the node that served the affinity last, while it has
a free slot and its open calls are under the model's target load per node
(:attr:`edge.fleet.registry.NodeInfo.keep`) or within ``1 + EPSILON`` times the mean,
plus one call of slack (consistent hashing with bounded loads, Mirrokni, Thorup and
Zadimoghaddam); else the least loaded, and the affinity moves there. The memory is
Redis's, shared by every worker, and forgotten after ``PORTAL_AFFINITY_TTL`` seconds
without a call, about as long as vLLM keeps an idle prefix.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["EPSILON", "PREFIX_CHARS", "PREFIX_TOKENS", "leading_messages", "prefix_affinity",
           "room_affinity"]

#: Headroom over the mean load that the affine node may carry.
EPSILON = 0.25
#: Characters of a plain prompt that make its prefix.
PREFIX_CHARS = 1024
#: Token ids of a prompt given as ids that make its prefix (16 of vLLM's blocks).
PREFIX_TOKENS = 256
#: The roles of the instructions a conversation starts with (OpenAI's ``developer``
#: is the newer name of ``system``).
_INSTRUCTION_ROLES = ("system", "developer")


def _number(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def room_affinity(room: str) -> int:
    """A chat room's affinity: every reply in the room shares its history."""
    return _number("room\0" + room)


def leading_messages(messages: list[Any]) -> list[Any]:
    """What every turn of a conversation starts with: its leading system (or developer)
    messages and the first message after them, usually the first question.

    vLLM caches a prompt in blocks of tokens, chained from the first, so a later turn
    hits as far as its rendered messages agree with an earlier one: the instructions
    and the first question always, the rest only on the node that served the turn
    before. A fixed count of messages would not do: without a system prompt the first
    turn's two messages would be [question] and the second's [question, answer], two
    keys for one conversation; with two system messages every conversation would share
    one key.
    """
    count = 0
    while count < len(messages) and isinstance(messages[count], Mapping) and \
            messages[count].get("role") in _INSTRUCTION_ROLES:
        count += 1
    return messages[:count + 1]


def prefix_affinity(body: Mapping[str, Any]) -> int | None:
    """The affinity of an API call from what its prompt starts with (None: no prompt
    worth keeping a node for, as for embeddings of a list of texts).

    OpenAI's ``prompt_cache_key`` names the prefix outright when the client gives it.
    Otherwise: the instructions (Anthropic's ``system``, the Responses API's
    ``instructions``) and the conversation's :func:`leading_messages`; or the first
    :data:`PREFIX_CHARS` characters of a plain prompt (:data:`PREFIX_TOKENS` of one
    given as token ids).
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
    prompt = body.get("prompt")
    if isinstance(messages, list) and messages and isinstance(messages[0], Mapping):
        parts.extend(leading_messages(messages))
    elif isinstance(prompt, str):
        parts.append(prompt[:PREFIX_CHARS])
    elif isinstance(prompt, list) and prompt and all(
            isinstance(token, int) and not isinstance(token, bool) for token in prompt):
        parts.append(prompt[:PREFIX_TOKENS])
    elif isinstance(body.get("input"), str) and parts:
        parts.append(body["input"][:PREFIX_CHARS])
    if not parts:
        return None
    try:
        text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    return _number(text)
