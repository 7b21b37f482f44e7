"""DAT: augmented towers, the adaptive-mimic losses, tower export and config errors."""

import pytest
import torch
import torch.nn.functional as F

from recforge.config import ConfigError
from recforge.export.scripting import random_inputs, script_tower
from recforge.features import create_features
from recforge.models.dat import DAT
from recforge.models.model import BaseModel, TrainWrapper
from tests.helpers.export_util import model_config
from tests.helpers.models import make_batch


def dat(**edits) -> DAT:
    config = model_config("DAT")
    for path, value in edits.items():
        message = config.model_config.dat
        *parents, leaf = path.split(".")
        for name in parents:
            message = getattr(message, name)
        setattr(message, leaf, value)
    features = create_features(config.feature_configs)
    torch.manual_seed(0)
    return BaseModel.create_class("DAT")(config.model_config, features, ["label"])


def test_dat_is_registered_and_its_towers_read_the_augment_groups():
    model = dat()
    assert type(model) is DAT
    assert [f.name for f in model.tower_features("user")] == ["user", "price"]
    assert [f.name for f in model.tower_features("item")] == ["item", "tags"]
    # user (8) + price (1) + the augmented vector (user, 8)
    assert model.user_tower.mlp.mlp[0].in_features == 17
    assert model.item_tower.mlp.mlp[0].in_features == 24


def test_training_adds_the_adaptive_mimic_losses():
    model = dat()
    total, (losses, predictions, _) = TrainWrapper(model)(make_batch())
    assert set(losses) == {"softmax_cross_entropy", "amm_loss_u", "amm_loss_i"}
    torch.testing.assert_close(total, sum(losses.values()))
    user, item = predictions["user_target"], predictions["item_target"]
    torch.testing.assert_close(user, F.normalize(predictions["user_emb"], dim=1))  # COSINE
    aug_u = F.normalize(predictions["user_augment"], dim=1)
    aug_i = F.normalize(predictions["item_augment"], dim=1)
    torch.testing.assert_close(losses["amm_loss_u"], 0.5 * (aug_u - item).square().sum())
    torch.testing.assert_close(losses["amm_loss_i"], 0.25 * (aug_i - user).square().sum())
    # the augmented vector is the 'user' embedding the tower input holds too
    batch = make_batch()
    table = model.user_embedding_group(batch.sparse_features, batch.dense_features)
    torch.testing.assert_close(predictions["user_augment"], table["user_augment"])


def test_the_mimic_losses_train_the_augmented_vectors_not_the_towers():
    model = dat()
    predictions = model.predict(make_batch())
    losses = model.loss(predictions, make_batch())
    (losses["amm_loss_u"] + losses["amm_loss_i"]).backward()
    assert model.user_tower.output.weight.grad is None
    assert model.item_tower.output.weight.grad is None
    tables = dict(model.user_embedding_group.named_parameters())
    grads = [p.grad for n, p in tables.items() if "user" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_eval_has_no_mimic_losses_or_training_outputs():
    model = dat().eval()
    with torch.no_grad():
        predictions = model.predict(make_batch())
        losses = model.loss(predictions, make_batch())
    assert set(predictions) == set(model.output_names) == {"similarity", "user_emb", "item_emb"}
    assert set(losses) == {"softmax_cross_entropy"}


def test_scripted_towers_equal_the_model_embeddings():
    model = dat().eval()
    batch = make_batch()
    with torch.no_grad():
        predictions = model.predict(batch)
    for side in ("user", "item"):
        scripted, wrapper = script_tower(model, side)
        data = random_inputs(model.tower_features(side), 5)
        with torch.no_grad():
            eager, script = wrapper(data)[f"{side}_emb"], scripted(data)[f"{side}_emb"]
            tower = model.tower_module(side)(batch)
        torch.testing.assert_close(script, eager)
        assert eager.shape == (5, 8)
        # the tower export outputs what the similarity compares (L2-normalised for COSINE)
        torch.testing.assert_close(tower, F.normalize(predictions[f"{side}_emb"], dim=1))


@pytest.mark.parametrize(
    "edits, field",
    [
        ({"output_dim": 0}, "output_dim"),
        ({"user_tower.augment_input": "nope"}, "user_tower.augment_input"),
        ({"item_tower.input": ""}, "item_tower.input"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_config_is_an_error_at_its_field(edits, field):
    with pytest.raises(ConfigError) as error:
        dat(**edits)
    assert error.value.field == f"model_config.dat.{field}"


def test_an_augment_group_narrower_than_output_dim_is_an_error():
    config = model_config("DAT")
    group = config.model_config.feature_groups[3]
    assert group.group_name == "item_augment"
    group.feature_names.append("price")  # 8 + 1 wide against output_dim 8
    with pytest.raises(ConfigError) as error:
        DAT(config.model_config, create_features(config.feature_configs), ["label"])
    assert error.value.field == "model_config.dat.item_tower.augment_input"
    assert "9 wide" in str(error.value)
