"""``x-ratelimit-*`` on every metered answer, streaming and not, as OpenAI sends them."""

from __future__ import annotations

import openai
import pytest

from edge.metering.limits import duration
from tests.support.inprocess import InProcessPortal


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0ms"), (0.02, "20ms"), (0.9994, "999ms"), (1, "1s"), (1.5, "1.5s"),
    (59.25, "59.25s"), (60, "1m0s"), (360, "6m0s"), (61.5, "1m1.5s")])
def test_durations_read_as_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


async def test_every_answer_says_what_the_key_has_left(inprocess_portal: InProcessPortal,
                                                       node_doubles) -> None:
    portal = inprocess_portal
    node = await node_doubles("sim-m1", reply_tokens=4)
    await portal.add_model("m1", served_name="sim-m1")
    await portal.add_node("m1", node)
    _key_id, key = await portal.create_key("1", rpm=10, tpm=100_000)
    client = openai.AsyncOpenAI(base_url=portal.url + "/v1", api_key=key, max_retries=0)
    seen = []
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        seen.append(raw.headers)
    async with client.chat.completions.with_streaming_response.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
            stream=True) as streamed:
        seen.append(streamed.headers)
        async for _line in streamed.iter_lines():
            pass
    assert [h["x-ratelimit-limit-requests"] for h in seen] == ["10"] * 4
    assert [int(h["x-ratelimit-remaining-requests"]) for h in seen] == [9, 8, 7, 6]
    assert all(h["x-ratelimit-limit-tokens"] == "100000" for h in seen)
    left = [int(h["x-ratelimit-remaining-tokens"]) for h in seen]
    assert left == sorted(left, reverse=True) and left[0] < 100_000  # the reservation's tokens
    # A bucket a request short of full refills in 6 s (10 per minute).
    assert seen[0]["x-ratelimit-reset-requests"] in ("6s", "5.999s", "6.001s")
    assert seen[0]["x-ratelimit-reset-tokens"].endswith("s")
    await client.close()
