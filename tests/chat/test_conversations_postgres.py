"""The conversation and alternative tests again, on PostgreSQL.

Search (ILIKE and its escapes), the sidebar's order (COALESCE over a join), JSON
settings, cascading purges and text without NUL are where the two databases could
differ; the same tests run here, ``people`` (tests/chat/conftest.py) on this module's
portal, whose database is a fresh copy of a migrated PostgreSQL one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chat.test_alternatives import *  # noqa: F403  (collected again, here)
from tests.chat.test_conversation_probes import *  # noqa: F403
from tests.chat.test_conversations import *  # noqa: F403
from tests.support.inprocess import InProcessPortal, open_portal
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


async def test_the_tests_here_run_on_postgresql(people, inprocess_portal: InProcessPortal
                                                ) -> None:
    assert inprocess_portal.database_url.startswith("postgres")
    assert people[0].portal is inprocess_portal  # people live on this module's portal
