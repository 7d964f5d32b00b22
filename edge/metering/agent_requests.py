"""The bodies of the newer generation routes: OpenAI's Responses and Anthropic's Messages.

Only what routing and billing read is checked (the model, the output cap, the
stream flag, that there is something to answer); the node judges the rest, as
vLLM's own servers do. The errors are raised as :class:`InvalidRequest` and
answered in the route's shape (Anthropic's on ``/v1/messages``, :mod:`edge.app`).
"""

from __future__ import annotations

from typing import Any

from edge.errors import InvalidRequest
from edge.metering.request_spec import (
    Endpoint,
    RequestSpec,
    check_numbers,
    optional_int,
    stream_flag,
)

__all__ = ["parse_messages", "parse_responses"]

_SAMPLING = ("temperature", "top_p")
#: A bound beyond any context: the worst case is then the model's context.
_UNBOUNDED = 2**40


def parse_responses(body: dict[str, Any], model: str, _size: int) -> RequestSpec:
    """``POST /v1/responses``.

    With ``previous_response_id`` the node prepends a conversation it stored, which the
    body does not bound: the prompt is reserved at the model's context.
    """
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty.", param="input")
    elif not isinstance(value, list) or not value or \
            not all(isinstance(item, dict | str) for item in value):
        raise InvalidRequest("'input' must be a string or a non-empty array of input items.",
                             param="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string.", param="instructions")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest("'previous_response_id' must be a string.",
                             param="previous_response_id")
    check_numbers(body, _SAMPLING)
    return RequestSpec(endpoint=Endpoint.RESPONSES, body=body, model=model,
                       stream=stream_flag(body),
                       max_tokens=optional_int(body, "max_output_tokens", minimum=1),
                       choices=1, n=1, prompts=1, include_usage=False, continuous_usage=False,
                       prompt_bound=_UNBOUNDED if previous else None,
                       stateful=previous is not None)


def parse_messages(body: dict[str, Any], model: str, _size: int) -> RequestSpec:
    """``POST /v1/messages``: ``max_tokens`` is required, as Anthropic's API has it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty array of messages.",
                             param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages.{index}: must be an object with a 'role'.",
                                 param=f"messages.{index}")
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(f"messages.{index}.content: must be a string or an array "
                                 "of content blocks.", param=f"messages.{index}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: must be a string or an array of text blocks.",
                             param="system")
    if body.get("max_tokens") is None:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    max_tokens = optional_int(body, "max_tokens", minimum=1)
    check_numbers(body, (*_SAMPLING, "top_k"))
    return RequestSpec(endpoint=Endpoint.MESSAGES, body=body, model=model,
                       stream=stream_flag(body), max_tokens=max_tokens, choices=1, n=1,
                       prompts=1, include_usage=False, continuous_usage=False)
