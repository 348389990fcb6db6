"""The authoritative budget and leases (DESIGN.md section 4): the locked ledger and lease
transactions, idempotency keys, the document mirror of them, and the expiry sweep."""
