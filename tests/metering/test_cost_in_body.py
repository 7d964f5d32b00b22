"""``usage.cost`` in the answer body, streaming and not, as the ``openai`` SDK reads it."""

from __future__ import annotations

import json

import pytest

from edge.metering.cost import with_cost


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}}',
     {"cost": 0.00125, "prompt_tokens": 3, "completion_tokens": 4}),
    (b'{"usage": {}}', {"cost": 0.00125}),
    (b'{"choices":[{"text":"\\"usage\\":{"}],"usage":\n {"total_tokens":1}}',
     {"cost": 0.00125, "total_tokens": 1}),
])
def test_the_cost_joins_the_usage_object(body: bytes, expected: dict) -> None:
    assert json.loads(with_cost(body, 1250))["usage"] == expected


@pytest.mark.parametrize("body", [b'{"usage":null}', b'{"id":"x"}', b'{"usage":'])
def test_a_body_without_a_usage_object_is_unchanged(body: bytes) -> None:
    assert with_cost(body, 1250) == body
