"""recforge's tests: ``unit/`` (fast, in process), ``e2e/`` (CLI subprocesses, trainings)."""
