import pytest
import torch
from google.protobuf import text_format
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recforge.datasets.batch import Batch
from recforge.features import create_features
from recforge.models.model import BaseModel, PredictWrapper, TrainWrapper
from recforge.modules.embedding import EmbeddingGroupError
from recforge.protos import pipeline_pb2
from recforge.utils.registry import RegistryError

FEATURES = """
feature_configs { id_feature { feature_name: "user" num_buckets: 50 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "item" hash_bucket_size: 100 embedding_dim: 8 } }
feature_configs {
  id_feature { feature_name: "tags" num_buckets: 20 embedding_dim: 8 trainable: false }
}
feature_configs { raw_feature { feature_name: "price" } }
"""

# every registered model needs an entry: the test below fails for a model without one
MODEL_CONFIGS = {
    "DeepFM": """
      feature_groups { group_name: "wide" feature_names: ["user", "item", "tags"] group_type: WIDE }
      feature_groups { group_name: "deep" feature_names: ["user", "item", "tags", "price"] }
      feature_groups { group_name: "fm" feature_names: ["user", "item", "tags"] }
      deepfm { deep { hidden_units: [16, 8] dropout_ratio: 0.1 } final { hidden_units: [4] } }
    """,
    "MultiTower": """
      feature_groups { group_name: "user" feature_names: ["user", "price"] }
      feature_groups { group_name: "item" feature_names: ["item", "tags"] }
      multi_tower {
        towers { input: "user" mlp { hidden_units: [16] use_bn: true } }
        towers { input: "item" mlp { hidden_units: [16] } }
        final { hidden_units: [8] }
      }
    """,
}


def make_config(model_name: str) -> pipeline_pb2.EasyRecConfig:
    text = FEATURES + "model_config {" + MODEL_CONFIGS[model_name]
    text += " metrics { auc {} } losses { binary_cross_entropy {} } }"
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


def make_batch(batch_size: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    tag_lengths = torch.randint(0, 3, (batch_size,), generator=g, dtype=torch.int32)
    values = [
        torch.randint(0, 50, (batch_size,), generator=g),
        torch.randint(0, 100, (batch_size,), generator=g),
        torch.randint(0, 20, (int(tag_lengths.sum()),), generator=g),
    ]
    lengths = torch.cat([torch.ones(2 * batch_size, dtype=torch.int32), tag_lengths])
    sparse = KeyedJaggedTensor(
        keys=["user", "item", "tags"], values=torch.cat(values), lengths=lengths
    )
    dense = KeyedTensor.from_tensor_list(["price"], [torch.rand(batch_size, 1, generator=g)])
    labels = {"label": (torch.arange(batch_size) % 2).float()}
    return Batch(sparse, dense, labels=labels)


def build(model_name: str) -> BaseModel:
    config = make_config(model_name)
    features = create_features(config.feature_configs)
    return BaseModel.create_class(model_name)(config.model_config, features, ["label"])


def test_every_registered_model_has_a_test_config():
    from multi_task_configs import MULTI_TASK_MODEL_CONFIGS

    assert set(BaseModel.registered_models()) == set(MODEL_CONFIGS) | set(MULTI_TASK_MODEL_CONFIGS)


@pytest.mark.parametrize("model_name", sorted(MODEL_CONFIGS))
def test_model_predict_loss_backward(model_name):
    model = build(model_name)
    batch = make_batch()
    total, (losses, predictions, _) = TrainWrapper(model)(batch)
    assert predictions["probs"].shape == (6,)
    assert ((predictions["probs"] > 0) & (predictions["probs"] < 1)).all()
    assert set(losses) == {"binary_cross_entropy"}
    total.backward()
    trainable, frozen = model.sparse_parameters()
    assert all(p.grad is not None for p in trainable)
    assert len(frozen) >= 1  # the 'tags' table is trainable: false
    dense_grads = [p.grad for n, p in model.named_parameters() if "embedding_bags" not in n]
    assert all(g is not None and torch.isfinite(g).all() for g in dense_grads)
    model.update_metric(predictions, batch, losses)
    metrics = model.compute_metric()
    assert set(metrics) == {"auc", "binary_cross_entropy"}
    assert (
        abs(float(metrics["binary_cross_entropy"]) - float(losses["binary_cross_entropy"])) < 1e-5
    )


@pytest.mark.parametrize("model_name", sorted(MODEL_CONFIGS))
def test_predict_wrapper_keeps_requested_outputs(model_name):
    model = build(model_name).eval()
    _, (predictions, _) = PredictWrapper(model, output_cols=["probs"])(make_batch())
    assert list(predictions) == ["probs"] and predictions["probs"].device.type == "cpu"


def test_create_class_returns_registered_class():
    from recforge.models.deepfm import DeepFM

    assert BaseModel.create_class("DeepFM") is DeepFM


def test_unknown_model_name_lists_known_models():
    with pytest.raises(RegistryError) as info:
        BaseModel.create_class("DeepFm")
    message = str(info.value)
    assert "did you mean 'DeepFM'" in message and "MultiTower" in message


def test_subclass_registers_itself():
    from recforge.models import model as model_module
    from recforge.models.multi_tower import MultiTower

    class MyTower(MultiTower):
        pass

    try:
        assert BaseModel.create_class("MyTower") is MyTower
    finally:
        del model_module._MODEL_CLASS_MAP["MyTower"]


def test_group_with_undefined_feature_is_an_error():
    config = make_config("MultiTower")
    config.model_config.feature_groups[0].feature_names.append("nope")
    features = create_features(config.feature_configs)
    with pytest.raises(EmbeddingGroupError, match="nope"):
        BaseModel.create_class("MultiTower")(config.model_config, features, ["label"])


def test_fm_group_with_mixed_dims_is_an_error():
    config = make_config("DeepFM")
    config.feature_configs[0].id_feature.embedding_dim = 4
    features = create_features(config.feature_configs)
    with pytest.raises(EmbeddingGroupError, match="one embedding dim"):
        BaseModel.create_class("DeepFM")(config.model_config, features, ["label"])
