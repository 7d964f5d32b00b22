"""Checks an OpenAI request body and extracts what routing and billing need.

The checks are the ones whose failure the client must hear about from us, in
OpenAI's words (wrong types, missing fields); anything finer, such as a sampling
parameter's range, is the node's to judge: vLLM answers 400 and we pass it on.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any

from edge.errors import InvalidRequest
from edge.jsonbody import json_object

__all__ = ["Endpoint", "RequestSpec", "check_fits", "parse_request"]


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self is Endpoint.CHAT else "/v1/completions"


@dataclasses.dataclass(slots=True)
class RequestSpec:
    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int | None
    choices: int  # completions the node will generate (n × prompts)
    n: int  # completions per prompt
    prompts: int  # prompts in the request (completions may batch several)
    include_usage: bool  # the client asked for the final usage chunk
    continuous_usage: bool  # the client asked for usage on every chunk


_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty",
                  "repetition_penalty", "min_p")
_INT_PARAMS = ("top_k", "seed", "logprobs", "top_logprobs")


def parse_request(raw: bytes, endpoint: Endpoint) -> RequestSpec:
    """Parse and check a request body.

    Raises:
      InvalidRequest: the body is not JSON, or a field has the wrong type.
    """
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    body = json_object(raw)

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string.", param="model")

    prompts = 1
    if endpoint is Endpoint.CHAT:
        _check_messages(body.get("messages"))
    else:
        prompts = _check_prompt(body.get("prompt"))

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")

    max_tokens = _optional_int(body, "max_tokens", minimum=1)
    if endpoint is Endpoint.CHAT:
        # vLLM (and OpenAI) take max_completion_tokens over max_tokens: so must the
        # reservation, or a small max_tokens would hold little for a long answer.
        completion_cap = _optional_int(body, "max_completion_tokens", minimum=1)
        if completion_cap is not None:
            max_tokens = completion_cap
    n = _optional_int(body, "n", minimum=1)
    if n is not None and n > 16:
        raise InvalidRequest("'n' may be at most 16.", param="n")
    for name in _NUMBER_PARAMS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{name}' must be a number.", param=name)
    for name in _INT_PARAMS:
        if name == "logprobs" and endpoint is Endpoint.CHAT:
            continue  # a boolean in chat
        _optional_int(body, name, minimum=None)

    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    options = options or {}
    include_usage = options.get("include_usage", False) is True
    continuous = options.get("continuous_usage_stats", False) is True

    return RequestSpec(endpoint=endpoint, body=body, model=model, stream=stream,
                       max_tokens=max_tokens, choices=prompts * (n or 1), n=n or 1,
                       prompts=prompts,
                       include_usage=include_usage, continuous_usage=continuous)


def check_fits(spec: RequestSpec, context_length: int) -> None:
    """Refuse a ``max_tokens`` beyond the model's context.

    No answer can be that long, and the reservation holds at most the context per
    choice: a node started with a longer ``--max-model-len`` must not be asked for
    more than was reserved.

    Raises:
      InvalidRequest: code ``context_length_exceeded``.
    """
    if spec.max_tokens is not None and spec.max_tokens > context_length:
        name = "max_completion_tokens" if "max_completion_tokens" in spec.body else "max_tokens"
        raise InvalidRequest(f"'{name}' is {spec.max_tokens}, more than the model's context "
                             f"of {context_length} tokens.", param=name,
                             code="context_length_exceeded")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.",
                             param="messages")
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"'{param}.role' must be a string.", param=f"{param}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"'{param}.content' must be a string or an array of parts.",
                                 param=f"{param}.content")


def _check_prompt(prompt: Any) -> int:
    """Returns how many prompts the request carries (vLLM batches a list)."""
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return len(prompt)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return 1  # one prompt given as token ids
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return len(prompt)
    raise InvalidRequest("'prompt' must be a string, an array of strings or of token ids.",
                         param="prompt")


def _optional_int(body: dict[str, Any], name: str, *, minimum: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer.", param=name)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"'{name}' must be at least {minimum}.", param=name)
    return value
