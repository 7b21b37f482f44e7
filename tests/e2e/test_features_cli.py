"""stable_hash gives the same buckets in a fresh process with another PYTHONHASHSEED."""

import os
import subprocess
import sys

import pyarrow as pa

from recforge.features.utils import stable_hash
from tests.helpers.paths import REPO_ROOT


class TestHashBuckets:
    def test_deterministic_across_processes(self):
        code = (
            "import pyarrow as pa;"
            "from recforge.features.utils import stable_hash;"
            "print(stable_hash(pa.array(['x', 'hello', '42'])).tolist())"
        )
        env = dict(os.environ, PYTHONHASHSEED="123")
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(stable_hash(pa.array(["x", "hello", "42"])).tolist())
