from tortoise import migrations
from tortoise.migrations import operations as ops
from edge.db.models import PaymentStatus
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portal', '0002_jobs_and_node_health')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ChatRoom',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('private', fields.BooleanField(default=False)),
                ('created_by', fields.ForeignKeyField('portal.ApiKey', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='rooms', on_delete=OnDelete.SET_NULL)),
                ('model', fields.CharField(default='', description='model it talks with', max_length=128)),
                ('system_prompt', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'chat_rooms', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A chat room where people and a model talk. Private rooms have unguessable names.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ChatMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True, description='clients resume after the last id')),
                ('room', fields.ForeignKeyField('portal.ChatRoom', source_field='room_id', db_constraint=True, to_field='id', related_name='messages', on_delete=OnDelete.CASCADE)),
                ('role', fields.CharField(description='user or assistant', max_length=16)),
                ('author', fields.CharField(description='display name', max_length=64)),
                ('key', fields.ForeignKeyField('portal.ApiKey', source_field='key_id', null=True, description='sender, or payer', db_constraint=True, to_field='id', related_name='chat_messages', on_delete=OnDelete.SET_NULL)),
                ('content', fields.TextField(default='', unique=False)),
                ('model', fields.CharField(default='', max_length=128)),
                ('reply_to', fields.BigIntField(null=True, description='the message a reply answers')),
                ('request_id', fields.CharField(null=True, description='its billed request', max_length=64)),
                ('status', fields.CharField(default='done', description='done, streaming, stopped or failed', max_length=16)),
                ('prompt_tokens', fields.IntField(default=0)),
                ('completion_tokens', fields.IntField(default=0)),
                ('cost', fields.BigIntField(default=0, description='micro-dollars charged')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'chat_messages', 'app': 'portal', 'indexes': [Index(fields=['room_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A message in a room, from a person or a model (a reply is charged to its asker).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Payment',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.ForeignKeyField('portal.ApiKey', source_field='key_id', db_constraint=True, to_field='id', related_name='payments', on_delete=OnDelete.RESTRICT)),
                ('session_id', fields.CharField(unique=True, description='Checkout Session', max_length=255)),
                ('payment_intent', fields.CharField(null=True, db_index=True, max_length=255)),
                ('charge_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('amount', fields.BigIntField(description='micro-dollars asked at checkout')),
                ('paid', fields.BigIntField(default=0, description='micro-dollars Stripe says were paid')),
                ('refunded', fields.BigIntField(default=0, description='micro-dollars refunded')),
                ('currency', fields.CharField(default='usd', max_length=8)),
                ('status', fields.CharEnumField(default=PaymentStatus.CREATED, description='CREATED: created\nPAID: paid\nFAILED: failed\nEXPIRED: expired\nREFUNDED: refunded\nPARTIALLY_REFUNDED: partially_refunded\nDISPUTED: disputed', enum_type=PaymentStatus, max_length=24)),
                ('checkout_url', fields.CharField(default='', max_length=1000)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'payments', 'app': 'portal', 'indexes': [Index(fields=['key_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'A Stripe Checkout payment for a key, and what became of it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='WebhookEvent',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, description='Stripe event id', max_length=255)),
                ('type', fields.CharField(max_length=100)),
                ('outcome', fields.CharField(default='', max_length=200)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'webhook_events', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A Stripe event received, by its id: the record that it was handled.'},
            bases=['Model'],
        ),
    ]
