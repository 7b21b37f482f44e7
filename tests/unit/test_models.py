import pytest
import torch

from recforge.features import create_features
from recforge.models.model import BaseModel, PredictWrapper, TrainWrapper
from recforge.modules.embedding import EmbeddingGroupError
from recforge.utils.registry import RegistryError
from tests.helpers.models import (
    EXTRA_TRAIN_LOSSES,
    MODEL_CONFIGS,
    MODEL_VARIANTS,
    OUTPUT_SUFFIX,
    build,
    make_batch,
    make_config,
)


def test_every_registered_model_has_a_test_config():
    from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
    from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS

    assert set(BaseModel.registered_models()) == set(MODEL_CONFIGS) | set(
        MULTI_TASK_MODEL_CONFIGS
    ) | set(MATCH_MODEL_CONFIGS)


@pytest.mark.parametrize("model_name", sorted(MODEL_CONFIGS))
def test_model_predict_loss_backward(model_name):
    check_predict_loss_backward(build(model_name))


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
def test_model_variant_predict_loss_backward(variant):
    model_name, body = MODEL_VARIANTS[variant]
    check_predict_loss_backward(build(model_name, body))


def check_predict_loss_backward(model: BaseModel) -> None:
    batch = make_batch()
    name = type(model).__name__
    suffix = OUTPUT_SUFFIX.get(name, "")
    total, (losses, predictions, _) = TrainWrapper(model)(batch)
    probs = predictions[f"probs{suffix}"]
    assert probs.shape == (6,)
    assert ((probs > 0) & (probs < 1)).all()
    label_loss = f"binary_cross_entropy{suffix}"
    assert set(losses) == {label_loss} | EXTRA_TRAIN_LOSSES.get(name, set())
    total.backward()
    trainable, frozen = model.sparse_parameters()
    assert all(p.grad is not None for p in trainable)
    assert len(frozen) >= 1  # the 'tags' table is trainable: false
    dense_grads = [p.grad for n, p in model.named_parameters() if "embedding_bags" not in n]
    assert all(g is not None and torch.isfinite(g).all() for g in dense_grads)
    model.update_metric(predictions, batch, losses)
    metrics = model.compute_metric()
    assert set(metrics) == {f"auc{suffix}", label_loss}
    assert abs(float(metrics[label_loss]) - float(losses[label_loss])) < 1e-5


@pytest.mark.parametrize("model_name", sorted(MODEL_CONFIGS))
def test_predict_wrapper_keeps_requested_outputs(model_name):
    model = build(model_name).eval()
    probs = f"probs{OUTPUT_SUFFIX.get(model_name, '')}"
    _, (predictions, _) = PredictWrapper(model, output_cols=[probs])(make_batch())
    assert list(predictions) == [probs] and predictions[probs].device.type == "cpu"


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


# the interaction layers of the model zoo must script for export
SCRIPTABLE_LAYERS = (
    "CrossNet",
    "CrossNetV2",
    "CIN",
    "DotInteraction",
    "MaskNetModule",
    "DINEncoder",
    "WuKongLayer",
)


@pytest.mark.parametrize("case", sorted(MODEL_CONFIGS) + sorted(MODEL_VARIANTS))
def test_interaction_layers_script_and_match_eager(case):
    model_name, body = MODEL_VARIANTS.get(case, (case, None))
    model = build(model_name, body).eval()
    layers = {
        name: module
        for name, module in model.named_modules()
        if type(module).__name__ in SCRIPTABLE_LAYERS
    }
    if model_name not in ("DeepFM", "MultiTower", "WideAndDeep", "RocketLaunching"):
        assert layers, f"{model_name} has no interaction layer"
    inputs = {}

    def keep_inputs(name):
        def hook(module, args, output):
            inputs[name] = args

        return hook

    hooks = [module.register_forward_hook(keep_inputs(name)) for name, module in layers.items()]
    with torch.no_grad():
        model.predict(make_batch())
        for hook in hooks:
            hook.remove()
        for name, module in layers.items():
            scripted = torch.jit.script(module)
            torch.testing.assert_close(scripted(*inputs[name]), module(*inputs[name]))


def test_low_rank_cross_layer_matches_its_formula():
    from recforge.modules.cross import CrossNet, CrossNetV2

    x0 = torch.randn(5, 6)
    v2 = CrossNetV2(6, num_layers=1, low_rank=2)
    weight = v2.up[0, 0].T @ v2.down[0, 0].T  # U V^T: [6, 6]
    torch.nn.init.normal_(v2.bias)
    expected = x0 * (x0 @ weight.T + v2.bias[0, 0]) + x0
    torch.testing.assert_close(v2(x0), expected)
    v1 = CrossNet(6, num_layers=1)
    expected = x0 * (x0 @ v1.weight[0]).unsqueeze(1) + v1.bias[0] + x0
    torch.testing.assert_close(v1(x0), expected)


def test_dot_interaction_and_cin_shapes():
    from recforge.modules.interaction import CIN, DotInteraction

    x = torch.randn(3, 4, 5)
    dots = DotInteraction(4)(x)
    assert dots.shape == (3, 6)
    torch.testing.assert_close(dots[:, 0], (x[:, 0] * x[:, 1]).sum(1))
    torch.testing.assert_close(dots[:, 5], (x[:, 2] * x[:, 3]).sum(1))
    assert CIN(4, [7, 2]).forward(x).shape == (3, 9)


def test_dlrm_dense_mlp_must_end_in_the_embedding_dim():
    body = MODEL_CONFIGS["DLRM"].replace(
        "dense_mlp { hidden_units: [8] }", "dense_mlp { hidden_units: [4] }"
    )
    with pytest.raises(ValueError, match="embedding dim 8"):
        build("DLRM", body)


def test_zoo_model_without_its_group_names_it():
    body = MODEL_CONFIGS["WideAndDeep"].replace('"wide"', '"linear"')
    with pytest.raises(EmbeddingGroupError, match="WideAndDeep needs a feature group named 'wide'"):
        build("WideAndDeep", body)


def test_zoo_model_without_a_required_field_names_it():
    body = MODEL_CONFIGS["DCNV1"].replace("deep { hidden_units: [16] }", "")
    with pytest.raises(ValueError, match=r"DCNV1 needs dcn_v1\.deep"):
        build("DCNV1", body)
