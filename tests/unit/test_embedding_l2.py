"""``model_config.embedding_l2_regularization``: the L2 penalty on a batch's embeddings."""

import pytest
import torch
from google.protobuf import text_format
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recforge.config import ConfigError
from recforge.config.value_checks import check_values
from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError, used_rows_l2
from recforge.protos import pipeline_pb2
from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
from tests.helpers.models import FEATURES, MODEL_CONFIGS, make_batch

LOSSES = " metrics { auc {} } losses { binary_cross_entropy {} }"


def build(name: str, body: str, l2: float, labels=("label",)) -> BaseModel:
    text = FEATURES + "model_config {" + body + f" embedding_l2_regularization: {l2} }}"
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    features = create_features(config.feature_configs)
    return BaseModel.create_class(name)(config.model_config, features, list(labels))


def deepfm(l2: float) -> BaseModel:
    torch.manual_seed(0)
    return build("DeepFM", MODEL_CONFIGS["DeepFM"] + LOSSES, l2)


def expected_penalty(model: BaseModel, batch, l2: float) -> torch.Tensor:
    """``l2 * sum ||w||^2`` over the used rows, from the tables (bags: the documented weight)."""
    ebc = model.embedding_group.ebc
    total = torch.zeros(())
    for config in ebc.embedding_bag_configs():
        weight = ebc.embedding_bags[config.name].weight
        for feature in config.feature_names:
            jagged = batch.sparse_features[feature]
            ids = jagged.values()
            counts = {int(v): int((ids == v).sum()) for v in ids.unique()}
            start = 0
            for length in jagged.lengths().tolist():
                row_ids = ids[start : start + length].tolist()
                start += length
                if not row_ids:
                    continue
                share = sum(1 / counts[v] for v in row_ids) / len(row_ids)
                pooled = weight[row_ids].sum(dim=0)
                total = total + share * pooled.pow(2).sum()
    return l2 * total


def test_a_row_counts_once_however_many_samples_use_it():
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="t", embedding_dim=3, num_embeddings=10, feature_names=["f"])
        ]
    )
    weight = ebc.embedding_bags["t"].weight
    one_each = KeyedJaggedTensor(
        keys=["f"], values=torch.tensor([4, 4, 4, 7]), lengths=torch.tensor([1, 1, 1, 1])
    )
    expected = weight[4].pow(2).sum() + weight[7].pow(2).sum()
    torch.testing.assert_close(used_rows_l2(ebc(one_each), one_each), expected)
    # a bag of ids: its pooled vector, weighted by the mean of its ids' shares
    bags = KeyedJaggedTensor(
        keys=["f"], values=torch.tensor([4, 7, 4]), lengths=torch.tensor([2, 0, 1])
    )
    first = (0.5 + 1.0) / 2 * (weight[4] + weight[7]).pow(2).sum()
    torch.testing.assert_close(used_rows_l2(ebc(bags), bags), first + 0.5 * weight[4].pow(2).sum())


def test_the_penalty_is_added_to_the_loss():
    batch = make_batch(6)
    model = deepfm(0.3)
    total, (losses, _, _) = TrainWrapper(model)(batch)
    expected = expected_penalty(model, batch, 0.3)
    assert float(expected) > 0
    torch.testing.assert_close(losses["embedding_l2_loss"], expected.detach())
    rest = sum(float(v) for k, v in losses.items() if k != "embedding_l2_loss")
    assert float(total) == pytest.approx(rest + float(expected), rel=1e-6)
    # the same model without the setting: the same data loss, no term
    plain = deepfm(0.0)
    plain.load_state_dict(model.state_dict())
    plain_total, (plain_losses, _, _) = TrainWrapper(plain)(batch)
    assert "embedding_l2_loss" not in plain_losses
    assert float(total) - float(plain_total) == pytest.approx(float(expected), rel=1e-5)


def test_the_penalty_shrinks_the_rows_the_batch_uses_and_no_other():
    batch = make_batch(6)
    model = deepfm(1.0)
    model.train()
    model.predict(batch)
    penalty = model.embedding_group.embedding_regularization_loss()
    assert penalty is not None
    assert model.embedding_group.embedding_regularization_loss() is None  # handed over once
    penalty.backward()
    table = model.embedding_group.ebc.embedding_bags["user_emb"].weight
    before = table.detach().clone()
    with torch.no_grad():
        table -= 0.1 * table.grad
    users = batch.sparse_features["user"].values().unique()
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[users] = False
    assert (table[users].norm(dim=1) < before[users].norm(dim=1)).all()
    assert torch.equal(table[unused], before[unused])


def test_no_penalty_in_eval_mode():
    model = deepfm(1.0).eval()
    model.predict(make_batch(6))
    assert model.embedding_group.embedding_regularization_loss() is None


def test_match_model_towers_get_the_term():
    model = build("DSSM", MATCH_MODEL_CONFIGS["DSSM"], 0.5, labels=())
    _, (losses, _, _) = TrainWrapper(model)(make_batch(6))
    assert float(losses["embedding_l2_loss"]) > 0


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_bad_values_are_config_errors_at_the_field(value):
    text = FEATURES + "model_config {" + MODEL_CONFIGS["DeepFM"] + LOSSES
    config = text_format.Parse(
        text + f" embedding_l2_regularization: {value} }}", pipeline_pb2.EasyRecConfig()
    )
    problems = []
    check_values(config, lambda fld, msg: problems.append((fld, msg)))
    assert [fld for fld, _ in problems] == ["model_config.embedding_l2_regularization"]
    assert "finite number >= 0" in problems[0][1]
    with pytest.raises(ConfigError) as info:
        BaseModel.create_class("DeepFM")(
            config.model_config, create_features(config.feature_configs), ["label"]
        )
    assert info.value.field == "model_config.embedding_l2_regularization"
    with pytest.raises(EmbeddingGroupError, match="finite number >= 0"):
        EmbeddingGroup([], [], embedding_l2=float(value))
