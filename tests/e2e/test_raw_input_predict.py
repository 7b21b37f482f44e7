"""A model trained on FG output (fg_mode FG_NONE) served from raw columns (``raw_input``):
raw rows give the tensors and scores its FG output rows give, the FG output being written
by ``run_fg`` (the offline FG) from the same raw rows."""

import glob
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf import text_format

from recforge import cli
from recforge.datasets.errors import DataError
from recforge.datasets.mock_data import generate_mock_data
from recforge.export import export_model
from recforge.features import FG_DAG, FG_NONE
from recforge.features.fg_offline import run_fg, with_fg_mode
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.predictor import load_predictor
from recforge.protos import pipeline_pb2
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.id_hash import ID_HASH_KEY
from recforge.utils.layout import EXPORT_CONFIG_FILE, MODEL_INFO_FILE
from recforge.utils.pipeline import build_features
from tests.helpers.mixed_features import mixed_config

CONFIG = mixed_config("FG_NONE", extended=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An (untrained) FG_NONE model's export, raw rows and their offline FG output."""
    work = tmp_path_factory.mktemp("raw_input")
    config = text_format.Parse(CONFIG, pipeline_pb2.EasyRecConfig())
    config.model_dir = str(work / "model")
    config_path = str(work / "pipeline.config")
    with open(config_path, "w") as f:
        f.write(text_format.MessageToString(config))
    generate_mock_data(with_fg_mode(config, FG_DAG), str(work / "raw"), num_rows=40, seed=5)
    raw = pq.read_table(glob.glob(str(work / "raw" / "*.parquet"))[0])
    encoded = run_fg(config, raw)
    torch.manual_seed(0)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_model(config_path, str(work / "export"))
    return {"config": config, "raw": raw, "encoded": encoded, "export": str(work / "export")}


def batch(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]


def test_run_fg_writes_the_columns_fg_none_reads(run):
    encoded, config = run["encoded"], run["config"]
    names = [f.name for f in build_features(config)]
    assert encoded.column_names == ["clk", *names]
    assert encoded.schema.field("user_id").type == pa.list_(pa.int64())
    assert encoded.schema.field("price").type == pa.float32()
    assert encoded.schema.field("emb").type == pa.list_(pa.float32())
    assert max(max(ids) for ids in encoded.column("user_id").to_pylist() if ids) < 100
    assert "user_id" in run["raw"].column_names and "city_brand" not in run["raw"].column_names


def test_raw_rows_give_the_features_and_scores_of_their_fg_output(run):
    raw_predictor = load_predictor(run["export"], raw_input=True)
    encoded_predictor = load_predictor(run["export"])
    assert raw_predictor.raw_input and not encoded_predictor.raw_input
    from_raw = raw_predictor.parser.parse(batch(run["raw"]))
    from_encoded = encoded_predictor.parser.parse(batch(run["encoded"]))
    assert set(from_raw) == set(from_encoded)
    for name, value in from_encoded.items():
        torch.testing.assert_close(from_raw[name], value, atol=0, rtol=0, msg=name)
    assert from_raw["hist.values"].numel() and from_raw["click_seq__brand.values"].numel()
    np.testing.assert_array_equal(
        raw_predictor.predict(run["raw"])["probs"],
        encoded_predictor.predict(run["encoded"])["probs"],
    )


def test_without_raw_input_raw_rows_are_refused(run):
    with pytest.raises(DataError, match="column 'city_brand' needed by feature 'city_brand'"):
        load_predictor(run["export"]).predict(run["raw"])


def test_recforge_predict_raw_input(run, tmp_path):
    pq.write_table(run["raw"], str(tmp_path / "raw.parquet"))
    pq.write_table(run["encoded"], str(tmp_path / "encoded.parquet"))
    flags = ["predict", "--scripted_model_path", run["export"], "--num_workers", "0"]
    for name, extra in (("raw", ["--raw_input"]), ("encoded", [])):
        inputs = ["--predict_input_path", str(tmp_path / f"{name}.parquet")]
        output = ["--predict_output_path", str(tmp_path / f"{name}_out.parquet")]
        assert cli.main([*flags, *inputs, *output, *extra]) == 0
    got = pq.read_table(str(tmp_path / "raw_out.parquet")).column("probs").to_numpy()
    expected = pq.read_table(str(tmp_path / "encoded_out.parquet")).column("probs").to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_raw_input_of_an_export_reading_raw_columns_changes_nothing(run, tmp_path):
    export = str(tmp_path / "export")
    shutil.copytree(run["export"], export)
    path = os.path.join(export, EXPORT_CONFIG_FILE)
    with open(path) as f:
        config = text_format.Parse(f.read(), pipeline_pb2.EasyRecConfig())
    config.data_config.fg_mode = FG_DAG
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))
    predictor = load_predictor(export, raw_input=True)
    assert not predictor.raw_input
    assert [f.fg_mode for f in predictor.features] == [FG_DAG] * len(predictor.features)


def test_raw_input_does_not_ask_an_fg_none_export_for_the_id_hash(run, tmp_path):
    # the FG_NONE model's ids are the offline FG's, which hashes as recforge's FG_DAG does
    export = str(tmp_path / "export")
    shutil.copytree(run["export"], export)
    with open(os.path.join(export, MODEL_INFO_FILE)) as f:
        info = json.load(f)
    del info[ID_HASH_KEY]
    with open(os.path.join(export, MODEL_INFO_FILE), "w") as f:
        json.dump(info, f)
    predictor = load_predictor(export, raw_input=True)
    assert predictor.config.data_config.fg_mode == FG_DAG
    assert load_predictor(export).features[0].fg_mode == FG_NONE
