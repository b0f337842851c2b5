"""The tool-call ledger: durable records and the rules for moving them."""
