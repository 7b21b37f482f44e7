"""Train metrics as TorchEasyRec reports them: a decayed running value per ``TrainMetricConfig``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from recforge.metrics import RecMetric
from recforge.protos import metric_pb2


def as_metric_config(config: metric_pb2.TrainMetricConfig) -> metric_pb2.MetricConfig:
    """The ``MetricConfig`` that builds the metric a ``TrainMetricConfig`` names.

    ``TrainMetricConfig``'s oneof members are a subset of ``MetricConfig``'s, with the same
    names and messages.

    Raises:
        ValueError: the train metric sets no metric.

    """
    kind = config.WhichOneof("metric")
    if kind is None:
        raise ValueError("a train_metrics entry sets no metric")
    metric = metric_pb2.MetricConfig()
    getattr(metric, kind).CopyFrom(getattr(config, kind))
    return metric


class DecayedTrainMetric(RecMetric):
    """A train metric whose reported value is an exponential moving average over windows.

    Every ``decay_step`` updates the wrapped metric is computed over that window and reset, and
    the reported value becomes ``decay_rate * previous + (1 - decay_rate) * window`` (the first
    window's value as is), as TorchEasyRec's train metrics do. Before the first window closes,
    ``compute()`` returns the metric over the batches seen so far. ``reset()`` does nothing:
    the running value spans the trainer's log windows.

    Args:
        metric: the metric to report (its prediction key, label dtype and grouping are kept).
        decay_rate: weight of the previous value, in [0, 1).
        decay_step: updates per window (>= 1).

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        value: torch.Tensor
        windows: torch.Tensor

    def __init__(self, metric: RecMetric, decay_rate: float, decay_step: int) -> None:
        super().__init__(
            metric.metric,
            metric.prediction_key,
            metric.label_dtype,
            metric.group_key,
            metric.class_index,
        )
        self.decay_rate = decay_rate
        self.decay_step = max(int(decay_step), 1)
        self.register_buffer("value", torch.zeros(()), persistent=False)
        self.register_buffer("windows", torch.zeros((), dtype=torch.long), persistent=False)
        self._updates = 0

    def update(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> None:
        """Adds a batch; closes the window every ``decay_step`` updates."""
        super().update(prediction, label, group)
        self._updates += 1
        if self._updates % self.decay_step == 0:
            window = self.metric.compute().detach().float()
            self.metric.reset()
            if int(self.windows) == 0:
                self.value = window
            else:
                self.value = self.decay_rate * self.value + (1 - self.decay_rate) * window
            self.windows += 1

    def compute(self) -> torch.Tensor:
        """The decayed value, or the current window's metric before any window closed."""
        if int(self.windows) == 0:
            return self.metric.compute()
        return self.value

    def reset(self) -> None:
        """Keeps the running value (see the class docstring)."""


def decay_train_metrics(
    metrics: dict[str, RecMetric], configs: list[metric_pb2.TrainMetricConfig]
) -> dict[str, DecayedTrainMetric]:
    """Wraps built train metrics (in ``configs`` order) with their config's decay settings."""
    if len(metrics) != len(configs):
        raise ValueError(f"{len(metrics)} train metrics built for {len(configs)} configs")
    return {
        name: DecayedTrainMetric(metric, config.decay_rate, config.decay_step)
        for (name, metric), config in zip(metrics.items(), configs)
    }
