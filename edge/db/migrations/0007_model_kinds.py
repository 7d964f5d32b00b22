"""A model says what its nodes serve (issue 13): every model so far generated text."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

from edge.db.models import ModelKind


class Migration(migrations.Migration):
    dependencies = [('portal', '0006_accounts')]

    initial = False

    operations = [
        ops.AddField(
            model_name='LLM',
            name='kind',
            field=fields.CharEnumField(default=ModelKind.GENERATE, description='what its nodes serve: generate, embed or rerank', db_default='generate', enum_type=ModelKind, max_length=16),
        ),
    ]
