"""Weighted id features (``weighted: true``): ``id:weight`` values feed weighted pooling."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FG_NONE, FeatureError, IdFeature, create_features
from recforge.features.fg_json import create_fg_json
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, model_pb2, pipeline_pb2
from recforge.utils.pipeline import build_features
from tests.helpers.untrained_export import assert_served_as_trained, export_untrained, mock_rows


def id_cfg(**kw) -> feature_pb2.IdFeature:
    base = dict(feature_name="tags", num_buckets=10, embedding_dim=3, weighted=True)
    base.update(kw)
    return feature_pb2.IdFeature(**base)


def test_id_weight_items_parse_into_ids_and_weights():
    feature = IdFeature(id_cfg(default_value="7"), FG_DAG)
    out = feature.parse({"tags": pa.array(["1:0.5\x1d3:2", None, "4:1.5"])})
    assert out["tags.values"].tolist() == [1, 3, 7, 4]
    assert out["tags.lengths"].tolist() == [2, 1, 1]
    np.testing.assert_allclose(out["tags.weights"], [0.5, 2.0, 1.0, 1.5])  # default weighs 1
    # an unweighted feature gives no weights
    plain = IdFeature(id_cfg(weighted=False), FG_DAG).parse({"tags": pa.array(["1", "2"])})
    assert "tags.weights" not in plain


def test_weighted_default_value_can_carry_its_weight_and_map_columns_are_read():
    feature = IdFeature(id_cfg(default_value="2:0.25"), FG_DAG)
    out = feature.parse({"tags": pa.array([None, "5:3"])})
    assert out["tags.values"].tolist() == [2, 5]
    np.testing.assert_allclose(out["tags.weights"], [0.25, 3.0])
    column = pa.array([[(1, 0.5), (2, 1.5)], None], pa.map_(pa.int64(), pa.float32()))
    out = IdFeature(id_cfg(), FG_NONE).parse({"tags": column})
    assert out["tags.values"].tolist() == [1, 2]
    assert out["tags.lengths"].tolist() == [2, 0]
    np.testing.assert_allclose(out["tags.weights"], [0.5, 1.5])


@pytest.mark.parametrize(
    "cell, match",
    [("1:0.5\x1d3", r"expected id:weight, found '3' at row 0"), ("1:x", "expected a number")],
)
def test_weighted_items_without_a_number_are_errors(cell, match):
    with pytest.raises(FeatureError, match=match):
        IdFeature(id_cfg(), FG_DAG).parse({"tags": pa.array([cell])})


def embedding_group(pooling: str) -> tuple[EmbeddingGroup, list]:
    features = create_features(
        [
            feature_pb2.FeatureConfig(id_feature=id_cfg(pooling=pooling)),
            feature_pb2.FeatureConfig(
                id_feature=feature_pb2.IdFeature(
                    feature_name="cat", num_buckets=5, embedding_dim=2, pooling=pooling
                )
            ),
        ],
        fg_mode=FG_DAG,
    )
    group = model_pb2.FeatureGroupConfig(group_name="all", feature_names=["tags", "cat"])
    return EmbeddingGroup(features, [group], device=torch.device("cpu")), features


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_weighted_pooling_equals_the_hand_computation(pooling):
    torch.manual_seed(0)
    group, features = embedding_group(pooling)
    rows = pa.record_batch(
        {"tags": pa.array(["1:0.5\x1d3:2", "4:1.5", None]), "cat": pa.array(["1|2", "3", "0"])}
    )
    features[1].config.separator = "|"
    parser = DataParser(features)
    batch = parser.to_batch(parser.parse(rows))
    out = group(batch.sparse_features, batch.dense_features)["all"]
    tags = group.weighted_ebc.embedding_bags["tags_emb"].weight.detach()
    cat = group.ebc.embedding_bags["cat_emb"].weight.detach()
    scale = 0.5 if pooling == "mean" else 1.0  # row 0 has 2 ids
    expected_tags = torch.stack(
        [scale * (0.5 * tags[1] + 2.0 * tags[3]), 1.5 * tags[4], torch.zeros(3)]
    )
    torch.testing.assert_close(out[:, :3], expected_tags)
    # the unweighted feature in the same batch pools as before
    first = cat[1] + cat[2] if pooling == "sum" else (cat[1] + cat[2]) / 2
    torch.testing.assert_close(out[:, 3:], torch.stack([first, cat[3], cat[0]]))


def test_weighted_and_unweighted_features_cannot_share_a_table_nor_sit_in_a_sequence_group():
    features = create_features(
        [
            feature_pb2.FeatureConfig(id_feature=id_cfg(embedding_name="t")),
            feature_pb2.FeatureConfig(
                id_feature=id_cfg(feature_name="other", weighted=False, embedding_name="t")
            ),
        ],
        fg_mode=FG_DAG,
    )
    group = model_pb2.FeatureGroupConfig(group_name="g", feature_names=["tags", "other"])
    with pytest.raises(EmbeddingGroupError, match="cannot share a table"):
        EmbeddingGroup(features, [group], device=torch.device("cpu"))


def test_a_sequence_of_ids_takes_no_weights():
    with pytest.raises(FeatureError, match="weighted: a sequence of ids"):
        create_features(
            [
                feature_pb2.FeatureConfig(
                    sequence_id_feature=id_cfg(sequence_length=3, weighted=True)
                )
            ],
            fg_mode=FG_DAG,
        )


def test_fg_json_marks_the_feature_weighted():
    config = pipeline_pb2.EasyRecConfig()
    config.feature_configs.add().id_feature.CopyFrom(id_cfg(expression="user:tags"))
    (entry,) = create_fg_json(config)["features"]
    assert entry["weighted"] is True and entry["feature_type"] == "id_feature"


CONFIG = """
data_config { fg_mode: FG_DAG label_fields: "clk" batch_size: 16 }
feature_configs { id_feature { feature_name: "tags" expression: "user:tags"
  hash_bucket_size: 50 embedding_dim: 4 weighted: true pooling: "mean" } }
feature_configs { id_feature { feature_name: "city" expression: "user:city"
  hash_bucket_size: 20 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["tags", "city"] }
  multi_tower { towers { input: "all" mlp { hidden_units: [8] } } final { hidden_units: [4] } }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_the_exported_predictor_reproduces_training_tensors_and_scores(tmp_path):
    config = text_format.Parse(CONFIG, pipeline_pb2.EasyRecConfig())
    rows = mock_rows(config, tmp_path, num_rows=24, seed=1)
    model, export_dir = export_untrained(config, tmp_path)
    train = DataParser(build_features(config)).parse(rows)
    assert train["tags.weights"].dtype == torch.float32 and train["tags.weights"].numel() > 0
    predictor = load_predictor(export_dir)
    assert_served_as_trained(model, predictor, train, rows)
    # the weights matter: other weights, other scores
    changed = dict(train, **{"tags.weights": train["tags.weights"] * 3})
    with torch.no_grad():
        other = predictor.model(changed)["probs"]
        assert not torch.allclose(other, predictor.model(train)["probs"])


def test_the_embedding_l2_penalty_covers_weighted_tables():
    (feature,) = create_features([feature_pb2.FeatureConfig(id_feature=id_cfg())], fg_mode=FG_DAG)
    group = model_pb2.FeatureGroupConfig(group_name="g", feature_names=["tags"])
    embedding = EmbeddingGroup([feature], [group], device=torch.device("cpu"), embedding_l2=0.5)
    parser = DataParser([feature])
    batch = parser.to_batch(parser.parse(pa.record_batch({"tags": pa.array(["1:2", "3:1"])})))
    embedding.train()(batch.sparse_features, batch.dense_features)
    penalty = embedding.embedding_regularization_loss()
    assert penalty is not None and penalty.item() > 0
