import itertools
import math

import pytest
import torch
from google.protobuf import text_format

from recforge.metrics import create_metric, grouping_keys, metric_name
from recforge.metrics.ranking import XAUC, NormalizedEntropy
from recforge.protos import metric_pb2, model_pb2


def parse(text: str) -> metric_pb2.MetricConfig:
    return text_format.Parse(text, metric_pb2.MetricConfig())


def data(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, generator=g) * 10
    preds = target + torch.randn(n, generator=g) * 3
    target[::7] = target[1]  # some tied targets
    preds[::11] = preds[2]  # some tied predictions
    return preds, target


def xauc_brute_force(preds, target) -> float:
    agree, pairs = 0.0, 0
    for i, j in itertools.combinations(range(len(preds)), 2):
        if target[i] == target[j]:
            continue
        pairs += 1
        dp, dt = preds[i] - preds[j], target[i] - target[j]
        agree += 1.0 if dp * dt > 0 else 0.5 if dp == 0 else 0.0
    return agree / pairs


def test_normalized_entropy_matches_its_definition():
    probs = torch.tensor([0.9, 0.2, 0.6, 0.1, 0.7, 0.3])
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    ce = -sum(
        math.log(p) if y else math.log(1 - p) for p, y in zip(probs.tolist(), labels.tolist())
    )
    rate = 0.5
    expected = (ce / 6) / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    metric = create_metric(parse("normalized_entropy {}"))
    metric.update(probs[:4], labels[:4])  # two batches accumulate
    metric.update(probs[4:], labels[4:])
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-5)


def test_normalized_entropy_of_the_base_rate_is_one():
    labels = torch.tensor([1, 0, 0, 0] * 25)
    metric = NormalizedEntropy()
    metric.update(torch.full((100,), 0.25), labels)
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)


def test_exact_xauc_matches_brute_force():
    preds, target = data(120)
    metric = create_metric(parse("xauc { sample_ratio: 1.0 }"))
    assert metric.prediction_key == "y"  # regression output
    metric.update(preds[:50], target[:50])
    metric.update(preds[50:], target[50:])
    expected = xauc_brute_force(preds.tolist(), target.tolist())
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
    # max_pairs beyond the number of pairs is exact too
    exact = XAUC(max_pairs=10**9)
    exact.update(preds, target)
    assert float(exact.compute()) == pytest.approx(expected, abs=1e-6)


def test_sampled_xauc_is_close_and_reproducible():
    preds, target = data(2000, seed=3)
    exact = XAUC(sample_ratio=1.0)
    exact.update(preds, target)
    sampled = XAUC(max_pairs=200000)
    sampled.update(preds, target)
    value = float(sampled.compute())
    assert value == pytest.approx(float(exact.compute()), abs=0.01)
    assert float(sampled.compute()) == value  # fixed seed: the same pairs every time
    by_ratio = XAUC()  # default sample_ratio 1e-3 of ~2M pairs
    by_ratio.update(preds, target)
    assert float(by_ratio.compute()) == pytest.approx(float(exact.compute()), abs=0.03)


def test_in_batch_xauc_averages_batches():
    preds, target = data(90)
    metric = XAUC(in_batch=True)
    metric.update(preds[:40], target[:40])
    metric.update(preds[40:], target[40:])
    first = xauc_brute_force(preds[:40].tolist(), target[:40].tolist())
    second = xauc_brute_force(preds[40:].tolist(), target[40:].tolist())
    assert float(metric.compute()) == pytest.approx((first + second) / 2, abs=1e-6)


def test_xauc_of_binary_targets_is_auc():
    from torchmetrics.classification import BinaryAUROC

    preds, target = data(200)
    labels = (target > 5).long()
    metric = XAUC(sample_ratio=1.0)
    metric.update(preds, labels.float())
    assert float(metric.compute()) == pytest.approx(float(BinaryAUROC()(preds, labels)), abs=1e-6)


def test_recall_at_k():
    probs = torch.tensor(
        [
            [0.5, 0.3, 0.1, 0.1],  # label 1: second best
            [0.1, 0.2, 0.3, 0.4],  # label 0: worst
            [0.7, 0.1, 0.1, 0.1],  # label 0: best
            [0.2, 0.1, 0.3, 0.4],  # label 2: second best
        ]
    )
    labels = torch.tensor([1, 0, 0, 2])
    for k, expected in [(1, 0.25), (2, 0.75), (4, 1.0)]:
        metric = create_metric(parse(f"recall_at_k {{ top_k: {k} }}"), num_class=4)
        metric.update(probs, labels)
        assert float(metric.compute()) == pytest.approx(expected), k
    with pytest.raises(ValueError, match="num_class > 1"):
        create_metric(parse("recall_at_k {}"), num_class=1)
    assert parse("recall_at_k {}").recall_at_k.top_k == 5  # TorchEasyRec's default


def test_binary_metrics_read_the_positive_class_of_two_logits():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 0])
    auc = create_metric(parse("auc {}"), num_class=2)
    auc.update(probs, labels)
    assert float(auc.compute()) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="num_class 1 or 2"):
        create_metric(parse("auc {}"), num_class=3)


def test_metric_names_and_grouping_keys():
    assert metric_name(parse("normalized_entropy {}")) == "normalized_entropy"
    assert metric_name(parse("xauc {}")) == "xauc"
    config = text_format.Parse(
        """
        metrics { grouped_auc { grouping_key: "user" } }
        mmoe {
          task_towers { tower_name: "a" metrics { grouped_auc { grouping_key: "query" } } }
          task_towers { tower_name: "b" losses { jrc_loss { session_name: "request" } } }
        }
        """,
        model_pb2.ModelConfig(),
    )
    assert grouping_keys(config) == ["user", "query", "request"]
    assert grouping_keys(config.metrics) == ["user"]
