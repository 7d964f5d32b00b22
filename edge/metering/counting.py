"""The edge's own token count, for nodes that report no usage.

vLLM reports usage on every chunk when asked, but llama.cpp's server, older vLLM
releases, SGLang and others may send none, or only at the very end: without a
count of its own the edge would charge such a stream nothing. So the relay counts
what it delivers (one token per chunk of generated text, per choice), and at the
end the node's ``POST /tokenize`` (vLLM's shape) gives the prompt's tokens and
checks the completion's; the larger count is charged, never less than what was
delivered. A node without a usable ``/tokenize`` is charged the reservation's
estimates, which are upper bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

import httpx

from edge.fleet.upstream import NODE_FAILURES
from edge.metering.request_spec import Endpoint

__all__ = ["DeltaCounter", "NodeTokenizer", "answer_texts", "chat_messages", "choice_text",
           "count_answer", "count_prompt", "count_stream", "count_texts",
           "estimate_text_tokens"]

#: Seconds the edge waits for a node's /tokenize before it uses its estimates.
TOKENIZE_TIMEOUT = 1.0
#: Seconds a node whose /tokenize failed is not asked again (it may have none).
TOKENIZE_RETRY = 60.0
#: Fields of a chat request that change how its prompt is templated, passed to /tokenize.
_CHAT_TEMPLATE_FIELDS = ("tools", "chat_template", "chat_template_kwargs",
                         "add_generation_prompt", "continue_final_message")

#: Node URL -> monotonic time until which its /tokenize is not asked.
_unavailable: dict[str, float] = {}


class Poster(Protocol):
    """What the tokenizer needs of :class:`edge.fleet.upstream.Upstream`."""

    async def post(self, url: str, body: bytes) -> httpx.Response: ...


def choice_text(choice: dict[str, Any]) -> str | None:
    """The text a choice generated (a stream delta or an answer's message); None if none.

    Reasoning and tool calls are generated tokens too, so they count as text.
    """
    message = choice.get("delta")
    if message is None:
        message = choice.get("message")
    if not isinstance(message, dict):
        text = choice.get("text")  # /v1/completions
        return text if isinstance(text, str) and text else None
    parts: list[str] = []
    generated = False
    for name in ("content", "reasoning_content"):
        value = message.get(name)
        if isinstance(value, str) and value:
            parts.append(value)
    if not message.get("reasoning_content"):
        value = message.get("reasoning")  # newer vLLM's name for the same text
        if isinstance(value, str) and value:
            parts.append(value)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                generated = True
                for name in ("name", "arguments"):
                    value = function.get(name)
                    if isinstance(value, str):
                        parts.append(value)
    if not parts and not generated:
        return None
    return "".join(parts)


class DeltaCounter:
    """Counts the chunks of generated text of a stream, per choice, and keeps their text.

    A node sends at least one token per such chunk, so the count never exceeds what
    was generated; the text lets ``/tokenize`` find the tokens a chunk bundled.
    """

    __slots__ = ("counts", "head", "texts")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.texts: dict[int, list[str]] = {}
        #: ``id``, ``object``, ``created`` and ``model`` of the node's first chunk.
        self.head: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, event: bytes) -> None:
        """Take one ``data: {...}`` event."""
        try:
            chunk = json.loads(event[6:])
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        if not isinstance(chunk, dict):
            return
        if not self.head and "id" in chunk:
            self.head = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = choice_text(choice)
            if text is None:
                continue
            index = choice.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = 0
            self.counts[index] = self.counts.get(index, 0) + 1
            self.texts.setdefault(index, []).append(text)

    def choice_texts(self) -> list[str]:
        return ["".join(pieces) for _index, pieces in sorted(self.texts.items())]


class NodeTokenizer:
    """Asks a node's vLLM-style ``POST /tokenize`` for counts, briefly.

    Parameters:
      http: the upstream client.
      node_url: the node's base URL.
      model: the node's served model name.
      timeout: seconds to wait for each answer.
    """

    def __init__(self, http: Poster, node_url: str, model: str, *,
                 timeout: float = TOKENIZE_TIMEOUT) -> None:
        self.http = http
        self.url = node_url + "/tokenize"
        self.model = model
        self.timeout = timeout

    async def count(self, payload: dict[str, Any]) -> int | None:
        """The ``count`` the node answers for ``payload``; None when it cannot say."""
        if _unavailable.get(self.url, 0.0) > time.monotonic():
            return None
        body = json.dumps({"model": self.model, **payload}, separators=(",", ":")).encode()
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.http.post(self.url, body)
                content = await response.aread()
        except (TimeoutError, *NODE_FAILURES):
            self._give_up()
            return None
        finally:
            if response is not None:
                await response.aclose()
        if response.status_code in (400, 422):
            return None  # this input only (the node's tokenizer refused it)
        try:
            count = json.loads(content)["count"] if response.status_code == 200 else None
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            count = None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            self._give_up()  # none, or not vLLM's (llama.cpp answers {"tokens": [...]})
            return None
        return count

    def _give_up(self) -> None:
        _unavailable[self.url] = time.monotonic() + TOKENIZE_RETRY


async def count_prompt(tokenizer: NodeTokenizer | None, endpoint: Endpoint,
                       body: dict[str, Any], estimate: int) -> int:
    """The prompt's tokens by the node's tokenizer, else ``estimate`` (an upper bound)."""
    messages = chat_messages(endpoint, body)
    if messages is not None:
        if tokenizer is None:
            return estimate
        payload: dict[str, Any] = {"messages": messages}
        if endpoint is Endpoint.CHAT:
            payload.update({k: body[k] for k in _CHAT_TEMPLATE_FIELDS if k in body})
        count = await tokenizer.count(payload)
        return count if count else estimate
    if endpoint is Endpoint.COMPLETIONS:
        prompt = body.get("prompt")
    elif endpoint is Endpoint.EMBEDDINGS:
        prompt = body.get("input")
    else:
        return estimate  # rerank and score: pairs the node assembles its own way
    if isinstance(prompt, list) and prompt and all(isinstance(t, list) for t in prompt):
        return sum(len(t) for t in prompt)  # prompts of token ids
    if isinstance(prompt, list) and prompt and not any(isinstance(t, str) for t in prompt):
        return len(prompt)  # one prompt of token ids
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if tokenizer is None or not isinstance(prompts, list) or not prompts:
        return estimate
    counts = await asyncio.gather(*(tokenizer.count({"prompt": p}) for p in prompts))
    if not all(counts):  # a prompt has at least its BOS token: 0 is a wrong answer
        return estimate
    return sum(c for c in counts if c)


def chat_messages(endpoint: Endpoint, body: dict[str, Any]) -> list[Any] | None:
    """The request's prompt as chat messages, for ``/tokenize``; None: it has none.

    Responses and Messages bodies are turned into the chat messages vLLM templates
    them as: the instructions or system prompt first, then each turn's text.
    """
    if endpoint is Endpoint.CHAT:
        return body.get("messages")
    if endpoint is Endpoint.RESPONSES:
        turns = body.get("input")
        system = body.get("instructions")
        if isinstance(turns, str):
            turns = [{"role": "user", "content": turns}]
    elif endpoint is Endpoint.MESSAGES:
        turns = body.get("messages")
        system = body.get("system")
    else:
        return None
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": _block_text(system)})
    for turn in turns if isinstance(turns, list) else ():
        if isinstance(turn, dict) and isinstance(turn.get("role"), str):
            messages.append({"role": turn["role"], "content": _block_text(turn.get("content"))})
    return messages


def _block_text(content: Any) -> str:
    """The text of a content given as a string or as blocks (``text``/``input_text``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content
                       if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


async def count_texts(tokenizer: NodeTokenizer | None, texts: list[str]) -> int | None:
    """Tokens of generated texts (one per choice) by the node's tokenizer; None if unknown."""
    texts = [t for t in texts if t]
    if not texts:
        return 0
    if tokenizer is None:
        return None
    counts = await asyncio.gather(*(tokenizer.count({"prompt": t, "add_special_tokens": False})
                                    for t in texts))
    if any(c is None for c in counts):
        return None
    return sum(c for c in counts if c)


def estimate_text_tokens(texts: list[str], cap: int) -> int:
    """An upper bound of the tokens of texts: a token is at least a byte, at most ``cap``."""
    return sum(min(len(t.encode()), cap) for t in texts)


async def count_stream(tokenizer: NodeTokenizer | None, counter: DeltaCounter,
                       endpoint: Endpoint, body: dict[str, Any], *, prompt_estimate: int,
                       delivered: int, complete: bool) -> tuple[int, int]:
    """``(prompt, completion)`` of a stream the node gave no counts for.

    ``delivered`` is the count of chunks of text the client got; a complete stream's
    text is also tokenized, and the larger is taken. A cut one is charged what was
    delivered.
    """
    prompt_work = count_prompt(tokenizer, endpoint, body, prompt_estimate)
    if not complete:
        return await prompt_work, delivered
    prompt, tokenized = await asyncio.gather(prompt_work,
                                             count_texts(tokenizer, counter.choice_texts()))
    return prompt, max(delivered, tokenized or 0)


def answer_texts(endpoint: Endpoint, answer: dict[str, Any]) -> list[str]:
    """The generated text of each choice of a non-streaming answer (none for pooling)."""
    if endpoint is Endpoint.RESPONSES:
        items = answer.get("output")
        return ["".join(_block_text(item.get("content")) for item in items
                        if isinstance(item, dict))] if isinstance(items, list) else []
    if endpoint is Endpoint.MESSAGES:
        return [_block_text(answer.get("content"))]
    choices = answer.get("choices")
    if endpoint not in (Endpoint.CHAT, Endpoint.COMPLETIONS) or not isinstance(choices, list):
        return []
    return [choice_text(c) or "" for c in choices if isinstance(c, dict)]


async def count_answer(tokenizer: NodeTokenizer | None, endpoint: Endpoint,
                       body: dict[str, Any], answer: dict[str, Any], *, prompt_estimate: int,
                       choice_cap: int) -> tuple[int, int]:
    """``(prompt, completion)`` of a non-streaming answer that came without ``usage``.

    Without the node's tokenizer the completion is the texts' bytes, each choice at
    most ``choice_cap`` (what was reserved for it).
    """
    texts = answer_texts(endpoint, answer)
    prompt, completion = await asyncio.gather(
        count_prompt(tokenizer, endpoint, body, prompt_estimate), count_texts(tokenizer, texts))
    if completion is None:
        completion = estimate_text_tokens(texts, choice_cap)
    return prompt, completion
