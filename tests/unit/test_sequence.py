"""Sequence features, SEQUENCE feature groups (unpooled embeddings) and DIN attention."""

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FeatureError, SequenceIdFeature, create_features
from recforge.modules.din import DINEncoder
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.protos import feature_pb2, model_pb2, module_pb2, pipeline_pb2

FEATURES = """
feature_configs { id_feature { feature_name: "item_id" num_buckets: 100 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "cate" num_buckets: 10 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "user" num_buckets: 10 embedding_dim: 4 } }
feature_configs {
  sequence_feature {
    sequence_name: "click" sequence_length: 3 sequence_delim: ";"
    features {
      id_feature {
        feature_name: "item_id" expression: "item:item_id" num_buckets: 100 embedding_dim: 8
        embedding_name: "item_id_emb"
      }
    }
    features {
      id_feature {
        feature_name: "cate" num_buckets: 10 embedding_dim: 4 embedding_name: "cate_emb"
      }
    }
  }
}
feature_configs {
  sequence_raw_feature {
    feature_name: "gaps" boundaries: [1, 10, 100] embedding_dim: 4 sequence_length: 2
  }
}
"""

ROWS = pa.record_batch(
    {
        "item_id": pa.array([5, 6, 7]),
        "cate": pa.array([1, 2, 3]),
        "user": pa.array([0, 1, 2]),
        # row 0 is cut to its first 3 elements; row 1 is empty; row 2 is null
        "click__item_id": pa.array(["5;9;7;11", "", None]),
        "click__cate": pa.array(["1;3;3;4", "", None]),
        "gaps": pa.array([[0.5, 50.0, 500.0], [], [20.0]], pa.list_(pa.float64())),
    }
)


def parse_features(text: str = FEATURES):
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    return create_features(config.feature_configs, fg_mode=FG_DAG)


def seq_group(*names: str, name: str = "seq") -> model_pb2.FeatureGroupConfig:
    return model_pb2.FeatureGroupConfig(
        group_name=name, feature_names=list(names), group_type=model_pb2.SEQUENCE
    )


def test_sequence_feature_elements_are_named_after_the_sequence():
    features = {f.name: f for f in parse_features()}
    element = features["click__item_id"]
    assert isinstance(element, SequenceIdFeature) and element.is_sequence
    assert element.column == "click__item_id" and element.sequence_length == 3
    assert element.embedding_name == "item_id_emb"
    assert features["click__cate"].column == "click__cate"
    assert not features["item_id"].is_sequence


def test_sequences_are_split_and_cut_to_sequence_length():
    parsed = DataParser(parse_features()).parse(ROWS)
    assert parsed["click__item_id.values"].tolist() == [5, 9, 7]
    assert parsed["click__item_id.lengths"].tolist() == [3, 0, 0]
    # bucketized by boundaries [1, 10, 100], cut to sequence_length 2
    assert parsed["gaps.values"].tolist() == [0, 2, 2]
    assert parsed["gaps.lengths"].tolist() == [2, 0, 1]


def test_list_columns_are_sequences_too():
    feature = SequenceIdFeature(
        feature_pb2.IdFeature(
            feature_name="s", hash_bucket_size=50, embedding_dim=4, sequence_length=2
        ),
        fg_mode=FG_DAG,
    )
    out = feature.parse({"s": pa.array([["a", "b", "c"], ["a"], None], pa.list_(pa.string()))})
    assert out["s.lengths"].tolist() == [2, 1, 0]
    values = out["s.values"].tolist()
    assert values[0] == values[2]  # "a" hashes to the same row every time


def test_out_of_range_id_names_feature_and_row():
    with pytest.raises(FeatureError, match=r"click__item_id.*id 100 out of range.*row 1"):
        DataParser(parse_features()).parse(
            ROWS.set_column(3, "click__item_id", pa.array(["1", "2;100", None]))
        )


def test_a_sequence_without_sequence_length_is_an_error():
    config = feature_pb2.IdFeature(feature_name="s", num_buckets=5, embedding_dim=4)
    with pytest.raises(FeatureError, match="sequence_length > 0"):
        SequenceIdFeature(config)


def test_sequence_group_embeds_unpooled_and_shares_tables_with_its_query():
    features = parse_features()
    group = EmbeddingGroup(
        features, [seq_group("item_id", "cate", "click__item_id", "click__cate")]
    )
    batch = DataParser(features).parse_batch(ROWS)
    out = group(batch.sparse_features, batch.dense_features)
    assert out["seq.query"].shape == (3, 12) and out["seq.sequence"].shape == (3, 3, 12)
    assert out["seq.sequence_length"].tolist() == [3, 0, 0]
    assert group.query_dim("seq") == group.sequence_dim("seq") == 12
    # item_id (query) and click__item_id (element) share item_id_emb: one table
    tables = {n for n, _ in group.named_parameters()}
    assert tables == {
        "sequence_ecs.dim_8.embeddings.item_id_emb.weight",
        "sequence_ecs.dim_4.embeddings.cate_emb.weight",
    }
    items = group.sequence_ecs["dim_8"].embeddings["item_id_emb"].weight
    torch.testing.assert_close(out["seq.query"][0, :8], items[5])
    torch.testing.assert_close(out["seq.sequence"][0, 1, :8], items[9])
    assert (out["seq.sequence"][1:] == 0).all()  # empty and null sequences are all padding


def test_sequence_in_a_deep_group_is_pooled():
    features = parse_features()
    deep = model_pb2.FeatureGroupConfig(group_name="deep", feature_names=["user", "click__cate"])
    group = EmbeddingGroup(features, [deep])
    batch = DataParser(features).parse_batch(ROWS)
    assert group(batch.sparse_features, batch.dense_features)["deep"].shape == (3, 8)


def test_sequence_group_errors_name_the_group():
    features = parse_features()
    with pytest.raises(EmbeddingGroupError, match="'seq' has no sequence feature"):
        EmbeddingGroup(features, [seq_group("item_id")])
    group = EmbeddingGroup(features, [seq_group("item_id", "click__item_id")])
    with pytest.raises(EmbeddingGroupError, match="'seq' is a SEQUENCE group"):
        group.group_total_dim("seq")


def test_din_ignores_padding_and_pools_empty_sequences_to_zero():
    torch.manual_seed(0)
    din = DINEncoder(4, 4, 5, module_pb2.MLP(hidden_units=[8]))
    query, sequence = torch.randn(3, 4), torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 0])
    out = din(query, sequence, lengths)
    changed = sequence.clone()
    changed[1, 2:] = 100.0  # padding of row 1
    torch.testing.assert_close(din(query, changed, lengths), out)
    assert (out[2] == 0).all()
    # the output is a convex combination of the valid elements
    assert out[1].abs().max() <= sequence[1, :2].abs().max()
    torch.testing.assert_close(torch.jit.script(din)(query, sequence, lengths), out)


def test_din_needs_a_query_no_wider_than_the_sequence():
    with pytest.raises(ValueError, match=r"'seq'.*query dim 12, sequence dim 8"):
        DINEncoder(12, 8, 3, module_pb2.MLP(hidden_units=[4]), name="seq")


def config_with(model_text: str, features: str = FEATURES) -> pipeline_pb2.EasyRecConfig:
    return text_format.Parse(
        features
        + "data_config { fg_mode: FG_DAG label_fields: 'label' }\nmodel_config {"
        + model_text
        + "}",
        pipeline_pb2.EasyRecConfig(),
    )


DIN_MODEL = """
  feature_groups { group_name: "user" feature_names: ["user"] }
  feature_groups {
    group_name: "seq" feature_names: ["item_id", "click__item_id"] group_type: SEQUENCE
  }
  multi_tower_din {
    towers { input: "user" mlp { hidden_units: [4] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [4] } }
  }
"""


def test_config_with_sequence_features_validates():
    validate_config(config_with(DIN_MODEL))


def test_config_errors_name_the_sequence_field():
    broken = FEATURES.replace("sequence_length: 3 ", "").replace(
        'feature_name: "cate" num_buckets: 10 embedding_dim: 4 embedding_name',
        'feature_name: "cate" embedding_dim: 4 embedding_name',
    )
    with pytest.raises(ConfigError) as error:
        validate_config(config_with(DIN_MODEL, broken))
    message = str(error.value)
    assert "feature_configs[3].sequence_feature.sequence_length" in message
    assert "feature_configs[3].sequence_feature.features[1].id_feature" in message
    typo = DIN_MODEL.replace('"click__item_id"]', '"click__item"]')
    with pytest.raises(ConfigError, match="did you mean 'click__item_id'"):
        validate_config(config_with(typo))
