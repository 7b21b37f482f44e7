"""PEPNet's gates and domain towers, WuKong's layers, RocketLaunching's distillation."""

import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.errors import DataError
from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.modules.personalized_net import EPNet, GateNU, PPNet
from recforge.modules.wukong import FactorizationMachineBlock, LinearCompressBlock, WuKongLayer
from recforge.protos import module_pb2, pipeline_pb2
from tests.helpers.models import MODEL_CONFIGS, build, make_batch
from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS


# ------------------------------------------------------------------ PEPNet
def build_pepnet(body: str, labels=("label", "label_cvr", "domain")):
    from tests.helpers.multi_task import make_config

    config = make_config("PEPNet", body)
    features = create_features(config.feature_configs)
    return BaseModel.create_class("PEPNet")(config.model_config, features, list(labels))


def domain_body(num_domains: int = 3) -> str:
    return MULTI_TASK_MODEL_CONFIGS["PEPNet"].replace(
        "pepnet {", f'pepnet {{ domain_input_name: "domain" task_domain_num: {num_domains}'
    )


def domain_batch(domains: list[int]):
    batch = make_batch(len(domains))
    batch.labels["label_cvr"] = batch.labels["label"].flip(0)
    batch.labels["domain"] = torch.tensor(domains, dtype=torch.float32)
    return batch


def test_gate_unit_is_bounded_by_gamma():
    gate = GateNU(4, 8, 3, gamma=0.5)
    values = gate(torch.randn(100, 4) * 10)
    assert values.shape == (100, 3) and (values > 0).all() and (values < 0.5).all()


def test_epnet_scales_the_embeddings_by_a_gate_of_the_domain():
    epnet = EPNet(main_dim=6, domain_dim=2, hidden_dim=4)
    main = torch.randn(5, 6, requires_grad=True)
    domain = torch.randn(5, 2)
    out = epnet(main, domain)
    gate = epnet.gate(torch.cat([domain, main.detach()], dim=1))
    torch.testing.assert_close(out, gate * main)
    assert not torch.allclose(out, epnet(main, domain + 1))  # another domain, another scale
    # the gate input is detached: d out / d main is the gate itself
    out.sum().backward()
    torch.testing.assert_close(main.grad, gate.detach())


def test_ppnet_gates_each_task_layer_with_the_personalisation_input():
    ppnet = PPNet(6, 3, num_task=2, hidden_units=[5, 4], activation="nn.ReLU")
    main, uia = torch.randn(7, 6), torch.randn(7, 3)
    outputs = ppnet(main, uia)
    assert [o.shape for o in outputs] == [(7, 4), (7, 4)]
    assert not torch.allclose(outputs[0], outputs[1])  # one MLP per task
    assert not torch.allclose(outputs[0], ppnet(main, uia + 1)[0])  # the gates personalise
    layer = ppnet.tasks[0][0]
    gate_input = torch.cat([uia, main], dim=1)
    expected = torch.relu(layer.linear(main)) * layer.gate(gate_input)
    torch.testing.assert_close(layer(main, gate_input), expected)
    assert torch.jit.script(ppnet)(main, uia)[1].shape == (7, 4)


def test_pepnet_without_domain_or_uia_groups_is_towers_over_all():
    body = MULTI_TASK_MODEL_CONFIGS["PEPNet"].replace('group_name: "domain"', 'group_name: "d"')
    body = body.replace('group_name: "uia"', 'group_name: "u"')
    model = build_pepnet(body)
    assert model.epnet is None and model.ppnet is None
    assert model.towers[0].mlp.mlp[0].in_features == 8 * 3 + 1  # user, item, tags, price


def test_pepnet_domain_towers_score_each_sample_with_its_own_domain():
    model = build_pepnet(domain_body(3))
    assert len(model.towers) == 6
    batch = domain_batch([0, 1, 2, 2, 1, 0])
    predictions = model.predict(batch)
    assert list(predictions) == model.output_names
    assert {"probs_ctr_0", "probs_ctr_2", "logits_cvr_1", "y_cvr_2"} <= set(predictions)
    losses = model.loss(predictions, batch)
    assert set(losses) == {"binary_cross_entropy_ctr", "binary_focal_loss_cvr"}
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    logits = torch.stack([predictions[f"logits_ctr_{d}"] for d in range(3)], dim=1)
    own = logits[torch.arange(6), index]
    expected = F.binary_cross_entropy_with_logits(own, batch.labels["label"])
    torch.testing.assert_close(losses["binary_cross_entropy_ctr"], expected)
    model.update_metric(predictions, batch, losses)
    assert {"auc_ctr", "auc_cvr"} <= set(model.compute_metric())
    total, _ = TrainWrapper(model)(batch)
    total.backward()
    assert all(model.towers[i].output.weight.grad is not None for i in range(6))


def test_pepnet_domain_towers_script_for_export():
    from recforge.datasets.data_parser import DataParser
    from recforge.export.scripting import script_model
    from recforge.features import create_pipeline_features
    from tests.helpers.export_util import make_table
    from tests.helpers.multi_task import make_config

    config = make_config("PEPNet", domain_body(2))
    features = create_pipeline_features(config)  # FG_DAG: reads the raw table columns
    model = BaseModel.create_class("PEPNet")(
        config.model_config, features, ["label", "label_cvr", "domain"]
    ).eval()
    parser = DataParser(features)
    parsed = parser.parse(make_table(7, labels=()).to_batches()[0])
    scripted = script_model(model)
    with torch.no_grad():
        eager = model.predict(parser.to_batch(parsed))
        outputs = scripted(parsed)
    assert sorted(outputs) == sorted(model.output_names) and "probs_cvr_1" in outputs
    for name, value in eager.items():
        torch.testing.assert_close(outputs[name], value)


def test_pepnet_domain_out_of_range_is_a_data_error():
    model = build_pepnet(domain_body(2))
    batch = domain_batch([0, 1, 2, 0])
    with pytest.raises(DataError, match=r"'domain'.*0\.\.1 \(task_domain_num\), found 2"):
        model.loss(model.predict(batch), batch)


def test_pepnet_domain_input_must_be_a_label():
    with pytest.raises(ConfigError) as info:
        build_pepnet(domain_body(2), labels=("label", "label_cvr"))
    assert info.value.field == "model_config.pepnet.domain_input_name"


def test_pepnet_ppnet_settings_are_config_errors():
    body = MULTI_TASK_MODEL_CONFIGS["PEPNet"].replace("ppnet_dropout_ratio: [0.1]", "")
    body = body.replace("ppnet_hidden_units: [16, 8]", "ppnet_dropout_ratio: [0.1, 0.2]")
    with pytest.raises(ConfigError) as info:
        build_pepnet(body)
    assert info.value.field == "model_config.pepnet.ppnet_hidden_units"


def test_mock_data_writes_domain_indices_for_the_domain_label():
    from recforge.datasets.mock_data import label_specs
    from tests.helpers.multi_task import make_config

    config = make_config("PEPNet", domain_body(3))
    config.data_config.label_fields.extend(["label", "label_cvr", "domain"])
    specs = label_specs(config)
    assert specs["domain"].num_class == 3 and specs["label"].num_class == 1


# ------------------------------------------------------------------ WuKong
def test_linear_compress_block_mixes_the_vectors():
    lcb = LinearCompressBlock(3, 2)
    x = torch.randn(4, 3, 5)
    expected = torch.stack([sum(lcb.weight[n, m] * x[:, n] for n in range(3)) for m in range(2)], 1)
    torch.testing.assert_close(lcb(x), expected)


def test_fm_block_reads_dot_products_with_compressed_vectors():
    mlp = module_pb2.MLP(hidden_units=[6])
    fmb = FactorizationMachineBlock(dim=5, num_in=3, num_out=2, compressed_num=2, mlp=mlp)
    x = torch.randn(4, 3, 5)
    compressed = [sum(fmb.compress[n, k] * x[:, n] for n in range(3)) for k in range(2)]
    dots = torch.stack(
        [(x[:, n] * compressed[k]).sum(1) for n in range(3) for k in range(2)], dim=1
    )
    expected = fmb.project(fmb.mlp(fmb.norm(dots))).view(4, 2, 5)
    torch.testing.assert_close(fmb(x), expected)


def test_wukong_layer_residual_projects_only_when_the_count_changes():
    mlp = module_pb2.MLP(hidden_units=[4])
    same = WuKongLayer(5, 4, 2, 2, 3, mlp)
    assert same.residual is None
    x = torch.randn(3, 4, 5)
    expected = same.norm(torch.cat([same.fmb(x), same.lcb(x)], dim=1) + x)
    torch.testing.assert_close(same(x), expected)
    grown = WuKongLayer(5, 4, 3, 2, 3, mlp)
    assert grown.residual is not None and grown(x).shape == (3, 5, 5)


@pytest.mark.parametrize(
    "old, new, field",
    [
        (
            "dense_mlp { hidden_units: [8] }",
            "dense_mlp { hidden_units: [4] }",
            "dense_mlp.hidden_units",
        ),
        ("final { hidden_units: [8] }", "", "final"),
        ("feature_num_mlp { hidden_units: [8] }", "", "wukong_layers[0]"),
    ],
)
def test_wukong_settings_are_config_errors_at_their_field(old, new, field):
    body = MODEL_CONFIGS["WuKong"]
    assert old in body
    with pytest.raises(ConfigError) as info:
        build("WuKong", body.replace(old, new, 1))
    assert info.value.field == f"model_config.wukong.{field}"


# ------------------------------------------------------------------ RocketLaunching
def rocket(function: str = "COSINE"):
    body = MODEL_CONFIGS["RocketLaunching"].replace(
        "feature_based_distillation: true",
        f"feature_based_distillation: true feature_distillation_function: {function}",
    )
    return build("RocketLaunching", body)


def test_rocket_launching_serves_the_light_net_and_trains_both():
    model = rocket()
    batch = make_batch()
    with torch.no_grad():
        assert list(model.eval().predict(batch)) == ["logits_light", "probs_light", "y_light"]
    predictions = model.train().predict(batch)
    assert {"logits_booster", "probs_booster", "light_0", "booster_1"} <= set(predictions)
    losses = model.loss(predictions, batch)
    hint = F.mse_loss(predictions["logits_light"], predictions["logits_booster"])
    torch.testing.assert_close(losses["hint_l2_loss"], hint)
    light, booster = predictions["light_0"], predictions["booster_1"]
    cosine = -0.1 * F.cosine_similarity(light, booster, dim=1).mean()
    torch.testing.assert_close(losses["similarity_0_1"], cosine)
    model.eval()
    with torch.no_grad():
        eval_losses = model.loss(model.predict(batch), batch)
    assert set(eval_losses) == {"binary_cross_entropy_light"}


def test_rocket_launching_light_losses_do_not_train_the_shared_part_or_the_booster():
    model = rocket("EUCLID")
    batch = make_batch()
    predictions = model.train().predict(batch)
    losses = model.loss(predictions, batch)
    light, booster = predictions["light_0"], predictions["booster_1"]
    torch.testing.assert_close(losses["similarity_0_1"], (light - booster).norm())
    light_total = sum(v for k, v in losses.items() if k != "binary_cross_entropy_booster")
    light_total.backward(retain_graph=True)
    shared = list(model.share_mlp.parameters()) + list(model.booster_mlp.parameters())
    shared += model.sparse_parameters()[0]
    assert all(p.grad is None for p in shared)
    assert model.light_mlp.mlp[0].weight.grad is not None
    losses["binary_cross_entropy_booster"].backward()
    assert all(p.grad is not None for p in shared)


def test_rocket_launching_sample_weights_weight_the_distillation():
    from tests.helpers.models import make_config

    config = make_config("RocketLaunching")
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("RocketLaunching")(
        config.model_config, features, ["label"], ["w"]
    )
    batch = make_batch()
    batch.sample_weights["w"] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    predictions = model.train().predict(batch)
    losses = model.loss(predictions, batch)
    gap = (predictions["logits_light"] - predictions["logits_booster"]).square()
    torch.testing.assert_close(losses["hint_l2_loss"], (gap[0] + gap[5]) / 2)


def test_rocket_launching_inner_product_is_refused():
    text = MODEL_CONFIGS["RocketLaunching"].replace(
        "feature_based_distillation: true",
        "feature_based_distillation: true feature_distillation_function: INNER_PRODUCT",
    )
    config = text_format.Parse("model_config {" + text + "}", pipeline_pb2.EasyRecConfig())
    problems = check_support(config)
    assert [p for p, _ in problems] == [
        "model_config.rocket_launching.feature_distillation_function"
    ]
    with pytest.raises(ConfigError) as info:
        build("RocketLaunching", text)
    assert info.value.field == "model_config.rocket_launching.feature_distillation_function"


def test_rocket_launching_needs_both_nets():
    body = MODEL_CONFIGS["RocketLaunching"].replace("light_mlp { hidden_units: [8] }", "")
    with pytest.raises(ConfigError) as info:
        build("RocketLaunching", body)
    assert info.value.field == "model_config.rocket_launching.light_mlp"


@pytest.mark.parametrize(
    "name",
    [
        "wukong_demo",
        "wukong_frappe",
        "rocket_launching_demo",
        "rocket_launching_frappe",
        "pepnet_demo",
    ],
)
def test_example_configs_validate(name):
    from recforge.config import load_pipeline_config, validate_config
    from tests.helpers.cli_util import example

    path = example(f"{name}.config")
    config = load_pipeline_config(path)
    validate_config(config, path)
    assert config.model_config.WhichOneof("model") == name.rsplit("_", 1)[0]
