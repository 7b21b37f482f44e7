"""Fast in-process tests: no subprocess, no training longer than a second."""
