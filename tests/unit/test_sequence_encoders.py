"""Sequence encoders in DEEP feature groups, and activations named with arguments."""

import math

import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.datasets.data_parser import DataParser
from recforge.export.scripting import script_model
from recforge.features import FG_DAG, create_features
from recforge.models.model import BaseModel
from recforge.modules.activation import Dice, create_activation
from recforge.modules.din import DINEncoder
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.modules.sequence_encoders import (
    MultiWindowDINEncoder,
    PoolingEncoder,
    SelfAttentionEncoder,
    SimpleAttention,
)
from recforge.protos import model_pb2, module_pb2, pipeline_pb2
from tests.helpers.sequence_encoders import (
    FEATURES,
    SEQ_GROUP,
    TOWER,
    config_of,
    rows,
)

MLP4 = module_pb2.MLP(hidden_units=[4])


def encoders(query_dim: int = 4, dim: int = 4, length: int = 5) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "din": DINEncoder(query_dim, dim, length, MLP4),
        "simple": SimpleAttention(query_dim, dim, length),
        "mean": PoolingEncoder(dim, length, "mean"),
        "sum": PoolingEncoder(dim, length, "sum"),
        "self_attention": SelfAttentionEncoder(dim, length, multihead_attn_dim=6, num_heads=2),
        "multi_window": MultiWindowDINEncoder(query_dim, dim, length, [1, 2, 3], MLP4),
    }


WIDTHS = {"din": 4, "simple": 4, "mean": 4, "sum": 4, "self_attention": 6, "multi_window": 16}


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_encoders_ignore_padding_and_know_their_width(name):
    encoder = encoders()[name].eval()
    query, sequence = torch.randn(3, 4), torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 0])
    out = encoder(query, sequence, lengths)
    assert out.shape == (3, WIDTHS[name]) == (3, encoder.output_dim())
    assert torch.isfinite(out).all()  # an empty sequence gives no NaN
    changed = sequence.clone()
    changed[1, 2:] = 100.0  # padding of row 1
    changed[2] = -7.0  # row 2 is empty: all padding
    torch.testing.assert_close(encoder(query, changed, lengths), out)
    torch.testing.assert_close(torch.jit.script(encoder)(query, sequence, lengths), out)


def test_pooling_by_hand():
    sequence = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    lengths = torch.tensor([2])
    mean = PoolingEncoder(2, 3, "mean")(None, sequence, lengths)
    torch.testing.assert_close(mean, torch.tensor([[2.0, 3.0]]))
    total = PoolingEncoder(2, 3, "sum")(None, sequence, lengths)
    torch.testing.assert_close(total, torch.tensor([[4.0, 6.0]]))
    # max_seq_length reads only the first element
    first = PoolingEncoder(2, 3, "mean", max_seq_length=1)(None, sequence, lengths)
    torch.testing.assert_close(first, torch.tensor([[1.0, 2.0]]))


def test_simple_attention_by_hand():
    # scores <s_t, q> = [ln 3, 0]: weights 3/4 and 1/4
    sequence = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    query = torch.tensor([[math.log(3.0), 0.0]])
    out = SimpleAttention(2, 2, 3)(query, sequence, torch.tensor([2]))
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25]]))


def test_din_with_a_constant_score_averages_and_pads_a_narrow_query():
    din = DINEncoder(2, 4, 3, MLP4)
    with torch.no_grad():
        din.score.weight.zero_()
    sequence = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    out = din(torch.randn(1, 2), sequence, torch.tensor([2]))
    torch.testing.assert_close(out, sequence[:, :2].mean(dim=1))
    # a query of width 2 is zero-padded: equal to a width-4 DIN fed the padded query
    torch.manual_seed(1)
    narrow = DINEncoder(2, 4, 3, MLP4)
    wide = DINEncoder(4, 4, 3, MLP4)
    wide.load_state_dict(narrow.state_dict())
    query, sequence = torch.randn(2, 2), torch.randn(2, 3, 4)
    lengths = torch.tensor([3, 1])
    padded = torch.cat([query, torch.zeros(2, 2)], dim=1)
    torch.testing.assert_close(narrow(query, sequence, lengths), wide(padded, sequence, lengths))


def test_multi_window_din_by_hand():
    encoder = MultiWindowDINEncoder(2, 2, 4, [1, 2], MLP4)
    with torch.no_grad():  # every score prelu(1) = 1
        encoder.score.weight.zero_()
        encoder.score.bias.fill_(1.0)
    sequence = torch.tensor([[[1.0, 1.0], [2.0, 4.0], [4.0, 8.0], [50.0, 50.0]]])
    query = torch.tensor([[7.0, 9.0]])
    out = encoder(query, sequence, torch.tensor([2]))
    # window 0: element 0; window 1: elements 1 and 2, of which only 1 is valid; then the query
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 2.0, 4.0, 7.0, 9.0]]))


def test_activations_with_arguments_and_dice():
    prelu = create_activation("nn.PReLU(num_parameters=3, init=0.5)")
    assert isinstance(prelu, torch.nn.PReLU) and prelu.weight.shape == (3,)
    x = torch.tensor([[-2.0, 1.0, -4.0]])
    torch.testing.assert_close(prelu(x), torch.tensor([[-1.0, 1.0, -2.0]]))
    assert create_activation("torch.nn.Softplus(beta=2)").beta == 2
    dice = create_activation("Dice", hidden_size=3)
    assert isinstance(dice, Dice)
    dice.eval()  # running stats 0 / 1: p = sigmoid(x); alpha = 0: out = sigmoid(x) * x
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    torch.testing.assert_close(dice(x), torch.sigmoid(x) * x, atol=1e-4, rtol=1e-4)
    assert Dice(3, dim=3)(torch.randn(2, 5, 3)).shape == (2, 5, 3)
    for bad, message in [
        ("nn.PReLU(num_parameters=n)", "must be a literal"),
        ("nn.PReLU(3)", "keyword arguments"),
        ("nn.PReLU(foo=1)", "foo"),
        ("nn.PReLU(", "closing"),
        ("nn.Swishy", "unknown activation"),
    ]:
        with pytest.raises(ValueError, match=message):
            create_activation(bad)


def test_deep_group_appends_encoder_outputs_and_pads_never_matter():
    config = config_of(
        SEQ_GROUP % "sequence_encoders { pooling_encoder { input: 'click' pooling_type: 'sum' } }"
    )
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    group = EmbeddingGroup(features, config.model_config.feature_groups)
    # user (4) + item (8), then din (8) and sum pooling (8)
    assert group.group_dims("all") == [4, 8, 8, 8] and group.group_total_dim("all") == 28
    batch = DataParser(features).parse_batch(rows(6, 0))
    out = group(batch.sparse_features, batch.dense_features)["all"]
    assert out.shape == (6, 28)
    table = group.sequence_ecs["dim_8"].embeddings["item_emb"].weight
    clicks = rows(6, 0).column("click__item").to_pylist()
    expected = torch.stack([table[[int(i) for i in c.split(";")]].sum(0) for c in clicks])
    torch.testing.assert_close(out[:, 20:], expected)


def test_a_group_of_sequences_only_and_its_tower_export():
    config = config_of(SEQ_GROUP % "")
    del config.model_config.feature_groups[0].feature_names[:]
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    group = EmbeddingGroup(features, config.model_config.feature_groups)
    assert group.group_total_dim("all") == 8
    copy = EmbeddingGroup(features, config.model_config.feature_groups)
    copy.copy_weights_from(group)
    batch = DataParser(features).parse_batch(rows(5, 1))
    torch.testing.assert_close(
        copy(batch.sparse_features, batch.dense_features)["all"],
        group(batch.sparse_features, batch.dense_features)["all"],
    )


@pytest.mark.parametrize(
    "change, field, message",
    [
        ("group_type: WIDE", "feature_groups[0].group_type", "must be DEEP"),
        (
            "sequence_groups { group_name: 'other' feature_names: ['click__item'] }",
            "feature_groups[0].sequence_encoders[0].din_encoder.input",
            "name the one to read",
        ),
        (
            "sequence_encoders { pooling_encoder { input: 'clik' pooling_type: 'max' } }",
            "feature_groups[0].sequence_encoders[1].pooling_encoder.input",
            "'clik' is not a sequence group",
        ),
        (
            "sequence_encoders { pooling_encoder { input: 'click' pooling_type: 'max' } }",
            "feature_groups[0].sequence_encoders[1].pooling_encoder.pooling_type",
            "expected 'mean' or 'sum'",
        ),
    ],
)
def test_bad_sequence_groups_name_their_field(change, field, message):
    config = config_of(SEQ_GROUP % change)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert f"model_config.{field}" in str(error.value) and message in str(error.value)
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    with pytest.raises(EmbeddingGroupError, match=message):
        EmbeddingGroup(features, config.model_config.feature_groups)


def test_undefined_sequence_group_feature_is_a_config_error():
    config = config_of(SEQ_GROUP.replace("click__item", "click__itm") % "")
    with pytest.raises(ConfigError, match=r"sequence_groups\[0\].feature_names\[1\].*click__itm"):
        validate_config(config)


DENSE_FEATURES = (
    FEATURES.replace(
        "    features {\n      id_feature {",
        '    features { raw_feature { feature_name: "gap" } }\n    features {\n      id_feature {',
    )
    + 'feature_configs { raw_feature { feature_name: "price" } }\n'
)

DENSE_GROUP = """
  feature_groups {
    group_name: "all" feature_names: ["user"]
    sequence_groups { feature_names: ["item", "price", "click__item", "click__gap"] }
    sequence_encoders { pooling_encoder { pooling_type: "sum" } }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [8] activation: "Dice" } } }
  }
"""


def dense_rows() -> pa.RecordBatch:
    return pa.record_batch(
        {
            "user": pa.array([1, 2, 3]),
            "item": pa.array([4, 5, 6]),
            "price": pa.array([0.5, 1.5, 2.5]),
            "click__item": pa.array(["1;2;3;4;5", "", "7"]),
            "click__gap": pa.array(["0.5;1;2;4;8", "", "3"]),
        }
    )


def dense_model() -> tuple[BaseModel, list]:
    config = text_format.Parse(
        f"{DENSE_FEATURES} model_config {{ {DENSE_GROUP} {TOWER} }}",
        pipeline_pb2.EasyRecConfig(),
    )
    validate_config(config)
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    model = BaseModel.create_class("MultiTower")(config.model_config, features, ["label"])
    return model, features


def test_dense_sequences_parse_padded_with_their_length_first():
    features = {f.name: f for f in dense_model()[1]}
    gap = features["click__gap"]
    assert not gap.is_sparse and gap.dense_width == 5
    parsed = DataParser([gap]).parse(dense_rows())["click__gap.values"]
    # cut to sequence_length 4; the length comes first
    assert parsed.tolist() == [[4, 0.5, 1, 2, 4], [0, 0, 0, 0, 0], [1, 3, 0, 0, 0]]


def test_dense_sequence_elements_join_the_sequence_and_export():
    model, features = dense_model()
    group = model.embedding_group
    # user (4), then the sum pooling and DIN outputs: item (8) + gap (1) each
    assert group.group_dims("all") == [4, 9, 9]
    batch = DataParser(features).parse_batch(dense_rows())
    out = group(batch.sparse_features, batch.dense_features)["all"]
    # the summed gap is the last column of the pooling output; the price (query) is not in it
    torch.testing.assert_close(out[:, 12], torch.tensor([7.5, 0.0, 3.0]))
    model.eval()
    eager = model.predict(batch)["probs"]
    scripted = script_model(model)(DataParser(features).parse(dense_rows()))
    torch.testing.assert_close(scripted["probs"], eager)


def test_a_dense_sequence_cannot_be_pooled():
    config = text_format.Parse(DENSE_FEATURES, pipeline_pb2.EasyRecConfig())
    features = create_features(config.feature_configs, fg_mode=FG_DAG)
    deep = model_pb2.FeatureGroupConfig(group_name="deep", feature_names=["user", "click__gap"])
    with pytest.raises(EmbeddingGroupError, match="'click__gap' is a dense sequence"):
        EmbeddingGroup(features, [deep])
