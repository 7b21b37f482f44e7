"""Multi-task models through the CLI: a bad task config is one line, demo configs train."""

import os
import time

import pytest

from recforge.demo.simulate import generate_demo_data
from tests.helpers.cli_util import example, read_json, run_cli


def test_bad_task_config_through_the_cli_is_one_line(tmp_path):
    with open(example("mmoe_demo.config")) as f:
        text = f.read().replace('label_name: "label_cvr"', 'label_name: "buy"')
    path = tmp_path / "bad.config"
    path.write_text(text)
    generate_demo_data(str(tmp_path / "data" / "demo"), num_rows=1000)
    proc = run_cli(["train", "--config", str(path)], str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "recforge: error:" in proc.stderr and "'buy'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_task_demo")
    generate_demo_data(str(root / "data" / "demo"), num_rows=60000)
    return str(root)


# PLE trains with Pareto loss weighting: the same path through the sharded model
CLI_RUNS = {
    "mmoe": {"train_config.num_epochs": 2},
    "ple": {"train_config.num_epochs": 2, "model_config.use_pareto_loss_weight": True},
    "dbmtl": {"train_config.num_epochs": 2},
}


@pytest.mark.parametrize("model", sorted(CLI_RUNS))
def test_multi_task_model_trains_through_the_cli(demo_dir, model):
    import json

    args = ["train", "--config", example(f"{model}_demo.config"), "--model_dir", model]
    args += ["--edit_config_json", json.dumps(CLI_RUNS[model])]
    start = time.perf_counter()
    proc = run_cli(args, demo_dir)
    seconds = time.perf_counter() - start
    metrics = read_json(os.path.join(demo_dir, model, "eval_result.json"))
    print(
        f"\n{model}: auc_ctr {metrics['auc_ctr']:.4f} auc_cvr {metrics['auc_cvr']:.4f}"
        f" ({seconds:.1f}s)"
    )
    for task in ("ctr", "cvr"):
        assert metrics[f"auc_{task}"] >= 0.6, metrics
        assert f"binary_cross_entropy_{task}" in metrics
    if CLI_RUNS[model].get("model_config.use_pareto_loss_weight"):
        assert "pareto_weight_ctr" in proc.stderr and "pareto_weight_cvr" in proc.stderr
