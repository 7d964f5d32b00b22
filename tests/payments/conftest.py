"""A shop: a portal with 2 workers, a fake Stripe, and a simulated node to spend credit on.

One SQLite shop serves the whole package; ``any_shop`` adds a PostgreSQL one for
the tests where the database matters (idempotent crediting under races).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.deployment import Deployment, deploy
from tests.support.fake_stripe import FakeStripe, event_payload, fake_stripe, sign

SECRET_KEY = "sk_test_portal_payments"
WEBHOOK_SECRET = "whsec_test_portal_payments"
ADMIN = "admin-token-for-payment-tests"
MODEL = "pricey"
#: Prices that make one short chat request cost about $1.70 (USD per 1M tokens).
INPUT_PRICE, OUTPUT_PRICE = "10000", "100000"
#: Micro-dollars per cent.
CENT = 10_000


@dataclasses.dataclass
class Shop(Deployment):
    """The standard deployment's helpers, with a Stripe of its own to pay through."""

    stripe: FakeStripe = dataclasses.field(kw_only=True)

    def key(self, credit: str = "0") -> tuple[int, str]:
        return self.portal.create_key(credit)

    # -- the API ------------------------------------------------------------------------
    def topup(self, key: str, amount: Any = "25.00", **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + "/api/topup", json={"amount": amount},
                          headers={"authorization": f"Bearer {key}"}, timeout=30, **kwargs)

    def open_session(self, key: str, amount: str = "25.00") -> str:
        response = self.topup(key, amount)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def deliver(self, payload: str | bytes, signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["stripe-signature"] = signature
        return httpx.post(self.url + "/webhooks/stripe", content=payload, headers=headers,
                          timeout=60)

    def send(self, event_type: str, obj: dict, **kwargs: Any) -> httpx.Response:
        """Deliver a correctly signed event around ``obj``."""
        payload = event_payload(event_type, obj, **kwargs)
        return self.deliver(payload, sign(payload, WEBHOOK_SECRET))

    def paid(self, key: str, amount: str = "25.00") -> str:
        """A top-up paid and credited through the webhook; returns its session id."""
        session_id = self.open_session(key, amount)
        response = self.send("checkout.session.completed", self.stripe.pay(session_id))
        assert response.status_code == 200, response.text
        return session_id

    def spend(self, key: str) -> int:
        """One chat request on the node; returns what it cost (micro-dollars)."""
        response = httpx.post(self.url + "/v1/chat/completions", timeout=30,
                              headers={"authorization": f"Bearer {key}"},
                              json={"model": MODEL, "max_tokens": 16,
                                    "messages": [{"role": "user", "content": "Hi."}]})
        assert response.status_code == 200, response.text
        return -self.wait_usage(response.headers["x-request-id"])

    def wait_usage(self, request_id: str, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT amount FROM ledger WHERE reference=?", f"usage:{request_id}")
            if rows:
                return rows[0][0]
            time.sleep(0.05)
        raise TimeoutError("usage did not reach the ledger")

    def admin(self, path: str, token: str | None = ADMIN) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=30)

    # -- the books ----------------------------------------------------------------------
    def live_balance(self, key_id: int) -> int:
        """The balance the hot path sees (Redis)."""
        client = redis.Redis.from_url(self.portal.redis_url)
        try:
            raw = client.get(f"{self.portal.namespace}:bal:{key_id}")
        finally:
            client.close()
        return int(raw) if raw is not None else self.sql_balance(key_id)

    def sql_balance(self, key_id: int) -> int:
        return self.sql("SELECT balance FROM accounts WHERE id=?", key_id)[0][0]

    def assert_books_balance(self, key_id: int) -> int:
        """SQL balance = sum of the ledger = live balance, never negative; returns it."""
        balance = super().assert_books_balance(key_id)
        assert self.live_balance(key_id) == balance
        return balance

    def payment(self, session_id: str) -> dict[str, Any]:
        rows = self.sql("SELECT account_id, amount, paid, refunded, status, payment_intent, "
                        "charge_id FROM payments WHERE session_id=?", session_id)
        assert len(rows) == 1, rows
        return dict(zip(("account_id", "amount", "paid", "refunded", "status", "payment_intent",
                         "charge_id"), rows[0], strict=True))

    def counts(self) -> dict[str, int]:
        """Rows that a refused delivery must not add."""
        return {table: self.sql(f"SELECT COUNT(*) FROM {table}")[0][0]
                for table in ("ledger", "webhook_events", "payments")}


def until(check, timeout: float = 5.0):
    """Poll ``check()`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@contextmanager
def open_shop(root: Path, redis_url: str, database_url: str = "") -> Iterator[Shop]:
    with fake_stripe(SECRET_KEY) as stripe, deploy(
            root, redis_url, model=MODEL, node_args=("--reply-tokens", "16"),
            database_url=database_url, input_price=INPUT_PRICE, output_price=OUTPUT_PRICE, env={
                "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "STRIPE_API_BASE": stripe.url, "PORTAL_ADMIN_TOKEN": ADMIN,
                "PORTAL_PUBLIC_URL": "https://portal.example.com",
                "PORTAL_TOPUP_MIN_USD": "5", "PORTAL_TOPUP_MAX_USD": "500",
            }) as made:
        yield Shop(made.portal, made.node, stripe=stripe)


@pytest.fixture(scope="package")
def shop(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Shop]:
    """The SQLite shop every payments module shares."""
    with open_shop(tmp_path_factory.mktemp("shop"), redis_url) as made:
        yield made


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def any_shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             redis_url: str) -> Iterator[Shop]:
    """The SQLite shop, then one on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("shop")
        return
    database_url = request.getfixturevalue("module_postgres_url")
    with open_shop(tmp_path_factory.mktemp("pgshop"), redis_url, database_url) as made:
        yield made


def decoded(response: httpx.Response) -> Any:
    return json.loads(response.content)
