"""The command line's helpers on the four-row tiny run: validate, early stopping."""

import os
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.cli_util import read_json, run_cli
from tests.helpers.tiny_run import CONFIG, CSV


@pytest.fixture()
def tiny(tmp_path) -> str:
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "tiny.config").write_text(CONFIG)
    return str(tmp_path)


def test_validate_prints_ok_and_bad_rows_as_one_line(tiny):
    ok = run_cli(["validate", "--config", "tiny.config"], tiny)
    assert "tiny.config: OK (MultiTower" in ok.stderr
    assert "table user_emb (10x4): 40 parameters" in ok.stderr
    with open(os.path.join(tiny, "bad.csv"), "w") as f:
        f.write("label,user,price\n1,3,abc\n")
    bad = run_cli(
        [
            "validate",
            "--config",
            "tiny.config",
            "--edit_config_json",
            '{"train_input_path": "bad.csv"}',
        ],
        tiny,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("recforge: error: bad.csv: row 0")
    assert not os.path.exists(os.path.join(tiny, "model"))


def test_training_stops_early_and_records_the_best_checkpoint(tiny):
    # min_delta 0.5 of AUC: no later evaluation counts as an improvement on the first
    stop = "early_stopping { patience: 2 min_delta: 0.5 }"
    text = CONFIG.replace(
        "num_epochs: 1", f"num_epochs: 20 save_checkpoints_steps: 0 log_step_count_steps: 3 {stop}"
    )
    with open(os.path.join(tiny, "es.config"), "w") as f:
        f.write(text)
    proc = run_cli(["train", "--config", "es.config"], tiny)
    record = read_json(os.path.join(tiny, "model", "early_stopping.json"))
    # 2 steps an epoch, one evaluation an epoch: the best first, then `patience` more
    assert [e["global_step"] for e in record["evaluations"]] == [2, 4, 6]
    assert record["stopped"] and record["best_step"] == 2
    assert record["best_checkpoint"] == os.path.join("model", "model.ckpt-2")
    assert os.path.isdir(os.path.join(tiny, "model", "model.ckpt-2"))
    assert read_json(os.path.join(tiny, "model", "train_stats.json"))["global_step"] == 6
    # not a terminal: plain lines, the model summary first and one line per (2-step) epoch
    # although log_step_count_steps is 3
    assert "model: 89 parameters" in proc.stderr and "table user_emb (10x4)" in proc.stderr
    assert [f"epoch {e} done" in proc.stderr for e in range(3)] == [True] * 3
    assert "early stopping at step 6: auc has not improved for 2 evaluations" in proc.stderr
    assert "step/s" not in proc.stderr  # no progress bar
    # the learning rates are named after their optimizers in TensorBoard
    events = EventAccumulator(os.path.join(tiny, "model", "train"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"lr/sparse", "lr/dense"} <= tags, tags
    assert [e.value for e in events.Scalars("lr/dense")] == pytest.approx([0.01] * 2)


def test_a_resumed_run_does_not_double_tensorboard_points(tiny):
    text = CONFIG.replace(
        "num_epochs: 1", "num_epochs: 2 save_checkpoints_steps: 2 log_step_count_steps: 1"
    )
    with open(os.path.join(tiny, "resume.config"), "w") as f:
        f.write(text)
    run_cli(["train", "--config", "resume.config"], tiny)
    # as if the run died after logging steps 3 and 4 but before checkpoint 4 was written
    shutil.rmtree(os.path.join(tiny, "model", "model.ckpt-4"))
    run_cli(["train", "--config", "resume.config", "--continue_train"], tiny)
    events = EventAccumulator(os.path.join(tiny, "model", "train"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2, 3, 4]
