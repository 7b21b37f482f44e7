"""TorchEasyRec's entry points (``python -m recforge.train_eval``, eval, export, predict) run."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recforge import tzrec_commands
from tests.helpers.cli_util import read_json
from tests.helpers.export_util import make_table, model_config, write_training_run


def run_module(module, args, cwd, torchrun=False):
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node=2"] if torchrun else []
    cmd = [sys.executable, *launcher, "-m", f"recforge.{module}", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-6000:]}"
    return proc


def test_train_eval_eval_export_predict_with_torcheasyrec_flags(tmp_path, capsys, monkeypatch):
    root = str(tmp_path)
    write_training_run(root, model_config("DeepFM"))
    # the config's input paths name no file: the flags must take effect
    os.makedirs(tmp_path / "data")
    os.replace(tmp_path / "train.parquet", tmp_path / "data" / "train.parquet")
    pq.write_table(make_table(40, seed=5), tmp_path / "data" / "test.parquet")
    (tmp_path / "data" / "vocab.txt").write_text("a\n")

    flags = ["--pipeline_config_path", "train.config", "--model_dir", "m"]
    flags += ["--train_input_path", "data/train.parquet", "--eval_input_path", "data/train.parquet"]
    flags += ["--edit_config_json", '{"data_config.num_workers": 0}']
    run_module("train_eval", flags, root, torchrun=True)
    (checkpoint,) = [n for n in os.listdir(tmp_path / "m") if n.startswith("model.ckpt-")]
    checkpoint = os.path.join("m", checkpoint)

    flags = ["--pipeline_config_path", "m/pipeline.config", "--checkpoint_path", checkpoint]
    flags += ["--eval_input_path", "data/test.parquet", "--eval_result_filename", "test_result.txt"]
    proc = run_module("eval", flags, root)
    result = read_json(tmp_path / "m" / "test_result.txt")
    assert result["auc"] == pytest.approx(json.loads(proc.stdout)["auc"])

    flags = ["--pipeline_config_path", "m/pipeline.config", "--export_dir", "exp"]
    run_module("export", flags + ["--asset_files", "data/vocab.txt"], root)
    assert sorted(os.listdir(tmp_path / "exp")) == [
        "fg.json",
        "model_info.json",
        "pipeline.config",
        "scripted_model.pt",
        "vocab.txt",
    ]

    flags = ["--scripted_model_path", "exp", "--predict_input_path", "data/test.parquet"]
    flags += ["--predict_output_path", "scores", "--reserved_columns", "id,label"]
    run_module("predict", flags + ["--output_columns", "probs"], root)
    scores = pq.read_table(tmp_path / "scores").to_pandas()
    assert list(scores.columns) == ["id", "label", "probs"] and len(scores) == 40

    # in this process: predict from the checkpoint (export, then predict) into CSV
    monkeypatch.chdir(root)
    flags = ["--pipeline_config_path", "m/pipeline.config", "--checkpoint_path", checkpoint]
    flags += ["--predict_input_path", "data/test.parquet", "--predict_output_path", "scores_csv"]
    flags += ["--reserved_columns", "id", "--writer_type", "CsvWriter", "--predict_threads", "0"]
    assert tzrec_commands.main("predict", flags) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["scores_csv/part-00000.csv"]
    assert not os.path.exists("scores_csv.work.tmp")
    from_csv = pacsv.read_csv("scores_csv/part-00000.csv").to_pandas()
    assert list(from_csv.columns) == ["id", "logits", "probs", "y"]
    np.testing.assert_allclose(from_csv["probs"], scores["probs"], rtol=1e-5)
