"""The S3 test bucket's name (the moto server and client fixtures are in tests/e2e/conftest.py)."""

BUCKET = "recforge-test"
