"""A fleet that follows the load (issue 14): each model's scaling policy (min_warm becomes
min_nodes), and spot, learnt batch size and a note on each node."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0008_conversations')]

    initial = False

    operations = [
        ops.RenameField(
            model_name='LLM',
            old_name='min_warm',
            new_name='min_nodes',
        ),
        ops.AddField(
            model_name='LLM',
            name='launch',
            field=fields.JSONField(null=True, description='how to launch a node: instance types and subnets in order of preference, image or template, groups, key, disk, region', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='LLM',
            name='load_metric',
            field=fields.CharField(default='in_flight', description='what load counts: in_flight (calls open on it) or waiting (in its queue)', db_default='in_flight', max_length=16),
        ),
        ops.AddField(
            model_name='LLM',
            name='max_nodes',
            field=fields.IntField(default=1, description='nodes the scaler may run at once', db_default=1),
        ),
        ops.AddField(
            model_name='LLM',
            name='node_slots',
            field=fields.IntField(null=True, description='calls a node takes at once (null: learnt, or the default)'),
        ),
        ops.AddField(
            model_name='LLM',
            name='on_demand_floor',
            field=fields.IntField(default=0, description='nodes that stay on-demand', db_default=0),
        ),
        ops.AddField(
            model_name='LLM',
            name='scale_in_after',
            field=fields.IntField(default=300, description='seconds load must stay below target', db_default=300),
        ),
        ops.AddField(
            model_name='LLM',
            name='scale_out_after',
            field=fields.IntField(default=30, description='seconds load must stay above target', db_default=30),
        ),
        ops.AddField(
            model_name='LLM',
            name='scaling_status',
            field=fields.CharField(default='', description='what the scaler last did or could not do', db_default='', max_length=500),
        ),
        ops.AddField(
            model_name='LLM',
            name='spot',
            field=fields.BooleanField(default=False, description='nodes above the on-demand floor are spot', db_default=False),
        ),
        ops.AddField(
            model_name='LLM',
            name='target_load',
            field=fields.FloatField(default=8.0, description='load per node above which the scaler adds one and below which it removes', db_default=8.0),
        ),
        ops.AddField(
            model_name='Node',
            name='learned_slots',
            field=fields.IntField(null=True, description='calls it ran at once when a queue formed (its batch size)'),
        ),
        ops.AddField(
            model_name='Node',
            name='note',
            field=fields.CharField(default='', description='why it is in its state (capacity, interruption)', db_default='', max_length=500),
        ),
        ops.AddField(
            model_name='Node',
            name='spot',
            field=fields.BooleanField(default=False, description='a spot instance (EC2 may take it back)', db_default=False),
        ),
    ]
