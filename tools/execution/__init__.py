"""The execution plane: dispatch into worktrees, task envelopes, executors, durable jobs, processes,
start-up reconciliation, server-run checks and the red→green proof. Imports the control plane
and the core; never the gates, reviews or reports."""
