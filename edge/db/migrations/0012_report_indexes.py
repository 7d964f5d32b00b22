from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """Indexes for the operator's reads: usage and ledger rows by time (the overview's
    sums), an account's ledger rows newest first (the console and GET /admin/ledger)."""

    dependencies = [('portal', '0011_node_runs')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='LedgerEntry',
            index=Index(fields=['created_at']),
        ),
        ops.AddIndex(
            model_name='LedgerEntry',
            index=Index(fields=['account_id', 'id']),
        ),
        ops.AddIndex(
            model_name='UsageRecord',
            index=Index(fields=['created_at']),
        ),
    ]
