"""A task tower's own ``train_metrics`` (TorchEasyRec's per-tower train metrics)."""

import pytest
import torch

from recforge.config import ConfigError
from recforge.config.support import check_support
from recforge.models.model import TrainWrapper
from tests.helpers.multi_task import build, make_config, two_label_batch

_FEATURES = 'feature_groups { group_name: "all" feature_names: ["user", "item", "price"] }'


def pairwise_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of (positive, negative) pairs the scores order right, ties counting half."""
    diff = scores[labels > 0][:, None] - scores[labels <= 0][None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def body(ctr_extra: str = "", cvr_extra: str = "", model_extra: str = "") -> str:
    return f"""
      {_FEATURES}
      simple_multi_task {{
        task_towers {{ tower_name: "ctr" label_name: "label" {ctr_extra} }}
        task_towers {{ tower_name: "cvr" label_name: "label_cvr" {cvr_extra} }}
      }}
      {model_extra}"""


def test_a_tower_s_train_metrics_score_its_own_label():
    model = build(
        "SimpleMultiTask",
        body(
            ctr_extra="train_metrics { auc { thresholds: 0 } decay_step: 100 }",
            cvr_extra="train_metrics { accuracy {} decay_step: 100 }",
        ),
    )
    assert set(model._train_metric_modules) == {"auc_ctr", "accuracy_cvr"}
    batch = two_label_batch()
    _, (_, predictions, _) = TrainWrapper(model)(batch)
    model.update_train_metric(predictions, batch)
    values = model.compute_train_metric()
    expected_auc = pairwise_auc(predictions["probs_ctr"].detach(), batch.labels["label"])
    assert float(values["auc_ctr"]) == pytest.approx(expected_auc, abs=1e-6)
    hits = (predictions["probs_cvr"].detach() > 0.5).float() == batch.labels["label_cvr"]
    assert float(values["accuracy_cvr"]) == pytest.approx(float(hits.float().mean()), abs=1e-6)


def test_the_model_s_train_metrics_stand_in_for_a_tower_without_its_own():
    model = build(
        "SimpleMultiTask",
        body(ctr_extra="train_metrics { accuracy {} }", model_extra="train_metrics { auc {} }"),
    )
    assert set(model._train_metric_modules) == {"accuracy_ctr", "auc_cvr"}


def test_tower_train_metrics_pass_validation_and_bad_ones_name_their_field():
    good = make_config("SimpleMultiTask", body(ctr_extra="train_metrics { auc {} }"))
    assert not [p for p, _ in check_support(good) if "train_metrics" in p]
    with pytest.raises(ConfigError, match=r"decay_rate must be in \[0, 1\)") as info:
        build("SimpleMultiTask", body(cvr_extra="train_metrics { auc {} decay_rate: 1.5 }"))
    assert "task_towers[1].train_metrics[0].decay_rate" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build("SimpleMultiTask", body(cvr_extra="train_metrics { }"))
    assert "task_towers[1].train_metrics[0]" in str(info.value)


def test_train_metric_decay_follows_the_tower_s_settings():
    model = build(
        "SimpleMultiTask",
        body(ctr_extra="train_metrics { auc { thresholds: 0 } decay_rate: 0.25 decay_step: 1 }"),
    )
    metric = model._train_metric_modules["auc_ctr"]
    assert (metric.decay_rate, metric.decay_step) == (0.25, 1)
    batch = two_label_batch()
    with torch.no_grad():
        predictions = model.predict(batch)
    model.update_train_metric(predictions, batch)
    first = float(model.compute_train_metric()["auc_ctr"])
    flipped = dict(predictions, probs_ctr=1 - predictions["probs_ctr"])
    model.update_train_metric(flipped, batch)
    # the second window's AUC is 1 - first: the reported value is 0.25 * first + 0.75 * (1 - first)
    assert float(model.compute_train_metric()["auc_ctr"]) == pytest.approx(
        0.25 * first + 0.75 * (1 - first), abs=1e-6
    )
