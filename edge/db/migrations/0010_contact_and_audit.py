"""The contact page's messages (stored before they are mailed) and the operators' append-only audit log."""

from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('portal', '0009_fleet_scaling')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor', fields.CharField(description='admin-api, cli or console:<who>', max_length=128)),
                ('action', fields.CharField(db_index=True, description='what was done', max_length=64)),
                ('target', fields.CharField(db_index=True, description='kind:id it was done to', max_length=200)),
                ('before', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('after', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_log', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'What an operator did, by whom, to what, before and after (append-only).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ContactMessage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(max_length=100)),
                ('email', fields.CharField(max_length=254)),
                ('message', fields.TextField(unique=False)),
                ('client_ip', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('mailed_at', fields.DatetimeField(null=True, description='when the operator was mailed', auto_now=False, auto_now_add=False)),
                ('mail_error', fields.CharField(default='', description='why mailing failed, empty when it did not', max_length=500)),
            ],
            options={'table': 'contact_messages', 'app': 'portal', 'pk_attr': 'id', 'table_description': 'A message from the contact page: stored first, then mailed, so none is lost.'},
            bases=['Model'],
        ),
    ]
