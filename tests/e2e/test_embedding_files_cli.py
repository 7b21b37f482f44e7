"""``train_config.embedding_file_dir`` through the CLI: trains, resumes, leaves no files."""

import os

from tests.helpers import tiny_run
from tests.helpers.cli_util import edits, read_json, run_cli


def test_file_backed_training_resumes_and_leaves_no_files(tmp_path):
    (tmp_path / "train.csv").write_text(tiny_run.CSV)
    (tmp_path / "pipeline.config").write_text(tiny_run.CONFIG)
    files = edits(train_config__embedding_file_dir="emb_files")
    first = run_cli(["train", "--config", "pipeline.config", *files], str(tmp_path))
    assert "memory-mapped from files in" in first.stderr
    more = edits(train_config__embedding_file_dir="emb_files", train_config__num_epochs=2)
    resumed = run_cli(
        ["train", "--config", "pipeline.config", "--continue_train", *more], str(tmp_path)
    )
    assert "resumed from" in resumed.stderr
    assert read_json(str(tmp_path / "model" / "eval_result.json"))["global_step"] == 4
    assert os.listdir(tmp_path / "model" / "emb_files" / "rank_0") == []
