"""The train loop end to end in process: checkpoints evaluated, profiling trace, EMA weights."""

import glob
import json
import os

import pytest

from recforge.evaluate import evaluate
from recforge.train import train_and_evaluate
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import list_checkpoints
from tests.helpers.train_controls import config_text, sgd, write_parquet


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 steps of batch 16 with a checkpoint every 2 steps, profiling and the dense EMA."""
    root = tmp_path_factory.mktemp("loop")
    write_parquet(str(root / "train.parquet"), 96, seed=50)
    write_parquet(str(root / "eval.parquet"), 64, seed=51)
    train_config = sgd(0.1, 0.5).replace(
        "dense_optimizer { sgd_optimizer { lr: 0.5 } }",
        "dense_optimizer { sgd_optimizer { lr: 0.5 } ema { decay: 0.5 } }",
    )
    train_config += " num_steps: 6 save_checkpoints_steps: 2 is_profiling: true"
    train_config += " use_tensorboard: false log_step_count_steps: 100"
    text = config_text(train_config).replace("batch_size: 8", "batch_size: 16")
    paths = f'train_input_path: "{root}/train.parquet" eval_input_path: "{root}/eval.parquet"'
    config_path = root / "pipeline.config"
    config_path.write_text(f'{paths}\nmodel_dir: "{root}/model"\n{text}')
    metrics = train_and_evaluate(str(config_path))
    with open(root / "model" / "eval_history.jsonl") as f:
        history = [json.loads(line) for line in f]
    return str(root / "model"), str(config_path), metrics, history


def test_every_checkpoint_is_evaluated(trained):
    model_dir, _, metrics, history = trained
    steps = [int(p.rsplit("-", 1)[1]) for p in list_checkpoints(model_dir)]
    assert steps == [2, 4, 6]
    assert [r["global_step"] for r in history] == [2, 4, 6]
    assert history[-1]["auc"] == metrics["auc"]


def test_is_profiling_writes_a_trace_into_model_dir(trained):
    model_dir, _, _, _ = trained
    traces = glob.glob(os.path.join(model_dir, "train_eval_trace", "*.pt.trace.json*"))
    assert len(traces) == 1
    assert os.path.getsize(traces[0]) > 0


def test_evaluation_reads_the_ema_weights_by_default(trained):
    _, config_path, metrics, _ = trained
    with_ema = evaluate(config_path)
    raw = evaluate(config_path, edits={"eval_config.use_dense_ema": "false"})
    assert with_ema["binary_cross_entropy"] == pytest.approx(metrics["binary_cross_entropy"])
    assert raw["binary_cross_entropy"] != pytest.approx(metrics["binary_cross_entropy"])
