"""The stream relay: exact event boundaries, token counts, and only what was asked for."""

from __future__ import annotations

import json

from edge.metering.sse import StreamRelay


def chunk(content: str | None, completion: int, *, final_usage: bool = False,
          model: str = "served") -> bytes:
    usage = {"prompt_tokens": 9, "total_tokens": 9 + completion, "completion_tokens": completion}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [] if final_usage else
            [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
            "usage": usage}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


STREAM = chunk("a", 1) + chunk("b", 2) + chunk("c", 3) + chunk(None, 3, final_usage=True) + \
    b"data: [DONE]\n\n"


def events(data: bytes) -> list[dict]:
    return [json.loads(e[6:]) for e in data.split(b"\n\n") if e.startswith(b"data: {")]


def test_split_anywhere_gives_the_same_events() -> None:
    whole = StreamRelay(include_usage=True, continuous=True).feed(STREAM)
    for size in (1, 2, 7, 50):
        relay = StreamRelay(include_usage=True, continuous=True)
        out = b"".join(relay.feed(STREAM[i:i + size]) for i in range(0, len(STREAM), size))
        assert out == whole
        assert relay.done and relay.completion_tokens == 3 and relay.prompt_tokens == 9


def test_usage_is_removed_when_not_asked_for() -> None:
    relay = StreamRelay(include_usage=False, continuous=False)
    out = events(relay.feed(STREAM))
    assert len(out) == 3  # the usage-only chunk is dropped
    assert all("usage" not in e for e in out)
    assert relay.completion_tokens == 3  # counted all the same


def test_include_usage_keeps_the_final_chunk_and_nulls_the_rest() -> None:
    out = events(StreamRelay(include_usage=True, continuous=False).feed(STREAM))
    assert [e["usage"] for e in out[:3]] == [None, None, None]
    assert out[3]["choices"] == [] and out[3]["usage"]["completion_tokens"] == 3


def test_counts_only_complete_events() -> None:
    relay = StreamRelay(include_usage=False, continuous=False)
    relay.feed(chunk("a", 1) + chunk("b", 2)[:20])
    assert relay.completion_tokens == 1
    assert not relay.done


def test_model_is_renamed() -> None:
    relay = StreamRelay(include_usage=False, continuous=False, rename=("served", "public"))
    assert all(e["model"] == "public" for e in events(relay.feed(STREAM)))


def test_error_events_and_comments_pass_through() -> None:
    data = b': keep-alive\n\ndata: {"error":{"message":"boom"}}\n\n'
    out = StreamRelay(include_usage=False, continuous=False).feed(data)
    assert out == data


def test_several_choices_are_summed() -> None:
    """vLLM's running usage is per choice: two choices of 10 tokens are 20 tokens."""
    def piece(index: int, completion: int) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": index, "delta": {"content": "x"}, "finish_reason": None}],
                "usage": {"prompt_tokens": 9, "total_tokens": 9 + completion,
                          "completion_tokens": completion}}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    relay = StreamRelay(include_usage=False, continuous=False, n=2)
    relay.feed(b"".join(piece(i % 2, i // 2 + 1) for i in range(20)))
    assert (relay.prompt_tokens, relay.completion_tokens) == (9, 20)
    several = StreamRelay(include_usage=False, continuous=False, n=1, prompts=2)
    several.feed(piece(0, 3) + piece(1, 4))
    assert (several.prompt_tokens, several.completion_tokens) == (18, 7)
