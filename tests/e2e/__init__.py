"""End-to-end tests: the CLI in a subprocess, torchrun, trainings end to end."""
