"""Calibration: predicted probability mass over observed positives (torchrec's definition)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torchmetrics import Metric


class Calibration(Metric):
    """``sum(probs) / sum(labels)`` over every sample: 1 when the model is calibrated.

    ``update(preds [B] probabilities, target [B] 0/1)``; ``compute()`` returns a scalar
    (``nan`` while no positive label has been seen).

    >>> m = Calibration()
    >>> m.update(torch.tensor([0.5, 0.25, 0.25]), torch.tensor([1, 0, 0]))
    >>> float(m.compute())
    1.0
    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        predicted: torch.Tensor
        observed: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "predicted", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "observed", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch of probabilities and labels (both ``[B]``)."""
        self.predicted += preds.double().sum()
        self.observed += target.double().sum()

    def compute(self) -> torch.Tensor:
        """The ratio of predicted to observed positives."""
        if self.observed == 0:
            return torch.tensor(float("nan"))
        return (self.predicted / self.observed).float()
