"""``/v1/chat/completions`` and ``/v1/completions``: plan, pace, answer or stream.

Faults are read once per request, at its start: a runtime change applies to the
requests that come after it (and releases the ones held by ``hang``). A request
middleware may give one request its own switches by setting ``request.ctx.faults``
(the in-process test double scripts calls this way); they win over the node's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sanic import HTTPResponse

from simnode.config import SimConfig
from simnode.context import SimContext, SimRequest
from simnode.errors import GenerationFailed, InjectedStatus
from simnode.parsing import Job, load_body, parse_chat, parse_completion
from simnode.render import DONE, StreamChunks, completion_body
from simnode.tokenizer import generate_text, generate_tokens

__all__ = ["chat_completions", "completions"]

#: Content type of a vLLM stream (Starlette adds the charset to text/* types).
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

Parser = Callable[[dict[str, Any], SimConfig], Job]


async def chat_completions(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/chat/completions``."""
    return await _serve(request, parse_chat)


async def completions(request: SimRequest) -> HTTPResponse | None:
    """Answer ``POST /v1/completions``."""
    return await _serve(request, parse_completion)


async def _serve(request: SimRequest, parse: Parser) -> HTTPResponse | None:
    ctx = request.app.ctx
    faults = getattr(request.ctx, "faults", None) or ctx.faults
    if faults.take_failure():
        assert faults.fail_status is not None
        raise InjectedStatus(faults.fail_status)
    if faults.hang:
        await faults.wait_while_hung()
    job = parse(load_body(request.body, request.content_type), ctx.config)
    fail_after, ttft, tps = faults.fail_after, faults.ttft, faults.tokens_per_second
    scheduler = ctx.scheduler
    await scheduler.admit(job.prompt_tokens)
    try:
        if job.stream:
            await _stream(request, ctx, job, fail_after, ttft, tps)
            return None
        return await _complete(ctx, job, fail_after, ttft, tps)
    finally:
        scheduler.release()


async def _complete(
    ctx: SimContext, job: Job, fail_after: int | None, ttft: float, tps: float
) -> HTTPResponse:
    """Wait as long as generating would take, then answer the whole completion."""
    total = job.completion_tokens
    breaks = fail_after is not None and total > fail_after
    produced = fail_after if breaks and fail_after is not None else total
    delay = ttft + (max(produced - 1, 0) / tps if tps > 0 else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    ctx.scheduler.generated(produced)
    if breaks:
        raise GenerationFailed()
    ctx.scheduler.finished(job.finish_reason)
    text = generate_text(job.seed_text, total)
    body = completion_body(job, ctx.model_json, text, total, usage=ctx.reports_usage)
    return HTTPResponse(body, content_type="application/json")


async def _stream(
    request: SimRequest,
    ctx: SimContext,
    job: Job,
    fail_after: int | None,
    ttft: float,
    tps: float,
) -> None:
    """Stream one SSE chunk per token; with ``fail_after`` close the connection mid-body."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks = StreamChunks(job, ctx.model_json, usage=ctx.reports_usage)
    tokens = generate_tokens(job.seed_text, job.completion_tokens)
    last = len(tokens) - 1
    scheduler = ctx.scheduler
    response = await request.respond(content_type=SSE_CONTENT_TYPE)
    paced = ttft > 0 or tps > 0
    for i, token in enumerate(tokens):
        if fail_after is not None and i >= fail_after:
            _break_connection(request)
            return
        if paced:
            due = start + ttft + (i / tps if tps > 0 else 0.0)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if i == 0 and job.chat:
            await response.send(chunks.role())
        await response.send(chunks.token(token, i + 1, last=i == last))
        scheduler.generated(1)
    if not tokens:
        if job.chat:
            await response.send(chunks.role())
        await response.send(chunks.token("", 0, last=True))
    scheduler.finished(job.finish_reason)
    if job.include_usage and chunks.reports_usage:
        await response.send(chunks.final_usage(len(tokens)))
    await response.send(DONE)
    await response.eof()


def _break_connection(request: SimRequest) -> None:
    """Close the TCP connection without ending the chunked body, like a crashed server."""
    transport = request.transport
    if transport is not None:
        transport.close()
