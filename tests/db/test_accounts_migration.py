"""Migration 0006: every key of the previous schema becomes an account holding that key.

The database is filled by the previous schema (0005) with raw SQL, as an older
release left it, then upgraded: each account keeps its key's id (ids 3, 7 and 12, not
1..3, so that keeping them is really tested), its name and its money, and the rows
that pointed at the key point at the account.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.exceptions import IntegrityError
from tortoise.migrations.api import migrate as run_migrations

from edge.db import close_database, migrate, open_database, tortoise_config
from edge.db.models import Account, ApiKey, KeyScope, LedgerEntry, LedgerKind
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


def _stamp(database: str, day: int, hour: int = 0, micro: int = 0) -> object:
    """A timestamp as each database takes it: text on SQLite, a datetime on PostgreSQL."""
    moment = datetime(2026, 1, day, hour, 30, 15, micro, tzinfo=UTC)
    return moment if database.startswith("postgres") else str(moment)


def _columns(database: str, table: str) -> dict[str, bool]:
    """The columns of ``table``, each with whether it takes NULL."""
    if database.startswith("sqlite"):
        return {name: not notnull for _cid, name, _type, notnull, _default, _pk
                in sql_query(database, f'PRAGMA table_info("{table}")')}
    return {name: nullable == "YES" for name, nullable in sql_query(
        database, "SELECT column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ?", table)}


#: The keys of the old schema: (id, name, prefix, key_hash, balance, spent, owed,
#: frozen, rpm, tpm); their stamps are made per database by ``_keys``.
KEYS = [
    (3, "alice", "pk_alice", "a" * 64, 5_000_000, 1_000_000, 0, False, 60, 100_000),
    (7, "bob", "pk_bob", "b" * 64, 0, 2_500_000, 0, True, 5, 2_000),
    (12, "carol", "pk_carol", "c" * 64, 250_000, 750_000, 125_000, False, 1_000, 9_000_000),
]

#: Ledger rows per key: (id, key_id, kind, amount, reference, note); each key's
#: amounts add up to its balance.
LEDGER = [
    (10, 3, "topup", 6_000_000, "topup:alice:1", "first top-up"),
    (11, 3, "usage", -1_000_000, "usage:alice:1", ""),
    (12, 7, "topup", 2_000_000, "topup:bob:1", ""),
    (13, 7, "usage", -2_500_000, "usage:bob:1", "over"),
    (14, 7, "adjustment", 500_000, "adjust:bob:1", "goodwill"),
    (15, 12, "topup", 1_000_000, "topup:carol:1", ""),
    (16, 12, "usage", -750_000, "usage:carol:1", ""),
    (17, 12, "refund", 0, "refund:carol:1", "nothing back"),
]

#: A payment per key: (id, key_id, session_id, amount, paid, refunded, status).
PAYMENTS = [
    (4, 3, "cs_alice", 6_000_000, 6_000_000, 0, "paid"),
    (5, 7, "cs_bob", 2_000_000, 2_000_000, 0, "disputed"),
    (6, 12, "cs_carol", 1_000_000, 1_000_000, 125_000, "partially_refunded"),
]

#: Usage rows: (id, request_id, key_id, model, prompt_tokens, completion_tokens, cost).
USAGE = [
    (20, "req-a1", 3, "m", 100, 50, 1_000_000),
    (21, "req-b1", 7, "m", 2_000, 1_000, 2_500_000),
    (22, "req-c1", 12, "m", 30, 70, 750_000),
    (23, "req-c2", 12, "m", 0, 0, 0),
]


def _keys(database: str) -> list[tuple]:
    """KEYS with created_at, expires_at and revoked_at."""
    return [
        (*KEYS[0], _stamp(database, 1, 1, 111), _stamp(database, 28), None),
        (*KEYS[1], _stamp(database, 2, 2, 222), None, None),
        (*KEYS[2], _stamp(database, 3, 3, 333), _stamp(database, 30, 4), _stamp(database, 9, 5)),
    ]


def _fill_previous_schema(database: str) -> None:
    """Rows as the release before accounts (schema 0005) wrote them."""
    stamp = _stamp(database, 4)
    for (key_id, name, prefix, key_hash, balance, spent, owed, frozen, rpm, tpm,
         created_at, expires_at, revoked_at) in _keys(database):
        sql_query(database, "INSERT INTO api_keys (id, name, prefix, key_hash, balance, spent, "
                  "owed, frozen, rpm, tpm, created_at, expires_at, revoked_at) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  key_id, name, prefix, key_hash, balance, spent, owed, frozen, rpm, tpm,
                  created_at, expires_at, revoked_at)
    if database.startswith("postgres"):
        # Keys were made by the old release, which advanced the sequence with them.
        sql_query(database, "SELECT setval(pg_get_serial_sequence('api_keys', 'id'), "
                  "(SELECT MAX(id) FROM api_keys))")
    for row in LEDGER:
        sql_query(database, "INSERT INTO ledger (id, key_id, kind, amount, reference, note, "
                  "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", *row, stamp)
    for payment_id, key_id, session_id, amount, paid, refunded, status in PAYMENTS:
        sql_query(database, "INSERT INTO payments (id, key_id, session_id, payment_intent, "
                  "charge_id, amount, paid, refunded, currency, status, checkout_url, "
                  "created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, 'usd', ?, "
                  "'https://checkout/x', ?, ?)",
                  payment_id, key_id, session_id, f"pi_{session_id}", amount, paid, refunded,
                  status, stamp, stamp)
    for row in USAGE:
        sql_query(database, "INSERT INTO usage_log (id, request_id, key_id, model, node_id, "
                  "endpoint, prompt_tokens, completion_tokens, cost, latency_ms, status, "
                  "streamed, cancelled, counted_by, created_at) VALUES "
                  "(?, ?, ?, ?, NULL, 'chat', ?, ?, ?, 12, 200, TRUE, FALSE, 'node', ?)",
                  *row, stamp)
    sql_query(database, "INSERT INTO chat_rooms (id, name, private, created_by_id, model, "
              "system_prompt, created_at) VALUES (2, 'lobby', FALSE, 7, 'm', 'be kind', ?)",
              stamp)
    sql_query(database, "INSERT INTO chat_rooms (id, name, private, created_by_id, model, "
              "system_prompt, created_at) VALUES (3, 'p-secret', TRUE, 12, '', '', ?)", stamp)
    for message_id, key_id, role, content in ((30, 7, "user", "hello"),
                                              (31, 12, "user", "hi bob"),
                                              (32, None, "assistant", "welcome")):
        sql_query(database, "INSERT INTO chat_messages (id, room_id, role, author, key_id, "
                  "content, model, status, prompt_tokens, completion_tokens, cost, "
                  "created_at) VALUES (?, 2, ?, 'someone', ?, ?, 'm', 'done', 0, 0, 0, ?)",
                  message_id, role, key_id, content, stamp)
    sql_query(database, "INSERT INTO jobs (id, key_id, model, endpoint, body, status, "
              "request_id, prompt_tokens, completion_tokens, cost, settled, attempts, "
              "created_at, deadline_at) VALUES ('job-1', 12, 'm', 'chat', ?, 'queued', "
              "'job-req-1', 0, 0, 0, FALSE, 0, ?, ?)",
              '{"messages":[]}', stamp, _stamp(database, 5))


async def test_every_key_becomes_an_account_holding_it(database: str) -> None:
    await run_migrations(config=tortoise_config(database),
                         target="portal.0005_money_survives_redis")
    await Tortoise.close_connections()
    _fill_previous_schema(database)
    keys = _keys(database)
    try:
        applied = await migrate(database)
    finally:
        EXECUTOR_CACHE.clear()
    assert applied == ["0006_accounts", "0007_model_kinds", "0008_conversations",
                       "0009_fleet_scaling", "0010_contact_and_audit", "0011_node_runs",
                       "0012_report_indexes"]

    # Each account is its key's wallet, under the key's id.
    assert sql_query(database, "SELECT id, name, balance, spent, owed, frozen, created_at "
                     "FROM accounts ORDER BY id") == [
        (key_id, name, balance, spent, owed, frozen, created_at)
        for (key_id, name, _prefix, _hash, balance, spent, owed, frozen, _rpm, _tpm,
             created_at, _expires, _revoked) in keys]

    # Each key is held by its account and can still do all it did: manage, no cap, no lists.
    assert sql_query(database, "SELECT id, account_id, name, prefix, key_hash, spent, rpm, "
                     "tpm, created_at, expires_at, revoked_at, scope, models, routes, cap, "
                     "cap_reset, previous_prefix, previous_hash, previous_until "
                     "FROM api_keys ORDER BY id") == [
        (key_id, key_id, name, prefix, key_hash, spent, rpm, tpm, created_at, expires_at,
         revoked_at, "manage", None, None, None, "never", None, None, None)
        for (key_id, name, prefix, key_hash, _balance, spent, _owed, _frozen, rpm, tpm,
             created_at, expires_at, revoked_at) in keys]

    # The ledger moved to the accounts, row for row, and still adds up to each balance.
    assert sql_query(database, "SELECT id, account_id, kind, amount, reference, note, "
                     "created_at FROM ledger ORDER BY id") == [
        (*row, _stamp(database, 4)) for row in LEDGER]
    assert sql_query(database, "SELECT a.id, a.balance, SUM(l.amount) FROM accounts a "
                     "JOIN ledger l ON l.account_id = a.id GROUP BY a.id, a.balance "
                     "ORDER BY a.id") == [(3, 5_000_000, 5_000_000), (7, 0, 0),
                                          (12, 250_000, 250_000)]

    assert sql_query(database, "SELECT id, account_id, session_id, payment_intent, amount, "
                     "paid, refunded, status FROM payments ORDER BY id") == [
        (payment_id, key_id, session_id, f"pi_{session_id}", amount, paid, refunded, status)
        for payment_id, key_id, session_id, amount, paid, refunded, status in PAYMENTS]

    # Usage rows name both the account and the key that made the call.
    assert sql_query(database, "SELECT id, request_id, key_id, model, prompt_tokens, "
                     "completion_tokens, cost, account_id FROM usage_log ORDER BY id") == [
        (*row, row[2]) for row in USAGE]

    # What belongs to keys, not accounts, is untouched.
    assert sql_query(database, "SELECT id, name, created_by_id, system_prompt "
                     "FROM chat_rooms ORDER BY id") == [(2, "lobby", 7, "be kind"),
                                                        (3, "p-secret", 12, "")]
    # Conversations (0008): each room is its maker's account's, in the sidebar of that
    # account and of every account that spoke in it, ordered by its last message.
    assert sql_query(database, "SELECT id, account_id, title FROM chat_rooms ORDER BY id") == [
        (2, 7, ""), (3, 12, "")]
    assert sql_query(database, "SELECT account_id, room_id, pinned FROM chat_memberships "
                     "ORDER BY account_id, room_id") == [(7, 2, False), (12, 2, False),
                                                         (12, 3, False)]
    assert sql_query(database, "SELECT COUNT(*) FROM chat_messages WHERE current") == [(3,)]
    ((last_message_at,),) = sql_query(database, "SELECT last_message_at FROM chat_rooms "
                                      "WHERE id = 2")
    assert last_message_at == _stamp(database, 4)
    assert sql_query(database, "SELECT id, room_id, key_id, role, content FROM chat_messages "
                     "ORDER BY id") == [(30, 2, 7, "user", "hello"), (31, 2, 12, "user", "hi bob"),
                                        (32, 2, None, "assistant", "welcome")]
    ((job_id, job_key, job_request, body, deadline),) = sql_query(
        database, "SELECT id, key_id, request_id, body, deadline_at FROM jobs")
    assert (job_id, job_key, job_request, deadline) == ("job-1", 12, "job-req-1",
                                                        _stamp(database, 5))
    assert json.loads(body) == {"messages": []}

    # The money left the keys; the key links left the ledger and payments.
    api_keys = _columns(database, "api_keys")
    assert {"balance", "owed", "frozen"}.isdisjoint(api_keys)
    assert api_keys["account_id"] is False  # required, now that every row has one
    for table in ("ledger", "payments"):
        columns = _columns(database, table)
        assert "key_id" not in columns, table
        assert columns["account_id"] is False, table
    usage = _columns(database, "usage_log")
    assert usage["account_id"] is False
    assert usage["key_id"] is False

    if database.startswith("sqlite"):
        # Every reference holds (SQLite checks them only when asked).
        assert sql_query(database, "PRAGMA foreign_key_check") == []
        assert {row[2:4] for row in sql_query(
            database, 'PRAGMA foreign_key_list("ledger")')} == {("accounts", "account_id")}

    assert await migrate(database) == []

    # New accounts follow the migrated ids (PostgreSQL: the sequence went on past them).
    await open_database(database)
    try:
        account = await Account.create(name="new")
        assert account.id > max(key[0] for key in KEYS)
        key = await ApiKey.create(account=account, name="new", prefix="pk_new",
                                  key_hash="d" * 64, rpm=10, tpm=1_000)
        assert key.id > max(key[0] for key in KEYS)
        assert (await ApiKey.get(id=key.id)).account_id == account.id
        assert key.scope is KeyScope.API
        migrated = await Account.get(id=12)
        assert (migrated.name, migrated.balance, migrated.owed) == ("carol", 250_000, 125_000)
        assert await ApiKey.filter(account_id=12).values_list("id", flat=True) == [12]
        with pytest.raises(IntegrityError):  # the ledger's account is a real reference
            await LedgerEntry.create(account_id=999, kind=LedgerKind.TOPUP, amount=1,
                                     reference="topup:nobody")
    finally:
        await close_database()
        EXECUTOR_CACHE.clear()
