"""Turn a completion request body into a :class:`Job`, checking it the way vLLM does.

Only what changes the answer is checked; other sampling parameters are accepted and
ignored. The checks are plain ``isinstance`` tests: this is on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simnode.config import SimConfig
from simnode.errors import BadRequest, InvalidBody, ModelNotFound
from simnode.tokenizer import (
    chat_prompt_ids,
    chat_prompt_tokens,
    chat_seed_text,
    completion_prompt_ids,
    completion_prompt_tokens,
)

__all__ = [
    "Job",
    "check_prompt_length",
    "load_body",
    "optional_int",
    "parse_chat",
    "parse_completion",
]


@dataclass(slots=True, kw_only=True)
class Job:
    """One generation request, planned: how many tokens in, how many out, and how to answer."""

    chat: bool
    prompt_tokens: int
    #: The prompt's token ids, for the prefix cache: computed only if it asks.
    prompt_ids: Callable[[], Sequence[int]]
    completion_tokens: int
    finish_reason: str
    seed_text: str
    stream: bool
    include_usage: bool
    continuous_usage: bool


def load_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse a JSON object body.

    Raises:
        InvalidBody: on a non-JSON content type, malformed JSON, or a non-object.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise InvalidBody.media_type()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        raise InvalidBody("json_invalid", (pos,), "JSON decode error", {}) from None
    if not isinstance(data, dict):
        raise InvalidBody(
            "model_attributes_type", (), "Input should be a valid dictionary", data
        )
    return data


def _check_model(data: dict[str, Any], config: SimConfig) -> None:
    model = data.get("model")
    if model is not None and model != config.model:
        raise ModelNotFound(model)


def optional_int(data: dict[str, Any], key: str) -> int | None:
    """Return ``data[key]`` if it is an integer, None if absent or null.

    Raises:
        InvalidBody: when it is something else.
    """
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBody("int_type", (key,), "Input should be a valid integer", value)
    return value


def check_prompt_length(tokens: int, max_model_len: int, *, clipped: bool = True) -> None:
    """Refuse a prompt longer than the context window, in vLLM 0.33's words.

    vLLM tokenizes text with truncation at ``max_model_len + 1`` tokens, so a text
    prompt over the limit reports "at least" that many (``clipped``); token ids are
    counted whole.

    Raises:
        BadRequest: when ``tokens`` exceeds ``max_model_len``.
    """
    if tokens <= max_model_len:
        return
    shown = min(tokens, max_model_len + 1) if clipped else tokens
    qualifier = "at least " if shown == max_model_len + 1 else ""
    raise BadRequest(
        f"This model's maximum context length is {max_model_len} tokens. However, your "
        f"prompt contains {qualifier}{shown} input tokens, which exceeds this limit even "
        "without any output tokens. Please reduce the length of the input prompt.",
        param="input_tokens",
        value=shown,
    )


def _stream_flags(data: dict[str, Any]) -> tuple[bool, bool, bool]:
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidBody("bool_type", ("stream",), "Input should be a valid boolean", stream)
    options = data.get("stream_options")
    if options is None:
        return stream, False, False
    if not isinstance(options, dict):
        raise InvalidBody("model_type", ("stream_options",), "Input should be an object", options)
    if not stream:
        raise InvalidBody(
            "value_error",
            (),
            "Value error, Stream options can only be defined when `stream=True`.",
            data,
        )
    # vLLM's StreamOptions defaults include_usage to true once stream_options is given.
    include_usage = options.get("include_usage", True) is not False
    continuous = include_usage and options.get("continuous_usage_stats") is True
    return stream, include_usage, continuous


def _plan(
    data: dict[str, Any],
    config: SimConfig,
    *,
    chat: bool,
    prompt_tokens: int,
    prompt_ids: Callable[[], Sequence[int]],
    seed_text: str,
) -> Job:
    """Check the lengths against the context window and decide the reply length."""
    n = optional_int(data, "n")
    if n is not None and n != 1:
        raise BadRequest("simnode serves only n=1 (one choice per request)", param="n", value=n)
    if chat:
        max_tokens = optional_int(data, "max_completion_tokens") or optional_int(
            data, "max_tokens"
        )
    else:
        max_tokens = optional_int(data, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest(
            f"max_tokens must be at least 1, got {max_tokens}.",
            param="max_tokens",
            value=max_tokens,
        )
    max_model_len = config.max_model_len
    if prompt_tokens >= max_model_len:
        raise BadRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the "
            "input messages.",
            param="input_tokens",
            value=prompt_tokens,
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise BadRequest(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {max_model_len} tokens and your request has "
            f"{prompt_tokens} input tokens ({max_tokens} > {max_model_len} - {prompt_tokens}).",
            param="max_tokens",
            value=max_tokens,
        )
    limit = max_tokens if max_tokens is not None else max_model_len - prompt_tokens
    if data.get("ignore_eos") is True:
        completion_tokens, finish_reason = limit, "length"
    else:
        natural = config.reply_tokens
        min_tokens = data.get("min_tokens")
        if isinstance(min_tokens, int) and min_tokens > natural:
            natural = min_tokens
        if limit < natural:
            completion_tokens, finish_reason = limit, "length"
        else:
            completion_tokens, finish_reason = natural, "stop"
    stream, include_usage, continuous = _stream_flags(data)
    seed = optional_int(data, "seed")
    if seed is not None:  # as vLLM: the same seed, the same reply; another, another
        seed_text += f"\nseed: {seed}"
    return Job(
        chat=chat,
        prompt_tokens=prompt_tokens,
        prompt_ids=prompt_ids,
        completion_tokens=completion_tokens,
        finish_reason=finish_reason,
        seed_text=seed_text,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
    )


def parse_chat(data: dict[str, Any], config: SimConfig) -> Job:
    """Plan a ``/v1/chat/completions`` request.

    Raises:
        InvalidBody: when ``messages`` is missing or malformed.
        ModelNotFound: when ``model`` names another model.
        BadRequest: when the prompt or ``max_tokens`` do not fit the context window.
    """
    messages = data.get("messages")
    if messages is None:
        raise InvalidBody("missing", ("messages",), "Field required", data)
    if not isinstance(messages, list):
        raise InvalidBody("list_type", ("messages",), "Input should be a valid list", messages)
    try:
        prompt_tokens = chat_prompt_tokens(messages)
        seed_text = chat_seed_text(messages)
    except ValueError as exc:
        raise InvalidBody("value_error", ("messages",), str(exc), messages) from None
    _check_model(data, config)
    return _plan(data, config, chat=True, prompt_tokens=prompt_tokens,
                 prompt_ids=lambda: chat_prompt_ids(messages), seed_text=seed_text)


def _completion_prompt(prompt: Any) -> tuple[int, Callable[[], Sequence[int]], str]:
    """Return (prompt tokens, a function giving its ids, seed text) of a completion ``prompt``."""
    if isinstance(prompt, str):
        return completion_prompt_tokens(prompt), lambda: completion_prompt_ids(prompt), prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            # already token ids
            return len(prompt), lambda: prompt, " ".join(map(str, prompt))
        if len(prompt) == 1 and isinstance(prompt[0], str):
            text = prompt[0]
            return completion_prompt_tokens(text), lambda: completion_prompt_ids(text), text
        if all(isinstance(x, str) for x in prompt):
            raise BadRequest("simnode serves one prompt per request", param="prompt")
    raise InvalidBody(
        "value_error", ("prompt",), "Input should be a string or a list of tokens", prompt
    )


def parse_completion(data: dict[str, Any], config: SimConfig) -> Job:
    """Plan a ``/v1/completions`` request.

    Raises:
        InvalidBody: when ``prompt`` is missing or malformed.
        ModelNotFound: when ``model`` names another model.
        BadRequest: when the prompt or ``max_tokens`` do not fit the context window.
    """
    prompt = data.get("prompt")
    if prompt is None:
        raise InvalidBody("missing", ("prompt",), "Field required", data)
    prompt_tokens, prompt_ids, seed_text = _completion_prompt(prompt)
    _check_model(data, config)
    return _plan(data, config, chat=False, prompt_tokens=prompt_tokens, prompt_ids=prompt_ids,
                 seed_text=seed_text)
