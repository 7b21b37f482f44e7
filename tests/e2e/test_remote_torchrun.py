"""Two torchrun ranks on one host train into, and resume from, a model_dir on S3 (moto)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO_ROOT, ROBUSTNESS_DIR
from tests.helpers.s3 import BUCKET

pytest.importorskip("s3fs")


def _torchrun(args: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*cmd, "-m", "recforge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def test_two_ranks_train_and_resume_on_s3(tmp_path, s3, s3_env):
    shutil.copytree(os.path.join(ROBUSTNESS_DIR, "data"), tmp_path / "data")
    shutil.copy(os.path.join(ROBUSTNESS_DIR, "base.config"), tmp_path / "pipeline.config")
    staging = tmp_path / "staging"
    env = {
        **os.environ,
        **s3_env,
        "PYTHONPATH": REPO_ROOT,
        "OMP_NUM_THREADS": "1",
        "RECFORGE_STAGING_DIR": str(staging),
    }
    run = f"{BUCKET}/runs/torchrun"
    train = ["train", "--config", "pipeline.config", "--model_dir", f"s3://{run}"]
    # only rank 0 uploads; rank 1 writes its checkpoint shards into the shared working copy
    _torchrun(train, str(tmp_path), env)
    s3.invalidate_cache()
    steps = sorted(
        int(p.rsplit("-", 1)[1])
        for p in s3.ls(run)
        if p.rsplit("/", 1)[1].startswith("model.ckpt-")
    )
    assert steps, s3.find(run)
    first = steps[-1]
    assert s3.isfile(f"{run}/model.ckpt-{first}/train_state.json")
    assert s3.isfile(f"{run}/model.ckpt-{first}/checksums.json")
    assert not s3.exists(f"{run}/train.lock")
    assert not [p for p in os.listdir(staging) if "model_dir" in p], "working copy left behind"

    # both ranks resume from the bucket's checkpoint and train a second epoch
    edits = json.dumps({"train_config.num_epochs": 2})
    resumed = _torchrun(
        [*train, "--continue_train", "--edit_config_json", edits], str(tmp_path), env
    )
    s3.invalidate_cache()
    assert f"at step {first} (epoch 1" in resumed.stderr, resumed.stderr[-4000:]
    state = json.loads(s3.cat(f"{run}/model.ckpt-{2 * first}/train_state.json"))
    assert state["global_step"] == 2 * first
    assert "auc" in json.loads(s3.cat(f"{run}/eval_result.json"))
