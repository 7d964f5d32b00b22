from tortoise import migrations
from tortoise.migrations import operations as ops
from edge.db.models import LedgerKind, NodeState
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='ApiKey',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=128)),
                ('prefix', fields.CharField(unique=True, description='public part, shown in lists', max_length=32)),
                ('key_hash', fields.CharField(unique=True, description='HMAC-SHA256, hex', max_length=64)),
                ('balance', fields.BigIntField(default=0, description='micro-dollars, always the sum of its ledger')),
                ('spent', fields.BigIntField(default=0, description='micro-dollars charged for usage')),
                ('rpm', fields.IntField(description='requests per minute')),
                ('tpm', fields.IntField(description='tokens per minute')),
                ('frozen', fields.BooleanField(default=False, description='set by a payment dispute')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_keys', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A customer API key. Only its HMAC is stored, the secret is shown once.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LLM',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, description='public name clients ask for', max_length=128)),
                ('served_name', fields.CharField(description='name vLLM serves it under', max_length=256)),
                ('input_price', fields.BigIntField(description='micro-dollars per 1M prompt tokens')),
                ('output_price', fields.BigIntField(description='micro-dollars per 1M completion tokens')),
                ('context_length', fields.IntField(default=8192)),
                ('enabled', fields.BooleanField(default=True)),
                ('idle_ttl', fields.IntField(null=True, description='seconds idle before its nodes stop (null: the default, 0: never)')),
                ('min_warm', fields.IntField(default=0, description='running nodes kept however idle')),
                ('boot_seconds', fields.FloatField(null=True, description='measured time a node takes to boot')),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'llm_models', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A model offered to users, with its prices.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LedgerEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.ForeignKeyField('portal.ApiKey', source_field='key_id', db_constraint=True, to_field='id', related_name='ledger', on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='TOPUP: topup\nUSAGE: usage\nREFUND: refund\nADJUSTMENT: adjustment', enum_type=LedgerKind, max_length=16)),
                ('amount', fields.BigIntField(description='micro-dollars, negative for charges')),
                ('reference', fields.CharField(unique=True, max_length=200)),
                ('note', fields.CharField(default='', max_length=500)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'ledger', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'An append-only change of the balance of a key, unique by ``reference``.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Node',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('model', fields.ForeignKeyField('portal.LLM', source_field='model_id', db_constraint=True, to_field='id', related_name='nodes', on_delete=OnDelete.CASCADE)),
                ('url', fields.CharField(default='', max_length=512)),
                ('instance_id', fields.CharField(null=True, unique=True, max_length=64)),
                ('region', fields.CharField(default='', max_length=32)),
                ('instance_type', fields.CharField(default='', max_length=64)),
                ('state', fields.CharEnumField(default=NodeState.RUNNING, description='STOPPED: stopped\nPENDING: pending\nRUNNING: running\nSTOPPING: stopping\nDRAINING: draining\nTERMINATED: terminated', enum_type=NodeState, max_length=16)),
                ('healthy', fields.BooleanField(default=True)),
                ('private_ip', fields.CharField(default='', max_length=64)),
                ('public_ip', fields.CharField(default='', max_length=64)),
                ('queue_depth', fields.IntField(default=0, description='vllm:num_requests_waiting, last read')),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_health_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('state_changed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'nodes', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'One vLLM server for one model: an EC2 instance or a static URL.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsageRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('request_id', fields.CharField(unique=True, max_length=64)),
                ('key', fields.ForeignKeyField('portal.ApiKey', source_field='key_id', db_constraint=True, to_field='id', related_name='usage', on_delete=OnDelete.RESTRICT)),
                ('model', fields.CharField(max_length=128)),
                ('node_id', fields.IntField(null=True)),
                ('endpoint', fields.CharField(default='chat', max_length=32)),
                ('prompt_tokens', fields.IntField(default=0)),
                ('completion_tokens', fields.IntField(default=0)),
                ('cost', fields.BigIntField(default=0, description='micro-dollars charged')),
                ('latency_ms', fields.IntField(default=0)),
                ('status', fields.IntField(default=200)),
                ('streamed', fields.BooleanField(default=False)),
                ('cancelled', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'usage_log', 'app': 'portal', 'indexes': [Index(fields=['key_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'One served request, as billed.'},
            bases=['Model'],
        ),
    ]
