"""Consumer processes: the worker, the launcher of N workers and the one-command job."""
