"""Migrations: a database made by an older release upgrades with its rows in place."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.migrations.api import migrate as run_migrations

from edge.db import migrate, tortoise_config
from tests.support.services import sql_query


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    # Tortoise caches each model's SQL per process, in the first dialect it met: one
    # process, one database, except here.
    EXECUTOR_CACHE.clear()
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'old.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_url")
    EXECUTOR_CACHE.clear()


async def test_upgrading_a_database_with_rows(database: str) -> None:
    await run_migrations(config=tortoise_config(database), target="portal.0001_initial")
    await Tortoise.close_connections()
    stamp = (datetime(2026, 1, 1, tzinfo=UTC) if database.startswith("postgres")
             else "2026-01-01 00:00:00+00:00")
    sql_query(database, "INSERT INTO llm_models (name, served_name, input_price, output_price, "
              "context_length, enabled, min_warm, created_at) VALUES "
              "('m', 'm', 1, 1, 8192, TRUE, 0, ?)", stamp)
    sql_query(database, "INSERT INTO nodes (model_id, url, region, instance_type, state, "
              "healthy, private_ip, public_ip, queue_depth, created_at) VALUES "
              "(1, 'http://n', '', '', 'running', TRUE, '', '', 0, ?)", stamp)
    try:
        applied = await migrate(database)
    finally:
        EXECUTOR_CACHE.clear()
    assert applied == ["0002_jobs_and_node_health", "0003_chat_and_payments",
                       "0004_installation", "0005_money_survives_redis", "0006_accounts",
                       "0007_model_kinds", "0008_conversations", "0009_fleet_scaling",
                       "0010_contact_and_audit", "0011_node_runs",
                       "0012_report_indexes"]
    # A model offered before kinds existed generated text; one offered before scaling
    # policies keeps its min_warm as min_nodes and scales as it did: one node at most.
    assert sql_query(database, "SELECT name, kind, min_nodes, max_nodes, load_metric, spot "
                     "FROM llm_models") == [("m", "generate", 0, 1, "in_flight", False)]
    assert sql_query(database, "SELECT url, hourly_cost, health_failures, running_requests, "
                     "spot, note FROM nodes") == [("http://n", 0, 0, 0, False, "")]
    # The running node is billed from when it was added (it never changed state): one
    # open run at its hourly cost then.
    assert sql_query(database, "SELECT r.node_id, r.model_id, r.instance_type, r.hourly_cost, "
                     "r.started_at = n.created_at, r.ended_at IS NULL, r.open_node_id FROM "
                     "node_runs r JOIN nodes n ON n.id = r.node_id") == [(1, 1, "", 0, 1, 1, 1)]
    ((identity,),) = sql_query(database, "SELECT identity FROM installation WHERE id = 1")
    assert len(identity) == 36  # a UUID, made once
    assert await migrate(database) == []
    assert sql_query(database, "SELECT identity FROM installation") == [(identity,)]
