"""Variational dropout of whole features: learned dropout rates that rank a group's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

# temperature of the concrete (relaxed Bernoulli) drop mask, as in TorchEasyRec
_TEMPERATURE = 0.1


class FeatureDropout(nn.Module):
    """Drops each feature of a group with a learned rate ``p_i = sigmoid(feature_p_i)``.

    In training every sample draws a relaxed Bernoulli mask per feature (concrete dropout, so
    the rates get gradients) and each feature's columns are scaled by ``1 - mask``; in eval
    the columns are scaled by ``1 - p_i``. The regularisation term
    ``regularization_lambda / B * sum_i (1 - p_i)`` (:meth:`penalty`) rewards dropping, so a
    feature keeps a low rate only when the task loss needs it: sorted by rate, the features
    rank from most to least useful (``recforge feature-selection``).

    Args:
        feature_names: the group's features, in column order.
        feature_dims: the width of each feature's columns.
        regularization_lambda: weight of the regularisation term.

    Shapes:
        ``forward(x [B, sum(feature_dims)])`` -> same shape.

    Example:
        >>> drop = FeatureDropout(["a", "b"], [2, 3]).eval()
        >>> drop(torch.ones(4, 5)).shape
        torch.Size([4, 5])

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        columns: torch.Tensor

    def __init__(
        self,
        feature_names: Sequence[str],
        feature_dims: Sequence[int],
        regularization_lambda: float = 0.01,
    ) -> None:
        super().__init__()
        if len(feature_names) != len(feature_dims) or not feature_names:
            raise ValueError(
                f"FeatureDropout needs one width per feature, found {len(feature_names)}"
                f" names and {len(feature_dims)} widths"
            )
        if regularization_lambda < 0:
            raise ValueError(f"regularization_lambda must be >= 0, found {regularization_lambda}")
        self.feature_names = list(feature_names)
        self._lambda = float(regularization_lambda)
        # logits of the dropout rates; random start as in TorchEasyRec
        self.feature_p = nn.Parameter(torch.randn(len(feature_names)))
        columns = torch.repeat_interleave(
            torch.arange(len(feature_dims)), torch.tensor(list(feature_dims))
        )
        self.register_buffer("columns", columns, persistent=False)

    def dropout_rates(self) -> torch.Tensor:
        """Each feature's dropout rate ``p_i``: ``[N]``."""
        return torch.sigmoid(self.feature_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scales each feature's columns by ``1 - mask`` (training) or ``1 - p`` (eval)."""
        p = torch.sigmoid(self.feature_p)
        if self.training:
            eps = torch.finfo(torch.float32).eps
            noise = torch.rand(x.shape[0], p.shape[0], device=x.device)
            logits = (
                torch.log(p + eps)
                - torch.log(1.0 - p + eps)
                + torch.log(noise + eps)
                - torch.log(1.0 - noise + eps)
            )
            drop = torch.sigmoid(logits / _TEMPERATURE)
        else:
            drop = p.unsqueeze(0)
        keep = (1.0 - drop)[:, self.columns]
        return x * keep.to(x.dtype)

    def penalty(self, batch_size: int) -> torch.Tensor:
        """The regularisation term ``lambda / batch_size * sum_i (1 - p_i)``: a scalar."""
        return self._lambda / max(batch_size, 1) * torch.sum(1.0 - self.dropout_rates())
