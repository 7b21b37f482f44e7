import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))


def shared_data(*parts: str) -> str:
    """Path of a file in ../shared/data; skips the test when it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (real data sets live in ../shared/data beside the repo)")
    return path
