"""Where the repository, its test data and the shared data sets beside it are."""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
ROBUSTNESS_DIR = os.path.join(TESTS_DIR, "robustness")
SHARED_DIR = os.path.join(REPO_ROOT, "..", "shared")
SHARED_DATA = os.path.join(SHARED_DIR, "data")


def shared_data(*parts: str) -> str:
    """Path of a file in ../shared/data; skips the test when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (real data sets live in ../shared/data beside the repo)")
    return path
