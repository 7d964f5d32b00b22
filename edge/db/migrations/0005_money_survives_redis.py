from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0004_installation')]

    initial = False

    operations = [
        ops.AddField(
            model_name='ApiKey',
            name='owed',
            field=fields.BigIntField(default=0, db_default=0, description='refunded micro-dollars still to collect from credit that open reservations hold'),
        ),
        ops.AddField(
            model_name='UsageRecord',
            name='counted_by',
            field=fields.CharField(max_length=8, default='node', db_default='node', description='who counted the tokens: node (its usage) or edge (the node sent none)'),
        ),
        ops.AddField(
            model_name='Installation',
            name='sql_only_changes',
            field=fields.IntField(default=0, db_default=0, description='balance changes made while no Redis answered: a hot store healed before the last of them is stale'),
        ),
    ]
