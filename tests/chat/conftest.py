"""The chat's portals: ``room_portal`` (2 worker processes and a slow-ish simulated node,
shared by a test module) and ``people`` (two accounts on an in-process portal, whose
node is ``chat_node``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.chat import CHAT_MODEL, Person
from tests.support.deployment import Deployment, deploy
from tests.support.inprocess import InProcessPortal, NodeDouble

MODEL = "talker"
ADMIN = "admin-token-for-chat-tests"


@pytest.fixture(scope="module")
def room_portal(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("chat"), redis_url, model=MODEL,
                node_args=("--tokens-per-second", "40"), env={
                    "PORTAL_CHAT_ROOMS_PER_KEY": "3", "PORTAL_BOOT_TIMEOUT": "3",
                    "PORTAL_SIGNUP_CREDIT": "1", "PORTAL_ADMIN_TOKEN": ADMIN}) as made:
        yield made


@pytest.fixture
async def chat_node(node_doubles) -> NodeDouble:
    """The node double serving :data:`~tests.support.chat.CHAT_MODEL` as ``sim-m1``."""
    node: NodeDouble = await node_doubles("sim-m1", reply_tokens=5)
    return node


@pytest.fixture
async def people(inprocess_portal: InProcessPortal, chat_node: NodeDouble
                 ) -> AsyncIterator[list[Person]]:
    """Two accounts, each with a key and 5 USD, on an in-process portal."""
    await inprocess_portal.add_model(CHAT_MODEL, served_name="sim-m1")
    await inprocess_portal.add_node(CHAT_MODEL, chat_node)
    made = [Person(inprocess_portal, *await inprocess_portal.create_key("5"))
            for _ in range(2)]
    yield made
    for person in made:
        await person.http.aclose()
