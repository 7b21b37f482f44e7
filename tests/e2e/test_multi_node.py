"""Two torchrun "nodes" on this machine train like one process, and checkpoints move between them.

``torchrun --nnodes=2 --node-rank=K --rdzv-backend=c10d`` launched twice simulates two hosts
(one process each, gloo): the job must train every row once per epoch, reach the AUC of a
single process, and write checkpoints that resume on one process, and the other way round.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from recforge.demo.simulate import generate_demo_data
from tests.helpers.cli_util import edits, example, read_json, run_cli
from tests.helpers.paths import REPO_ROOT

ROWS = 12000
CONFIG = example("deepfm_demo.config")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(cwd: str, args: list[str]) -> None:
    """Runs ``recforge ARGS`` as a two-node torchrun job (both nodes on this machine)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2"]
        cmd += [f"--node-rank={node}", "--nproc-per-node=1", "--rdzv-backend=c10d"]
        cmd += [f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=job{port}"]
        cmd += ["-m", "recforge", *args]
        procs.append(
            subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )
    for node, proc in enumerate(procs):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"node {node} exited {proc.returncode}\n{stderr[-6000:]}"


def _epoch_samples(cwd: str, model_dir: str) -> list[int]:
    stats = read_json(os.path.join(cwd, model_dir, "train_stats.json"))
    return [e["samples"] for e in stats["epochs"]]


def test_two_nodes_train_like_one_process_and_checkpoints_reshard(tmp_path):
    cwd = str(tmp_path)
    generate_demo_data(os.path.join(cwd, "data", "demo"), num_rows=ROWS)
    base = ["train", "--config", CONFIG]
    epochs = edits(train_config__num_epochs=2, data_config__batch_size=256)
    run_cli([*base, "--model_dir", "one", *epochs], cwd)
    _two_nodes(cwd, [*base, "--model_dir", "two", *epochs])

    one = read_json(os.path.join(cwd, "one", "eval_result.json"))
    two = read_json(os.path.join(cwd, "two", "eval_result.json"))
    assert _epoch_samples(cwd, "one") == _epoch_samples(cwd, "two") == [ROWS, ROWS]
    # each node reads half of the rows in batches of 256: about half the steps
    assert one["global_step"] == 2 * -(-ROWS // 256)
    assert two["global_step"] == 2 * -(-ROWS // 2 // 256)
    assert abs(one["auc"] - two["auc"]) <= 0.01, (one, two)

    # resharding: the two-node checkpoint resumes on one process, and the other way round
    more = edits(train_config__num_epochs=3, data_config__batch_size=256)
    resumed = run_cli([*base, "--model_dir", "two", "--continue_train", *more], cwd)
    assert (
        f"resumed from {os.path.join('two', 'model.ckpt-' + str(two['global_step']))}"
        in (resumed.stderr)
        or "resumed from" in resumed.stderr
    )
    _two_nodes(cwd, [*base, "--model_dir", "one", "--continue_train", *more])
    for model_dir, first in (("two", two), ("one", one)):
        result = read_json(os.path.join(cwd, model_dir, "eval_result.json"))
        assert result["global_step"] > first["global_step"]
        assert result["auc"] >= first["auc"] - 0.01, (model_dir, first, result)
        assert _epoch_samples(cwd, model_dir) == [ROWS]  # the resumed run's third epoch
