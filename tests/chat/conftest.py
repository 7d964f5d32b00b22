"""A portal with 2 workers and a slow-ish simulated node, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.deployment import Deployment, deploy

MODEL = "talker"
ADMIN = "admin-token-for-chat-tests"


@pytest.fixture(scope="module")
def room_portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("chat"), redis_url, model=MODEL,
                node_args=("--tokens-per-second", "40"), env={
                    "PORTAL_CHAT_ROOMS_PER_KEY": "3", "PORTAL_BOOT_TIMEOUT": "3",
                    "PORTAL_SIGNUP_CREDIT": "1", "PORTAL_ADMIN_TOKEN": ADMIN}) as made:
        yield made
