"""The ``recforge`` command makes pyarrow use the system allocator (recforge/utils/allocator.py)."""

import os
import subprocess
import sys

import pytest

from tests.helpers.cli_util import REPO_ROOT, example

# runs a real command that reads and writes arrow data, then reports the pool it ran on
PROBE = """
import sys
from recforge.cli import main
main(["mock-data", "--config", sys.argv[1], "--output_dir", sys.argv[2], "--num_rows", "64"])
import pyarrow
print("POOL", pyarrow.default_memory_pool().backend_name)
"""


def _pool_of_a_command(tmp_path, env_pool):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    out = subprocess.run(
        [sys.executable, "-c", PROBE, example("deepfm_demo.config"), str(tmp_path / "mock")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "mock").glob("*.parquet"))
    return [line.split()[1] for line in out.stdout.splitlines() if line.startswith("POOL ")][0]


@pytest.mark.parametrize(("env_pool", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_command_uses_the_system_pool_unless_the_user_chose_one(tmp_path, env_pool, expected):
    import pyarrow

    if expected == "jemalloc" and "jemalloc" not in pyarrow.supported_memory_backends():
        pytest.skip("this pyarrow build has no jemalloc")
    assert _pool_of_a_command(tmp_path, env_pool) == expected
