"""Variational dropout feature selection: the layer, its wiring in every model, the command."""

import argparse
import csv
import os

import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, load_pipeline_config
from recforge.errors import CheckpointError
from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.variational_dropout import FeatureDropout
from recforge.protos import pipeline_pb2
from recforge.tools import feature_selection
from recforge.utils import checkpoint as ckpt_util
from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
from tests.helpers.models import FEATURES, MODEL_CONFIGS, make_batch

VD = " variational_dropout { regularization_lambda: 0.5 } "


def test_eval_scales_each_feature_by_its_keep_rate():
    layer = FeatureDropout(["a", "b"], [2, 3]).eval()
    x = torch.randn(4, 5)
    keep = 1 - layer.dropout_rates()
    expected = torch.cat([x[:, :2] * keep[0], x[:, 2:] * keep[1]], dim=1)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(
        layer.penalty(4), 0.01 / 4 * (2 - layer.dropout_rates().sum()), rtol=1e-6, atol=0
    )


def test_training_masks_whole_features_and_the_rates_get_gradients():
    torch.manual_seed(0)
    layer = FeatureDropout(["a", "b"], [2, 3]).train()
    with torch.no_grad():
        layer.feature_p.copy_(torch.tensor([-8.0, 8.0]))  # keep a, drop b
    out = layer(torch.ones(64, 5))
    assert torch.allclose(out[:, :2], torch.ones(64, 2), atol=1e-3)
    assert out[:, 2:].abs().max() < 1e-3
    layer.feature_p.data.zero_()
    (layer(torch.randn(64, 5)).pow(2).sum() + layer.penalty(64)).backward()
    assert layer.feature_p.grad is not None and (layer.feature_p.grad != 0).all()


def build(name: str, body: str, labels=("label",)):
    text = FEATURES + "model_config {" + body + VD + "}"
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    features = create_features(config.feature_configs)
    return BaseModel.create_class(name)(config.model_config, features, list(labels))


def test_every_group_of_two_or_more_features_gets_a_rate_and_a_loss_term():
    body = MODEL_CONFIGS["DeepFM"] + " metrics { auc {} } losses { binary_cross_entropy {} }"
    model = build("DeepFM", body)
    groups = model.embedding_group.variational_dropouts
    assert sorted(groups) == ["deep", "fm", "wide"]
    assert groups["deep"].feature_names == ["user", "item", "tags", "price"]
    batch = make_batch(6)
    total, (losses, _, _) = TrainWrapper(model)(batch)
    terms = {f"{g}_feature_p_loss" for g in groups}
    assert terms <= set(losses)
    for g in groups:
        expected = 0.5 / 6 * (1 - groups[g].dropout_rates()).sum()
        torch.testing.assert_close(losses[f"{g}_feature_p_loss"], expected.detach())
    assert float(total) == pytest.approx(sum(float(v) for v in losses.values()), rel=1e-6)
    total.backward()
    assert all(groups[g].feature_p.grad is not None for g in groups)
    # without the setting: no rates, no terms
    plain = BaseModel.create_class("DeepFM")(
        text_format.Parse(
            FEATURES + "model_config {" + body + "}", pipeline_pb2.EasyRecConfig()
        ).model_config,
        create_features(text_format.Parse(FEATURES, pipeline_pb2.EasyRecConfig()).feature_configs),
        ["label"],
    )
    _, (plain_losses, _, _) = TrainWrapper(plain)(batch)
    assert not any(k.endswith("_feature_p_loss") for k in plain_losses)


def test_sequence_groups_and_single_feature_groups_have_no_rates():
    din = build("MultiTowerDIN", MODEL_CONFIGS["MultiTowerDIN"])
    assert list(din.embedding_group.variational_dropouts) == ["user"]
    dlrm = build("DLRM", MODEL_CONFIGS["DLRM"])
    assert list(dlrm.embedding_group.variational_dropouts) == ["sparse"]


def test_match_model_towers_get_rates():
    model = build("DSSM", MATCH_MODEL_CONFIGS["DSSM"], labels=())
    _, (losses, _, _) = TrainWrapper(model)(make_batch(6))
    assert {"user_feature_p_loss", "item_feature_p_loss"} <= set(losses)
    with torch.no_grad():
        model.user_embedding_group.variational_dropouts["user"].feature_p.fill_(3.0)
    # the exported tower scales by the trained rates
    tower = model.tower_module("user")
    copied = next(m for m in tower.modules() if isinstance(m, FeatureDropout))
    assert copied.feature_p.tolist() == [3.0, 3.0]


def test_negative_lambda_is_a_config_error_at_its_field():
    body = MODEL_CONFIGS["MaskNet"] + " metrics { auc {} } losses { binary_cross_entropy {} }"
    bad = FEATURES + "model_config {" + body + VD.replace("0.5", "-1") + "}"
    config = text_format.Parse(bad, pipeline_pb2.EasyRecConfig())
    with pytest.raises(ConfigError) as info:
        BaseModel.create_class("MaskNet")(
            config.model_config, create_features(config.feature_configs), ["label"]
        )
    assert info.value.field == "model_config.variational_dropout.regularization_lambda"


# ------------------------------------------------------------------ recforge feature-selection
def write_run(tmp_path, vd: bool = True) -> str:
    """A config and a checkpoint in which 'item' is dropped most and 'user' least."""
    body = MODEL_CONFIGS["MaskNet"] + " metrics { auc {} } losses { binary_cross_entropy {} }"
    text = FEATURES.replace("FG_DAG", 'FG_DAG label_fields: "label"')
    text += f'model_dir: "{tmp_path / "model"}"\n'
    text += "model_config {" + body + (VD if vd else "") + "}"
    config_path = tmp_path / "train.config"
    config_path.write_text(text)
    config = load_pipeline_config(str(config_path))
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("MaskNet")(config.model_config, features, ["label"])
    if vd:
        with torch.no_grad():
            rates = torch.tensor([0.1, 0.9, 0.5, 0.3])  # user, item, tags, price
            model.embedding_group.variational_dropouts["all"].feature_p.copy_(torch.logit(rates))
    ckpt_util.save_checkpoint(str(tmp_path / "model"), 5, TrainWrapper(model), None, {})
    return str(config_path)


def run(config: str, output_dir, **flags) -> dict:
    parser = argparse.ArgumentParser()
    feature_selection.add_arguments(parser)
    argv = ["--config", config, "--output_dir", str(output_dir)]
    for key, value in flags.items():
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return feature_selection.main(parser.parse_args(argv))


def test_feature_selection_ranks_and_prunes(tmp_path):
    config = write_run(tmp_path)
    out = tmp_path / "selected"
    summary = run(config, out, topk=2, clear_variational_dropout=True)
    assert list(summary["rankings"]["all"]) == ["user", "price", "tags", "item"]
    with open(out / "feature_dropout_ratio_all.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["feature_name", "mean_drop_p"]
    assert [r[0] for r in rows[1:]] == ["user", "price", "tags", "item"]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([0.1, 0.3, 0.5, 0.9], abs=1e-6)
    pruned = load_pipeline_config(str(out / "train.config"))
    assert list(pruned.model_config.feature_groups[0].feature_names) == ["user", "price"]
    names = [getattr(f, f.WhichOneof("feature")).feature_name for f in pruned.feature_configs]
    assert names == ["user", "price"]  # features no group reads are dropped
    assert not pruned.model_config.HasField("variational_dropout")
    assert sorted(os.listdir(out)) == ["feature_dropout_ratio_all.csv", "train.config"]


def test_feature_selection_bad_inputs(tmp_path):
    config = write_run(tmp_path, vd=False)
    with pytest.raises(ConfigError) as info:
        run(config, tmp_path / "out")
    assert info.value.field == "model_config.variational_dropout"
    # the config now asks for rates that its checkpoint lacks
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("model_config {", "model_config {" + VD, 1))
    with pytest.raises(CheckpointError, match="no dropout rates"):
        run(config, tmp_path / "out")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run(config, tmp_path / "out", model_dir=tmp_path / "empty")
    with pytest.raises(ConfigError, match="overwrite the input config"):
        run(config, tmp_path)
    with pytest.raises(ConfigError, match="--topk"):
        run(config, tmp_path / "out", topk=0)


def test_exported_model_scales_by_the_learned_rates():
    from recforge.datasets.data_parser import DataParser
    from recforge.export.scripting import script_model
    from recforge.features import create_pipeline_features
    from tests.helpers.export_util import make_table

    body = MODEL_CONFIGS["MaskNet"] + " metrics { auc {} } losses { binary_cross_entropy {} }"
    config = text_format.Parse(
        FEATURES + "model_config {" + body + VD + "}", pipeline_pb2.EasyRecConfig()
    )
    features = create_pipeline_features(config)
    model = BaseModel.create_class("MaskNet")(config.model_config, features, ["label"]).eval()
    parser = DataParser(features)
    parsed = parser.parse(make_table(5, labels=()).to_batches()[0])
    scripted = script_model(model)
    with torch.no_grad():
        eager = model.predict(parser.to_batch(parsed))["probs"]
        torch.testing.assert_close(scripted(parsed)["probs"], eager)
        model.embedding_group.variational_dropouts["all"].feature_p.fill_(-5.0)
        assert not torch.allclose(model.predict(parser.to_batch(parsed))["probs"], eager)


def test_pareto_weighting_adds_the_terms_unweighted():
    from tests.helpers.multi_task import two_label_batch
    from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS

    model = build("MMoE", MULTI_TASK_MODEL_CONFIGS["MMoE"], labels=("label", "label_cvr"))
    model.model_config.use_pareto_loss_weight = True
    total, (losses, _, _) = TrainWrapper(model)(two_label_batch())
    weighted = sum(
        float(losses[f"pareto_weight_{t}"]) * float(losses[k])
        for t in ("ctr", "cvr")
        for k in losses
        if k.endswith(f"_{t}") and not k.startswith("pareto_weight")
    )
    assert float(total) == pytest.approx(weighted + float(losses["all_feature_p_loss"]), rel=1e-5)
