"""Where each route's answer says its tokens, and the usage object the edge writes
into an answer whose node said none.

| route | usage fields (the node's) |
| --- | --- |
| chat, completions | ``prompt_tokens``, ``completion_tokens`` |
| embeddings, score | ``prompt_tokens`` (no output) |
| rerank | ``prompt_tokens``, or ``total_tokens`` (older releases' only field) |
| responses, messages | ``input_tokens``, ``output_tokens`` |
"""

from __future__ import annotations

from typing import Any

from edge.metering.request_spec import Endpoint

__all__ = ["node_usage", "usage_object"]

_INPUT_OUTPUT = (Endpoint.RESPONSES, Endpoint.MESSAGES)


def node_usage(endpoint: Endpoint, answer: dict[str, Any]) -> tuple[int, int] | None:
    """``(prompt, completion)`` as the node counted them; None when it said nothing."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    if endpoint in _INPUT_OUTPUT:
        if "input_tokens" not in usage and "output_tokens" not in usage:
            return None
        return _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
        if "prompt_tokens" not in usage and "completion_tokens" not in usage:
            return None
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    prompt = usage.get("prompt_tokens")
    if prompt is None:
        prompt = usage.get("total_tokens")
    return None if prompt is None else (_count(prompt), 0)


def usage_object(endpoint: Endpoint, prompt: int, completion: int) -> dict[str, int]:
    """The usage a client of ``endpoint`` would have had from vLLM."""
    if endpoint in _INPUT_OUTPUT:
        usage = {"input_tokens": prompt, "output_tokens": completion}
        if endpoint is Endpoint.RESPONSES:
            usage["total_tokens"] = prompt + completion
        return usage
    if endpoint is Endpoint.RERANK:
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0
