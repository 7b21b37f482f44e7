"""The model contract: what BaseModel owns, what pipelines may read, how mistakes surface."""

import ast
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, load_pipeline_config, validate_config
from recforge.errors import user_facing_errors
from recforge.features import create_features
from recforge.models import model as model_module
from recforge.models.model import BaseModel
from recforge.models.rank_model import RankModel
from recforge.protos import loss_pb2, metric_pb2
from recforge.utils.registry import RegistryError
from tests.helpers.export_util import model_config
from tests.helpers.models import MODEL_CONFIGS, build, make_batch, make_config
from tests.helpers.paths import REPO_ROOT

REPO = Path(REPO_ROOT)


def _unregister(*names: str) -> None:
    for name in names:
        model_module._MODEL_CLASS_MAP.pop(name, None)


def _counting_model(explicit_calls: bool) -> type:
    """A MultiTower that counts how often its setup hooks run (build, losses, metrics)."""
    from recforge.models.multi_tower import MultiTower

    class CountingTower(MultiTower):
        def __init__(self, *args, **kwargs):
            self.calls = {"build": 0, "init_loss": 0, "init_metric": 0}
            super().__init__(*args, **kwargs)

        def build(self):
            self.calls["build"] += 1
            assert self.calls == {"build": 1, "init_loss": 0, "init_metric": 0}
            super().build()
            if explicit_calls:  # the style of models written before the framework ran them
                self.init_loss()
                self.init_metric()

        def init_loss(self):
            self.calls["init_loss"] += 1
            super().init_loss()

        def init_metric(self):
            self.calls["init_metric"] += 1
            super().init_metric()

    _unregister("CountingTower")
    return CountingTower


@pytest.mark.parametrize("explicit_calls", [False, True])
def test_losses_and_metrics_are_built_once_after_init(explicit_calls):
    model_class = _counting_model(explicit_calls)
    config = make_config("MultiTower")
    features = create_features(config.feature_configs)
    model = model_class(config.model_config, features, ["label"])
    assert model.calls == {"build": 1, "init_loss": 1, "init_metric": 1}
    assert list(model._loss_modules) == ["binary_cross_entropy"]
    assert list(model._metric_modules) == ["auc", "binary_cross_entropy"]
    model.update_metric(*_predict_and_losses(model))
    assert set(model.compute_metric()) == {"auc", "binary_cross_entropy"}


def _predict_and_losses(model):
    batch = make_batch()
    predictions = model.predict(batch)
    return predictions, batch, model.loss(predictions, batch)


def test_constructor_keywords_are_explicit():
    config = make_config("MultiTower")
    features = create_features(config.feature_configs)
    model_class = BaseModel.create_class("MultiTower")
    with pytest.raises(TypeError, match="embeding_device"):
        model_class(config.model_config, features, ["label"], embeding_device=None)
    model = model_class(
        config.model_config, features, ["label"], embedding_device=torch.device("meta")
    )
    trainable, frozen = model.sparse_parameters()
    assert {p.device.type for p in trainable + frozen} == {"meta"}


@pytest.mark.parametrize("model_name", sorted(BaseModel.registered_models()))
def test_public_properties_describe_the_model(model_name):
    config = model_config(model_name)
    features = create_features(config.feature_configs)
    model = BaseModel.create_class(model_name)(
        config.model_config, features, ["label", "label_cvr"]
    )
    assert [f.name for f in model.features] == [f.name for f in features]
    assert model.feature_groups == list(config.model_config.feature_groups)
    assert model.model_config is config.model_config
    assert model.labels == ["label", "label_cvr"]
    assert not model.has_train_metrics
    batch = make_batch()
    batch.labels["label_cvr"] = batch.labels["label"]
    with torch.no_grad():
        assert list(model.eval().predict(batch)) == model.output_names


def test_train_metrics_property_follows_the_config():
    config = make_config("MultiTower")
    config.model_config.train_metrics.add().auc.SetInParent()
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("MultiTower")(config.model_config, features, ["label"])
    assert model.has_train_metrics


# ------------------------------------------------------------------ registry
def test_a_second_class_with_a_registered_name_is_refused():
    # refused, as TorchEasyRec does: a config picks a class by name, so a silent replacement
    # (or a warning lost in a distributed run's logs) would train another model
    namespace = {"RankModel": RankModel}
    with pytest.raises(RegistryError, match=r"two classes are named 'DeepFM'.*rename one"):
        exec("class DeepFM(RankModel):\n    def predict(self, batch): ...", namespace)
    assert BaseModel.create_class("DeepFM").__module__ == "recforge.models.deepfm"


def test_the_same_definition_run_again_replaces_with_a_warning():
    def define():
        class ReloadedTower(RankModel):
            def predict(self, batch): ...

        return ReloadedTower

    first = define()
    try:
        with pytest.warns(UserWarning, match="ReloadedTower was defined again"):
            second = define()
        assert BaseModel.create_class("ReloadedTower") is second is not first
    finally:
        _unregister("ReloadedTower")


# ------------------------------------------------------------------ config mistakes
def test_dcn_v1_without_deep_names_the_field():
    body = MODEL_CONFIGS["DCNV1"].replace("deep { hidden_units: [16] }", "")
    with pytest.raises(ConfigError) as info:
        build("DCNV1", body)
    assert info.value.field == "model_config.dcn_v1.deep"


def test_model_building_mistake_is_one_line_at_the_cli(capsys):
    body = MODEL_CONFIGS["DCNV1"].replace("deep { hidden_units: [16] }", "")
    with pytest.raises(SystemExit) as info, user_facing_errors():
        build("DCNV1", body)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("recforge: error: model_config.dcn_v1.deep: DCNV1 needs dcn_v1.deep")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "model_name, old, new, field",
    [
        ("DCNV1", "deep { hidden_units: [16] }", "deep { }", "model_config.dcn_v1.deep"),
        (
            "DLRM",
            "dense_mlp { hidden_units: [8] }",
            "dense_mlp { hidden_units: [4] }",
            "model_config.dlrm.dense_mlp.hidden_units",
        ),
        ("DLRM", "final { hidden_units: [8] }", "", "model_config.dlrm.final"),
        (
            "MultiTower",
            "mlp { hidden_units: [16] use_bn: true }",
            "mlp { hidden_units: [16] dropout_ratio: [0.1, 0.2] }",
            "model_config.multi_tower.towers[0].mlp",
        ),
        (
            "MultiTowerDIN",
            'din_towers { input: "seq" attn_mlp { hidden_units: [8] } }',
            "",
            "model_config.multi_tower_din.din_towers",
        ),
    ],
)
def test_layer_settings_are_config_errors_at_their_field(model_name, old, new, field):
    body = MODEL_CONFIGS[model_name]
    assert old in body
    with pytest.raises(ConfigError) as info:
        build(model_name, body.replace(old, new))
    assert info.value.field == field


def test_final_without_hidden_units_is_no_final_mlp():
    body = MODEL_CONFIGS["DCNV1"].replace("final { hidden_units: [8] }", "final { }")
    model = build("DCNV1", body)
    assert model.final is None and model.head.in_features == 8 * 3 + 1 + 16


LOSSES = {
    "binary_cross_entropy": "binary_cross_entropy {}",
    "softmax_cross_entropy": "softmax_cross_entropy {}",
    "l2_loss": "l2_loss {}",
    "binary_focal_loss": "binary_focal_loss {}",
    "jrc_loss": 'jrc_loss { session_name: "session" }',
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("num_class", [1, 2, 3])
def test_validation_and_model_building_agree_on_num_class(loss, num_class):
    loss_config = text_format.Parse(LOSSES[loss], loss_pb2.LossConfig())
    config = load_pipeline_config(str(REPO / "tests" / "configs" / "frappe_deepfm.config"))
    config.model_config.num_class = num_class
    config.model_config.losses[0].CopyFrom(loss_config)
    field = f"model_config.losses[0].{loss}"
    try:
        validate_config(config)
        validation = None
    except ConfigError as e:
        validation = next((x for x in e.errors if x.field == field), None)

    model = make_config("MultiTower")
    model.model_config.num_class = num_class
    model.model_config.losses[0].CopyFrom(loss_config)
    del model.model_config.metrics[:]
    try:
        BaseModel.create_class("MultiTower")(
            model.model_config, create_features(model.feature_configs), ["label"]
        )
        building = None
    except ConfigError as e:
        building = e

    assert (validation is None) == (building is None)
    if building is not None:
        assert building.field == "model_config.losses[0]"
        assert building.message == validation.message


METRICS = {
    "auc": "auc {}",
    "multiclass_auc": "multiclass_auc {}",
    "accuracy": "accuracy { top_k: 2 }",
    "recall_at_k": "recall_at_k { top_k: 3 }",
    "xauc": "xauc {}",
    "mean_squared_error": "mean_squared_error {}",
}


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("num_class", [1, 2, 3])
def test_validation_and_model_building_agree_on_metrics(metric, num_class):
    """One rule source: a metric refused at validation is refused with the same words at build."""
    metric_config = text_format.Parse(METRICS[metric], metric_pb2.MetricConfig())
    loss = "softmax_cross_entropy {}" if num_class > 1 else "binary_cross_entropy {}"
    loss_config = text_format.Parse(loss, loss_pb2.LossConfig())
    config = load_pipeline_config(str(REPO / "tests" / "configs" / "frappe_deepfm.config"))
    config.model_config.num_class = num_class
    config.model_config.losses[0].CopyFrom(loss_config)
    del config.model_config.metrics[:]
    config.model_config.metrics.add().CopyFrom(metric_config)
    try:
        validate_config(config)
        validation = None
    except ConfigError as e:
        validation = next((x for x in e.errors if x.field.startswith("model_config.metrics")), None)

    model = make_config("MultiTower")
    model.model_config.num_class = num_class
    model.model_config.losses[0].CopyFrom(loss_config)
    del model.model_config.metrics[:]
    model.model_config.metrics.add().CopyFrom(metric_config)
    try:
        BaseModel.create_class("MultiTower")(
            model.model_config, create_features(model.feature_configs), ["label"]
        )
        building = None
    except ConfigError as e:
        building = e

    assert (validation is None) == (building is None), (validation, building)
    if building is not None:
        assert building.message == validation.message


# ------------------------------------------------------------------ pipelines
def _private_model_attributes() -> set:
    """Names of the private attributes model classes set on ``self``."""
    names = set()
    for path in (REPO / "recforge" / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
    return names


def test_pipelines_read_no_private_model_attribute():
    private = _private_model_attributes()
    assert {"_features", "_train_metric_modules", "_base_model_config"} <= private
    found = []
    for path in sorted((REPO / "recforge").rglob("*.py")):
        in_models = path.parent.name == "models"
        if in_models or "protos" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in private
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "read the model's public properties instead:\n" + "\n".join(found)


def test_concrete_models_build_layers_without_restating_the_constructor():
    """Only the family base classes define ``__init__``; a model file defines ``build``."""
    families = {"BaseModel", "RankModel", "MultiTaskRank", "MatchModel"}
    restating = []
    for name in BaseModel.registered_models():
        model_class = BaseModel.create_class(name)
        for cls in model_class.__mro__:
            if cls.__name__ in families or not cls.__module__.startswith("recforge."):
                break
            if "__init__" in cls.__dict__:
                restating.append(f"{cls.__module__}.{cls.__name__}")
    assert not restating, f"define build() instead of __init__: {sorted(set(restating))}"
