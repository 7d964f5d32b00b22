"""``portal keys create|update|rotate`` and ``portal accounts list|show`` against a running portal.

The standard deployment (two edge workers, ``m1`` on a simnode) serves while the CLI
changes keys beside it: what a command prints is checked, and so is what the API does
next (a key's account, its models, a new rate limit, a rotated secret). Bad input exits
non-zero with a message naming what is wrong, and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.support.standard import MODEL, Deployment
from tests.support.workers import statuses_by_worker

#: Seconds a change takes at most to reach every worker (pub/sub).
PROPAGATION = 1.0
#: A second model of the deployment (no node needs to serve it: a key outside its list
#: is refused before any node is chosen).
OTHER = "m2"


def get_key(deployment: Deployment, secret: str) -> httpx.Response:
    return httpx.get(deployment.url + "/v1/key", headers={"authorization": f"Bearer {secret}"},
                     timeout=30)


def chat(deployment: Deployment, secret: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(deployment.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {secret}"},
                      json={"model": model, "max_tokens": 4,
                            "messages": [{"role": "user", "content": "Hi."}]})


async def chats(url: str, secret: str, count: int) -> list[int]:
    """``count`` chat requests at once, each on a new connection (both workers take part)."""
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        responses = await asyncio.gather(*(client.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
            json={"model": MODEL, "max_tokens": 4,
                  "messages": [{"role": "user", "content": "Hi."}]}) for _ in range(count)))
    return [r.status_code for r in responses]


def everywhere(deployment: Deployment, secret: str) -> dict[str, set[int]]:
    """``GET /v1/key`` statuses, by the worker that answered (both must have)."""
    seen = asyncio.run(statuses_by_worker(deployment.url, secret, count=20))
    assert len(seen) == 2, seen
    return seen


@pytest.fixture(scope="module")
def account(deployment: Deployment) -> dict[str, Any]:
    """``keys create --name a --credit 5``: a new account and its manage key; and a second
    model, ``m2``, on the deployment."""
    deployment.portal.add_model(OTHER)
    return deployment.portal.cli_json("keys", "create", "--name", "a", "--credit", "5")


def test_create_opens_an_account_with_a_manage_key(deployment: Deployment,
                                                   account: dict[str, Any]) -> None:
    assert isinstance(account["account"], int)
    assert account["key"].startswith("sk-ip-") and account["key"][:14] == account["prefix"]
    assert (account["name"], account["scope"]) == ("a", "manage")
    assert (account["balance"], account["balance_micros"]) == ("5.000000", 5_000_000)
    view = get_key(deployment, account["key"]).json()["data"]
    assert view["id"] == account["id"] and view["account"]["id"] == account["account"]
    assert view["balance_micros"] == 5_000_000


def test_a_key_joins_an_account_with_its_models_and_cap(deployment: Deployment,
                                                         account: dict[str, Any]) -> None:
    joined = deployment.portal.cli_json(
        "keys", "create", "--name", "b", "--account", str(account["account"]), "--scope",
        "api", "--models", MODEL, "--cap", "1", "--cap-reset", "daily")

    assert joined["account"] == account["account"] and joined["id"] != account["id"]
    assert (joined["scope"], joined["models"]) == ("api", [MODEL])
    assert (joined["cap"], joined["cap_reset"]) == ("1.000000", "daily")
    assert joined["balance_micros"] == 5_000_000  # the account's: no credit of its own
    view = get_key(deployment, joined["key"]).json()["data"]
    assert (view["account"]["id"], view["scope"], view["models"]) == \
        (account["account"], "api", [MODEL])
    assert view["cap_micros"] == 1_000_000 and view["cap_window"]["left_micros"] == 1_000_000
    assert chat(deployment, joined["key"]).status_code == 200
    time.sleep(PROPAGATION)  # m2 reached the workers
    manager = chat(deployment, account["key"], model=OTHER)
    assert manager.status_code != 403, manager.text  # m2 is offered (and has no node)
    other = chat(deployment, joined["key"], model=OTHER)
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "permission_denied"
    listed_models = httpx.get(deployment.url + "/v1/models", timeout=30,
                              headers={"authorization": f"Bearer {joined['key']}"}).json()
    assert [m["id"] for m in listed_models["data"]] == [MODEL]

    shown = deployment.portal.cli_json("accounts", "show", str(account["account"]))
    assert [k["id"] for k in shown["keys"]] == [account["id"], joined["id"]]
    assert [(k["name"], k["scope"]) for k in shown["keys"]] == [("a", "manage"), ("b", "api")]
    assert "key" not in shown["keys"][1] and joined["key"] not in str(shown)  # no secrets
    listed = {a["id"]: a for a in deployment.portal.cli_json("accounts", "list")}
    assert listed[account["account"]]["keys"] == 2
    assert listed[account["account"]]["name"] == "a"


def api_key(deployment: Deployment, account: dict[str, Any], name: str) -> dict[str, Any]:
    return deployment.portal.cli_json("keys", "create", "--name", name, "--account",
                                      str(account["account"]), "--scope", "api")


def test_update_changes_a_keys_rate_limit_on_the_api(deployment: Deployment,
                                                     account: dict[str, Any]) -> None:
    key = api_key(deployment, account, "limited")
    assert key["limits"]["requests_per_minute"] > 8  # the default would let 8 through

    updated = deployment.portal.cli_json("keys", "update", str(key["id"]), "--rpm", "5")
    assert updated["id"] == key["id"] and updated["limits"]["requests_per_minute"] == 5
    assert updated["name"] == "limited" and updated["scope"] == "api"  # the rest stays
    assert get_key(deployment, key["key"]).json()["data"]["limits"][
        "requests_per_minute"] == 5
    time.sleep(PROPAGATION)
    statuses = asyncio.run(chats(deployment.url, key["key"], 8))
    assert sorted(statuses) == [200] * 5 + [429] * 3, statuses

    one = api_key(deployment, account, "one a minute")
    deployment.portal.cli_json("keys", "update", str(one["id"]), "--rpm", "1")
    time.sleep(PROPAGATION)
    first, second = chat(deployment, one["key"]), chat(deployment, one["key"])
    assert (first.status_code, second.status_code) == (200, 429), second.text
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) > 1


def test_update_drops_and_adds_lists(deployment: Deployment, account: dict[str, Any]) -> None:
    key = api_key(deployment, account, "lists")
    narrowed = deployment.portal.cli_json("keys", "update", str(key["id"]), "--models", MODEL,
                                          "--routes", "completions")
    assert (narrowed["models"], narrowed["routes"]) == ([MODEL], ["completions"])
    time.sleep(PROPAGATION)
    refused = chat(deployment, key["key"])
    assert refused.status_code == 403 and "chat/completions" in refused.json()["error"][
        "message"]

    widened = deployment.portal.cli_json("keys", "update", str(key["id"]), "--all-routes")
    assert (widened["models"], widened["routes"]) == ([MODEL], None)
    time.sleep(PROPAGATION)
    assert chat(deployment, key["key"]).status_code == 200


def test_rotate_prints_a_new_secret_and_the_old_one_has_its_grace(
        deployment: Deployment, account: dict[str, Any]) -> None:
    key = api_key(deployment, account, "rotating")
    assert all(s == {200} for s in everywhere(deployment, key["key"]).values())

    rotated = deployment.portal.cli_json("keys", "rotate", str(key["id"]), "--grace", "60")

    assert rotated["id"] == key["id"] and rotated["key"] != key["key"]
    assert rotated["key"].startswith("sk-ip-") and rotated["prefix"] == rotated["key"][:14]
    assert rotated["prefix"] != key["prefix"]
    assert rotated["previous_prefix"] == key["prefix"] and rotated["previous_until"]
    time.sleep(PROPAGATION)
    for secret in (key["key"], rotated["key"]):
        assert all(s == {200} for s in everywhere(deployment, secret).values())
    assert get_key(deployment, key["key"]).json()["data"]["id"] == key["id"]

    # Without grace, the secret it replaces stops at once (and so does the one in grace).
    again = deployment.portal.cli_json("keys", "rotate", str(key["id"]))
    assert again["previous_prefix"] is None
    time.sleep(PROPAGATION)
    for secret in (key["key"], rotated["key"]):
        assert all(s == {401} for s in everywhere(deployment, secret).values())
    assert all(s == {200} for s in everywhere(deployment, again["key"]).values())


# -- bad input --------------------------------------------------------------------------------
def state(deployment: Deployment, account_id: int) -> tuple[Any, Any]:
    """What a refused command must leave as it was: the account's keys and the account."""
    return (deployment.portal.cli_json("keys", "list", "--account", str(account_id)),
            deployment.portal.cli_json("accounts", "show", str(account_id)))


@pytest.fixture(scope="module")
def quiet(deployment: Deployment) -> dict[str, Any]:
    """An account that spends nothing (its books cannot move under a comparison), with an
    API key ``c`` beside its manage key."""
    owner = deployment.portal.cli_json("keys", "create", "--name", "quiet", "--credit", "5")
    owner["api"] = deployment.portal.cli_json(
        "keys", "create", "--name", "c", "--account", str(owner["account"]), "--scope", "api",
        "--models", MODEL)
    return owner


#: A product bug: edge/cli/keys.py create_cmd passes ``args.rpm or default_rpm`` (and the
#: same for tpm), so ``--rpm 0`` makes a key with the default limit instead of failing.
BAD = [
    (["keys", "create", "--name", "x", "--account", "{account}", "--models", "nosuchmodel"],
     ["models", "nosuchmodel"]),
    (["keys", "update", "{api}", "--models", "nosuchmodel"], ["models", "nosuchmodel"]),
    (["keys", "update", "{api}", "--name", "renamed", "--models", f"{MODEL},nosuchmodel"],
     ["nosuchmodel"]),
    (["keys", "create", "--name", "x", "--account", "{account}", "--expires", "2000-01-01"],
     ["expires_at", "past"]),
    (["keys", "update", "{api}", "--expires", "2000-01-01T00:00:00+00:00"],
     ["expires_at", "past"]),
    (["keys", "create", "--name", "x", "--account", "999999"], ["no account 999999"]),
    (["keys", "update", "999999", "--rpm", "5"], ["no key 999999"]),
    (["keys", "rotate", "999999"], ["no key 999999"]),
    (["keys", "create", "--name", "x", "--account", "{account}", "--rpm", "0"], ["rpm"]),
    (["keys", "create", "--name", "x", "--account", "{account}", "--tpm", "0"], ["tpm"]),
    (["keys", "create", "--name", "x", "--account", "{account}", "--rpm", "-1"], ["rpm"]),
    (["keys", "update", "{api}", "--rpm", "0"], ["rpm"]),
    (["keys", "update", "{api}", "--tpm", "0"], ["tpm"]),
    (["keys", "update", "{api}", "--rpm", "-3"], ["rpm"]),
    (["keys", "update", "{api}", "--rpm", str(10**12)], ["rpm"]),
    (["keys", "update", "{api}", "--cap", "5.01", "--cap-reset", "daily"],
     ["cap", "balance"]),
    (["keys", "update", "{manage}", "--scope", "api"], ["scope", "only manage key"]),
    (["keys", "create", "--name", "x", "--account", "{account}", "--credit", "1"],
     ["credit"]),
    (["keys", "rotate", "{api}", "--grace", "-1"], ["grace"]),
    (["keys", "create", "--name", "x", "--expires", "yesterday"], ["ISO 8601"]),
    (["keys", "update", "{api}", "--cap-reset", "hourly"], ["cap-reset"]),
    (["keys", "update", "{api}", "--routes", "files"], ["routes", "files"]),
]


def _case_id(case: Any) -> str:
    args = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(args[:2] + args[-2:])


@pytest.mark.parametrize(("args", "says"), BAD, ids=[_case_id(c) for c in BAD])
def test_bad_input_exits_with_a_message_and_changes_nothing(
        deployment: Deployment, quiet: dict[str, Any], args: list[str],
        says: list[str]) -> None:
    names = {"account": quiet["account"], "api": quiet["api"]["id"], "manage": quiet["id"]}
    argv = [a.format(**names) for a in args]
    before = state(deployment, quiet["account"])
    keys_before = len(deployment.portal.cli_json("keys", "list"))

    result = deployment.portal.cli(*argv, "--json", check=False)

    assert result.returncode != 0, result.stdout
    assert result.stdout.strip() == "", result.stdout  # no key, no JSON of a change
    for words in says:
        assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert state(deployment, quiet["account"]) == before
    assert len(deployment.portal.cli_json("keys", "list")) == keys_before
    view = get_key(deployment, quiet["api"]["key"]).json()["data"]
    assert (view["name"], view["models"], view["cap"]) == ("c", [MODEL], None)
