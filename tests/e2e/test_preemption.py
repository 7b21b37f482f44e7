"""SIGTERM mid-epoch: a checkpoint at that step, a clean exit, and an exact resume (CLI)."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from recforge.demo.simulate import generate_demo_data
from tests.helpers.cli_util import example, read_json, run_cli

# 2,000 rows in batches of 32: 63 steps per epoch
EDITS = json.dumps(
    {
        "data_config.batch_size": 32,
        "train_config.num_epochs": 2,
        "train_config.log_step_count_steps": 10,
    }
)
ARGS = ["train", "--config", example("deepfm_demo.config"), "--edit_config_json", EDITS]


def _tensors(checkpoint: str, out: str) -> dict:
    dcp_to_torch_save(checkpoint, out)
    return torch.load(out)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_matches(tmp_path):
    generate_demo_data(str(tmp_path / "data" / "demo"), num_rows=2000)
    cwd = str(tmp_path)
    command = [sys.executable, "-m", "recforge", *ARGS, "--model_dir"]
    popen = dict(cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    full = subprocess.Popen([*command, "full"], **popen)  # the uninterrupted run, meanwhile
    stopped = subprocess.Popen([*command, "stopped"], **popen)
    guard = threading.Timer(300, stopped.kill)
    guard.start()
    seen = []
    for line in stopped.stderr:  # mid-epoch 0: once the first progress line is out
        seen.append(line)
        if "step 10 |" in line:
            stopped.send_signal(signal.SIGTERM)
            break
    err = "".join(seen) + stopped.communicate()[1]
    guard.cancel()
    assert full.wait(timeout=300) == 0, full.stderr.read()[-4000:]
    full.stderr.close()

    assert stopped.returncode == 143, err[-4000:]  # 128 + SIGTERM: documented in the README
    assert "Traceback" not in err, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("recforge: training stopped by SIGTERM at step "), last
    step = int(last.split("at step ")[1].split(",")[0])
    state = read_json(os.path.join(cwd, "stopped", f"model.ckpt-{step}", "train_state.json"))
    assert state["global_step"] == step and 10 <= step < 63
    assert state["epoch"] == 0 and state["step_in_epoch"] == step  # mid-epoch
    assert not os.path.exists(os.path.join(cwd, "stopped", "eval_result.json"))
    assert not os.path.exists(os.path.join(cwd, "stopped", "train.lock"))

    resumed = run_cli([*ARGS, "--model_dir", "stopped", "--continue_train"], cwd)
    assert f"resumed from stopped/model.ckpt-{step}" in resumed.stderr
    expected = read_json(os.path.join(cwd, "full", "eval_result.json"))
    result = read_json(os.path.join(cwd, "stopped", "eval_result.json"))
    final = expected["global_step"]
    assert result["global_step"] == final == 126
    assert result["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    a = _tensors(os.path.join(cwd, "full", f"model.ckpt-{final}"), str(tmp_path / "a.pt"))
    b = _tensors(os.path.join(cwd, "stopped", f"model.ckpt-{final}"), str(tmp_path / "b.pt"))
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=1e-6, msg=name)
