"""grouped_xauc: XAUC within each group, averaged with the groups' sample counts as weights."""

import pytest
import torch
from google.protobuf import text_format

from recforge.features import create_features
from recforge.metrics import create_metric, grouping_keys
from recforge.metrics.ranking import GroupedXAUC
from recforge.models.model import BaseModel
from recforge.protos import metric_pb2, model_pb2, pipeline_pb2
from tests.helpers.models import FEATURES, make_batch
from tests.unit.test_metrics import data, parse, xauc_brute_force


def grouped_brute_force(preds, target, group) -> float:
    """Sample-weighted mean over groups with two different targets of each group's XAUC."""
    total, weight = 0.0, 0
    for g in sorted(set(group.tolist())):
        rows = group == g
        if len(set(target[rows].tolist())) < 2:
            continue
        total += xauc_brute_force(preds[rows].tolist(), target[rows].tolist()) * int(rows.sum())
        weight += int(rows.sum())
    return total / weight


def groups_of(n: int, num_groups: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, num_groups, (n,), generator=torch.Generator().manual_seed(seed))


def test_small_groups_are_exact_and_batches_accumulate():
    preds, target = data(200)
    group = groups_of(200, 25) * 7 + 3  # sparse, unordered ids
    target[group == group[0]] = 4.0  # one group with a single target value: left out
    metric = create_metric(parse('grouped_xauc { grouping_key: "user" max_pairs_per_group: 1000 }'))
    assert (metric.prediction_key, metric.group_key) == ("y", "user")
    metric.update(preds[:90], target[:90], group[:90])
    metric.update(preds[90:], target[90:], group[90:])
    expected = grouped_brute_force(preds, target, group)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_large_groups_are_sampled_reproducibly_close_to_exact():
    preds, target = data(3000, seed=4)
    group = groups_of(3000, 3, seed=1)  # about 1000 rows (500k pairs) a group
    sampled = GroupedXAUC(max_pairs_per_group=20000)
    sampled.update(preds, target, group)
    value = float(sampled.compute())
    exact = GroupedXAUC(max_pairs_per_group=10**7)
    exact.update(preds, target, group)
    assert value == pytest.approx(float(exact.compute()), abs=0.01)
    assert float(sampled.compute()) == value  # a fixed seed: the same pairs every time
    # the default 100 pairs a group is a rough estimate, but of the same quantity
    rough = GroupedXAUC()
    rough.update(preds, target, group)
    assert float(rough.compute()) == pytest.approx(float(exact.compute()), abs=0.1)


def test_predictions_that_order_each_group_score_one_even_when_groups_disagree():
    target = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    preds = torch.tensor([5.0, 6.0, 7.0, 1.0, 2.0, 3.0])  # right within groups, not across
    metric = GroupedXAUC()
    metric.update(preds, target, group)
    assert float(metric.compute()) == 1.0
    reversed_metric = GroupedXAUC()
    reversed_metric.update(-preds, target, group)
    assert float(reversed_metric.compute()) == 0.0
    nothing = GroupedXAUC()
    nothing.update(preds, torch.ones(6), group)
    assert float(nothing.compute()) == 0.5


def test_config_checks_and_grouping_keys():
    with pytest.raises(ValueError, match="grouping_key"):
        create_metric(parse("grouped_xauc {}"))
    with pytest.raises(ValueError, match="max_pairs_per_group"):
        GroupedXAUC(0)
    config = text_format.Parse(
        'metrics { grouped_xauc { grouping_key: "user" } }', model_pb2.ModelConfig()
    )
    assert grouping_keys(config) == ["user"]
    assert isinstance(
        create_metric(parse('grouped_xauc { grouping_key: "u" }')).metric, GroupedXAUC
    )
    assert metric_pb2.GroupedXAUC().max_pairs_per_group == 100  # TorchEasyRec's default


def test_a_regression_model_scores_grouped_xauc_of_its_batch():

    body = """
      feature_groups { group_name: "all" feature_names: ["user", "item", "tags", "price"] }
      dcn_v1 { cross { cross_num: 1 } deep { hidden_units: [8] } final { hidden_units: [4] } }
      losses { l2_loss {} }
      metrics { grouped_xauc { grouping_key: "session" } }"""
    config = text_format.Parse(
        FEATURES + "model_config {" + body + "}", pipeline_pb2.EasyRecConfig()
    )
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("DCNV1")(config.model_config, features, ["label"])
    batch = make_batch(12)
    batch.labels["label"] = torch.arange(12.0) % 5
    batch.extras["session"] = torch.arange(12) // 4
    with torch.no_grad():
        predictions = model.eval().predict(batch)
    model.update_metric(predictions, batch)
    expected = grouped_brute_force(predictions["y"], batch.labels["label"], batch.extras["session"])
    assert float(model.compute_metric()["grouped_xauc"]) == pytest.approx(expected, abs=1e-6)
