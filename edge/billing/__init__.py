"""Money: reservations and settlements, credits, the ledger's way into SQL, its recovery."""
