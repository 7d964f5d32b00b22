from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from edge.db.models import JobStatus
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('portal', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Job',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=40)),
                ('key', fields.ForeignKeyField('portal.ApiKey', source_field='key_id', db_constraint=True, to_field='id', related_name='jobs', on_delete=OnDelete.RESTRICT)),
                ('model', fields.CharField(max_length=128)),
                ('endpoint', fields.CharField(default='chat', max_length=32)),
                ('body', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=JobStatus.QUEUED, description='QUEUED: queued\nRUNNING: running\nSUCCEEDED: succeeded\nFAILED: failed\nEXPIRED: expired', enum_type=JobStatus, max_length=16)),
                ('request_id', fields.CharField(unique=True, description='its credit reservation', max_length=64)),
                ('result', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('error', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('prompt_tokens', fields.IntField(default=0)),
                ('completion_tokens', fields.IntField(default=0)),
                ('cost', fields.BigIntField(default=0, description='micro-dollars charged')),
                ('settled', fields.BooleanField(default=False, description='its reservation is settled')),
                ('attempts', fields.IntField(default=0)),
                ('node_id', fields.IntField(null=True)),
                ('lease_until', fields.DatetimeField(null=True, description='a worker owns it until then', auto_now=False, auto_now_add=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('deadline_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'jobs', 'app': 'portal', 'indexes': [Index(fields=['status', 'created_at']), Index(fields=['key_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'A queued inference request, answered when a node of its model is up.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Node',
            name='boot_requested_at',
            field=fields.DatetimeField(null=True, description='when a boot was asked', auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='Node',
            name='health_failures',
            field=fields.IntField(default=0, db_default=0, description='failed health checks in a row'),
        ),
        ops.AddField(
            model_name='Node',
            name='hourly_cost',
            field=fields.BigIntField(default=0, db_default=0, description='micro-dollars per hour it runs'),
        ),
        ops.AddField(
            model_name='Node',
            name='running_requests',
            field=fields.IntField(default=0, db_default=0, description='vllm:num_requests_running, last read'),
        ),
    ]
