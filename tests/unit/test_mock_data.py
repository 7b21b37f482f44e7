"""Tests for ``recforge mock-data``: sample data in the exact format a config reads."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.protobuf import text_format

from recforge.config import ConfigError, load_pipeline_config
from recforge.datasets import DataError, RecDataset
from recforge.datasets.data_parser import DataParser
from recforge.datasets.mock_columns import FG_DAG, FG_NONE, FG_NORMAL, MockFormat, plan_feature
from recforge.datasets.mock_data import generate_mock_data, label_specs, resolve_fg_mode
from recforge.datasets.readers import create_reader, expand_input_path
from recforge.features import create_pipeline_features
from recforge.protos import data_pb2, feature_pb2, pipeline_pb2
from recforge.utils.pipeline import build_dataset
from tests.helpers.paths import REPO_ROOT

SEQUENCE_CONFIG = r"""
train_input_path: "odps://project/tables/train"
data_config {
  dataset_type: OdpsDataset
  fg_mode: FG_DAG
  label_fields: "click"
  label_fields: "ctype"
  sample_weight_fields: "w"
  fg_encoded_multival_sep: "\003"
}
feature_configs {
  id_feature {
    feature_name: "uid" expression: "user:user_id" hash_bucket_size: 1000 embedding_dim: 4
  }
}
feature_configs { id_feature { feature_name: "tags" num_buckets: 50 separator: "|"
  embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "city" vocab_list: ["a", "b", "c"] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "age" boundaries: [18, 30, 45, 60]
  embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "price" normalizer: "method=log10,threshold=1e-6" } }
feature_configs { raw_feature { feature_name: "emb" value_dim: 3 } }
feature_configs {
  sequence_feature {
    sequence_name: "clicks"
    sequence_length: 5
    sequence_delim: ";"
    features { id_feature { feature_name: "item" num_buckets: 100 embedding_dim: 8 } }
    features { raw_feature { feature_name: "ts" boundaries: [1, 10] embedding_dim: 8 } }
  }
}
feature_configs {
  sequence_id_feature {
    feature_name: "q_seq" hash_bucket_size: 50 embedding_dim: 8
    sequence_length: 4 sequence_delim: ","
  }
}
model_config {
  feature_groups { group_name: "all" feature_names: ["uid", "tags", "city", "age", "price"] }
  simple_multi_task {
    task_towers {
      tower_name: "ctr" label_name: "click" num_class: 2 sample_weight_name: "w2"
      losses { jrc_loss { session_name: "sid" } }
    }
    task_towers {
      tower_name: "type" label_name: "ctype" num_class: 3 losses { softmax_cross_entropy {} }
    }
  }
}
"""


def parse_config(text: str) -> pipeline_pb2.EasyRecConfig:
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def split(column: pa.ChunkedArray, separator: str) -> list[list[str]]:
    """Every non-null cell of a string column, split on ``separator``."""
    return [cell.split(separator) for cell in column.to_pylist() if cell is not None]


def flat_ints(cells: list[list[str]]) -> np.ndarray:
    return np.array([int(v) for cell in cells for v in cell])


def read(result: dict) -> pa.Table:
    return pa.concat_tables([pq.read_table(path) for path in result["files"]])


# ------------------------------------------------------------------------------ frappe
def test_frappe_columns_ranges_files_and_seed(tmp_path):
    config = os.path.join(REPO_ROOT, "tests", "configs", "frappe_deepfm.config")
    out = str(tmp_path / "frappe")
    result = generate_mock_data(config, out, num_rows=900, num_files=3, seed=5)
    names = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather"]
    assert result["columns"] == [*names, "country", "city", "label"]
    assert sorted(os.listdir(out)) == [f"part-0000{i}.parquet" for i in range(3)]
    table = read(result)
    assert table.num_rows == 900
    for name in ("user", "item", "city"):
        ids = table.column(name).drop_null().to_numpy()
        assert table.schema.field(name).type == pa.int64()
        assert ids.min() >= 0 and ids.max() < 5382  # num_buckets
        assert 0 < table.column(name).null_count < 90
    labels = table.column("label").to_numpy()
    assert set(np.unique(labels)) == {0, 1} and table.column("label").null_count == 0
    assert result["edit_config_json"]["train_input_path"] == os.path.join(out, "*.parquet")
    assert result["edit_config_json"]["data_config.dataset_type"] == "ParquetDataset"

    again = generate_mock_data(config, str(tmp_path / "again"), num_rows=900, num_files=3, seed=5)
    assert read(again).equals(table)
    other = generate_mock_data(config, str(tmp_path / "other"), num_rows=900, num_files=3, seed=6)
    assert not read(other).equals(table)

    # a rerun into the same folder with fewer files leaves no stale part behind
    generate_mock_data(config, out, num_rows=900, num_files=1, seed=5)
    assert os.listdir(out) == ["part-00000.parquet"]


def test_labels_carry_a_planted_signal(tmp_path):
    config = os.path.join(REPO_ROOT, "tests", "configs", "frappe_deepfm.config")
    table = read(generate_mock_data(config, str(tmp_path), num_rows=4000))
    frame = table.select(["user", "label"]).to_pandas().dropna()
    by_user = frame.groupby("user")["label"].agg(["mean", "size"])
    busy = by_user[by_user["size"] >= 30]["mean"]
    assert busy.max() - busy.min() > 0.4  # popular users differ in click rate


# ------------------------------------------------------------------------------ formats
def test_raw_input_format_of_sequences_multi_values_and_boundaries(tmp_path):
    config = parse_config(SEQUENCE_CONFIG)
    result = generate_mock_data(config, str(tmp_path), num_rows=2000, seed=1)
    assert result["fg_mode"] == FG_DAG
    table = read(result)
    assert set(table.column_names) == {
        "user_id", "tags", "city", "age", "price", "emb", "clicks__item", "clicks__ts",
        "q_seq", "sid", "click", "ctype", "w", "w2",
    }  # fmt: skip
    tags = split(table.column("tags"), "|")
    assert {len(c) for c in tags} == {1, 2, 3, 4}
    assert flat_ints(tags).min() >= 0 and flat_ints(tags).max() < 50
    cities = set(table.column("city").drop_null().to_pylist())
    assert {"a", "b", "c"} <= cities and any(c not in "abc" for c in cities)  # a few OOV
    ages = table.column("age").drop_null().to_numpy()
    assert set(np.searchsorted([18, 30, 45, 60], ages, side="right")) == {0, 1, 2, 3, 4}
    assert (table.column("price").drop_null().to_numpy() > 0).all()  # log10 normalizer
    assert {len(c) for c in split(table.column("emb"), "\x1d")} == {3}
    items = split(table.column("clicks__item"), ";")
    times = split(table.column("clicks__ts"), ";")
    assert [len(c) for c in items] == [len(c) for c in times]  # one length per sequence
    assert max(len(c) for c in items) == 5 and flat_ints(items).max() < 100
    assert max(len(c) for c in split(table.column("q_seq"), ",")) == 4
    assert set(table.column("ctype").to_numpy()) == {0, 1, 2}  # num_class 3
    assert set(table.column("click").to_numpy()) == {0, 1}
    weights = table.column("w").to_numpy()
    assert weights.min() >= 0.5 and weights.max() < 2.0
    assert table.column("sid").null_count == 0  # jrc session column

    parser = DataParser(
        create_pipeline_features(config), labels=["click", "ctype"], sample_weights=["w"]
    )
    batch = parser.parse(table.to_batches(max_chunksize=2000)[0])
    assert set(batch["age.values"].tolist()) == {0, 1, 2, 3, 4}
    assert batch["clicks__item.lengths"].max() == 5


def test_encoded_format_fg_none(tmp_path):
    config = parse_config(SEQUENCE_CONFIG)
    config.data_config.fg_encoded_multival_sep = "|"
    config.data_config.fg_mode = data_pb2.FG_NONE
    result = generate_mock_data(config, str(tmp_path), num_rows=1000)
    assert result["fg_mode"] == FG_NONE
    table = read(result)
    assert "uid" in table.column_names and "user_id" not in table.column_names
    uid = table.column("uid").drop_null().to_numpy()
    assert uid.min() >= 0 and uid.max() < 1000  # hash_bucket_size
    city = table.column("city").drop_null().to_numpy()
    assert city.min() >= 0 and city.max() < 5  # vocab_list + default + OOV ids
    assert table.schema.field("age").type == pa.int64()  # bucket ids of the boundaries
    assert set(table.column("age").drop_null().to_numpy()) == {0, 1, 2, 3, 4}
    assert flat_ints(split(table.column("tags"), "|")).max() < 50  # fg_encoded_multival_sep
    assert {len(c) for c in split(table.column("emb"), "|")} == {3}
    ts = flat_ints(split(table.column("clicks__ts"), ";"))
    assert set(ts) == {0, 1, 2}  # bucket ids in the sequence
    assert flat_ints(split(table.column("q_seq"), ",")).max() < 50


def test_example_config_is_read_by_recforge(tmp_path):
    for name in ("deepfm_demo", "multi_tower_din_demo"):
        config = load_pipeline_config(os.path.join(REPO_ROOT, "examples", f"{name}.config"))
        result = generate_mock_data(config, str(tmp_path / name), num_rows=300)
        parser = DataParser(create_pipeline_features(config), labels=["label"])
        batch = parser.parse_batch(read(result).to_batches(max_chunksize=300)[0])
        assert batch.labels["label"].shape == (300,)


def test_negative_sampler_item_table(tmp_path):
    config = load_pipeline_config(os.path.join(REPO_ROOT, "examples", "dssm_demo.config"))
    result = generate_mock_data(config, str(tmp_path), num_rows=500)
    items = pq.read_table(result["item_table"])
    assert result["item_table"] == os.path.join(str(tmp_path), "negative_sampler", "items.parquet")
    assert items.column_names == ["item_id", "cate", "weight"]
    assert items.num_rows >= config.data_config.negative_sampler.num_sample
    assert pc.count_distinct(items.column("item_id")).as_py() == items.num_rows
    rows = read(result)
    assert set(rows.column("item_id").to_pylist()) <= set(items.column("item_id").to_pylist())
    category = dict(zip(items.column("item_id").to_pylist(), items.column("cate").to_pylist()))
    pairs = zip(rows.column("item_id").to_pylist(), rows.column("cate").to_pylist())
    assert all(category[i] == c for i, c in pairs)  # item attributes agree with the table
    assert set(rows.column("label").to_pylist()) == {1}  # rows are positives

    config.data_config.negative_sampler.input_path = result["item_table"]
    features = create_pipeline_features(config)
    batch = next(iter(RecDataset(config.data_config, features, read_path(result))))
    assert batch.labels["label"].shape[0] == 500 + config.data_config.negative_sampler.num_sample


def read_path(result: dict) -> str:
    return result["edit_config_json"]["train_input_path"]


# ------------------------------------------------------------------------------ bad input
def test_bad_arguments_and_foreign_output_dir(tmp_path):
    config = parse_config(SEQUENCE_CONFIG)
    with pytest.raises(ConfigError, match="--num_rows"):
        generate_mock_data(config, str(tmp_path / "a"), num_rows=0)
    with pytest.raises(ConfigError, match="--num_files"):
        generate_mock_data(config, str(tmp_path / "a"), num_rows=2, num_files=3)
    pq.write_table(pa.table({"x": [1]}), str(tmp_path / "real.parquet"))
    with pytest.raises(ConfigError, match="other parquet files"):
        generate_mock_data(config, str(tmp_path), num_rows=10)
    assert os.listdir(tmp_path) == ["real.parquet"]


def test_encoded_ids_without_a_range_name_the_feature(tmp_path):
    config = parse_config(SEQUENCE_CONFIG)
    config.feature_configs.add().id_feature.feature_name = "free"
    generate_mock_data(config, str(tmp_path / "raw"), num_rows=10)  # raw ids: any integers
    config.data_config.fg_mode = data_pb2.FG_NONE
    with pytest.raises(ConfigError, match=r"feature_configs\[8\]: feature 'free': .*range"):
        generate_mock_data(config, str(tmp_path / "encoded"), num_rows=10)


# ------------------------------------------------------------------------------ labels
def test_label_specs_follow_the_tasks():
    specs = label_specs(parse_config(SEQUENCE_CONFIG))
    assert specs["ctype"].num_class == 3 and specs["click"].num_class == 2
    regression = parse_config(
        'data_config { label_fields: "y" } model_config { losses { l2_loss {} } }'
    )
    assert label_specs(regression)["y"].regression


# ------------------------------------------------------------------------------ fg_mode, kinds
def test_fg_mode_follows_torcheasyrec():
    data_config = data_pb2.DataConfig
    assert resolve_fg_mode(data_config()) == FG_NONE  # TorchEasyRec's default
    assert resolve_fg_mode(data_config(fg_mode=data_pb2.FG_DAG)) == FG_DAG
    # the deprecated fg_encoded wins when set
    assert resolve_fg_mode(data_config(fg_mode=data_pb2.FG_DAG, fg_encoded=True)) == FG_NONE
    assert resolve_fg_mode(data_config(fg_encoded=False)) == FG_DAG
    assert resolve_fg_mode(data_config(fg_encoded=False, fg_threads=0)) == FG_NORMAL


def test_kinds_recforge_lacks_get_plausible_inputs():
    feature_config = feature_pb2.FeatureConfig
    rng = np.random.default_rng(0)
    fmt = MockFormat(FG_DAG, null_rate=0.0)

    lookup = feature_config()
    lookup.lookup_feature.feature_name = "cnt"
    lookup.lookup_feature.map = "user:kv_cnt"
    lookup.lookup_feature.key = "item:cate"
    columns = {}
    for plan in plan_feature(lookup, rng, fmt):
        columns.update(plan.make(rng, 200))
    assert set(columns) == {"kv_cnt", "cate"}
    entries = [e.split(":") for cell in columns["kv_cnt"].to_pylist() for e in cell.split("\x1d")]
    assert all(len(e) == 2 and 0 <= float(e[1]) < 1 for e in entries)
    map_keys = {int(k) for k, _ in entries}
    assert set(columns["cate"].to_pylist()) & map_keys  # lookups hit

    combo = feature_config()
    combo.combo_feature.feature_name = "age_x_cate"
    combo.combo_feature.expression.extend(["user:age", "item:cate"])
    combo.combo_feature.hash_bucket_size = 100
    assert [p.columns for p in plan_feature(combo, rng, fmt)] == [("age",), ("cate",)]
    encoded = plan_feature(combo, rng, MockFormat(FG_NONE))
    ids = encoded[0].make(rng, 100)["age_x_cate"].drop_null().to_numpy()
    assert ids.max() < 100  # FG_NONE: the feature's own column, ids in range

    sequence = feature_config()
    sequence.sequence_lookup_feature.feature_name = "seq_cnt"
    sequence.sequence_lookup_feature.map = "user:kv_cnt"
    sequence.sequence_lookup_feature.key = "item:clicked_cate"
    sequence.sequence_lookup_feature.sequence_length = 3
    columns = {}
    for plan in plan_feature(sequence, rng, fmt):
        columns.update(plan.make(rng, 100))
    keys = [cell.split(";") for cell in columns["clicked_cate"].to_pylist() if cell]
    assert max(len(k) for k in keys) == 3  # the item-side key is the sequence
    assert all("\x1d" in c or ":" in c for c in columns["kv_cnt"].to_pylist())


# ------------------------------------------------------------------------------ ODPS
def test_odps_configs_generate_but_fail_to_train_with_advice(tmp_path):
    config = parse_config(SEQUENCE_CONFIG)  # OdpsDataset, odps:// train_input_path
    generate_mock_data(config, str(tmp_path), num_rows=10)
    with pytest.raises(DataError, match=r"^data_config.dataset_type: .*found OdpsDataset: Max"):
        build_dataset(config, create_pipeline_features(config), "train")
    with pytest.raises(DataError, match="--edit_config_json .*ParquetDataset"):
        create_reader(config.data_config, str(tmp_path), batch_size=4)
    config.data_config.dataset_type = data_pb2.ParquetDataset
    with pytest.raises(DataError, match=r"^train_input_path: .*'odps://project/tables/train'"):
        build_dataset(config, create_pipeline_features(config), "train")
    with pytest.raises(DataError, match="MaxCompute"):
        expand_input_path("odps://project/tables/t,data/x.parquet")


# ------------------------------------------------------------------------------ command
def test_command_prints_the_result_and_how_to_train(tmp_path, capsys):
    import json

    from recforge.cli import main

    config = os.path.join(REPO_ROOT, "examples", "deepfm_demo.config")
    out = str(tmp_path / "mock")
    assert main(["mock-data", "--config", config, "--output_dir", out, "--num_rows", "50"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["files"] == [os.path.join(out, "part-00000.parquet")]
    assert f'--edit_config_json \'{{"train_input_path": "{out}/*.parquet"' in captured.err
    with pytest.raises(SystemExit) as exit_info:
        main(["mock-data", "--config", config, "--output_dir", out, "--num_rows", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "recforge: error: --num_rows: expected at least 1 row, found 0"
    )


def test_a_config_without_id_columns_gets_labels_too(tmp_path):
    config = parse_config(
        """
data_config { label_fields: "clk" fg_mode: FG_DAG }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" } }
model_config {
  feature_groups { group_name: "all" feature_names: "price" }
  multi_tower { towers { input: "all" mlp { hidden_units: [4] } } }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""
    )
    generate_mock_data(config, str(tmp_path), num_rows=50, seed=0)
    table = pq.read_table(str(tmp_path))
    assert table.num_rows == 50
    assert set(table.column("clk").to_pylist()) <= {0, 1}
