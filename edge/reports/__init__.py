"""What the operator reads: sums over SQL's usage, ledger and node runs (``overview``).

``days`` cuts time into UTC days that SQL groups by and node runs are split at; ``gpu``
turns node runs into what their hours cost; ``holdings`` reads the credit customers hold
and what open calls reserve of it; ``overview`` puts the figures of the console's overview
page together.
"""
