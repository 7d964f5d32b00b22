"""What the operator reads: sums over SQL's usage, ledger and node runs (``overview``).

``days`` cuts time into UTC days that SQL groups by and node runs are split at; ``gpu``
turns node runs into what their hours cost; ``overview`` puts the figures of the console's
overview page together.
"""
