"""End-to-end training through the ``recforge`` command on the planted-signal demo data."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from recforge.demo.simulate import generate_demo_data
from tests.helpers.cli_util import REPO_ROOT, example, read_json, run_cli, train


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A working directory holding the demo data at ``data/demo`` (where the examples look)."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo_data(str(root / "data" / "demo"), num_rows=60000)
    return str(root)


@pytest.fixture(scope="module")
def deepfm_run(demo_dir):
    metrics = train(example("deepfm_demo.config"), "deepfm", demo_dir)
    return demo_dir, metrics


def test_deepfm_learns_the_planted_signal(deepfm_run):
    demo_dir, metrics = deepfm_run
    assert metrics["auc"] >= 0.75, metrics
    model_dir = os.path.join(demo_dir, "deepfm")
    assert glob.glob(os.path.join(model_dir, "model.ckpt-*", "train_state.json"))
    assert glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(model_dir, "pipeline.config"))


def test_multi_tower_learns_the_planted_signal(demo_dir):
    metrics = train(example("multi_tower_demo.config"), "multi_tower", demo_dir)
    assert metrics["auc"] >= 0.75, metrics


def test_evaluate_command_reproduces_the_final_metrics(deepfm_run):
    demo_dir, metrics = deepfm_run
    proc = run_cli(
        ["evaluate", "--config", example("deepfm_demo.config"), "--model_dir", "deepfm"], demo_dir
    )
    evaluated = read_json(os.path.join(demo_dir, "deepfm", "eval_result.json"))
    assert evaluated["global_step"] == metrics["global_step"]
    assert evaluated["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    assert '"auc"' in proc.stdout


def test_two_processes_reach_the_same_auc(deepfm_run):
    demo_dir, metrics = deepfm_run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    cmd += ["-m", "recforge", "train", "--config", example("deepfm_demo.config")]
    cmd += ["--model_dir", "deepfm_2proc"]
    proc = subprocess.run(cmd, cwd=demo_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    two = read_json(os.path.join(demo_dir, "deepfm_2proc", "eval_result.json"))
    assert abs(two["auc"] - metrics["auc"]) <= 0.01, (two, metrics)


def test_killed_run_resumes_to_the_same_result(demo_dir, tmp_path):
    edit = '{"train_config.save_checkpoints_steps": 40}'
    args = ["train", "--config", example("deepfm_demo.config"), "--edit_config_json", edit]
    full = train(example("deepfm_demo.config"), "full", demo_dir, ["--edit_config_json", edit])

    cmd = [sys.executable, "-m", "recforge", *args, "--model_dir", "killed"]
    proc = subprocess.Popen(cmd, cwd=demo_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = os.path.join(demo_dir, "killed", "model.ckpt-80", "train_state.json")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # every checkpoint is evaluated: what the killed run evaluated is from before the kill
    partial = os.path.join(demo_dir, "killed", "eval_result.json")
    assert not os.path.exists(partial) or read_json(partial)["global_step"] <= 80

    resumed = run_cli([*args, "--model_dir", "killed", "--continue_train"], demo_dir)
    assert "resumed from" in resumed.stderr
    result = read_json(os.path.join(demo_dir, "killed", "eval_result.json"))
    assert result["global_step"] == full["global_step"]
    assert result["auc"] == pytest.approx(full["auc"], abs=1e-6)
    assert result["binary_cross_entropy"] == pytest.approx(full["binary_cross_entropy"], abs=1e-6)


def test_cli_help_lists_subcommands():
    proc = run_cli(["--help"], REPO_ROOT)
    for command in ("train", "evaluate", "demo"):
        assert command in proc.stdout
