"""Losses built from ``LossConfig`` messages.

Each loss knows which prediction it reads and how it treats the label, so models dispatch on
the config message instead of branching on loss names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from recforge.protos import loss_pb2


class RecLoss(nn.Module):
    """A loss over one prediction tensor and one label column.

    Attributes:
        prediction_key: the ``predict()`` output the loss reads (``logits``, ``y``, ...).

    """

    prediction_key = "logits"

    def per_sample(self, prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        raise NotImplementedError

    def forward(
        self,
        prediction: torch.Tensor,
        label: torch.Tensor,
        sample_weight: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Mean loss over the batch, weighted by ``sample_weight`` ``[B]`` when given."""
        losses = self.per_sample(prediction, label)
        if sample_weight is None:
            return losses.mean()
        return (losses * sample_weight).sum() / sample_weight.sum().clamp_min(1e-12)


class BinaryCrossEntropyLoss(RecLoss):
    """Sigmoid cross entropy on ``logits`` ``[B]`` with 0/1 labels ``[B]``."""

    def per_sample(self, prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        return F.binary_cross_entropy_with_logits(prediction, label.float(), reduction="none")


class SoftmaxCrossEntropyLoss(RecLoss):
    """Softmax cross entropy on ``logits`` ``[B, C]`` with class labels ``[B]``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def per_sample(self, prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        return F.cross_entropy(
            prediction, label.long(), reduction="none", label_smoothing=self.label_smoothing
        )


class L2Loss(RecLoss):
    """Squared error of the regression output ``y`` ``[B]``."""

    prediction_key = "y"

    def per_sample(self, prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of each sample ``[B]``."""
        return (prediction - label.float()).pow(2)


_LOSS_BUILDERS: dict[str, Callable[[object], RecLoss]] = {
    "binary_cross_entropy": lambda cfg: BinaryCrossEntropyLoss(),
    "softmax_cross_entropy": lambda cfg: SoftmaxCrossEntropyLoss(cfg.label_smoothing),
    "l2_loss": lambda cfg: L2Loss(),
}


def loss_name(config: loss_pb2.LossConfig) -> str:
    """The name of the loss set in a ``LossConfig`` (its oneof field name)."""
    name = config.WhichOneof("loss")
    if name is None:
        raise ValueError(f"a losses entry sets no loss (choices: {', '.join(_LOSS_BUILDERS)})")
    return name


def create_loss(config: loss_pb2.LossConfig) -> RecLoss:
    """Builds the loss module a ``LossConfig`` describes.

    Raises:
        ValueError: no loss set, or a loss recforge does not implement.

    """
    name = loss_name(config)
    if name not in _LOSS_BUILDERS:
        raise ValueError(f"loss '{name}' is not supported (supported: {', '.join(_LOSS_BUILDERS)})")
    return _LOSS_BUILDERS[name](getattr(config, name))
