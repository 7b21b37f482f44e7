"""Helpers for tests that run the ``recforge`` command in a subprocess."""

import json
import os
import subprocess
import sys
from typing import Optional

from tests.helpers.paths import REPO_ROOT


def run_cli(
    args: list[str], cwd: str, timeout: int = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs ``python -m recforge ARGS`` in ``cwd``; on failure with ``check`` shows its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "recforge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"recforge {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-6000:]}"
        )
    return proc


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def example(name: str) -> str:
    return os.path.join(REPO_ROOT, "examples", name)


def edits(**values: object) -> list[str]:
    """``--edit_config_json`` arguments for dotted-field overrides given as keyword args."""
    return ["--edit_config_json", json.dumps({k.replace("__", "."): v for k, v in values.items()})]


def train(config: str, model_dir: str, cwd: str, extra: Optional[list[str]] = None) -> dict:
    """Trains through the CLI and returns ``model_dir/eval_result.json``."""
    run_cli(["train", "--config", config, "--model_dir", model_dir, *(extra or [])], cwd)
    return read_json(os.path.join(cwd, model_dir, "eval_result.json"))
