"""NDCG@K and MRR within groups, calibration and expected calibration error (recforge
extension metrics, MetricConfig numbers 50-53)."""

import math

import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError, validate_config
from recforge.metrics import create_metric, grouping_keys
from recforge.protos import metric_pb2, model_pb2
from tests.helpers.models import make_config


def metric(text: str, num_class: int = 1):
    return create_metric(text_format.Parse(text, metric_pb2.MetricConfig()), num_class)


# group 0 ranks its positive second of three; group 1 ranks it first; group 2 has none
PREDS = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2, 0.5, 0.4])
LABELS = torch.tensor([0, 1, 0, 1, 0, 0, 0])
GROUPS = torch.tensor([0, 0, 0, 1, 1, 2, 2])


def test_grouped_ndcg_averages_groups_with_a_positive():
    m = metric('grouped_ndcg { grouping_key: "user" top_k: 2 }')
    m.update(PREDS, LABELS, GROUPS)
    assert m.group_key == "user"
    # group 0: the positive at rank 2 -> 1 / log2(3); group 1: at rank 1 -> 1; group 2 skipped
    assert float(m.compute()) == pytest.approx((1 / math.log2(3) + 1) / 2, rel=1e-5)
    cut = metric('grouped_ndcg { grouping_key: "user" top_k: 1 }')
    cut.update(PREDS, LABELS, GROUPS)
    assert float(cut.compute()) == pytest.approx(0.5)  # group 0's positive is below the cut


def test_grouped_mrr():
    m = metric('grouped_mrr { grouping_key: "user" }')
    m.update(PREDS, LABELS, GROUPS)
    assert float(m.compute()) == pytest.approx((1 / 2 + 1) / 2)


def test_calibration_and_its_error():
    m = metric("calibration {}")
    m.update(torch.tensor([0.2, 0.2, 0.6]), torch.tensor([0, 0, 1]))
    assert float(m.compute()) == pytest.approx(1.0)
    m.update(torch.tensor([0.5]), torch.tensor([0]))
    assert float(m.compute()) == pytest.approx(1.5)  # over-predicting
    two_logits = metric("calibration {}", num_class=2)
    two_logits.update(torch.tensor([[0.0, 0.5], [1.0, 0.0]]), torch.tensor([1, 0]))
    assert float(two_logits.compute()) == pytest.approx(0.5)
    ece = metric("calibration_error { num_bins: 1 }")
    ece.update(torch.tensor([0.9, 0.9]), torch.tensor([1, 0]))
    assert float(ece.compute()) == pytest.approx(0.4)  # mean prob 0.9, positive rate 0.5


def test_grouped_metrics_need_their_column_and_ask_for_it():
    with pytest.raises(ValueError, match="grouped_ndcg needs grouping_key"):
        metric("grouped_ndcg {}")
    with pytest.raises(ValueError, match="grouped_mrr needs grouping_key"):
        metric("grouped_mrr {}")
    with pytest.raises(ValueError, match="binary metric"):
        metric("calibration {}", num_class=3)
    config = model_pb2.ModelConfig()
    text_format.Parse(
        'metrics { grouped_ndcg { grouping_key: "user" } } metrics { grouped_mrr'
        ' { grouping_key: "session" } } metrics { auc {} }',
        config,
    )
    assert grouping_keys(config) == ["user", "session"]


def test_config_validation_places_a_missing_grouping_key():
    body = """feature_groups { group_name: "all" feature_names: ["user", "price"] }
    deepfm { deep { hidden_units: [4] } }
    metrics { grouped_mrr {} }"""
    config = make_config("DeepFM", body)
    config.data_config.label_fields.append("label")
    config.data_config.batch_size = 4
    with pytest.raises(ConfigError, match=r"metrics\[\d\].*grouping_key"):
        validate_config(config)
