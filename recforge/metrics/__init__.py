"""Metrics built from ``MetricConfig`` messages, on top of torchmetrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
import torchmetrics
from torchmetrics import classification, regression

from recforge.metrics.grouped_auc import GroupedAUC
from recforge.protos import metric_pb2


class RecMetric(torch.nn.Module):
    """A torchmetrics metric plus which prediction it reads and how it reads the label.

    Args:
        metric: the torchmetrics metric.
        prediction_key: the ``predict()`` output it reads (``probs``, ``y``, ...).
        label_dtype: the label's dtype the metric expects.
        group_key: for grouped metrics, the column (``Batch.extras``) that groups samples.

    """

    def __init__(
        self,
        metric: torchmetrics.Metric,
        prediction_key: str = "probs",
        label_dtype: torch.dtype = torch.long,
        group_key: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.prediction_key = prediction_key
        self.label_dtype = label_dtype
        self.group_key = group_key

    def update(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> None:
        """Adds a batch: ``prediction`` ``[B]`` or ``[B, C]``, ``label`` ``[B]``."""
        label = label.to(self.label_dtype)
        if self.group_key is None:
            self.metric.update(prediction.detach(), label)
        else:
            self.metric.update(prediction.detach(), label, group)

    def compute(self) -> torch.Tensor:
        """The metric over everything added since the last reset."""
        return self.metric.compute()

    def reset(self) -> None:
        """Forgets every batch."""
        self.metric.reset()


def _auc(cfg: metric_pb2.AUC, num_class: int) -> RecMetric:
    return RecMetric(classification.BinaryAUROC(thresholds=cfg.thresholds or None))


def _multiclass_auc(cfg: metric_pb2.MulticlassAUC, num_class: int) -> RecMetric:
    metric = classification.MulticlassAUROC(
        num_classes=num_class, average=cfg.average, thresholds=cfg.thresholds or None
    )
    return RecMetric(metric)


def _accuracy(cfg: metric_pb2.Accuracy, num_class: int) -> RecMetric:
    if num_class > 1:
        metric = classification.MulticlassAccuracy(num_classes=num_class, top_k=cfg.top_k)
        return RecMetric(metric)
    return RecMetric(classification.BinaryAccuracy(threshold=cfg.threshold))


def _grouped_auc(cfg: metric_pb2.GroupedAUC, num_class: int) -> RecMetric:
    if not cfg.grouping_key:
        raise ValueError("grouped_auc needs grouping_key (the column that groups samples)")
    return RecMetric(GroupedAUC(), group_key=cfg.grouping_key)


_METRIC_BUILDERS: dict[str, Callable[[object, int], RecMetric]] = {
    "auc": _auc,
    "multiclass_auc": _multiclass_auc,
    "accuracy": _accuracy,
    "grouped_auc": _grouped_auc,
    "mean_absolute_error": lambda cfg, n: RecMetric(
        regression.MeanAbsoluteError(), "y", torch.float
    ),
    "mean_squared_error": lambda cfg, n: RecMetric(regression.MeanSquaredError(), "y", torch.float),
}


def metric_name(config: metric_pb2.MetricConfig) -> str:
    """The name of the metric set in a ``MetricConfig`` (its oneof field name)."""
    name = config.WhichOneof("metric")
    if name is None:
        raise ValueError(f"a metrics entry sets no metric (choices: {', '.join(_METRIC_BUILDERS)})")
    return name


def create_metric(config: metric_pb2.MetricConfig, num_class: int = 1) -> RecMetric:
    """Builds the metric a ``MetricConfig`` describes.

    Raises:
        ValueError: no metric set, or one recforge does not implement.

    """
    name = metric_name(config)
    return _METRIC_BUILDERS[name](getattr(config, name), num_class)


def grouping_keys(configs: list) -> list:
    """Columns that grouped metrics in ``configs`` need in ``Batch.extras``."""
    return [c.grouped_auc.grouping_key for c in configs if c.WhichOneof("metric") == "grouped_auc"]
