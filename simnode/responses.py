"""``/v1/responses``: OpenAI's Responses API as vLLM 0.33 serves it, streaming and not.

The input (a string, or a list of messages and items) becomes chat messages, the
``instructions`` a system message first, and is counted by the chat template rule of
:mod:`simnode.tokenizer`. ``max_output_tokens`` caps the reply like ``max_tokens``;
a reply it cuts short has status ``incomplete`` (``incomplete_details.reason:
"max_output_tokens"``) and its stream ends with ``response.incomplete``.

vLLM stores nothing unless ``VLLM_ENABLE_RESPONSES_API_STORE`` is set, so ``store`` is
accepted and ignored, any ``previous_response_id`` answers 404 and ``background`` 400.
A stream frames each event as ``event: <type>\\ndata: <json>\\n\\n`` with increasing
``sequence_number`` from 0, and ends after the terminal event, without ``data: [DONE]``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sanic import HTTPResponse

from simnode.config import Faults, SimConfig
from simnode.context import SimContext, SimRequest
from simnode.errors import BadRequest, InvalidBody, InvalidRequest, ModelNotFound
from simnode.parsing import check_prompt_length, load_body, optional_int
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

__all__ = ["input_messages", "responses"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_TEXT_PARTS = ("input_text", "output_text", "text")
_REASONING_FIELDS = ("context", "effort", "generate_summary", "mode", "summary")
_CACHE_OPTION_FIELDS = ("mode", "ttl", "comparison_response_id")
_STORE_MESSAGE = (
    "This vLLM engine does not support `store=True` and therefore does not support the "
    "background mode. To enable these features, set the environment variable "
    "`VLLM_ENABLE_RESPONSES_API_STORE=1` when launching the vLLM server."
)


@dataclass(slots=True, kw_only=True)
class _Job:
    """A planned Responses request."""

    prompt_tokens: int
    #: The prompt's token ids, for the prefix cache: computed only if it asks.
    prompt_ids: Callable[[], Sequence[int]]
    completion_tokens: int
    max_output_tokens: int
    incomplete: bool
    seed_text: str
    stream: bool
    created_at: int
    #: The Response object's keys from ``instructions`` to ``object`` (before ``output``).
    head: str
    #: Its keys from ``parallel_tool_calls`` to ``service_tier``.
    middle: str
    #: Its keys from ``text`` to ``truncation``, and from ``user`` to the end.
    settings: str
    tail: str


def _part_text(content: Any, loc: tuple[object, ...]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidBody("list_type", (*loc, "content"), "Input should be a valid list",
                          content)
    texts = []
    for part in content:
        if not isinstance(part, dict):
            raise InvalidBody("model_type", (*loc, "content"), "Input should be an object",
                              part)
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return " ".join(texts)


def input_messages(value: Any, instructions: str | None) -> list[dict[str, str]]:
    """Return the chat messages vLLM templates a Responses ``input`` as.

    Messages keep their role and text; a ``function_call`` is the assistant's
    arguments, a ``function_call_output`` a ``tool`` message; reasoning items and
    others add no text.

    Raises:
        InvalidBody: when ``input`` is neither a string nor a list of item objects.
    """
    messages = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(value, str):
        return [*messages, {"role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidBody("string_type", ("input", "str"), "Input should be a valid string",
                          value)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidBody("model_type", ("input", i), "Input should be an object", item)
        kind = item.get("type")
        if isinstance(item.get("role"), str) and kind in (None, "message"):
            text = _part_text(item.get("content"), ("input", i))
            messages.append({"role": item["role"], "content": text})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": str(item.get("arguments", ""))})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str)
                             else _dumps(output)})
    return messages


def _float(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidBody("float_type", (key,), "Input should be a valid number", value)
    return float(value)


def _echo(value: Any, fields: tuple[str, ...]) -> str:
    """An object the Response echoes, with the SDK model's keys in its order."""
    if not isinstance(value, dict):
        return "null"
    return _dumps({name: value.get(name) for name in fields})


def _settings(
    data: dict[str, Any], config: SimConfig, max_tokens: int
) -> tuple[str, str, str, str]:
    """The echoed parts of the Response object, as ``ResponsesResponse.from_request``."""
    temperature = _float(data, "temperature", 1.0)
    top_p = 1.0 if temperature < 1e-5 else _float(data, "top_p", 1.0)
    tools = data.get("tools") or []
    tool_choice = data.get("tool_choice", "auto")
    if not tools and tool_choice in ("auto", "none"):
        tool_choice = "none"
    parallel = data.get("parallel_tool_calls")
    include = data.get("include") or []
    if not isinstance(include, list):
        raise InvalidBody("list_type", ("include",), "Input should be a valid list", include)
    top_logprobs = data.get("top_logprobs", 0) if "message.output_text.logprobs" in include \
        else None
    retention = data.get("prompt_cache_retention")
    head = (
        f'"instructions":{_dumps(data.get("instructions"))},'
        f'"metadata":{_dumps(data.get("metadata"))},"model":{_dumps(config.model)},'
        '"object":"response"'
    )
    middle = (
        f'"parallel_tool_calls":{_dumps(True if parallel is None else parallel)},'
        f'"temperature":{_dumps(temperature)},"tool_choice":{_dumps(tool_choice)},'
        f'"tools":{_dumps(tools)},"top_p":{_dumps(top_p)},'
        f'"background":{_dumps(bool(data.get("background")))},'
        f'"max_output_tokens":{max_tokens},"max_tool_calls":{_dumps(data.get("max_tool_calls"))},'
        f'"previous_response_id":null,"prompt":null,'
        f'"prompt_cache_options":{_echo(data.get("prompt_cache_options"), _CACHE_OPTION_FIELDS)},'
        f'"prompt_cache_key":{_dumps(data.get("prompt_cache_key"))},'
        f'"prompt_cache_retention":'
        f'{_dumps("in_memory" if retention == "in-memory" else retention)},'
        f'"reasoning":{_echo(data.get("reasoning"), _REASONING_FIELDS)},'
        f'"safety_identifier":{_dumps(data.get("safety_identifier"))},'
        f'"service_tier":{_dumps(data.get("service_tier", "auto"))}'
    )
    text = data.get("text")
    settings = (
        f'"text":{_echo(text, ("format", "verbosity"))},"top_logprobs":{_dumps(top_logprobs)},'
        f'"truncation":{_dumps(data.get("truncation") or "disabled")}'
    )
    tail = (
        f'"user":{_dumps(data.get("user"))},'
        f'"presence_penalty":{_dumps(_float(data, "presence_penalty", 0.0))},'
        f'"frequency_penalty":{_dumps(_float(data, "frequency_penalty", 0.0))},'
        '"kv_transfer_params":null,"ec_transfer_params":null,"input_messages":null,'
        '"output_messages":null'
    )
    return head, middle, settings, tail


def _plan(data: dict[str, Any], config: SimConfig) -> _Job:
    """Check a request the way vLLM does, in its order, and decide the reply length."""
    if "input" not in data:
        raise InvalidBody("missing", ("input",), "Field required", data)
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidBody("bool_type", ("stream",), "Input should be a valid boolean", stream)
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidBody("string_type", ("instructions",), "Input should be a valid string",
                          instructions)
    max_output = optional_int(data, "max_output_tokens")
    messages = input_messages(data["input"], instructions)
    store = data.get("store", True)
    if data.get("background") and not store:
        raise BadRequest("background can only be used when `store` is true", param="background")
    if data.get("prompt") is not None:
        raise BadRequest("prompt template is not supported", param="prompt")
    if not data.get("tools") and data.get("tool_choice") == "required":
        raise BadRequest("Tool choice 'required' must be specified with 'tools' parameter.",
                         param="tool_choice")
    model = data.get("model")
    if model is not None and model != config.model:
        raise ModelNotFound(model, aliases=config.model)
    if store and data.get("background"):
        raise InvalidRequest(_STORE_MESSAGE, param="background")
    previous = data.get("previous_response_id")
    if previous is not None and data.get("previous_input_messages"):
        raise InvalidRequest("Only one of `previous_input_messages` and "
                             "`previous_response_id` can be set.", param="previous_response_id")
    if previous is not None:  # nothing is stored: every id is unknown
        raise InvalidRequest(f"Response with id '{previous}' not found.", status=404,
                             param="response_id")
    max_model_len = config.max_model_len
    if max_output is not None and max_output > max_model_len:
        raise BadRequest(f"max_output_tokens={max_output} cannot be greater than "
                         f"max_model_len={max_model_len}. Please request fewer output tokens.",
                         param="max_output_tokens", value=max_output)
    prompt_tokens = chat_prompt_tokens(messages)
    check_prompt_length(prompt_tokens, max_model_len)
    if prompt_tokens >= max_model_len:
        raise InvalidRequest(f"The engine prompt length {prompt_tokens} exceeds the "
                             f"max_model_len {max_model_len}. Please reduce prompt.",
                             param="input")
    limit = max_model_len - prompt_tokens
    if max_output is not None:
        limit = min(limit, max_output)
    if limit < 1:
        raise BadRequest(f"max_tokens must be at least 1, got {limit}.", param="max_tokens",
                         value=limit)
    if data.get("ignore_eos") is True or limit < config.reply_tokens:
        completion_tokens, incomplete = limit, True
    else:
        completion_tokens, incomplete = config.reply_tokens, False
    head, middle, settings, tail = _settings(data, config, limit)
    return _Job(
        prompt_tokens=prompt_tokens,
        prompt_ids=lambda: chat_prompt_ids(messages),
        completion_tokens=completion_tokens,
        max_output_tokens=limit,
        incomplete=incomplete,
        created_at=int(time.time()),
        seed_text=chat_seed_text(messages),
        stream=stream,
        head=head,
        middle=middle,
        settings=settings,
        tail=tail,
    )


def _usage(job: _Job, output_tokens: int) -> str:
    """vLLM's ``ResponseUsage`` (one turn: the per-turn lists stay empty)."""
    return (
        f'{{"input_tokens":{job.prompt_tokens},"input_tokens_details":{{"cached_tokens":0,'
        '"cache_write_tokens":0,"input_tokens_per_turn":[],"cached_tokens_per_turn":[]},'
        f'"output_tokens":{output_tokens},"output_tokens_details":{{"reasoning_tokens":0,'
        '"tool_output_tokens":0,"output_tokens_per_turn":[],"tool_output_tokens_per_turn":[]},'
        f'"total_tokens":{job.prompt_tokens + output_tokens}}}'
    )


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def _part(text: str, logprobs: str = "null") -> str:
    return f'{{"annotations":[],"text":{_dumps(text)},"type":"output_text","logprobs":{logprobs}}}'


def _message(item_id: str, content: str, status: str) -> str:
    return (
        f'{{"id":"{item_id}","content":[{content}],"role":"assistant","status":"{status}",'
        '"type":"message","phase":null}'
    )


class _Response:
    """Builds the Response object of one request in its states."""

    __slots__ = ("_id", "_job")

    def __init__(self, job: _Job, request_id: str) -> None:
        self._job = job
        self._id = request_id

    def json(self, status: str, output: str, usage: str) -> str:
        """The object with ``status``, the ``output`` items' JSON and the ``usage`` JSON."""
        job = self._job
        details = '{"reason":"max_output_tokens"}' if status == "incomplete" else "null"
        return (
            f'{{"id":{_dumps(self._id)},"created_at":{job.created_at},'
            f'"incomplete_details":{details},{job.head},"output":[{output}],'
            f'{job.middle},"status":"{status}",{job.settings},"usage":{usage},{job.tail}}}'
        )


def _event(kind: str, body: str) -> bytes:
    return f"event: {kind}\ndata: {body}\n\n".encode()


async def _stream(
    request: SimRequest,
    ctx: SimContext,
    job: _Job,
    response: _Response,
    faults: Faults,
    prefill: float,
) -> None:
    """Send the events of one response, one ``output_text.delta`` per token."""
    tokens = generate_tokens(job.seed_text, job.completion_tokens)
    item_id = _new_id("msg_")
    status = "incomplete" if job.incomplete else "completed"
    sent = await request.respond(content_type=SSE_CONTENT_TYPE)
    initial = response.json("in_progress", "", "null")
    await sent.send(
        _event("response.created",
               f'{{"response":{initial},"sequence_number":0,"type":"response.created"}}')
        + _event("response.in_progress",
                 f'{{"response":{initial},"sequence_number":1,"type":"response.in_progress"}}')
    )
    ids = f'"item_id":"{item_id}","logprobs":[],"output_index":0,"sequence_number":'
    opening = (
        _event("response.output_item.added",
               f'{{"item":{_message(item_id, "", "in_progress")},"output_index":0,'
               '"sequence_number":2,"type":"response.output_item.added"}')
        + _event("response.content_part.added",
                 f'{{"content_index":0,"item_id":"{item_id}","output_index":0,'
                 f'"part":{_part("", "[]")},"sequence_number":3,'
                 '"type":"response.content_part.added"}')
    )

    def render(i: int, token: str) -> bytes:
        delta = _event(
            "response.output_text.delta",
            f'{{"content_index":0,"delta":{_dumps(token)},{ids}{4 + i},'
            '"type":"response.output_text.delta"}',
        )
        return opening + delta if i == 0 else delta

    if not await stream_tokens(request, sent, tokens, render, faults, prefill=prefill):
        return
    ctx.scheduler.finished("length" if job.incomplete else "stop")
    text = "".join(tokens)
    n = 4 + len(tokens)
    part = _part(text)
    item = _message(item_id, part, status)
    final = response.json(status, item, _usage(job, len(tokens)))
    terminal = "response.incomplete" if job.incomplete else "response.completed"
    await sent.send(
        _event("response.output_text.done",
               f'{{"content_index":0,"item_id":"{item_id}","logprobs":[],"output_index":0,'
               f'"sequence_number":{n},"text":{_dumps(text)},'
               '"type":"response.output_text.done"}')
        + _event("response.content_part.done",
                 f'{{"content_index":0,"item_id":"{item_id}","output_index":0,"part":{part},'
                 f'"sequence_number":{n + 1},"type":"response.content_part.done"}}')
        + _event("response.output_item.done",
                 f'{{"item":{item},"output_index":0,"sequence_number":{n + 2},'
                 '"type":"response.output_item.done"}')
        + _event(terminal,
                 f'{{"response":{final},"sequence_number":{n + 3},"type":"{terminal}"}}')
    )
    await sent.eof()


async def responses(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/responses``."""
    ctx: SimContext = request.app.ctx
    faults = await enter(request)
    data = load_body(request.body, request.content_type)
    job = _plan(data, ctx.config)
    given = data.get("request_id")
    response = _Response(job, given if isinstance(given, str) else _new_id("resp_"))
    scheduler = ctx.scheduler
    await scheduler.admit(job.prompt_tokens)
    try:
        prefill = prefill_seconds(ctx, job.prompt_tokens, job.prompt_ids)
        if job.stream:
            await _stream(request, ctx, job, response, faults, prefill)
            return None
        await generate_whole(ctx, job.completion_tokens, faults, prefill=prefill)
        scheduler.finished("length" if job.incomplete else "stop")
    finally:
        scheduler.release()
    status = "incomplete" if job.incomplete else "completed"
    text = generate_text(job.seed_text, job.completion_tokens)
    item = _message(_new_id("msg_"), _part(text), status)
    body = response.json(status, item, _usage(job, job.completion_tokens))
    return HTTPResponse(body.encode(), content_type="application/json")
