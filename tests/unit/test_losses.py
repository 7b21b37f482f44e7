import math

import pytest
import torch
from google.protobuf import text_format
from torch.nn import functional as F

from recforge.loss import (
    BinaryFocalLoss,
    JRCLoss,
    SoftmaxCrossEntropyLoss,
    create_loss,
    loss_name,
    session_keys,
)
from recforge.protos import loss_pb2


def parse(text: str) -> loss_pb2.LossConfig:
    return text_format.Parse(text, loss_pb2.LossConfig())


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss = BinaryFocalLoss(gamma=2.0, alpha=0.25)
    expected = []
    for z, y in zip(logits.tolist(), labels.tolist()):
        p = 1 / (1 + math.exp(-z))
        p_t = p if y == 1 else 1 - p
        alpha_t = 0.25 if y == 1 else 0.75
        expected.append(-alpha_t * (1 - p_t) ** 2 * math.log(p_t))
    per_sample = loss.per_sample(logits, labels)
    assert per_sample.tolist() == pytest.approx(expected, rel=1e-5)
    assert float(loss(logits, labels)) == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_focal_loss_with_gamma_zero_is_alpha_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=g)
    labels = (torch.rand(64, generator=g) < 0.3).float()
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    focal = BinaryFocalLoss(gamma=0.0, alpha=0.5)(logits, labels)
    assert float(focal) == pytest.approx(0.5 * float(bce), rel=1e-6)  # alpha_t = 0.5 for all
    weights = 0.8 * labels + 0.2 * (1 - labels)
    weighted = F.binary_cross_entropy_with_logits(logits, labels, weight=weights)
    assert float(BinaryFocalLoss(0.0, 0.8)(logits, labels)) == pytest.approx(float(weighted))


def test_focal_loss_down_weights_easy_examples_and_has_finite_gradients():
    logits = torch.tensor([6.0, 0.0], requires_grad=True)  # easy positive, hard positive
    labels = torch.ones(2)
    per_sample = BinaryFocalLoss(gamma=2.0).per_sample(logits, labels)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    ratio = (per_sample / bce).detach()
    assert ratio[0] < 1e-4 < ratio[1]
    per_sample.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_loss_rejects_bad_parameters():
    with pytest.raises(ValueError, match="gamma"):
        BinaryFocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        BinaryFocalLoss(alpha=1.0)


def jrc_by_hand(logits, labels, sessions, alpha):
    total = []
    for i in range(len(labels)):
        z0, z1 = logits[i]
        ce = -math.log(math.exp(z1 if labels[i] else z0) / (math.exp(z0) + math.exp(z1)))
        column = 1 if labels[i] else 0
        rivals = [
            logits[j][column]
            for j in range(len(labels))
            if sessions[j] == sessions[i] and labels[j] != labels[i]
        ]
        own = logits[i][column]
        ranking = -math.log(math.exp(own) / (math.exp(own) + sum(math.exp(r) for r in rivals)))
        total.append(alpha * ce + (1 - alpha) * (ranking if rivals else 0.0))
    return total


def test_jrc_loss_on_a_tiny_example():
    logits = [[0.1, 0.9], [0.4, -0.2], [1.0, 0.3], [-0.5, 0.5], [0.2, 0.0]]
    labels = [1, 0, 0, 1, 0]
    sessions = [7, 7, 7, 3, 5]  # session 3: only a positive; session 5: only a negative
    loss = JRCLoss("session", alpha=0.3)
    per_sample = loss.per_sample(torch.tensor(logits), torch.tensor(labels), torch.tensor(sessions))
    assert per_sample.tolist() == pytest.approx(jrc_by_hand(logits, labels, sessions, 0.3))
    # alpha 1: plain softmax cross entropy
    ce = F.cross_entropy(torch.tensor(logits), torch.tensor(labels))
    full = JRCLoss("session", alpha=1.0)(
        torch.tensor(logits), torch.tensor(labels), None, torch.tensor(sessions)
    )
    assert float(full) == pytest.approx(float(ce))


def test_jrc_loss_gradients_are_finite_and_session_order_free():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 2, generator=g, requires_grad=True)
    labels = (torch.rand(40, generator=g) < 0.3).long()
    sessions = torch.randint(0, 12, (40,), generator=g)
    loss = JRCLoss("s")
    value = loss(logits, labels, None, sessions)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    perm = torch.randperm(40, generator=g)
    shuffled = loss(logits.detach()[perm], labels[perm], None, sessions[perm])
    assert float(shuffled) == pytest.approx(float(value), rel=1e-6)


def test_jrc_loss_needs_two_logits_and_a_session_column():
    with pytest.raises(ValueError, match="num_class: 2"):
        JRCLoss("s")(torch.zeros(3), torch.zeros(3), None, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="'s'"):
        JRCLoss("s")(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="session_name"):
        create_loss(parse("jrc_loss {}"))


def test_softmax_cross_entropy_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    s = 0.1
    target = torch.full((2, 3), s / 3)
    target[0, 0] += 1 - s
    target[1, 2] += 1 - s
    expected = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
    assert float(SoftmaxCrossEntropyLoss(s)(logits, labels)) == pytest.approx(float(expected))
    built = create_loss(parse("softmax_cross_entropy { label_smoothing: 0.1 }"))
    assert float(built(logits, labels)) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxCrossEntropyLoss(1.0)


def test_losses_dispatch_from_the_config_message():
    focal = create_loss(parse("binary_focal_loss { gamma: 1.5 alpha: 0.25 }"))
    assert isinstance(focal, BinaryFocalLoss) and (focal.gamma, focal.alpha) == (1.5, 0.25)
    default = create_loss(parse("binary_focal_loss {}"))
    assert (default.gamma, default.alpha) == (2.0, 0.5)  # TorchEasyRec's defaults
    jrc = create_loss(parse('jrc_loss { session_name: "request_id" }'))
    assert isinstance(jrc, JRCLoss) and jrc.group_key == "request_id" and jrc.alpha == 0.5
    assert loss_name(parse("jrc_loss {}")) == "jrc_loss"
    configs = [parse('jrc_loss { session_name: "r" }'), parse("binary_cross_entropy {}")]
    assert session_keys(configs) == ["r"]


def test_sample_weights_weight_the_mean():
    logits = torch.tensor([1.0, -1.0])
    labels = torch.tensor([1.0, 1.0])
    per_sample = BinaryFocalLoss().per_sample(logits, labels)
    weighted = BinaryFocalLoss()(logits, labels, torch.tensor([3.0, 1.0]))
    assert float(weighted) == pytest.approx(float((3 * per_sample[0] + per_sample[1]) / 4))


def test_rank_model_passes_the_session_column_to_jrc_loss():
    from recforge.features import create_features
    from recforge.models.model import BaseModel, TrainWrapper
    from recforge.protos import pipeline_pb2
    from tests.helpers.models import FEATURES, MODEL_CONFIGS, make_batch

    text = "model_config {" + MODEL_CONFIGS["MultiTower"] + " num_class: 2"
    text += ' metrics { auc {} } losses { jrc_loss { session_name: "session" } } }'
    config = text_format.Parse(FEATURES + text, pipeline_pb2.EasyRecConfig())
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("MultiTower")(config.model_config, features, ["label"])
    batch = make_batch(8)
    batch.extras["session"] = torch.arange(8) // 4
    total, (losses, predictions, _) = TrainWrapper(model)(batch)
    assert set(losses) == {"jrc_loss"} and predictions["logits"].shape == (8, 2)
    total.backward()
    model.update_metric(predictions, batch, losses)
    assert set(model.compute_metric()) == {"auc", "jrc_loss"}


def test_binary_cross_entropy_label_smoothing_moves_targets_towards_half():
    cfg = loss_pb2.LossConfig()
    cfg.binary_cross_entropy.label_smoothing = 0.2
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 1])
    smoothed = create_loss(cfg).per_sample(logits, labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([0.9, 0.1, 0.9]), reduction="none"
    )
    torch.testing.assert_close(smoothed, expected)
    plain = create_loss(loss_pb2.LossConfig(binary_cross_entropy={})).per_sample(logits, labels)
    assert not torch.allclose(smoothed, plain)


def test_binary_label_columns_follow_the_losses_of_each_task():
    from recforge.loss import binary_label_columns
    from recforge.protos import model_pb2

    def columns(text: str) -> list:
        config = text_format.Parse(text, model_pb2.ModelConfig())
        return binary_label_columns(config, ["click", "buy", "price"])

    rank = 'feature_groups { group_name: "g" } deepfm { deep { hidden_units: [4] } }'
    assert columns(rank) == ["click"]  # default loss: binary cross entropy
    assert columns(rank + " losses { l2_loss {} }") == []
    assert columns(rank + " num_class: 3") == []  # default: softmax cross entropy
    towers = """simple_multi_task {
      task_towers { tower_name: "a" label_name: "buy" losses { binary_focal_loss {} } }
      task_towers { tower_name: "b" label_name: "price" losses { l2_loss {} } }
      task_towers { tower_name: "c" label_name: "click" }
    }"""
    assert columns(towers) == ["buy", "click"]
