"""``feature:<name>`` inputs and ``stub_type``: the FG as a DAG of features (FG_DAG)."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FG_NONE, FG_NORMAL, FeatureError, create_features
from recforge.features.fg_json import create_fg_json
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, model_pb2, pipeline_pb2
from recforge.utils.pipeline import build_features
from tests.helpers.untrained_export import (
    assert_offline_fg_matches_fg_dag,
    assert_served_as_trained,
    export_untrained,
    fg_dag_multi_tower,
)

# TorchEasyRec's documented example: a lookup keyed by the bucket id of a raw feature
AGE_BINNING = """
raw_feature { feature_name: "age_binning" expression: "user:age" boundaries: [18, 25, 30]
  embedding_dim: 4 stub_type: true }
"""
LOOKUP = """
lookup_feature { feature_name: "lookup_age" map: "item:age_map" key: "feature:age_binning" }
"""
ROWS = pa.record_batch(
    {
        "age": pa.array([10.0, 20.0, 40.0]),
        "age_map": pa.array(["0:1.5\x1d1:2.5\x1d3:4", "1:7", "0:1\x1d2:9"]),
    }
)


def features(*texts: str, fg_mode: int = FG_DAG):
    configs = [text_format.Parse(t, feature_pb2.FeatureConfig()) for t in texts]
    return create_features(configs, fg_mode=fg_mode)


def test_a_feature_input_reads_the_other_features_fg_output_and_a_stub_is_no_model_input():
    parser = DataParser(features(AGE_BINNING, LOOKUP))
    assert parser.input_columns == ["age", "age_map"]  # age_binning is computed, not read
    assert parser.dense_keys == ["lookup_age"] and parser.sparse_keys == []
    out = parser.parse(ROWS)
    assert sorted(out) == ["lookup_age.values"]
    # bucket ids 0, 1, 3 look up 1.5, 7 and nothing (the default 0)
    torch.testing.assert_close(out["lookup_age.values"][:, 0], torch.tensor([1.5, 7.0, 0.0]))


def test_a_referenced_feature_that_is_no_stub_is_also_a_model_input():
    parser = DataParser(features(LOOKUP, AGE_BINNING.replace("stub_type: true", "")))
    out = parser.parse(ROWS)
    assert out["age_binning.values"].tolist() == [0, 1, 3]
    torch.testing.assert_close(out["lookup_age.values"][:, 0], torch.tensor([1.5, 7.0, 0.0]))


def test_cycles_are_errors():
    a = 'expr_feature { feature_name: "a" variables: ["feature:b"] expression: "b" }'
    b = 'expr_feature { feature_name: "b" variables: ["feature:a"] expression: "a" }'
    parser = DataParser(features(a, b))
    with pytest.raises(FeatureError, match="form a cycle: a -> b -> a"):
        parser.parse(pa.record_batch({"x": pa.array([1])}))


def test_stub_type_needs_fg_dag_and_is_skipped_reading_fg_output():
    with pytest.raises(FeatureError, match="stub_type .* needs fg_mode FG_DAG, found FG_NORMAL"):
        features(AGE_BINNING, fg_mode=FG_NORMAL)
    parser = DataParser(features(AGE_BINNING, LOOKUP, fg_mode=FG_NONE))
    assert parser.input_columns == ["lookup_age"]


def test_a_feature_group_cannot_name_a_stub():
    feats = features(AGE_BINNING, LOOKUP)
    group = model_pb2.FeatureGroupConfig(group_name="g", feature_names=["age_binning"])
    with pytest.raises(EmbeddingGroupError, match="stub_type: true"):
        EmbeddingGroup(feats, [group], device=torch.device("cpu"))


def config_with(*texts: str) -> pipeline_pb2.EasyRecConfig:
    config = pipeline_pb2.EasyRecConfig()
    config.data_config.fg_mode = FG_DAG
    for text in texts:
        config.feature_configs.add().CopyFrom(text_format.Parse(text, feature_pb2.FeatureConfig()))
    return config


def test_fg_json_marks_the_stub_and_the_offline_fg_leaves_it_out():
    config = config_with(AGE_BINNING, LOOKUP)
    entries = create_fg_json(config)["features"]
    assert [e.get("stub_type", False) for e in entries] == [True, False]
    table = assert_offline_fg_matches_fg_dag(config, ROWS)
    assert table.column_names == ["lookup_age"]


def test_the_exported_predictor_runs_the_dag_on_raw_input(tmp_path):
    config = fg_dag_multi_tower([AGE_BINNING, LOOKUP])
    model, export_dir = export_untrained(config, tmp_path)
    rows = pa.record_batch(
        {**{n: ROWS.column(n) for n in ROWS.schema.names}, "uid": pa.array(["a", "b", "c"])}
    )
    train = DataParser(build_features(config)).parse(rows)
    predictor = load_predictor(export_dir)
    assert set(train) == {"lookup_age.values", "uid.values", "uid.lengths"}
    assert_served_as_trained(model, predictor, train, rows)
