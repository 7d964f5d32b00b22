"""``/v1/chat/completions`` and ``/v1/completions``: plan, pace, answer or stream.

The fault switches apply as on every model route (:mod:`simnode.serving`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sanic import HTTPResponse

from simnode.config import Faults, SimConfig
from simnode.context import SimContext, SimRequest
from simnode.parsing import Job, load_body, parse_chat, parse_completion
from simnode.render import DONE, StreamChunks, completion_body
from simnode.serving import (
    SSE_CONTENT_TYPE,
    enter,
    generate_whole,
    prefill_seconds,
    stream_tokens,
)
from simnode.tokenizer import generate_text, generate_tokens

__all__ = ["chat_completions", "completions"]

Parser = Callable[[dict[str, Any], SimConfig], Job]


async def chat_completions(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/chat/completions``."""
    return await _serve(request, parse_chat)


async def completions(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/completions``."""
    return await _serve(request, parse_completion)


async def _serve(request: SimRequest, parse: Parser) -> HTTPResponse | None:
    ctx = request.app.ctx
    faults = await enter(request)
    job = parse(load_body(request.body, request.content_type), ctx.config)
    scheduler = ctx.scheduler
    await scheduler.admit(job.prompt_tokens)
    try:
        prefill = prefill_seconds(ctx, job.prompt_tokens, job.prompt_ids)
        if job.stream:
            await _stream(request, ctx, job, faults, prefill)
            return None
        return await _complete(ctx, job, faults, prefill)
    finally:
        scheduler.release()


async def _complete(ctx: SimContext, job: Job, faults: Faults, prefill: float) -> HTTPResponse:
    """Wait as long as prefill and generating would take, then answer the whole completion."""
    total = job.completion_tokens
    await generate_whole(ctx, total, faults, prefill=prefill)
    ctx.scheduler.finished(job.finish_reason)
    text = generate_text(job.seed_text, total)
    body = completion_body(job, ctx.model_json, text, total, usage=ctx.reports_usage)
    return HTTPResponse(body, content_type="application/json")


async def _stream(
    request: SimRequest, ctx: SimContext, job: Job, faults: Faults, prefill: float
) -> None:
    """Stream one SSE chunk per token; with ``fail_after`` close the connection mid-body."""
    chunks = StreamChunks(job, ctx.model_json, usage=ctx.reports_usage)
    tokens = generate_tokens(job.seed_text, job.completion_tokens)
    last = len(tokens) - 1
    response = await request.respond(content_type=SSE_CONTENT_TYPE)

    def render(i: int, token: str) -> bytes:
        chunk = chunks.token(token, i + 1, last=i == last)
        return chunks.role() + chunk if i == 0 and job.chat else chunk

    if not await stream_tokens(request, response, tokens, render, faults, prefill=prefill):
        return
    if not tokens:
        if job.chat:
            await response.send(chunks.role())
        await response.send(chunks.token("", 0, last=True))
    ctx.scheduler.finished(job.finish_reason)
    if job.include_usage and chunks.reports_usage:
        await response.send(chunks.final_usage(len(tokens)))
    await response.send(DONE)
    await response.eof()
