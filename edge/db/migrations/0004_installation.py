from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0003_chat_and_payments')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Installation',
            fields=[
                ('id', fields.IntField(primary_key=True, unique=True, db_index=True, description='always 1')),
                ('identity', fields.CharField(unique=True, max_length=36)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'installation', 'app': 'portal', 'pk_attr': 'id', 'table_description': "This database's identity, which the Redis namespace it uses is claimed for."},
            bases=['Model'],
        ),
    ]
