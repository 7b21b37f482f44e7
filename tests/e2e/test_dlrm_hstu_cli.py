"""dlrm_hstu end to end: CLI training and evaluation on planted sequential data with several
candidates per row (every task reported), the exported model reproducing the eager one in a
fresh process, and ``predict`` writing one list of scores per row."""

import os

import pyarrow.parquet as pq
import pytest
import torch

from recforge.datasets.data_parser import DataParser
from recforge.export.restore import restore_model
from recforge.utils.layout import checkpoint_or_latest
from recforge.utils.pipeline import prepare_config
from tests.helpers.cli_util import read_json, run_cli
from tests.helpers.dlrm_hstu import MODEL, pipeline_text, write_planted_rank_data
from tests.helpers.scripted import run_scripted_in_fresh_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dlrm_hstu"))
    write_planted_rank_data(workdir, train_rows=640, eval_rows=128, max_candidates=3)
    config = os.path.join(workdir, "dlrm_hstu.config")
    with open(config, "w") as f:
        f.write(pipeline_text(workdir, MODEL, epochs=1))
    run_cli(["train", "--config", config], workdir)
    return workdir


def test_training_reports_every_task(trained):
    result = read_json(os.path.join(trained, "model", "eval_result.json"))
    for task in ("next", "hot"):
        assert 0.0 <= result[f"auc_{task}"] <= 1.0
        assert result[f"binary_cross_entropy_{task}"] > 0


def test_exported_model_reproduces_the_eager_model(trained):
    export_dir = os.path.join(trained, "export")
    config_path = os.path.join(trained, "model", "pipeline.config")
    run_cli(["export", "--config", config_path, "--export_dir", export_dir], trained)
    config = prepare_config(config_path)
    model, _ = restore_model(config, checkpoint_or_latest(config.model_dir, None))
    model.eval()
    parser = DataParser(model.features)
    rows = pq.read_table(os.path.join(trained, "eval.parquet")).slice(0, 16).to_batches()[0]
    inputs = {k: torch.as_tensor(v) for k, v in parser.parse(rows).items()}
    with torch.no_grad():
        eager = model.predict(parser.to_batch(inputs))
    out = run_scripted_in_fresh_process(
        os.path.join(export_dir, "scripted_model.pt"), inputs, trained
    )
    counts = [len(c.split("|")) for c in rows.column("cand__item_id").to_pylist()]
    assert eager["probs_next"].shape == (sum(counts),) and max(counts) > 1
    for name in ("probs_next", "probs_hot"):
        torch.testing.assert_close(out[name], eager[name], atol=1e-5, rtol=0)


def test_predict_writes_a_score_per_candidate_in_each_row(trained):
    export_dir = os.path.join(trained, "export")
    if not os.path.exists(export_dir):
        config_path = os.path.join(trained, "model", "pipeline.config")
        run_cli(["export", "--config", config_path, "--export_dir", export_dir], trained)
    out = os.path.join(trained, "predicted.parquet")
    args = ["predict", "--scripted_model_path", export_dir, "--predict_input_path"]
    args += [os.path.join(trained, "eval.parquet"), "--predict_output_path", out]
    args += ["--reserved_columns", "cand__item_id", "--output_columns", "probs_next,probs_hot"]
    run_cli(args, trained)
    table = pq.read_table(out)
    assert table.num_rows == 128
    for cands, scores in zip(table["cand__item_id"].to_pylist(), table["probs_next"].to_pylist()):
        assert len(scores) == len(cands.split("|"))
        assert all(0.0 <= p <= 1.0 for p in scores)
