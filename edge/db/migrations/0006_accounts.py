"""Accounts own the credit: every key becomes an account holding that one key.

Each account keeps its key's id (so the hot store's ``$ns:bal:<id>``, ``held`` and
``owed`` stay valid across the upgrade, with nothing to heal), its name, balance,
spend, refund debt and freeze; the ledger and payments move to the account, usage
rows gain it beside their key. The key becomes a *manage* key with no cap and no
model or route list: it can do what it did before.

Foreign keys are added nullable, filled, then made required: a column added to a
table with rows needs a value on both SQLite and PostgreSQL.
"""

import functools
from json import dumps, loads
from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

from edge.db.models import CapReset, KeyScope


def _account(related_name: str, *, null: bool) -> Any:
    return fields.ForeignKeyField('portal.Account', source_field='account_id', null=null,
                                  db_constraint=True, to_field='id', related_name=related_name,
                                  on_delete=OnDelete.RESTRICT)  # type: ignore[call-overload]


def _move_to_account(model: str, table: str, related_name: str, source: str) -> list[Any]:
    """Add ``account_id`` to ``table``, set it from ``source``, then require it."""
    return [
        ops.AddField(model_name=model, name='account', field=_account(related_name, null=True)),
        ops.RunSQL(f"UPDATE {table} SET account_id = {source}"),
        ops.AlterField(model_name=model, name='account',
                       field=_account(related_name, null=False)),
    ]


async def _continue_account_ids(apps: Any, schema_editor: Any) -> None:
    """PostgreSQL: the next account id follows the ids copied from the keys."""
    if schema_editor.DIALECT == "postgres":
        await schema_editor.client.execute_script(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), "
            "COALESCE((SELECT MAX(id) FROM accounts), 0) + 1, false)")


def _drop_key_link(model: str, table: str, related_name: str) -> list[Any]:
    """Remove ``model``'s ``key`` foreign key and its ``key_id`` column.

    Made nullable first: Tortoise's SQLite table rebuild keeps ``key_id`` (uncopied, and
    without its reference) until :func:`_drop_key_column` drops it.
    """
    nullable: Any = fields.ForeignKeyField('portal.ApiKey', source_field='key_id', null=True,
                                      db_constraint=True, to_field='id',
                                      related_name=related_name, on_delete=OnDelete.RESTRICT)
    return [ops.AlterField(model_name=model, name='key', field=nullable),
            ops.RemoveField(model_name=model, name='key'),
            _drop_key_column(table)]


def _drop_key_column(table: str) -> ops.RunPython:
    """SQLite: drop ``key_id``, which removing the ``key`` foreign key leaves behind there
    (Tortoise's SQLite table rebuild keeps the column, without its reference)."""
    async def drop(apps: Any, schema_editor: Any) -> None:
        if schema_editor.DIALECT != "sqlite":
            return
        _count, rows = await schema_editor.client.execute_query(f'PRAGMA table_info("{table}")')
        if any(row["name"] == "key_id" for row in rows):
            await schema_editor.client.execute_script(f'ALTER TABLE "{table}" DROP COLUMN key_id')
    return ops.RunPython(drop)


class Migration(migrations.Migration):
    dependencies = [('portal', '0005_money_survives_redis')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Account',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=128)),
                ('balance', fields.BigIntField(default=0, description='micro-dollars, always the sum of its ledger')),
                ('spent', fields.BigIntField(default=0, description='micro-dollars charged for usage')),
                ('owed', fields.BigIntField(default=0, description='refunded micro-dollars still to collect from credit that open reservations hold')),
                ('frozen', fields.BooleanField(default=False, description='set by a payment dispute')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'accounts', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A customer, who owns the balance, the ledger, payments and usage, and holds keys.'},
            bases=['Model'],
        ),
        ops.RunSQL("INSERT INTO accounts (id, name, balance, spent, owed, frozen, created_at) "
                   "SELECT id, name, balance, spent, owed, frozen, created_at FROM api_keys"),
        ops.RunPython(_continue_account_ids),
        ops.AlterModelOptions(
            name='ApiKey',
            options={'table': 'api_keys', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A key of an account. Only its HMAC is stored, the secret is shown once.'},
        ),
        ops.AlterField(
            model_name='ApiKey',
            name='spent',
            field=fields.BigIntField(default=0, description='micro-dollars this key spent'),
        ),
        *_move_to_account('ApiKey', 'api_keys', 'keys', 'id'),
        ops.AddField(
            model_name='ApiKey',
            name='cap',
            field=fields.BigIntField(null=True, description='micro-dollars it may spend per window'),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='cap_reset',
            field=fields.CharEnumField(default=CapReset.NEVER, description="when the cap starts again", db_default='never', enum_type=CapReset, max_length=8),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='models',
            field=fields.JSONField(null=True, description='model names it may call (null: all)', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='previous_hash',
            field=fields.CharField(null=True, description='HMAC of the secret before the last rotation', max_length=64),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='previous_prefix',
            field=fields.CharField(null=True, unique=True, description='prefix before the last rotation', max_length=32),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='previous_until',
            field=fields.DatetimeField(null=True, description='the old secret works until', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='routes',
            field=fields.JSONField(null=True, description='routes it may call (null: all)', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='ApiKey',
            name='scope',
            field=fields.CharEnumField(default=KeyScope.API, description='manage or api', db_default='manage', enum_type=KeyScope, max_length=8),
        ),
        ops.RemoveField(model_name='ApiKey', name='balance'),
        ops.RemoveField(model_name='ApiKey', name='frozen'),
        ops.RemoveField(model_name='ApiKey', name='owed'),
        ops.AlterModelOptions(
            name='LedgerEntry',
            options={'table': 'ledger', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'An append-only change of the balance of an account, unique by ``reference``.'},
        ),
        *_move_to_account('LedgerEntry', 'ledger', 'ledger', 'key_id'),
        *_drop_key_link('LedgerEntry', 'ledger', 'ledger'),
        ops.RemoveIndex(
            model_name='Payment',
            name=None,
            fields=['key_id', 'created_at'],
        ),
        ops.AlterModelOptions(
            name='Payment',
            options={'table': 'payments', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A Stripe Checkout payment for an account, and what became of it.'},
        ),
        *_move_to_account('Payment', 'payments', 'payments', 'key_id'),
        *_drop_key_link('Payment', 'payments', 'payments'),
        ops.AddIndex(
            model_name='Payment',
            index=Index(fields=['account_id', 'created_at']),
        ),
        ops.AlterField(
            model_name='UsageRecord',
            name='key',
            field=fields.ForeignKeyField('portal.ApiKey', source_field='key_id', description='the key that made the call', db_constraint=True, to_field='id', related_name='usage', on_delete=OnDelete.RESTRICT),
        ),
        *_move_to_account('UsageRecord', 'usage_log', 'usage', 'key_id'),
        ops.AddIndex(
            model_name='UsageRecord',
            index=Index(fields=['account_id', 'created_at']),
        ),
    ]
