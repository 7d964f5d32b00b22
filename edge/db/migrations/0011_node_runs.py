"""Node runs: when each node was billed (running or draining) and at what hourly cost."""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0010_contact_and_audit')]

    initial = False

    operations = [
        ops.CreateModel(
            name='NodeRun',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('node_id', fields.IntField(db_index=True)),
                ('model_id', fields.IntField(description='the model the node served')),
                ('instance_type', fields.CharField(default='', max_length=64)),
                ('spot', fields.BooleanField(default=False)),
                ('hourly_cost', fields.BigIntField(description='micro-dollars per hour, as the node had it')),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('ended_at', fields.DatetimeField(null=True, description='null while it runs', auto_now=False, auto_now_add=False)),
                ('open_node_id', fields.IntField(null=True, unique=True, description='the node id while the run is open, null once closed (one open run per node)')),
            ],
            options={'table': 'node_runs', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A stretch of time a node was billed for, at the hourly cost it had then.'},
            bases=['Model'],
        ),
        # A node billed when the table is made runs from when it entered its state (or,
        # never changed, from when it was added): its cost until now is counted.
        ops.RunSQL("INSERT INTO node_runs (node_id, model_id, instance_type, spot, hourly_cost, "
                   "started_at, ended_at, open_node_id) SELECT id, model_id, instance_type, spot, "
                   "hourly_cost, COALESCE(state_changed_at, created_at), NULL, id FROM nodes "
                   "WHERE state IN ('running', 'draining')"),
    ]
