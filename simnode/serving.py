"""What every model route shares: the fault switches, pacing, prefill, a broken connection.

Faults are read once per request, at its start: a runtime change applies to the
requests that come after it (and releases the ones held by ``hang``). A request
middleware may give one request its own switches by setting ``request.ctx.faults``
(the in-process test double scripts calls this way); they win over the node's.

A generate request's first token also waits for the prefill of the prompt tokens the
prefix cache did not have (:func:`prefill_seconds`), on top of ``ttft``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sanic import HTTPResponse

from simnode.config import Faults
from simnode.context import SimContext, SimRequest
from simnode.errors import GenerationFailed, InjectedStatus

__all__ = [
    "SSE_CONTENT_TYPE",
    "break_connection",
    "enter",
    "generate_whole",
    "prefill_seconds",
    "stream_tokens",
]

#: Content type of a vLLM stream (Starlette adds the charset to text/* types).
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


async def enter(request: SimRequest) -> Faults:
    """Apply ``fail_status`` and ``hang`` to a request; return the switches it runs under.

    Raises:
        InjectedStatus: when the request is to be refused.
    """
    ctx: SimContext = request.app.ctx
    faults: Faults = getattr(request.ctx, "faults", None) or ctx.faults
    if faults.take_failure():
        assert faults.fail_status is not None
        raise InjectedStatus(faults.fail_status)
    if faults.hang:
        await faults.wait_while_hung()
    return faults


def prefill_seconds(
    ctx: SimContext, prompt_tokens: int, prompt_ids: Callable[[], Sequence[int]]
) -> float:
    """Look the prompt up in the prefix cache; return how long prefilling the rest takes.

    Call it once per request, once it has entered the batch (that is when vLLM looks).

    Parameters:
        prompt_tokens (int): the prompt's length, in tokens.
        prompt_ids: returns the prompt's token ids; called only when the cache is on,
            as tokenizing costs more than counting.

    Returns:
        Seconds (float): the uncached tokens at ``--prefill-tokens-per-second``, or 0.
    """
    cache = ctx.prefix_cache
    cached = cache.query(prompt_ids()) if cache.enabled else 0
    rate = ctx.config.prefill_tokens_per_second
    return (prompt_tokens - cached) / rate if rate > 0 else 0.0


async def generate_whole(
    ctx: SimContext, total: int, faults: Faults, *, prefill: float = 0.0
) -> None:
    """Wait as long as prefill (``prefill`` seconds) and generating ``total`` tokens take.

    The generated tokens are counted.

    Raises:
        GenerationFailed: when ``fail_after`` is below ``total`` (after the time the
            tokens before the break take).
    """
    fail_after, ttft, tps = faults.fail_after, faults.ttft, faults.tokens_per_second
    breaks = fail_after is not None and total > fail_after
    produced = fail_after if breaks and fail_after is not None else total
    delay = ttft + prefill + (max(produced - 1, 0) / tps if tps > 0 else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    ctx.scheduler.generated(produced)
    if breaks:
        raise GenerationFailed()


async def stream_tokens(
    request: SimRequest,
    response: HTTPResponse,
    tokens: Sequence[str],
    render: Callable[[int, str], bytes],
    faults: Faults,
    *,
    prefill: float = 0.0,
) -> bool:
    """Send ``render(i, token)`` for each token, paced; False if ``fail_after`` broke it.

    The first token waits ``ttft`` plus ``prefill`` seconds, the next ones
    ``1 / tokens_per_second`` each. A break closes the connection after ``fail_after``
    tokens, mid-body.
    """
    fail_after, tps = faults.fail_after, faults.tokens_per_second
    ttft = faults.ttft + prefill
    loop = asyncio.get_running_loop()
    start = loop.time()
    scheduler = request.app.ctx.scheduler
    paced = ttft > 0 or tps > 0
    for i, token in enumerate(tokens):
        if fail_after is not None and i >= fail_after:
            break_connection(request)
            return False
        if paced:
            delay = start + ttft + (i / tps if tps > 0 else 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await response.send(render(i, token))
        scheduler.generated(1)
    return True


def break_connection(request: SimRequest) -> None:
    """Close the TCP connection without ending the chunked body, like a crashed server."""
    transport = request.transport
    if transport is not None:
        transport.close()
