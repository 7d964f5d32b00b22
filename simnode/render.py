"""Serialize answers byte-for-byte in vLLM's layout.

Key order follows vLLM's pydantic models (``usage`` last in a chunk), JSON is compact,
and a stream's fixed parts are built once per request so each token costs one small
``json.dumps`` of its text.
"""

from __future__ import annotations

import json
import os
import time

from simnode.parsing import Job

__all__ = [
    "DONE",
    "StreamChunks",
    "completion_body",
    "models_body",
    "new_request_id",
    "usage_json",
]

#: The SSE event that ends every successful stream.
DONE = b"data: [DONE]\n\n"

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def new_request_id() -> str:
    """Return a random 32-hex-digit id, like vLLM's ``random_uuid()``."""
    return os.urandom(16).hex()


def usage_json(prompt_tokens: int, completion_tokens: int, *, details: bool) -> str:
    """Return a ``UsageInfo`` object; ``details`` adds ``prompt_tokens_details: null``."""
    tail = ',"prompt_tokens_details":null}' if details else "}"
    return (
        f'{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens + completion_tokens},'
        f'"completion_tokens":{completion_tokens}{tail}'
    )


def completion_body(
    job: Job, model_json: str, text: str, completion_tokens: int, *, usage: bool = True
) -> bytes:
    """Return the body of a non-streaming chat or text completion.

    ``usage=False`` leaves the ``usage`` key out, as servers that do not report it do.
    """
    created = int(time.time())
    tail = (
        ',"usage":' + usage_json(job.prompt_tokens, completion_tokens, details=True)
        if usage
        else ""
    )
    finish = _dumps(job.finish_reason)
    if job.chat:
        return (
            f'{{"id":"chatcmpl-{new_request_id()}","object":"chat.completion",'
            f'"created":{created},"model":{model_json},"choices":[{{"index":0,'
            f'"message":{{"role":"assistant","content":{_dumps(text)},"tool_calls":[],'
            f'"reasoning_content":null}},"logprobs":null,"finish_reason":{finish},'
            f'"stop_reason":null}}]{tail},"prompt_logprobs":null}}'
        ).encode()
    return (
        f'{{"id":"cmpl-{new_request_id()}","object":"text_completion","created":{created},'
        f'"model":{model_json},"choices":[{{"index":0,"text":{_dumps(text)},"logprobs":null,'
        f'"finish_reason":{finish},"stop_reason":null,"prompt_logprobs":null}}]{tail}}}'
    ).encode()


class StreamChunks:
    """Builds the SSE events of one stream.

    Chat chunks carry ``usage`` only when the client asked for it (``null``, or the
    running totals with ``continuous_usage_stats``); completion chunks always carry the
    key, as vLLM serializes them without ``exclude_unset``. With ``usage=False`` no chunk
    carries the key and there is no final usage chunk, whatever the client asked for.
    """

    __slots__ = ("_continuous", "_head", "_job", "_prefix", "_usage_null", "reports_usage")

    def __init__(self, job: Job, model_json: str, *, usage: bool = True) -> None:
        self._job = job
        #: Whether the stream ends with the final usage chunk when the client asks for it.
        self.reports_usage = usage
        self._continuous = usage and job.continuous_usage
        created = int(time.time())
        if job.chat:
            self._prefix = (
                f'data: {{"id":"chatcmpl-{new_request_id()}","object":"chat.completion.chunk",'
                f'"created":{created},"model":{model_json},"choices":['
            )
            self._head = self._prefix + '{"index":0,"delta":'
            self._usage_null = ',"usage":null' if job.include_usage else ""
        else:
            self._prefix = (
                f'data: {{"id":"cmpl-{new_request_id()}","object":"text_completion",'
                f'"created":{created},"model":{model_json},"choices":['
            )
            self._head = self._prefix + '{"index":0,"text":'
            self._usage_null = ',"usage":null'
        if not usage:
            self._usage_null = ""

    def _usage(self, completion_tokens: int) -> str:
        if self._continuous:
            return ',"usage":' + usage_json(
                self._job.prompt_tokens, completion_tokens, details=False
            )
        return self._usage_null

    def role(self) -> bytes:
        """Return the first chat chunk, which announces the assistant role."""
        return (
            self._head + '{"role":"assistant","content":""},"logprobs":null,'
            '"finish_reason":null}]' + self._usage(0) + "}\n\n"
        ).encode()

    def token(self, token: str, completion_tokens: int, *, last: bool) -> bytes:
        """Return the chunk of one generated token; the last one carries ``finish_reason``."""
        text = _dumps(token)
        if self._job.chat:
            body = '{"content":' + text + '},"logprobs":null,'
            if last:
                finish = _dumps(self._job.finish_reason)
                body += '"finish_reason":' + finish + ',"stop_reason":null}]'
            else:
                body += '"finish_reason":null}]'
        else:
            finish = _dumps(self._job.finish_reason) if last else "null"
            body = text + ',"logprobs":null,"finish_reason":' + finish + ',"stop_reason":null}]'
        return (self._head + body + self._usage(completion_tokens) + "}\n\n").encode()

    def final_usage(self, completion_tokens: int) -> bytes:
        """Return the extra last chunk with no choices and the totals (``include_usage``)."""
        usage = usage_json(self._job.prompt_tokens, completion_tokens, details=False)
        return (self._prefix + '],"usage":' + usage + "}\n\n").encode()


def models_body(model: str, max_model_len: int) -> bytes:
    """Return the ``GET /v1/models`` body: one ``ModelCard``, as vLLM lists a served model."""
    created = int(time.time())
    permission = {
        "id": f"modelperm-{new_request_id()}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    return _dumps({"object": "list", "data": [card]}).encode()
