"""``sequence_tokenize_feature``: texts per element, tokens pooled per element.

Expected values are worked out by hand from TorchEasyRec's semantics (a sequence of texts
split by ``sequence_delim``, each element tokenized, its token embeddings pooled with
``pooling`` into one vector per element; a DEEP group pools every token of the row).
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.features import FG_DAG, FG_NONE, FeatureError, create_features
from recforge.features.fg_json import create_fg_json
from recforge.features.fg_offline import with_fg_mode
from recforge.modules.embedding import EmbeddingGroup
from recforge.predictor import load_predictor
from recforge.protos import feature_pb2, model_pb2, pipeline_pb2
from recforge.utils.pipeline import build_features
from tests.helpers.tokenizers import word_level_tokenizer
from tests.helpers.untrained_export import (
    assert_offline_fg_matches_fg_dag,
    assert_served_as_trained,
    export_untrained,
    mock_rows,
)

VOCAB = {"[UNK]": 0, "hello": 1, "world": 2, "good": 3, "day": 4, "!": 5}


@pytest.fixture
def vocab(tmp_path) -> str:
    """A word-level tokenizer.json splitting on whitespace and punctuation."""
    return word_level_tokenizer(tmp_path, VOCAB)


def feature_text(vocab: str, pooling: str = "sum", extra: str = "") -> str:
    return (
        f'sequence_tokenize_feature {{ feature_name: "titles" expression: "item:titles"'
        f' vocab_file: "{vocab}" embedding_dim: 2 sequence_length: 2 sequence_delim: ";"'
        f' pooling: "{pooling}" {extra} }}'
    )


def build(text: str, fg_mode: int = FG_DAG):
    return create_features([text_format.Parse(text, feature_pb2.FeatureConfig())], fg_mode)


ROWS = ["hello world;day", None, " ", "zzz;good day !;hello"]


def test_each_element_is_tokenized_and_the_sequence_is_cut(vocab):
    (feature,) = build(feature_text(vocab))
    assert feature.is_sequence and feature.inputs == ["titles"]
    out = feature.parse({"titles": pa.array(ROWS)})
    # row 3 keeps its first 2 elements: zzz -> [UNK], "good day !" -> 3 tokens
    # a null cell is one element of the text "0" (the empty default_value) -> [UNK]; " " is
    # one element without tokens
    assert out["titles.values"].tolist() == [1, 2, 4, 0, 0, 3, 4, 5]
    assert out["titles.lengths"].tolist() == [3, 1, 0, 4]
    assert out["titles.elements.values"].tolist() == [2, 1, 1, 0, 1, 3]
    assert out["titles.elements.lengths"].tolist() == [2, 1, 1, 2]


def test_default_value_fills_empty_elements(vocab):
    (feature,) = build(feature_text(vocab, extra='default_value: "good"'))
    out = feature.parse({"titles": pa.array(["", "day;"])})
    assert out["titles.values"].tolist() == [3, 4, 3]
    assert out["titles.elements.values"].tolist() == [1, 1, 1]


def test_fg_none_reads_ids_per_element_and_checks_the_vocabulary(vocab):
    (feature,) = build(feature_text(vocab), FG_NONE)
    out = feature.parse({"titles": pa.array(["1\x032;4", None, "0;3\x034\x035;1"])})
    assert out["titles.values"].tolist() == [1, 2, 4, 0, 3, 4, 5]
    assert out["titles.elements.values"].tolist() == [2, 1, 1, 3]
    assert out["titles.elements.lengths"].tolist() == [2, 0, 2]
    nested = feature.parse({"titles": pa.array([[[1, 2], [4]], [[]]])})
    assert nested["titles.elements.values"].tolist() == [2, 1, 0]
    with pytest.raises(FeatureError, match="feature 'titles'.*row 1"):
        feature.parse({"titles": pa.array(["1", "2;99"])})


def test_tokens_as_sequence_is_refused_on_the_sequence_kind(vocab):
    with pytest.raises(FeatureError, match="tokens_as_sequence"):
        build(feature_text(vocab, extra="tokens_as_sequence: true"))


def test_as_a_sequence_feature_element_it_reads_the_sequence_column(vocab):
    text = (
        'sequence_feature { sequence_name: "s" sequence_length: 3 sequence_delim: "|"'
        f' features {{ tokenize_feature {{ feature_name: "t" expression: "item:title"'
        f' vocab_file: "{vocab}" embedding_dim: 2 }} }} }}'
    )
    (feature,) = build(text)
    assert feature.name == "s__t" and feature.inputs == ["s__title"]
    out = feature.parse({"s__title": pa.array(["hello|good day"])})
    assert out["s__t.elements.values"].tolist() == [1, 2]


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_sequence_group_pools_each_element_and_deep_group_the_whole_row(vocab, pooling):
    features = build(feature_text(vocab, pooling))
    groups = [
        model_pb2.FeatureGroupConfig(
            group_name="seq", feature_names=["titles"], group_type=model_pb2.SEQUENCE
        ),
        model_pb2.FeatureGroupConfig(
            group_name="deep", feature_names=["titles"], group_type=model_pb2.DEEP
        ),
    ]
    group = EmbeddingGroup(features, groups)
    table = torch.arange(len(VOCAB) * 2, dtype=torch.float32).view(-1, 2)
    with torch.no_grad():
        for ec in group.sequence_ecs.values():
            for weights in ec.embeddings.values():
                weights.weight.copy_(table)
    assert group.ebc is None  # the DEEP group reads the sequence group's table
    parser = DataParser(features)
    batch = parser.to_batch(parser.parse(pa.record_batch({"titles": pa.array(ROWS)})))
    out = group(batch.sparse_features, batch.dense_features)

    def pool(ids):
        if not ids:
            return [0.0, 0.0]
        rows = table[ids]
        return (rows.sum(0) if pooling == "sum" else rows.mean(0)).tolist()

    elements = [[[1, 2], [4]], [[0]], [[]], [[0], [3, 4, 5]]]
    expected = torch.tensor(
        [[pool(e) for e in row] + [[0.0, 0.0]] * (2 - len(row)) for row in elements]
    )
    torch.testing.assert_close(out["seq.sequence"], expected)
    assert out["seq.sequence_length"].tolist() == [2, 1, 1, 2]
    rows = [[1, 2, 4], [0], [], [0, 3, 4, 5]]
    torch.testing.assert_close(out["deep"], torch.tensor([pool(r) for r in rows]))


def config_with(vocab: str, text: str = "") -> pipeline_pb2.EasyRecConfig:
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    config.data_config.fg_mode = FG_DAG
    config.feature_configs.add().CopyFrom(
        text_format.Parse(feature_text(vocab, "mean"), feature_pb2.FeatureConfig())
    )
    return config


def test_fg_json_names_the_sequence_kind_and_offline_fg_matches_fg_dag(vocab):
    config = config_with(vocab)
    (entry,) = create_fg_json(config)["features"]
    assert entry["feature_type"] == "sequence_tokenize_feature"
    assert entry["sequence_delim"] == ";" and entry["sequence_length"] == 2
    rows = pa.record_batch({"titles": pa.array(ROWS)})
    assert_offline_fg_matches_fg_dag(config, rows)


MODEL = """
data_config { fg_mode: FG_DAG label_fields: "clk" batch_size: 8 }
model_config {
  feature_groups { group_name: "all" feature_names: ["uid", "titles"] }
  feature_groups { group_name: "seq" group_type: SEQUENCE feature_names: ["titles"] }
  multi_tower_din {
    towers { input: "all" mlp { hidden_units: [4] } }
    din_towers { input: "seq" attn_mlp { hidden_units: [4] } }
    final { hidden_units: [2] }
  }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_the_exported_predictor_reproduces_training_tensors(tmp_path, vocab):
    config = config_with(vocab, MODEL)
    config.feature_configs.add().CopyFrom(
        text_format.Parse(
            'id_feature { feature_name: "uid" expression: "user:uid" hash_bucket_size: 10'
            " embedding_dim: 2 }",
            feature_pb2.FeatureConfig(),
        )
    )
    model, export_dir = export_untrained(config, tmp_path)
    rows = pa.record_batch({"titles": pa.array(ROWS), "uid": pa.array(["u1", "u2", "u3", "u4"])})
    train = DataParser(build_features(config)).parse(rows)
    assert "titles.elements.values" in train
    predictor = load_predictor(export_dir)
    assert_served_as_trained(model, predictor, train, rows)


@pytest.mark.parametrize("fg_mode", [FG_DAG, FG_NONE])
def test_mock_data_parses_in_both_modes(tmp_path, vocab, fg_mode):
    config = with_fg_mode(config_with(vocab, 'data_config { label_fields: "clk" }'), fg_mode)
    config.feature_configs.add().CopyFrom(
        text_format.Parse(
            'id_feature { feature_name: "uid" expression: "user:uid" hash_bucket_size: 10'
            " embedding_dim: 2 }",
            feature_pb2.FeatureConfig(),
        )
    )
    out = DataParser(build_features(config)).parse(mock_rows(config, tmp_path, 20, seed=1))
    tokens, elements = out["titles.elements.values"], out["titles.elements.lengths"]
    assert int(elements.max()) <= 2 and int(tokens.sum()) == out["titles.values"].numel()
    if fg_mode == FG_NONE:  # encoded elements hold several token ids
        assert int(tokens.max()) > 1


def test_tokens_as_sequence_gives_one_token_per_element(vocab):
    (feature,) = build(
        f'tokenize_feature {{ feature_name: "t" expression: "item:title" vocab_file: "{vocab}"'
        " embedding_dim: 2 tokens_as_sequence: true sequence_length: 2 }"
    )
    assert feature.is_sequence and feature.element_lengths_key is None
    group = EmbeddingGroup(
        [feature],
        [
            model_pb2.FeatureGroupConfig(
                group_name="seq", feature_names=["t"], group_type=model_pb2.SEQUENCE
            )
        ],
    )
    table = torch.arange(len(VOCAB) * 2, dtype=torch.float32).view(-1, 2)
    with torch.no_grad():
        for ec in group.sequence_ecs.values():
            for weights in ec.embeddings.values():
                weights.weight.copy_(table)
    parser = DataParser([feature])
    rows = pa.record_batch({"title": pa.array(["good day !", None])})
    batch = parser.to_batch(parser.parse(rows))
    out = group(batch.sparse_features, batch.dense_features)
    # the first 2 tokens of row 0; a null text is the default "0" -> one [UNK] token
    torch.testing.assert_close(
        out["seq.sequence"],
        table[torch.tensor([[3, 4], [0, 0]])] * torch.tensor([[[1.0], [1.0]], [[1.0], [0.0]]]),
    )
    assert out["seq.sequence_length"].tolist() == [2, 1]
