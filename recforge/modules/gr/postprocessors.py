"""HSTU's timestamp layer-norm output postprocessor.

TorchEasyRec's ``TimestampLayerNormPostprocessor``: each encoded row gets, for every
configured period, the phase of its timestamp within that period as ``(cos, sin)``: with
``period_units`` ``p`` seconds and ``units_per_period`` ``n`` (``3600`` and ``24``: the hour
of the day) the phase is ``2 * pi * (floor(t / p) mod n) / n``. The row and these ``2 * k``
numbers go through one linear map back to the row width (Xavier weights, zero bias) and a
layer norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TimestampLayerNormPostprocessor(nn.Module):
    """Rows ``[T, D]`` and their timestamps ``[T]`` -> ``[T, D]`` (see the module docstring).

    Args:
        embedding_dim: the row width ``D``.
        period_units: each period's unit in seconds (``time_duration_period_units``).
        units_per_period: the units in each period (``time_duration_units_per_period``).
        eps: the layer norm's epsilon.

    Raises:
        ValueError: the two lists differ in length, or a value is not positive.

    Example:
        >>> post = TimestampLayerNormPostprocessor(8, [3600], [24])
        >>> post(torch.randn(3, 8), torch.tensor([0.0, 3600.0, 7200.0])).shape
        torch.Size([3, 8])

    """

    period_units: torch.Tensor
    units_per_period: torch.Tensor

    def __init__(
        self,
        embedding_dim: int,
        period_units: list[int],
        units_per_period: list[int],
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(period_units) != len(units_per_period):
            raise ValueError(
                "time_duration_period_units and time_duration_units_per_period must have the"
                f" same length, found {len(period_units)} and {len(units_per_period)}"
            )
        for name, values in (
            ("time_duration_period_units", period_units),
            ("time_duration_units_per_period", units_per_period),
        ):
            if any(v <= 0 for v in values):
                raise ValueError(f"{name} must be > 0, found {list(values)}")
        # float64: epoch seconds need more than float32's 24 bits to keep the hour of the day
        self.register_buffer(
            "period_units", torch.tensor(period_units, dtype=torch.float64).view(1, -1)
        )
        self.register_buffer(
            "units_per_period", torch.tensor(units_per_period, dtype=torch.float64).view(1, -1)
        )
        self.combine = nn.Linear(embedding_dim + 2 * len(period_units), embedding_dim)
        nn.init.xavier_uniform_(self.combine.weight)
        nn.init.zeros_(self.combine.bias)
        self.norm = nn.LayerNorm(embedding_dim, eps=eps)

    def forward(self, x: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """``[T, D]`` rows with their timestamps in seconds ``[T]`` -> ``[T, D]``."""
        units = torch.floor(timestamps.reshape(-1, 1).to(torch.float64) / self.period_units)
        # TorchEasyRec multiplies by 2 * 3.14; 2 * pi makes the last unit's phase meet the first
        phase = torch.remainder(units, self.units_per_period) / self.units_per_period
        phase = phase * (2.0 * math.pi)
        # (cos, sin) of each period, in TorchEasyRec's order: cos_0 sin_0 cos_1 sin_1 ...
        time = torch.stack([torch.cos(phase), torch.sin(phase)], dim=-1)
        time = time.reshape(x.shape[0], -1).to(x.dtype)
        return self.norm(self.combine(torch.cat([x, time], dim=-1)))
