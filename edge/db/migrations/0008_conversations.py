"""Conversations (issue 16): rooms belong to accounts, sit in their sidebars, keep their
settings, have alternatives of a reply or a question, and read-only share links."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0007_model_kinds')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ChatMembership',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('portal.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='memberships', on_delete=OnDelete.CASCADE)),
                ('room', fields.ForeignKeyField('portal.ChatRoom', source_field='room_id', db_constraint=True, to_field='id', related_name='memberships', on_delete=OnDelete.CASCADE)),
                ('pinned', fields.BooleanField(default=False, db_default=False)),
                ('joined_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'chat_memberships', 'app': 'portal', 'unique_together': (('account', 'room'),), 'pk_attr': 'id', 'table_description': "A room in the sidebar of an account: its own private rooms and the public ones it joined."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ChatShare',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('token', fields.CharField(unique=True, description="the secret part of the link", max_length=64)),
                ('room', fields.ForeignKeyField('portal.ChatRoom', source_field='room_id', db_constraint=True, to_field='id', related_name='shares', on_delete=OnDelete.CASCADE)),
                ('account', fields.ForeignKeyField('portal.Account', source_field='account_id', db_constraint=True, to_field='id', related_name='shares', on_delete=OnDelete.CASCADE)),
                ('title', fields.CharField(default='', max_length=200)),
                ('snapshot', fields.JSONField(description="the messages of the conversation when shared", encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'chat_shares', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A read-only link to a snapshot of a conversation: what it held when shared, no more.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ChatMessage',
            name='current',
            field=fields.BooleanField(default=True, description='the alternative shown and sent to the model', db_default=True),
        ),
        ops.AddField(
            model_name='ChatMessage',
            name='variant_of',
            field=fields.BigIntField(null=True, description='the first of its alternatives (a regenerated reply, an edited question)'),
        ),
        ops.AddField(
            model_name='ChatRoom',
            name='account',
            field=fields.ForeignKeyField('portal.Account', source_field='account_id', null=True, description="the account whose conversation it is (the only reader of a private room)", db_constraint=True, to_field='id', related_name='rooms', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='ChatRoom',
            name='deleted_at',
            field=fields.DatetimeField(null=True, description='soft-deleted then and purged later', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ChatRoom',
            name='last_message_at',
            field=fields.DatetimeField(null=True, description='orders the sidebar', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ChatRoom',
            name='params',
            field=fields.JSONField(null=True, description='sampling settings of its replies (temperature, max_tokens and so on)', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='ChatRoom',
            name='title',
            field=fields.CharField(default='', description='shown in the sidebar, made from the first message', db_default='', max_length=200),
        ),
        # Every room belongs to the account of the key that made it; every account that
        # made a private room or spoke in a room has it in its sidebar.
        ops.RunSQL("UPDATE chat_rooms SET account_id = (SELECT account_id FROM api_keys "
                   "WHERE api_keys.id = chat_rooms.created_by_id)"),
        ops.RunSQL("UPDATE chat_rooms SET last_message_at = (SELECT MAX(created_at) FROM "
                   "chat_messages WHERE chat_messages.room_id = chat_rooms.id)"),
        ops.RunSQL("INSERT INTO chat_memberships (account_id, room_id, pinned, joined_at) "
                   "SELECT account_id, room_id, FALSE, MIN(at) FROM ("
                   "SELECT account_id, id AS room_id, created_at AS at FROM chat_rooms "
                   "WHERE account_id IS NOT NULL UNION ALL "
                   "SELECT k.account_id, m.room_id, m.created_at FROM chat_messages m "
                   "JOIN api_keys k ON k.id = m.key_id) AS joined "
                   "GROUP BY account_id, room_id"),
    ]
