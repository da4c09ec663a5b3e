"""What the API asks of runs, approvals and sessions: one module per use, each public method
one transaction (or a short series of them). Routes stay thin; SQL stays in the store."""
