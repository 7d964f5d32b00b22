"""A portal with 2 workers and a slow-ish simulated node, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simnode.testing import start_simnode
from tests.edge.conftest import Deployment
from tests.support.portal import PortalServer

MODEL = "talker"
ADMIN = "admin-token-for-chat-tests"


@pytest.fixture(scope="module")
def room_portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("chat")
    with start_simnode("--model", MODEL, "--tokens-per-second", "40") as node:
        portal = PortalServer(root, redis_url, workers=2, env={
            "PORTAL_CHAT_ROOMS_PER_KEY": "3", "PORTAL_BOOT_TIMEOUT": "3",
            "PORTAL_SIGNUP_CREDIT": "1", "PORTAL_ADMIN_TOKEN": ADMIN})
        portal.cli("migrate")
        portal.add_model(MODEL, input_price="0.50", output_price="1.50")
        portal.add_node(MODEL, node.url)
        with portal:
            yield Deployment(portal, node)
