"""Scoped keys through the official ``openai`` SDK: models, routes, scope, changes, rotation.

An account with a manage key (it holds the credit) and API keys limited to some of its
models or routes; each test builds its own in-process portal (tests/support/inprocess.py)
with two models served by node doubles and a third one disabled, and a fake Stripe so
that a manage key can really open a top-up (and an API key's refusal is the scope's).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from edge.billing.money import parse_usd
from edge.db.models import LLM, Account, ApiKey, UsageRecord
from edge.identity.accounts import (
    KeySettings,
    KeySettingsError,
    create_key,
    revoke_key,
    rotate_key,
    update_key,
)
from edge.identity.sessions import COOKIE as SESSION_COOKIE
from tests.support.fake_stripe import fake_stripe
from tests.support.inprocess import InProcessPortal, NodeDouble, open_portal

#: Models offered: the name clients ask for → the name its node serves.
MODELS = {"ma": "sim-ma", "mb": "sim-mb"}
#: Offered, but disabled: no list shows it.
DISABLED = "mc"
STRIPE_KEY = "sk_test_scoped_keys"


@pytest.fixture
async def portal(tmp_path: Path, redis_url: str, sqlite_template: Path,
                 node_doubles: Callable[..., Awaitable[NodeDouble]]
                 ) -> AsyncIterator[InProcessPortal]:
    with fake_stripe(STRIPE_KEY) as stripe:
        async with open_portal(tmp_path, redis_url, template=sqlite_template,
                               stripe_secret_key=STRIPE_KEY,
                               stripe_webhook_secret="whsec_scoped_keys",
                               stripe_api_base=stripe.url) as made:
            for name, served in MODELS.items():
                await made.add_model(name, served_name=served)
                await made.add_node(name, await node_doubles(served, reply_tokens=4))
            await made.add_model(DISABLED)
            await LLM.filter(name=DISABLED).update(enabled=False)
            await made.ctx.registry.reload()
            yield made


class Holder:
    """An account's manage key, and API keys made in it."""

    def __init__(self, portal: InProcessPortal, key_id: int, secret: str) -> None:
        self.portal = portal
        self.manage_id = key_id
        self.manage = secret
        self._clients: list[openai.AsyncOpenAI] = []

    async def account(self) -> Account:
        return await Account.get(id=(await ApiKey.get(id=self.manage_id)).account_id)

    async def api_key(self, **settings: Any) -> tuple[ApiKey, str]:
        """An API key of this account with ``settings`` (KeySettings fields)."""
        portal = self.portal
        made = await create_key(name=settings.pop("name", "api"), pepper=portal.ctx.pepper,
                                rpm=settings.pop("rpm", portal.settings.default_rpm),
                                tpm=settings.pop("tpm", portal.settings.default_tpm),
                                store=portal.ctx.store,
                                account=await self.account(),
                                settings=KeySettings(**{"scope": "api", **settings}))
        return made.row, made.secret

    def sdk(self, secret: str) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=self.portal.url + "/v1", api_key=secret,
                                    max_retries=0)
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


@pytest.fixture
async def acct(portal: InProcessPortal) -> AsyncIterator[Holder]:
    made = Holder(portal, *await portal.create_key("10"))
    yield made
    await made.close()


async def chat(sdk: openai.AsyncOpenAI, model: str) -> Any:
    return await sdk.chat.completions.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "Hello."}])


async def key_view(portal: InProcessPortal, secret: str) -> httpx.Response:
    return await portal.client.get("/v1/key", headers={"authorization": f"Bearer {secret}"})


async def snapshot(key_id: int, portal: InProcessPortal) -> tuple[dict[str, Any], dict]:
    """The key's SQL row and its Redis record (what a refused change must leave as is)."""
    row = await ApiKey.get(id=key_id)
    store = portal.ctx.store
    record = await store.client.hgetall(store.key_record(row.prefix))
    return (await ApiKey.filter(id=key_id).values())[0], record


# -- models and routes --------------------------------------------------------------------
async def test_a_key_limited_to_a_model_calls_it_and_is_refused_the_other(
        acct: Holder, portal: InProcessPortal) -> None:
    row, secret = await acct.api_key(models=["ma"])
    sdk = acct.sdk(secret)

    answer = await chat(sdk, "ma")
    assert answer.model == "ma"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 4

    with pytest.raises(openai.PermissionDeniedError) as refused:
        await chat(sdk, "mb")
    assert refused.value.status_code == 403
    assert refused.value.code == "permission_denied"
    assert "mb" in refused.value.message and "ma" in refused.value.message
    # Refused before any node or reservation: only the call on ma was metered.
    await portal.drain_ledger()
    assert [r["model"] for r in await UsageRecord.filter(key_id=row.id).values()] == ["ma"]

    # The manage key of the account (no list) calls both.
    manager = acct.sdk(acct.manage)
    assert (await chat(manager, "mb")).model == "mb"


async def test_a_key_limited_to_completions_is_refused_chat(acct: Holder) -> None:
    _row, secret = await acct.api_key(routes=["completions"])
    sdk = acct.sdk(secret)

    with pytest.raises(openai.PermissionDeniedError) as refused:
        await chat(sdk, "ma")
    assert refused.value.status_code == 403
    assert refused.value.code == "permission_denied"
    assert "chat/completions" in refused.value.message

    done = await sdk.completions.create(model="ma", prompt="Once upon a time", max_tokens=4)
    assert done.model == "ma"
    assert done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 4


async def test_the_model_list_is_the_keys(acct: Holder, portal: InProcessPortal) -> None:
    _row, limited = await acct.api_key(models=["mb"])

    listed = [m.id async for m in acct.sdk(limited).models.list()]
    assert listed == ["mb"]
    with pytest.raises(openai.NotFoundError):
        await acct.sdk(limited).models.retrieve("ma")
    assert (await acct.sdk(limited).models.retrieve("mb")).id == "mb"

    everything = sorted(MODELS)  # enabled ones: not the disabled model
    assert [m.id async for m in acct.sdk(acct.manage).models.list()] == everything
    public = await portal.client.get("/v1/models")
    assert public.status_code == 200
    assert [m["id"] for m in public.json()["data"]] == everything


async def test_get_key_shows_scope_models_cap_and_the_accounts_balance(
        acct: Holder, portal: InProcessPortal) -> None:
    row, secret = await acct.api_key(name="limited", models=["ma"], cap=parse_usd("2"),
                                     cap_reset="daily")
    account = await acct.account()

    view = (await key_view(portal, secret)).json()["data"]
    assert (view["id"], view["name"], view["scope"]) == (row.id, "limited", "api")
    assert view["models"] == ["ma"] and view["routes"] is None
    assert (view["cap"], view["cap_micros"], view["cap_reset"]) == ("2.000000", 2_000_000,
                                                                    "daily")
    assert view["cap_window"] == {"used": "0.000000", "used_micros": 0,
                                  "left": "2.000000", "left_micros": 2_000_000}
    assert view["balance_micros"] == 10_000_000
    assert view["account"]["id"] == account.id
    assert view["account"]["balance_micros"] == 10_000_000

    answer = await chat(acct.sdk(secret), "ma")
    assert answer.usage is not None
    await portal.wait_settled()
    [usage] = await portal.usage(row.id)
    cost = usage["cost"]
    assert cost > 0
    after = (await key_view(portal, secret)).json()["data"]
    assert after["cap_window"]["used_micros"] == cost
    assert after["cap_window"]["left_micros"] == 2_000_000 - cost
    # The balance is the account's: the manage key sees the same one.
    assert after["balance_micros"] == 10_000_000 - cost
    manager = (await key_view(portal, acct.manage)).json()["data"]
    assert manager["balance_micros"] == 10_000_000 - cost
    assert manager["scope"] == "manage" and "cap_window" not in manager


# -- what only a manage key does ------------------------------------------------------------
async def sign_in(portal: InProcessPortal, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=portal.url, headers={"accept": "text/html"}) as web:
        form = await web.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        return await web.post("/login", data={"key": secret, "csrf": csrf.group(1)})


async def test_an_api_key_cannot_sign_in_nor_top_up(acct: Holder,
                                                    portal: InProcessPortal) -> None:
    _row, secret = await acct.api_key()

    refused = await sign_in(portal, secret)
    assert refused.status_code == 403, refused.text
    assert "API key" in refused.text
    assert f"{SESSION_COOKIE}=" not in refused.headers.get("set-cookie", "")  # no session
    signed_in = await sign_in(portal, acct.manage)  # the same form takes a manage key
    assert signed_in.status_code == 302 and signed_in.headers["location"] == "/account"

    topup = await portal.client.post("/api/topup", json={"amount": "20"},
                                     headers={"authorization": f"Bearer {secret}"})
    assert topup.status_code == 403, topup.text
    assert topup.json()["error"]["code"] == "permission_denied"
    opened = await portal.client.post("/api/topup", json={"amount": "20"},
                                      headers={"authorization": f"Bearer {acct.manage}"})
    assert opened.status_code == 200, opened.text
    assert opened.json()["url"]


# -- changes reach the API ---------------------------------------------------------------
async def test_an_update_takes_effect_within_a_second(acct: Holder,
                                                      portal: InProcessPortal) -> None:
    row, secret = await acct.api_key(models=["ma"])
    sdk = acct.sdk(secret)
    with pytest.raises(openai.PermissionDeniedError):
        await chat(sdk, "mb")  # the record (without mb) is cached now

    await update_key(row, KeySettings(models=["ma", "mb"]), store=portal.ctx.store)
    changed = time.monotonic()
    while True:
        try:
            answer = await chat(sdk, "mb")
            break
        except openai.PermissionDeniedError:
            assert time.monotonic() - changed < 1.0, "the change did not reach the API"
            await asyncio.sleep(0.05)
    assert answer.model == "mb"
    assert [m.id async for m in sdk.models.list()] == ["ma", "mb"]


async def test_a_rotated_keys_old_secret_works_for_its_grace_only(
        acct: Holder, portal: InProcessPortal) -> None:
    row, old = await acct.api_key()
    assert (await key_view(portal, old)).status_code == 200  # cached before the rotation

    grace = 2.5
    rotated = await rotate_key(row, pepper=portal.ctx.pepper, grace=grace,
                               store=portal.ctx.store)
    rotated_at = time.monotonic()
    new = rotated.secret
    assert new != old and rotated.row.id == row.id

    both = [await chat(acct.sdk(secret), "ma") for secret in (old, new)]
    assert all(answer.choices[0].message.content for answer in both)
    assert time.monotonic() - rotated_at < grace, "too slow to test the grace period"
    old_view = (await key_view(portal, old)).json()["data"]
    assert old_view["id"] == row.id and old_view["prefix"] == old[:14]

    await asyncio.sleep(grace - (time.monotonic() - rotated_at) + 0.2)
    with pytest.raises(openai.AuthenticationError) as refused:
        await chat(acct.sdk(old), "ma")
    assert refused.value.status_code == 401
    assert (await key_view(portal, old)).status_code == 401
    assert (await chat(acct.sdk(new), "ma")).choices[0].message.content
    # Both secrets' calls are the one key's.
    assert len(await portal.usage(row.id)) == 3


async def test_a_revoked_key_refuses_both_its_secrets(acct: Holder,
                                                      portal: InProcessPortal) -> None:
    row, old = await acct.api_key()
    rotated = await rotate_key(row, pepper=portal.ctx.pepper, grace=600,
                               store=portal.ctx.store)
    new = rotated.secret
    for secret in (old, new):
        assert (await key_view(portal, secret)).status_code == 200

    await revoke_key(await ApiKey.get(id=row.id), store=portal.ctx.store)
    revoked_at = time.monotonic()
    for secret in (old, new):
        while (await key_view(portal, secret)).status_code != 401:
            assert time.monotonic() - revoked_at < 1.0, "revocation did not reach the API"
            await asyncio.sleep(0.05)
        with pytest.raises(openai.AuthenticationError) as refused:
            await chat(acct.sdk(secret), "ma")
        assert refused.value.status_code == 401
        assert "revoked" in refused.value.message
    assert (await key_view(portal, acct.manage)).status_code == 200  # the account lives on


# -- bad input changes nothing ----------------------------------------------------------------
BAD_UPDATES = [
    (KeySettings(models=["nosuchmodel"]), "models"),
    (KeySettings(models=["ma", "nosuchmodel"]), "models"),
    (KeySettings(models=[]), "models"),
    (KeySettings(routes=["files"]), "routes"),
    (KeySettings(rpm=0), "rpm"),
    (KeySettings(rpm=-1), "rpm"),
    (KeySettings(rpm=10**12), "rpm"),
    (KeySettings(tpm=0), "tpm"),
    (KeySettings(cap=parse_usd("10.000001")), "cap"),  # the balance is 10
    (KeySettings(cap=-1), "cap"),
    (KeySettings(cap_reset="hourly"), "cap_reset"),
    (KeySettings(expires_at=datetime.now(UTC) - timedelta(seconds=1)), "expires_at"),
    (KeySettings(scope="admin"), "scope"),
    (KeySettings(name=" "), "name"),
    # A good change beside a bad one: all or nothing.
    (KeySettings(name="renamed", models=["ma"], rpm=0), "rpm"),
]


@pytest.mark.parametrize(("settings", "param"), BAD_UPDATES,
                         ids=[f"{p}-{i}" for i, (_s, p) in enumerate(BAD_UPDATES)])
async def test_a_bad_update_names_its_field_and_changes_nothing(
        acct: Holder, portal: InProcessPortal, settings: KeySettings, param: str) -> None:
    row, secret = await acct.api_key(name="steady", models=["mb"], rpm=50)
    before = await snapshot(row.id, portal)

    with pytest.raises(KeySettingsError) as refused:
        await update_key(await ApiKey.get(id=row.id), settings, store=portal.ctx.store)
    assert refused.value.param == param, refused.value.message

    assert await snapshot(row.id, portal) == before
    view = (await key_view(portal, secret)).json()["data"]
    assert (view["name"], view["models"], view["limits"]["requests_per_minute"]) == \
        ("steady", ["mb"], 50)


async def test_the_only_manage_key_stays_a_manage_key(acct: Holder,
                                                      portal: InProcessPortal) -> None:
    manage = await ApiKey.get(id=acct.manage_id)
    await acct.api_key()  # another key, but an API key: it does not count
    before = await snapshot(manage.id, portal)

    with pytest.raises(KeySettingsError) as refused:
        await update_key(manage, KeySettings(scope="api"), store=portal.ctx.store)
    assert refused.value.param == "scope"
    assert await snapshot(manage.id, portal) == before
    assert (await sign_in(portal, acct.manage)).status_code == 302

    # With a second manage key, the first may become an API key.
    await acct.api_key(name="second manager", scope="manage")
    await update_key(await ApiKey.get(id=manage.id), KeySettings(scope="api"),
                     store=portal.ctx.store)
    assert (await ApiKey.get(id=manage.id)).scope == "api"


BAD_CREATES = [
    ({"models": ["nosuchmodel"]}, "models"),
    ({"rpm": 0}, "rpm"),
    ({"rpm": -5}, "rpm"),
    ({"rpm": 10**12}, "rpm"),
    ({"cap": parse_usd("10.01"), "cap_reset": "daily"}, "cap"),
    ({"expires_at": datetime.now(UTC) - timedelta(days=1)}, "expires_at"),
    ({"routes": []}, "routes"),
]


@pytest.mark.parametrize(("options", "param"), BAD_CREATES,
                         ids=[f"{p}-{i}" for i, (_o, p) in enumerate(BAD_CREATES)])
async def test_a_bad_new_key_names_its_field_and_makes_nothing(
        acct: Holder, portal: InProcessPortal, options: dict[str, Any], param: str) -> None:
    account = await acct.account()
    keys_before = await ApiKey.filter(account_id=account.id).values()
    rpm = options.pop("rpm", portal.settings.default_rpm)
    expires = options.pop("expires_at", None)

    with pytest.raises(KeySettingsError) as refused:
        await create_key(name="bad", pepper=portal.ctx.pepper, rpm=rpm,
                         tpm=portal.settings.default_tpm, expires_at=expires,
                         store=portal.ctx.store, account=account,
                         settings=KeySettings(scope="api", **options))
    assert refused.value.param == param, refused.value.message
    assert await ApiKey.filter(account_id=account.id).values() == keys_before
    assert (await Account.get(id=account.id)).balance == account.balance


async def test_a_new_account_cannot_open_with_an_api_key(portal: InProcessPortal) -> None:
    count = await ApiKey.all().count()
    with pytest.raises(KeySettingsError) as refused:
        await create_key(name="solo", pepper=portal.ctx.pepper, rpm=10, tpm=1000, credit=1,
                         store=portal.ctx.store, settings=KeySettings(scope="api"))
    assert refused.value.param == "scope"
    assert await ApiKey.all().count() == count
    assert await Account.filter(name="solo").count() == 0


async def test_an_account_holds_at_most_max_keys(acct: Holder,
                                                 portal: InProcessPortal) -> None:
    account = await acct.account()
    made = await create_key(name="second", pepper=portal.ctx.pepper, rpm=10, tpm=1000,
                            store=portal.ctx.store, account=account, max_keys=2)
    assert made.row.account_id == account.id
    keys_before = await ApiKey.filter(account_id=account.id).values()

    with pytest.raises(KeySettingsError) as refused:
        await create_key(name="third", pepper=portal.ctx.pepper, rpm=10, tpm=1000,
                         store=portal.ctx.store, account=account, max_keys=2)
    assert refused.value.param == "account"
    assert await ApiKey.filter(account_id=account.id).values() == keys_before

    # A revoked key no longer counts.
    await revoke_key(made.row, store=portal.ctx.store)
    third = await create_key(name="third", pepper=portal.ctx.pepper, rpm=10, tpm=1000,
                             store=portal.ctx.store, account=account, max_keys=2)
    assert third.row.account_id == account.id
