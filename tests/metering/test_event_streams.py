"""The relays of named-event streams: bytes passed on as they came, counts read on the way."""

from __future__ import annotations

import json

from edge.billing.money import token_cost
from edge.metering.event_streams import MessagesRelay, ResponsesRelay


def event(kind: str, **data) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}" \
        "\n\n".encode()


RESPONSES = b"".join([
    event("response.created", response={"id": "resp_1", "model": "served", "usage": None},
          sequence_number=0),
    event("response.output_text.delta", delta="Hel", sequence_number=1),
    event("response.output_text.delta", delta="lo", sequence_number=2),
    event("response.completed", response={"id": "resp_1", "model": "served", "usage": {
        "input_tokens": 11, "output_tokens": 2, "total_tokens": 13}}, sequence_number=3)])


def feed_bytewise(relay, data: bytes) -> bytes:
    return b"".join(relay.feed(data[i:i + 7]) for i in range(0, len(data), 7))


def test_a_responses_stream_passes_on_with_the_public_name_and_its_cost() -> None:
    relay = ResponsesRelay(rename=("served", "public"), prices=(500_000, 1_500_000))
    out = feed_bytewise(relay, RESPONSES)
    assert out == RESPONSES.replace(b'"model":"served"', b'"model":"public"').replace(
        b'"usage":{"input_tokens"', b'"usage":{"cost":0.000009,"input_tokens"')
    assert token_cost(11, 2, 500_000, 1_500_000) == 9
    assert (relay.done, relay.prompt_tokens, relay.completion_tokens) == (True, 11, 2)
    assert relay.end(9) == b": cost_micros=9\n\n"  # vLLM sends no [DONE] here


def test_a_cut_responses_stream_counts_the_deltas_and_ends_with_an_error_event() -> None:
    relay = ResponsesRelay()
    relay.feed(RESPONSES[:RESPONSES.index(b"event: response.completed")])
    assert (relay.done, relay.completion_tokens, relay.needs_counting) == (False, 2, True)
    error = relay.broken("The GPU node broke the connection.", "upstream_error")
    assert error.startswith(b"event: error\ndata: ")
    assert json.loads(error.split(b"data: ")[1]) == {
        "type": "error", "code": "upstream_error", "param": None,
        "message": "The GPU node broke the connection.", "sequence_number": 3}


MESSAGES = b"".join([
    event("message_start", message={"id": "msg_1", "model": "served", "usage": {
        "input_tokens": 7, "output_tokens": 0}}),
    event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"}),
    event("content_block_delta", index=0, delta={"type": "text_delta", "text": "!"}),
    event("content_block_delta", index=0, delta={"type": "text_delta", "text": "!"}),
    event("content_block_stop", index=0),
    event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}),
    event("message_stop")])


def test_a_messages_stream_counts_from_its_start_and_delta_events() -> None:
    relay = MessagesRelay(prices=(1_000_000, 2_000_000))
    out = feed_bytewise(relay, MESSAGES.replace(b"\n", b"\r\n"))  # CRLF framing, too
    assert (relay.done, relay.prompt_tokens, relay.completion_tokens) == (True, 7, 3)
    assert b'"usage":{"cost":0.000013,"output_tokens":3}' in out
    assert out.count(b"event: content_block_delta") == 3


def test_a_cut_messages_stream_is_charged_its_input_and_what_was_delivered() -> None:
    relay = MessagesRelay()
    relay.feed(MESSAGES[:MESSAGES.index(b"event: content_block_stop")])
    assert (relay.done, relay.prompt_tokens, relay.completion_tokens) == (False, 7, 3)
    assert not relay.needs_counting  # message_start said the input
    error = json.loads(relay.broken("The GPU node did not answer in time.",
                                    "upstream_timeout").split(b"data: ")[1])
    assert error == {"type": "error", "error": {"type": "timeout_error",
                                                "message": "The GPU node did not answer in "
                                                           "time."}}


def test_a_node_that_sends_only_data_lines_is_read_by_their_type() -> None:
    relay = MessagesRelay()
    data_only = b"".join(e[e.index(b"data: "):] + b"\n\n" for e in MESSAGES.split(b"\n\n")
                         if e)
    assert b"event:" not in data_only
    relay.feed(data_only)
    assert (relay.done, relay.prompt_tokens, relay.completion_tokens) == (True, 7, 3)
