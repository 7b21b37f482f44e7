"""Dense embeddings of raw features (``mlp {}`` / ``autodis {...}``), TorchEasyRec's math."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FeatureError, create_features
from recforge.features.fg_json import create_fg_json
from recforge.modules.dense_embedding import AutoDisEmbedding, MLPEmbedding
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, model_pb2, pipeline_pb2
from recforge.utils.pipeline import build_features
from tests.helpers.untrained_export import assert_served_as_trained, export_untrained, mock_rows


def features(*texts: str):
    configs = [text_format.Parse(t, feature_pb2.FeatureConfig()) for t in texts]
    return create_features(configs, fg_mode=FG_DAG)


def test_mlp_is_a_bias_free_linear_map():
    torch.manual_seed(0)
    module = MLPEmbedding(value_dim=2, embedding_dim=3)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    w = module.weight.detach()
    expected = torch.stack([x[i, 0] * w[0] + x[i, 1] * w[1] for i in range(2)])
    torch.testing.assert_close(module(x), expected)


def test_autodis_matches_a_hand_computation():
    torch.manual_seed(0)
    module = AutoDisEmbedding(embedding_dim=4, num_channels=3, temperature=0.5, keep_prob=0.8)
    w, m, meta = (
        p.detach().numpy().astype(np.float64) for p in (module.proj_w, module.proj_m, module.meta)
    )
    x = 1.7
    h = w * x
    h = np.where(h > 0, h, 0.01 * h)  # leaky relu
    s = m @ h + 0.8 * h
    p = np.exp(s / 0.5) / np.exp(s / 0.5).sum()
    expected = p @ meta
    out = module(torch.tensor([[x]])).detach().numpy()[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "emb, value_dim", [("mlp {}", 2), ("autodis { num_channels: 5 temperature: 0.2 }", 1)]
)
def test_a_raw_feature_with_a_dense_embedding_enters_its_group_embedding_dim_wide(emb, value_dim):
    torch.manual_seed(0)
    feats = features(
        f'raw_feature {{ feature_name: "price" embedding_dim: 6 value_dim: {value_dim} {emb} }}',
        'raw_feature { feature_name: "age" }',
    )
    assert [f.output_dim for f in feats] == [6, 1]
    group = model_pb2.FeatureGroupConfig(group_name="all", feature_names=["price", "age"])
    embedding = EmbeddingGroup(feats, [group], device=torch.device("cpu"))
    assert embedding.group_dims("all") == [6, 1]
    price = ["1.5\x1d2"] * 2 if value_dim == 2 else ["1.5", "3"]
    rows = pa.record_batch({"price": pa.array(price), "age": pa.array([20.0, 30.0])})
    parser = DataParser(feats)
    batch = parser.to_batch(parser.parse(rows))
    out = embedding(batch.sparse_features, batch.dense_features)["all"]
    assert out.shape == (2, 7)
    values = batch.dense_features.values()[:, :value_dim]
    torch.testing.assert_close(out[:, :6], embedding.dense_embeddings["price"](values))
    torch.testing.assert_close(out[:, 6], torch.tensor([20.0, 30.0]))


def test_derived_number_outputs_take_the_setting_too():
    (expr,) = features(
        'expr_feature { feature_name: "gap" variables: ["user:a", "item:b"] expression: "a-b"'
        " embedding_dim: 4 autodis { num_channels: 3 } }"
    )
    assert expr.dense_embedding is not None and expr.output_dim == 4


@pytest.mark.parametrize(
    "text, match",
    [
        ("value_dim: 2 embedding_dim: 4 autodis { num_channels: 3 }", "value_dim must be 1"),
        ("autodis { num_channels: 3 }", "embedding_dim > 0"),
        ("embedding_dim: 4 autodis { num_channels: 0 }", "num_channels must be >= 1"),
    ],
)
def test_bad_dense_embedding_settings_are_errors(text, match):
    with pytest.raises(FeatureError, match=match):
        features(f'raw_feature {{ feature_name: "x" {text} }}')


def test_bucketized_features_ignore_it_and_sequence_groups_refuse_it():
    (bucketized,) = features(
        'raw_feature { feature_name: "x" boundaries: [1, 2] embedding_dim: 4 mlp {} }'
    )
    assert bucketized.is_sparse and bucketized.dense_embedding is None
    feats = features(
        'raw_feature { feature_name: "x" embedding_dim: 4 mlp {} }',
        'sequence_id_feature { feature_name: "s" num_buckets: 5 embedding_dim: 4'
        " sequence_length: 3 }",
    )
    group = model_pb2.FeatureGroupConfig(
        group_name="seq", feature_names=["x", "s"], group_type=model_pb2.SEQUENCE
    )
    with pytest.raises(EmbeddingGroupError, match="only DEEP groups"):
        EmbeddingGroup(feats, [group], device=torch.device("cpu"))


def test_fg_json_is_unchanged_by_a_dense_embedding():
    config = pipeline_pb2.EasyRecConfig()
    raw = config.feature_configs.add().raw_feature
    raw.feature_name, raw.expression = "price", "item:price"
    before = create_fg_json(config)
    raw.embedding_dim = 4
    raw.mlp.SetInParent()
    assert create_fg_json(config) == before  # the model embeds; the FG emits the numbers


CONFIG = """
data_config { fg_mode: FG_DAG label_fields: "clk" batch_size: 16 }
feature_configs { raw_feature { feature_name: "price" expression: "item:price"
  embedding_dim: 4 autodis { num_channels: 3 } } }
feature_configs { raw_feature { feature_name: "age" expression: "user:age"
  embedding_dim: 4 mlp {} } }
feature_configs { id_feature { feature_name: "uid" expression: "user:uid"
  hash_bucket_size: 20 embedding_dim: 4 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["price", "age", "uid"] }
  multi_tower { towers { input: "all" mlp { hidden_units: [8] } } final { hidden_units: [4] } }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_the_exported_predictor_reproduces_the_eager_scores(tmp_path):
    config = text_format.Parse(CONFIG, pipeline_pb2.EasyRecConfig())
    rows = mock_rows(config, tmp_path, num_rows=24, seed=4)
    model, export_dir = export_untrained(config, tmp_path)
    assert model.embedding_group.group_total_dim("all") == 12
    train = DataParser(build_features(config)).parse(rows)
    predictor = load_predictor(export_dir)
    assert_served_as_trained(model, predictor, train, rows)
