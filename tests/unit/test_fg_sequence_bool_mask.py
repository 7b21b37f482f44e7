"""``sequence_bool_mask_feature`` (and bool_mask_feature as a sequence_feature element)."""

import pyarrow as pa
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, IdFeature, create_features
from recforge.features.fg_json import create_fg_json
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, pipeline_pb2
from recforge.utils.pipeline import build_features
from tests.helpers.untrained_export import (
    assert_offline_fg_matches_fg_dag,
    assert_served_as_trained,
    export_untrained,
    fg_dag_multi_tower,
)

STANDALONE = """
sequence_bool_mask_feature { feature_name: "kept" expression: ["user:v", "user:k"]
  hash_bucket_size: 100 embedding_dim: 4 sequence_length: 2 sequence_delim: ";" }
"""
ELEMENT = """
sequence_feature { sequence_name: "s" sequence_length: 3 sequence_delim: ";"
  features { bool_mask_feature { feature_name: "kept" expression: ["user:v", "user:k"]
    hash_bucket_size: 100 embedding_dim: 4 } } }
"""


def build(text: str, fg_mode: int = FG_DAG):
    return create_features([text_format.Parse(text, feature_pb2.FeatureConfig())], fg_mode)


def hashed(values):
    cfg = feature_pb2.IdFeature(feature_name="x", hash_bucket_size=100, embedding_dim=4)
    return IdFeature(cfg, FG_DAG).parse({"x": pa.array(values)})["x.values"].tolist()


def test_each_element_keeps_its_value_where_its_mask_is_true():
    (feature,) = build(STANDALONE)
    assert feature.is_sequence and feature.inputs == ["v", "k"]
    out = feature.parse(
        {"v": pa.array(["a;b;c", None, "x;y"]), "k": pa.array(["1;0;1", None, "0;1"])}
    )
    # row 0 is cut to its first 2 elements (a kept, b masked); row 2 keeps y
    assert out["kept.values"].tolist() == hashed(["a", "y"])
    assert out["kept.lengths"].tolist() == [1, 0, 1]


def test_as_a_sequence_feature_element_it_reads_the_sequence_columns():
    (feature,) = build(ELEMENT)
    assert feature.name == "s__kept" and feature.inputs == ["s__v", "s__k"]
    out = feature.parse({"s__v": pa.array(["a;b;c"]), "s__k": pa.array(["1;0;1"])})
    assert out["s__kept.values"].tolist() == hashed(["a", "c"])


def config_with(*texts: str) -> pipeline_pb2.EasyRecConfig:
    config = pipeline_pb2.EasyRecConfig()
    config.data_config.fg_mode = FG_DAG
    for text in texts:
        config.feature_configs.add().CopyFrom(text_format.Parse(text, feature_pb2.FeatureConfig()))
    return config


def test_fg_json_keeps_the_kind_and_the_offline_fg_matches_fg_dag():
    config = config_with(STANDALONE)
    (entry,) = create_fg_json(config)["features"]
    assert entry["feature_type"] == "bool_mask_feature"
    assert entry["sequence_delim"] == ";" and entry["sequence_length"] == 2
    rows = pa.record_batch({"v": pa.array(["a;b", "c"]), "k": pa.array(["0;1", "1"])})
    assert_offline_fg_matches_fg_dag(config, rows)


def test_the_exported_predictor_reproduces_training_tensors(tmp_path):
    config = fg_dag_multi_tower([STANDALONE])
    model, export_dir = export_untrained(config, tmp_path)
    rows = pa.record_batch(
        {
            "v": pa.array(["a;b;c", None, "x;y"]),
            "k": pa.array(["1;0;1", None, "0;1"]),
            "uid": pa.array(["u1", "u2", "u3"]),
        }
    )
    train = DataParser(build_features(config)).parse(rows)
    predictor = load_predictor(export_dir)
    assert_served_as_trained(model, predictor, train, rows)
