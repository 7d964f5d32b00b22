"""The conversation and alternative tests again, on PostgreSQL.

Search (ILIKE and its escapes), the sidebar's order (COALESCE over a join), JSON
settings, cascading purges and text without NUL are where the two databases could
differ; the same tests run here with ``people`` on a fresh PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chat.test_alternatives import *  # noqa: F403  (collected again, here)
from tests.chat.test_conversation_probes import *  # noqa: F403
from tests.chat.test_conversations import *  # noqa: F403
from tests.support.chat import CHAT_MODEL, Person
from tests.support.inprocess import InProcessPortal, NodeDouble, open_portal
from tests.support.services import postgres_database


@pytest.fixture(scope="module")
def migrated_postgres() -> Iterator[str]:
    """A PostgreSQL database migrated once, that each test copies."""
    import asyncio

    from tortoise.backends.base.executor import EXECUTOR_CACHE

    from edge.db import migrate

    with postgres_database() as url:
        asyncio.run(migrate(url))
        EXECUTOR_CACHE.clear()
        yield url


@pytest.fixture
async def inprocess_portal(tmp_path: Path, redis_url: str, migrated_postgres: str
                           ) -> AsyncIterator[InProcessPortal]:
    with postgres_database(template=migrated_postgres) as url:
        async with open_portal(tmp_path, redis_url, database_url=url, migrated=True) as made:
            yield made


@pytest.fixture
async def people(inprocess_portal: InProcessPortal, chat_node: NodeDouble
                 ) -> AsyncIterator[list[Person]]:
    await inprocess_portal.add_model(CHAT_MODEL, served_name="sim-m1")
    await inprocess_portal.add_node(CHAT_MODEL, chat_node)
    made = [Person(inprocess_portal, *await inprocess_portal.create_key("5"))
            for _ in range(2)]
    yield made
    for person in made:
        await person.http.aclose()
