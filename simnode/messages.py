"""``/v1/messages``: Anthropic's Messages API as vLLM 0.33 serves it, streaming and not.

vLLM turns the request into a chat completion (the ``system`` prompt first, then each
message's text) and its answer back, so the counts are the chat template's, the id is
the chat completion's (``chatcmpl-...``, not ``msg_...``) and ``max_tokens`` caps the
reply like a chat's. Errors of the route are in Anthropic's shape
(``{"type":"error","error":{"type","message"}}``), except a body that fails request
validation (a missing ``max_tokens``...), which vLLM's app-wide handler answers in the
OpenAI shape before the route runs.

A stream is ``message_start`` (usage: the input tokens, ``output_tokens: 0``),
``content_block_start``, one ``content_block_delta`` per token, ``content_block_stop``,
``message_delta`` (``stop_reason``, the usage with both counts) and ``message_stop``;
no ``ping`` and no ``data: [DONE]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sanic import HTTPResponse

from simnode.config import Faults, SimConfig
from simnode.context import SimContext, SimRequest
from simnode.errors import BadRequest, InvalidBody, ModelNotFound, SimError
from simnode.parsing import check_prompt_length, load_body
from simnode.serving import (
    SSE_CONTENT_TYPE,
    enter,
    generate_whole,
    prefill_seconds,
    stream_tokens,
)
from simnode.tokenizer import (
    chat_prompt_ids,
    chat_prompt_tokens,
    chat_seed_text,
    generate_text,
    generate_tokens,
)

__all__ = ["anthropic_messages", "messages"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ROLES = ("user", "assistant", "system")
_BLOCKS = ("text", "image", "tool_use", "tool_result", "tool_reference", "thinking",
           "redacted_thinking", "tool_addition", "tool_removal")
_BILLING_HEADER = "x-anthropic-billing-header"
_END = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@dataclass(slots=True, kw_only=True)
class _Job:
    """A planned Messages request."""

    prompt_tokens: int
    #: The prompt's token ids, for the prefix cache: computed only if it asks.
    prompt_ids: Callable[[], Sequence[int]]
    completion_tokens: int
    stop_reason: str
    seed_text: str
    stream: bool


def _blocks(content: Any, loc: tuple[object, ...]) -> list[dict[str, Any]]:
    """The content blocks of a message or system prompt, checked as vLLM's model does."""
    if not isinstance(content, list):
        raise InvalidBody("list_type", (*loc, "list[AnthropicContentBlock]"),
                          "Input should be a valid list", content)
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise InvalidBody("model_type", (*loc, i), "Input should be a valid dictionary",
                              block)
        if block.get("type") not in _BLOCKS:
            options = ", ".join(f"'{b}'" for b in _BLOCKS[:-1]) + f" or '{_BLOCKS[-1]}'"
            raise InvalidBody("literal_error", (*loc, i, "type"), f"Input should be {options}",
                              block.get("type"))
        result = block.get("content")
        if block.get("type") == "tool_result" and isinstance(result, list):
            _blocks(result, (*loc, i, "content"))  # a result's blocks are blocks too
    return content


def _text(blocks: list[dict[str, Any]]) -> str:
    """The text a block list gives the template: text blocks, tool calls and results."""
    parts = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_use":
            parts.append(f"{block.get('name', '')} {_dumps(block.get('input') or {})}")
        elif kind == "tool_result":
            result = block.get("content")
            parts.append(result if isinstance(result, str) else
                         _text(result) if isinstance(result, list) else "")
    return " ".join(part for part in parts if part)


def anthropic_messages(data: dict[str, Any]) -> list[dict[str, str]]:
    """Return the chat messages vLLM templates a Messages request as.

    Raises:
        InvalidBody: when ``messages`` or ``system`` has a shape vLLM's model refuses.
    """
    chat: list[dict[str, str]] = []
    system = data.get("system")
    if isinstance(system, str):
        if system:
            chat.append({"role": "system", "content": system})
    elif system is not None:
        texts = [b["text"] for b in _blocks(system, ("system",))
                 if b.get("type") == "text" and isinstance(b.get("text"), str)
                 and not b["text"].startswith(_BILLING_HEADER)]
        if texts:
            chat.append({"role": "system", "content": "".join(texts)})
    value = data.get("messages")
    if value is None:
        raise InvalidBody("missing", ("messages",), "Field required", data)
    if not isinstance(value, list):
        raise InvalidBody("list_type", ("messages",), "Input should be a valid list", value)
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise InvalidBody("model_type", ("messages", i), "Input should be a valid dictionary",
                              message)
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidBody("literal_error", ("messages", i, "role"),
                              "Input should be 'user', 'assistant' or 'system'", role)
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif content is None:
            raise InvalidBody("missing", ("messages", i, "content"), "Field required", message)
        else:
            text = _text(_blocks(content, ("messages", i, "content")))
        if role == "system" and (not text or text.startswith(_BILLING_HEADER)):
            continue
        chat.append({"role": role, "content": text})
    return chat


def _plan(data: dict[str, Any], config: SimConfig) -> _Job:
    """Check a request the way vLLM does, in its order, and decide the reply length."""
    model = data.get("model")
    if model is None:
        raise InvalidBody("missing", ("model",), "Field required", data)
    if not isinstance(model, str):
        raise InvalidBody("string_type", ("model",), "Input should be a valid string", model)
    if not model:
        raise InvalidBody("value_error", ("model",), "Value error, Model is required", model)
    chat = anthropic_messages(data)
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise InvalidBody("missing", ("max_tokens",), "Field required", data)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidBody("int_type", ("max_tokens",), "Input should be a valid integer",
                          max_tokens)
    if max_tokens <= 0:
        raise InvalidBody("value_error", ("max_tokens",),
                          "Value error, max_tokens must be positive", max_tokens)
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidBody("bool_type", ("stream",), "Input should be a valid boolean", stream)
    stops = data.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and
                                  all(isinstance(s, str) for s in stops)):
        raise InvalidBody("list_type", ("stop_sequences",), "Input should be a valid list",
                          stops)
    if model != config.model:
        raise ModelNotFound(model, aliases=config.model)
    max_model_len = config.max_model_len
    if max_tokens > max_model_len:
        raise BadRequest(f"max_completion_tokens={max_tokens} cannot be greater than "
                         f"max_model_len={max_model_len}. Please request fewer output tokens.",
                         param="max_completion_tokens", value=max_tokens)
    prompt_tokens = chat_prompt_tokens(chat)
    check_prompt_length(prompt_tokens, max_model_len)
    limit = min(max_tokens, max_model_len - prompt_tokens)
    if limit < 1:
        raise BadRequest(f"max_tokens must be at least 1, got {limit}.", param="max_tokens",
                         value=limit)
    if limit < config.reply_tokens:
        completion_tokens, stop_reason = limit, "max_tokens"
    else:
        completion_tokens, stop_reason = config.reply_tokens, "end_turn"
    return _Job(prompt_tokens=prompt_tokens, prompt_ids=lambda: chat_prompt_ids(chat),
                completion_tokens=completion_tokens, stop_reason=stop_reason,
                seed_text=chat_seed_text(chat), stream=stream)


def _usage(job: _Job, output_tokens: int) -> str:
    return f'{{"input_tokens":{job.prompt_tokens},"output_tokens":{output_tokens}}}'


def _event(kind: str, body: str) -> bytes:
    return f"event: {kind}\ndata: {body}\n\n".encode()


async def _stream(
    request: SimRequest,
    ctx: SimContext,
    job: _Job,
    message_id: str,
    faults: Faults,
    prefill: float,
) -> None:
    """Send the events of one message, one ``content_block_delta`` per token."""
    tokens = generate_tokens(job.seed_text, job.completion_tokens)
    sent = await request.respond(content_type=SSE_CONTENT_TYPE)
    opening = _event(
        "message_start",
        f'{{"type":"message_start","message":{{"id":{_dumps(message_id)},"type":"message",'
        f'"role":"assistant","content":[],"model":{ctx.model_json},"stop_reason":null,'
        f'"stop_sequence":null,"usage":{_usage(job, 0)}}}}}',
    ) + _event(
        "content_block_start",
        '{"type":"content_block_start","content_block":{"type":"text","text":""},"index":0}',
    )

    def render(i: int, token: str) -> bytes:
        delta = _event(
            "content_block_delta",
            '{"type":"content_block_delta","delta":{"type":"text_delta","text":'
            f'{_dumps(token)}}},"index":0}}',
        )
        return opening + delta if i == 0 else delta

    if not await stream_tokens(request, sent, tokens, render, faults, prefill=prefill):
        return
    ctx.scheduler.finished("length" if job.stop_reason == "max_tokens" else "stop")
    await sent.send(
        _event("content_block_stop", '{"type":"content_block_stop","index":0}')
        + _event(
            "message_delta",
            f'{{"type":"message_delta","delta":{{"stop_reason":"{job.stop_reason}",'
            f'"stop_sequence":null}},"usage":{_usage(job, len(tokens))}}}',
        )
        + _END
    )
    await sent.eof()


async def _serve(request: SimRequest) -> HTTPResponse | None:
    ctx: SimContext = request.app.ctx
    faults = await enter(request)
    job = _plan(load_body(request.body, request.content_type), ctx.config)
    message_id = "chatcmpl-" + (request.headers.get("x-request-id") or os.urandom(16).hex())
    scheduler = ctx.scheduler
    await scheduler.admit(job.prompt_tokens)
    try:
        prefill = prefill_seconds(ctx, job.prompt_tokens, job.prompt_ids)
        if job.stream:
            await _stream(request, ctx, job, message_id, faults, prefill)
            return None
        await generate_whole(ctx, job.completion_tokens, faults, prefill=prefill)
        scheduler.finished("length" if job.stop_reason == "max_tokens" else "stop")
    finally:
        scheduler.release()
    text = generate_text(job.seed_text, job.completion_tokens)
    body = (
        f'{{"id":{_dumps(message_id)},"type":"message","role":"assistant",'
        f'"content":[{{"type":"text","text":{_dumps(text)}}}],"model":{ctx.model_json},'
        f'"stop_reason":"{job.stop_reason}","usage":{_usage(job, job.completion_tokens)}}}'
    )
    return HTTPResponse(body.encode(), content_type="application/json")


async def messages(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/messages``; the route's own errors in Anthropic's shape."""
    try:
        return await _serve(request)
    except InvalidBody:
        raise  # answered by vLLM's app-wide validation handler, in the OpenAI shape
    except SimError as exc:
        return HTTPResponse(exc.anthropic_body(), status=exc.status,
                            content_type="application/json")
