"""``portal models add`` and ``portal models set``: the catalogue's one way in from the CLI.

``set`` changes only the fields it is given, and every running worker's ``/v1/models``
shows the change within a second; ``add`` stays idempotent. Each change is one audit row
(actor ``cli``) with the model before and after; bad input exits 1 with a message naming
what is wrong, and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.support.portal import PortalServer
from tests.support.standard import MODEL, Deployment

#: Seconds a change takes at most to reach every worker (pub/sub).
PROPAGATION = 1.0


@pytest.fixture
def portal(tmp_path: Path, redis_url: str) -> PortalServer:
    server = PortalServer(tmp_path, redis_url)
    server.cli("migrate")
    return server


def listed(portal: PortalServer, name: str) -> dict:
    (row,) = [m for m in portal.cli_json("models", "list") if m["name"] == name]
    return row


def test_set_changes_only_what_it_is_given(portal: PortalServer) -> None:
    portal.add_model("llama", input_price="0.15", output_price="0.60", context=4096)
    changed = portal.cli_json("models", "set", "llama", "--input-price", "0.2", "--disabled")
    assert {k: changed[k] for k in ("outcome", "input_usd_per_1m", "output_usd_per_1m",
                                    "context", "enabled", "served_name")} == {
        "outcome": "updated", "input_usd_per_1m": "0.200000", "output_usd_per_1m": "0.600000",
        "context": 4096, "enabled": False, "served_name": "llama"}
    again = portal.cli_json("models", "set", "llama", "--input-price", "0.20")
    assert again["outcome"] == "unchanged"
    back = portal.cli_json("models", "set", "llama", "--enabled", "--context", "8192",
                           "--served-name", "meta/llama", "--kind", "embed")
    assert back["outcome"] == "updated"
    row = listed(portal, "llama")
    assert (row["enabled"], row["context"], row["served_name"], row["kind"],
            row["input_usd_per_1m"]) == (True, 8192, "meta/llama", "embed", "0.200000")

    rows = portal.cli_json("audit", "list", "--target", "model:llama")
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("cli", "model.update"), ("cli", "model.update"), ("cli", "model.add")]
    both, priced, added = rows
    assert added["before"] is None and added["after"]["input_price"] == 150_000
    assert (priced["before"]["input_price"], priced["after"]["input_price"],
            priced["before"]["enabled"], priced["after"]["enabled"]) == (150_000, 200_000,
                                                                        True, False)
    assert (both["before"]["kind"], both["after"]["kind"], both["after"]["served_name"]) == (
        "generate", "embed", "meta/llama")


@pytest.mark.parametrize(("args", "message"), [
    (["set", "nope", "--input-price", "1"], "no model named 'nope'"),
    (["set", "m", "--context", "0"], "'context_length' is a whole number of tokens"),
    (["set", "m", "--input-price", "1000001"], "'input_price' is at most 1,000,000 USD"),
    (["set", "m", "--served-name", "two words"], "'served_name' is 1 to 256"),
    (["add", "m", "--input-price", "1", "--output-price", "1", "--min-nodes", "2"],
     "'min_nodes' (2) may not exceed 'max_nodes' (1)"),
    (["add", "bad name", "--input-price", "1", "--output-price", "1"], "'name' is 1 to 128"),
])
def test_bad_input_exits_with_a_message_and_changes_nothing(
        portal: PortalServer, args: list[str], message: str) -> None:
    portal.add_model("m", input_price="0.5", output_price="1.5")
    before = portal.cli_json("models", "list")
    audited = portal.cli_json("audit", "list")
    result = portal.cli("models", *args, check=False)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert portal.cli_json("models", "list") == before
    assert portal.cli_json("audit", "list") == audited


def test_both_flags_of_a_state_are_refused(portal: PortalServer) -> None:
    portal.add_model("m")
    result = portal.cli("models", "set", "m", "--enabled", "--disabled", check=False)
    assert result.returncode == 2 and "not allowed with" in result.stderr
    assert listed(portal, "m")["enabled"] is True


async def prices_by_worker(url: str, *, count: int = 20) -> dict[str, str]:
    """``/v1/models``' input price of the model, by the worker that answered (fresh
    connections, so that both workers take part)."""
    seen: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for response in await asyncio.gather(*(client.get("/v1/models")
                                               for _ in range(count))):
            (model,) = [m for m in response.json()["data"] if m["id"] == MODEL]
            seen[response.headers["x-portal-worker"]] = model["pricing"]["input"]
    return seen


def test_a_price_change_reaches_every_worker_within_a_second(deployment: Deployment) -> None:
    before = asyncio.run(prices_by_worker(deployment.url))
    assert set(before.values()) == {"0.500000"}
    deployment.portal.cli("models", "set", MODEL, "--input-price", "0.75")
    changed = time.monotonic()
    seen: dict[str, str] = {}
    while time.monotonic() - changed < PROPAGATION:
        seen.update(asyncio.run(prices_by_worker(deployment.url)))
        if len(seen) == 2 and set(seen.values()) == {"0.750000"}:
            break
    assert len(seen) == 2 and set(seen.values()) == {"0.750000"}, seen
    assert time.monotonic() - changed < PROPAGATION
    deployment.portal.cli("models", "set", MODEL, "--input-price", "0.50")  # as it was
