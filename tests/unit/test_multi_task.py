"""Multi-task ranking: SimpleMultiTask, MMoE, PLE, DBMTL, Pareto loss weighting, demo runs."""

import itertools

import pytest
import torch

from recforge.config import ConfigError
from recforge.demo.configs import load_example_config
from recforge.demo.simulate import simulate_demo_table
from recforge.loss.pareto import min_norm_weights
from recforge.models.model import PredictWrapper, TrainWrapper
from tests.helpers.models import make_batch
from tests.helpers.multi_task import (
    LABELS,
    build,
    two_label_batch,
)
from tests.helpers.multi_task_configs import MULTI_TASK_MODEL_CONFIGS

MODELS = sorted(MULTI_TASK_MODEL_CONFIGS)


@pytest.mark.parametrize("model_name", MODELS)
def test_multi_task_model_predict_loss_backward(model_name):
    model = build(model_name)
    batch = two_label_batch()
    total, (losses, predictions, _) = TrainWrapper(model)(batch)
    for task in ("ctr", "cvr"):
        for key in ("logits", "probs", "y"):
            assert predictions[f"{key}_{task}"].shape == (8,), key
        assert ((predictions[f"probs_{task}"] > 0) & (predictions[f"probs_{task}"] < 1)).all()
    cvr_loss = "binary_cross_entropy_cvr" if model_name == "DBMTL" else "binary_focal_loss_cvr"
    assert set(losses) == {"binary_cross_entropy_ctr", cvr_loss}
    assert float(total) == pytest.approx(sum(float(v) for v in losses.values()), rel=1e-6)
    total.backward()
    trainable, _ = model.sparse_parameters()
    assert all(p.grad is not None for p in trainable)
    dense = [(n, p) for n, p in model.named_parameters() if "embedding_bags" not in n]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in dense), [
        n for n, p in dense if p.grad is None
    ]
    model.update_metric(predictions, batch, losses)
    metrics = model.compute_metric()
    expected = {"auc_ctr", "binary_cross_entropy_ctr", "auc_cvr", cvr_loss}
    if model_name != "DBMTL":
        expected.add("normalized_entropy_cvr")
    assert set(metrics) == expected
    for name in losses:
        assert float(metrics[name]) == pytest.approx(float(losses[name]), rel=1e-5)
    _, (outputs, _) = PredictWrapper(model.eval(), output_cols=["probs_cvr"])(batch)
    assert list(outputs) == ["probs_cvr"]


def test_task_weight_sample_weight_and_task_space():
    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "price"] }
      simple_multi_task {
        task_towers { tower_name: "ctr" label_name: "label" }
        task_towers {
          tower_name: "cvr" label_name: "label_cvr" weight: 3.0 sample_weight_name: "w"
          task_space_indicator_label: "label" in_task_space_weight: 1.0 out_task_space_weight: 0.5
        }
      }"""
    model = build("SimpleMultiTask", body, sample_weights=["w"])
    batch = two_label_batch()
    batch.sample_weights["w"] = torch.arange(1, 9).float()
    predictions = model.predict(batch)
    losses = model.loss(predictions, batch)
    per_sample = torch.nn.functional.binary_cross_entropy_with_logits(
        predictions["logits_cvr"], batch.labels["label_cvr"], reduction="none"
    )
    weight = batch.sample_weights["w"] * torch.where(batch.labels["label"] > 0, 1.0, 0.5)
    expected = 3.0 * (per_sample * weight).sum() / weight.sum()
    assert float(losses["binary_cross_entropy_cvr"]) == pytest.approx(float(expected), rel=1e-5)
    assert model.task_losses(losses).keys() == {"ctr", "cvr"}


def test_task_defaults_come_from_the_model_config():
    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "price"] }
      simple_multi_task {
        task_towers { tower_name: "ctr" label_name: "label" }
        task_towers { tower_name: "cvr" label_name: "label_cvr" }
      }
      metrics { auc {} }"""
    model = build("SimpleMultiTask", body)
    assert set(model._loss_modules) == {"binary_cross_entropy_ctr", "binary_cross_entropy_cvr"}
    assert {"auc_ctr", "auc_cvr"} <= set(model._metric_modules)


def test_multi_class_task_and_jrc_loss():
    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "price"] }
      simple_multi_task {
        task_towers {
          tower_name: "ctr" label_name: "label" num_class: 2
          losses { jrc_loss { session_name: "session" alpha: 0.5 } } metrics { auc {} }
        }
        task_towers {
          tower_name: "kind" label_name: "kind" num_class: 3
          losses { softmax_cross_entropy { label_smoothing: 0.1 } }
          metrics { recall_at_k { top_k: 2 } }
        }
      }"""
    model = build("SimpleMultiTask", body, labels=["label", "kind"])
    batch = make_batch(8)
    batch.labels["kind"] = (torch.arange(8) % 3).float()
    batch.extras["session"] = torch.arange(8) // 4
    predictions = model.predict(batch)
    assert predictions["probs_ctr"].shape == (8, 2) and predictions["probs_kind"].shape == (8, 3)
    losses = model.loss(predictions, batch)
    assert set(losses) == {"jrc_loss_ctr", "softmax_cross_entropy_kind"}
    model.update_metric(predictions, batch, losses)
    assert {"auc_ctr", "recall_at_k_kind"} <= set(model.compute_metric())


@pytest.mark.parametrize(
    "body, message",
    [
        (
            'simple_multi_task { task_towers { tower_name: "ctr" label_name: "click" } }',
            "'click', which is not in data_config.label_fields",
        ),
        ("simple_multi_task { }", "at least one task_towers"),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label" }'
            ' task_towers { tower_name: "a" label_name: "label_cvr" } }',
            "unique",
        ),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label"'
            ' sample_weight_name: "w" } }',
            "sample_weight_fields",
        ),
        (
            'dbmtl { task_towers { tower_name: "ctr" relation_tower_names: "cvr"'
            ' relation_mlp { hidden_units: [4] } } task_towers { tower_name: "cvr" } }',
            "defined before it",
        ),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label"'
            ' pareto_min_loss_weight: 0.7 } task_towers { tower_name: "b" label_name: '
            '"label_cvr" pareto_min_loss_weight: 0.7 } }',
            "sum to at most 1",
        ),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label" num_class: 3'
            " losses { binary_cross_entropy {} } } }",
            "binary_cross_entropy needs num_class: 1, found num_class: 3",
        ),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label"'
            " losses { jrc_loss { session_name: 's' } } } }",
            "jrc_loss needs num_class: 2",
        ),
        (
            'simple_multi_task { task_towers { tower_name: "a" label_name: "label"'
            " metrics { xauc {} } num_class: 2 losses { softmax_cross_entropy {} } } }",
            "task 'a': xauc ranks regression outputs",
        ),
    ],
)
def test_bad_task_configs_are_clear_errors(body, message):
    body = 'feature_groups { group_name: "all" feature_names: ["user", "price"] } ' + body
    name = "DBMTL" if "dbmtl" in body else "SimpleMultiTask"
    with pytest.raises(ConfigError, match=message):
        build(name, body)


def test_dbmtl_labels_default_to_label_fields_order():
    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "price"] }
      dbmtl {
        bottom_mlp { hidden_units: [8] }
        task_towers { tower_name: "ctr" }
        task_towers {
          tower_name: "cvr" relation_tower_names: "ctr" relation_mlp { hidden_units: [4] }
        }
      }"""
    model = build("DBMTL", body)
    assert [t.label for t in model._tasks] == LABELS
    assert model.relation_mlps["cvr"].mlp[0].in_features == 8 + 8


def test_config_error_names_the_field():
    with pytest.raises(ConfigError) as info:
        build(
            "SimpleMultiTask",
            'feature_groups { group_name: "all" feature_names: ["user"] }'
            ' simple_multi_task { task_towers { tower_name: "x y" label_name: "label" } }',
        )
    assert info.value.field == "model_config.simple_multi_task.task_towers[0].tower_name"


# ------------------------------------------------------------------------------------ Pareto
def brute_force_weights(gram: torch.Tensor, lower: list, steps: int = 200) -> float:
    """Smallest w^T G w over a grid of the bounded simplex (3 tasks)."""
    best = float("inf")
    free = 1 - sum(lower)
    for i, j in itertools.product(range(steps + 1), repeat=2):
        if i + j > steps:
            continue
        u = torch.tensor([i, j, steps - i - j], dtype=torch.float64) / steps
        w = torch.tensor(lower, dtype=torch.float64) + free * u
        best = min(best, float(w @ gram @ w))
    return best


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_pareto_weights_are_a_bounded_convex_combination(num_tasks):
    g = torch.Generator().manual_seed(num_tasks)
    for trial in range(20):
        grads = torch.randn(num_tasks, 7, generator=g, dtype=torch.float64)
        grads[0] *= 1 + 4 * trial / 20  # one task's gradient dominates more and more
        lower = (torch.rand(num_tasks, generator=g, dtype=torch.float64) * 0.8 / num_tasks).tolist()
        weights = min_norm_weights(grads @ grads.T, lower)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
        assert all(w >= c - 1e-9 for w, c in zip(weights.tolist(), lower))
        norm = float(weights @ (grads @ grads.T) @ weights)
        for _ in range(50):  # no random feasible point does better
            u = torch.rand(num_tasks, generator=g, dtype=torch.float64)
            other = torch.tensor(lower, dtype=torch.float64) + (1 - sum(lower)) * u / u.sum()
            assert norm <= float(other @ (grads @ grads.T) @ other) + 1e-7


def test_pareto_three_tasks_reach_the_minimum():
    grads = torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [-0.6, 0.1, 1.0]], dtype=torch.float64)
    gram = grads @ grads.T
    for lower in ([0.0, 0.0, 0.0], [0.1, 0.3, 0.2]):
        weights = min_norm_weights(gram, lower)
        assert float(weights @ gram @ weights) <= brute_force_weights(gram, lower) + 1e-6


def test_pareto_two_task_closed_form():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    grads = torch.stack([g1, g2]).double()
    assert min_norm_weights(grads @ grads.T).tolist() == pytest.approx([0.9, 0.1])
    # a lower bound above the optimum is active
    assert min_norm_weights(grads @ grads.T, [0.0, 0.3]).tolist() == pytest.approx([0.7, 0.3])
    # opposite gradients: the combination that cancels them
    opposite = torch.tensor([[2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    w = min_norm_weights(opposite @ opposite.T)
    assert w.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_pareto_identical_tasks_get_equal_weights():
    grad = torch.randn(1, 5, dtype=torch.float64)
    for k in (2, 3, 4):
        grads = grad.repeat(k, 1)
        assert min_norm_weights(grads @ grads.T).tolist() == pytest.approx([1 / k] * k)


def test_train_wrapper_with_pareto_weights():
    model = build("MMoE", pareto=True)
    total, (losses, _, _) = TrainWrapper(model)(two_label_batch())
    weights = {k: float(v) for k, v in losses.items() if k.startswith("pareto_weight_")}
    assert set(weights) == {"pareto_weight_ctr", "pareto_weight_cvr"}
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(w >= 0 for w in weights.values())
    expected = (
        weights["pareto_weight_ctr"] * losses["binary_cross_entropy_ctr"]
        + weights["pareto_weight_cvr"] * losses["binary_focal_loss_cvr"]
    )
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    total.backward()  # the graph survives the per-task gradients
    assert all(p.grad is not None for p in model.mmoe.parameters())
    # eval mode: plain sum, no weights
    _, (losses, _, _) = TrainWrapper(model.eval())(two_label_batch())
    assert not any(k.startswith("pareto_weight_") for k in losses)


def test_train_wrapper_pareto_respects_lower_bounds():
    body = MULTI_TASK_MODEL_CONFIGS["MMoE"].replace(
        'tower_name: "cvr"', 'tower_name: "cvr" pareto_min_loss_weight: 0.9'
    )
    model = build("MMoE", body, pareto=True)
    _, (losses, _, _) = TrainWrapper(model)(two_label_batch())
    assert float(losses["pareto_weight_cvr"]) >= 0.9 - 1e-6


def test_pareto_two_identical_tasks_in_a_model_get_equal_weights():
    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      mmoe {
        expert_mlp { hidden_units: [16, 8] } num_expert: 3
        task_towers { tower_name: "a" label_name: "label" mlp { hidden_units: [8] } }
        task_towers { tower_name: "b" label_name: "label" mlp { hidden_units: [8] } }
      }"""
    model = build("MMoE", body, pareto=True)
    model.towers[1].load_state_dict(model.towers[0].state_dict())
    model.mmoe.gates[1].load_state_dict(model.mmoe.gates[0].state_dict())
    _, (losses, _, _) = TrainWrapper(model)(two_label_batch())
    assert float(losses["pareto_weight_a"]) == pytest.approx(0.5, abs=1e-6)
    assert float(losses["pareto_weight_b"]) == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------------------------ demo
def test_demo_data_has_a_correlated_conversion_label():
    table, _ = simulate_demo_table(20000)
    click = table["label"].to_numpy()
    convert = table["label_cvr"].to_numpy()
    assert (convert <= click).all()  # only a click converts
    assert 0.05 < convert.mean() < 0.2 and 0.15 < convert[click == 1].mean() < 0.6


@pytest.mark.parametrize("model", ["simple_multi_task", "mmoe", "ple", "dbmtl"])
def test_multi_task_example_configs_read_both_labels(model):
    config = load_example_config(f"{model}_demo")
    assert list(config.data_config.label_fields) == LABELS
    assert config.model_config.WhichOneof("model") == model
    deepfm = load_example_config("deepfm_demo")
    assert list(config.feature_configs) == list(deepfm.feature_configs)
