"""hstu_match end to end: CLI training on planted next-item data, full-corpus retrieval
against the most-popular baseline (and the best any order-blind model could do), and the
exported user tower reproducing the eager one in a fresh process."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recforge.datasets.data_parser import DataParser
from recforge.export.restore import restore_model
from recforge.export.scripting import TowerScriptWrapper
from recforge.utils.layout import checkpoint_or_latest
from recforge.utils.pipeline import prepare_config
from tests.helpers.cli_util import read_json, run_cli
from tests.helpers.hstu import NUM_ITEMS, pipeline_text, write_planted_data
from tests.helpers.scripted import run_scripted_in_fresh_process


def bag_of_items_bound(table) -> float:
    """Expected recall@10 of the best model that sees each history as a set of items.

    Such a model knows the next item is ``h + 1`` for one of the distinct items ``h`` of the
    history, each equally likely given the set, so its top 10 holds it with probability at
    most ``min(1, 10 / distinct)``.
    """
    bounds = [
        min(1.0, 10 / len(set(s.split("|")))) for s in table.column("uih__video_id").to_pylist()
    ]
    return float(np.mean(bounds))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("hstu"))
    write_planted_data(workdir)
    config = os.path.join(workdir, "hstu.config")
    with open(config, "w") as f:
        f.write(pipeline_text(workdir, epochs=2))
    run_cli(["train", "--config", config], workdir)
    return workdir


def test_retrieval_beats_popularity_and_any_order_blind_model(trained):
    eval_result = read_json(os.path.join(trained, "model", "eval_result.json"))
    assert eval_result["recall@10"] > 0.9  # in-batch candidates
    run_cli(
        [
            "evaluate-retrieval",
            "--config",
            os.path.join(trained, "model", "pipeline.config"),
            "--item_table_path",
            os.path.join(trained, "items.parquet"),
            "--item_id_field",
            "item_id",
            "--top_k",
            "10",
        ],
        trained,
    )
    metrics = read_json(os.path.join(trained, "model", "retrieval_result.json"))
    assert metrics["num_items"] == NUM_ITEMS
    bound = bag_of_items_bound(pq.read_table(os.path.join(trained, "eval.parquet")))
    assert bound < 0.75
    assert metrics["popularity_recall@10"] < 0.4
    assert metrics["recall@10"] > max(bound, metrics["popularity_recall@10"]) + 0.15


def test_exported_user_tower_reproduces_the_eager_tower(trained):
    export_dir = os.path.join(trained, "export")
    run_cli(
        [
            "export",
            "--config",
            os.path.join(trained, "model", "pipeline.config"),
            "--export_dir",
            export_dir,
        ],
        trained,
    )
    config = prepare_config(os.path.join(trained, "model", "pipeline.config"))
    model, _ = restore_model(config, checkpoint_or_latest(config.model_dir, None))
    features = model.tower_features("user")
    rows = pq.read_table(os.path.join(trained, "eval.parquet")).slice(0, 16).to_batches()[0]
    inputs = DataParser(features).parse(rows)
    inputs = {k: torch.as_tensor(v) for k, v in inputs.items()}
    wrapper = TowerScriptWrapper(model.tower_module("user"), features, "user_emb").eval()
    with torch.no_grad():
        eager = wrapper(inputs)["user_emb"]
    out = run_scripted_in_fresh_process(
        os.path.join(export_dir, "user", "scripted_model.pt"), inputs, trained
    )
    assert eager.shape == (16, 16)
    torch.testing.assert_close(out["user_emb"], eager, atol=1e-5, rtol=0)


def test_sampled_negatives_train(tmp_path):
    workdir = str(tmp_path)
    write_planted_data(workdir, train_rows=640, eval_rows=64)
    config = os.path.join(workdir, "hstu.config")
    text = pipeline_text(workdir, epochs=1, sampler=True).replace(
        "in_batch_negative: true", "in_batch_negative: false"
    )
    with open(config, "w") as f:
        f.write(text)
    run_cli(["train", "--config", config], workdir)
    result = read_json(os.path.join(workdir, "model", "eval_result.json"))
    # the positive among itself and 16 sampled items
    assert 0.0 <= result["recall@10"] <= 1.0 and "softmax_cross_entropy" in result


def test_towers_of_the_torcheasyrec_shape_script_and_equal_eager():
    from google.protobuf import text_format

    from recforge.export.scripting import random_inputs, script_tower
    from recforge.features import FG_DAG, create_features
    from recforge.models.model import BaseModel
    from recforge.protos import pipeline_pb2
    from tests.helpers.hstu import TZREC_SHAPE

    cfg = text_format.Parse(TZREC_SHAPE, pipeline_pb2.EasyRecConfig())
    features = create_features(cfg.feature_configs, fg_mode=FG_DAG)
    model = BaseModel.create_class("HSTUMatch")(cfg.model_config, features, ["x"]).eval()
    for side in ("user", "item"):
        scripted, wrapper = script_tower(model, side)
        data = random_inputs(model.tower_features(side), 6)
        with torch.no_grad():
            eager, script = wrapper(data)[f"{side}_emb"], scripted(data)[f"{side}_emb"]
        assert eager.shape == (6, 16)
        torch.testing.assert_close(script, eager, atol=1e-5, rtol=0)
