"""Metrics built from ``MetricConfig`` messages, on top of torchmetrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torchmetrics
from torchmetrics import classification, regression, retrieval

from recforge.metrics.calibration import Calibration
from recforge.metrics.grouped_auc import GroupedAUC
from recforge.metrics.ranking import XAUC, GroupedXAUC, NormalizedEntropy
from recforge.protos import metric_pb2, model_pb2
from recforge.utils.num_class import ANY_NUM_CLASS, NumClassRule


class RecMetric(torch.nn.Module):
    """A torchmetrics metric plus which prediction it reads and how it reads the label.

    Args:
        metric: the torchmetrics metric.
        prediction_key: the ``predict()`` output it reads (``probs``, ``y``, ...).
        label_dtype: the label's dtype the metric expects.
        group_key: for grouped metrics, the column (``Batch.extras``) that groups samples.
        class_index: read only this column of a ``[B, C]`` prediction (e.g. 1: the positive
            class of a two-logit binary model).

    """

    def __init__(
        self,
        metric: torchmetrics.Metric,
        prediction_key: str = "probs",
        label_dtype: torch.dtype = torch.long,
        group_key: Optional[str] = None,
        class_index: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.prediction_key = prediction_key
        self.label_dtype = label_dtype
        self.group_key = group_key
        self.class_index = class_index

    def update(
        self, prediction: torch.Tensor, label: torch.Tensor, group: Optional[torch.Tensor] = None
    ) -> None:
        """Adds a batch: ``prediction`` ``[B]`` or ``[B, C]``, ``label`` ``[B]``."""
        label = label.to(self.label_dtype)
        if self.class_index is not None and prediction.dim() == 2:
            prediction = prediction[:, self.class_index]
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


def _binary_rule(name: str) -> NumClassRule:
    return NumClassRule(
        lambda n: n <= 2, f"{name} is a binary metric: it needs num_class 1 or 2, found {{n}}"
    )


def _regression_rule(name: str) -> NumClassRule:
    return NumClassRule(
        lambda n: n == 1,
        f"{name} reads the regression output y: it needs num_class 1, found {{n}}",
    )


def _binary_class(num_class: int) -> Optional[int]:
    """The column of the positive class: None for one logit, 1 for two."""
    return 1 if num_class == 2 else None


def _auc(cfg: metric_pb2.AUC, num_class: int) -> RecMetric:
    metric = classification.BinaryAUROC(thresholds=cfg.thresholds or None)
    return RecMetric(metric, class_index=_binary_class(num_class))


def _top_k_problem(
    cfg: Union[metric_pb2.RecallAtK, metric_pb2.Accuracy], num_class: int
) -> Optional[str]:
    """A class metric's ``top_k`` must lie in ``[1, num_class]`` (checked with class outputs)."""
    if num_class > 1 and not 1 <= cfg.top_k <= num_class:
        name = cfg.DESCRIPTOR.name.lower().replace("recallatk", "recall_at_k")
        return f"{name} top_k must be in [1, num_class={num_class}], found {cfg.top_k}"
    return None


def _recall_at_k(cfg: metric_pb2.RecallAtK, num_class: int) -> RecMetric:
    # micro recall over top-k predictions: the share of samples whose class is in the top k
    metric = classification.MulticlassRecall(
        num_classes=num_class, top_k=cfg.top_k, average="micro"
    )
    return RecMetric(metric)


def _normalized_entropy(cfg: metric_pb2.NormalizedEntropy, num_class: int) -> RecMetric:
    class_index = _binary_class(num_class)
    return RecMetric(NormalizedEntropy(cfg.eta), label_dtype=torch.float, class_index=class_index)


def _xauc(cfg: metric_pb2.XAUC, num_class: int) -> RecMetric:
    metric = XAUC(cfg.sample_ratio, cfg.max_pairs or None, cfg.in_batch)
    return RecMetric(metric, "y", torch.float)


def _grouped_xauc(cfg: metric_pb2.GroupedXAUC, num_class: int) -> RecMetric:
    if not cfg.grouping_key:
        raise ValueError("grouped_xauc needs grouping_key (the column that groups samples)")
    metric = GroupedXAUC(cfg.max_pairs_per_group)
    return RecMetric(metric, "y", torch.float, group_key=cfg.grouping_key)


def _multiclass_auc(cfg: metric_pb2.MulticlassAUC, num_class: int) -> RecMetric:
    metric = classification.MulticlassAUROC(
        num_classes=num_class,
        average=cfg.average,  # type: ignore[arg-type]  # torchmetrics rejects others (ValueError)
        thresholds=cfg.thresholds or None,
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
    return RecMetric(GroupedAUC(), group_key=cfg.grouping_key, class_index=_binary_class(num_class))


def _grouped_ndcg(cfg: metric_pb2.GroupedNDCG, num_class: int) -> RecMetric:
    if not cfg.grouping_key:
        raise ValueError("grouped_ndcg needs grouping_key (the column that groups samples)")
    # groups without a positive label have no ideal ranking: left out, as in grouped_auc
    metric = retrieval.RetrievalNormalizedDCG(top_k=cfg.top_k or None, empty_target_action="skip")
    return RecMetric(metric, group_key=cfg.grouping_key, class_index=_binary_class(num_class))


def _grouped_mrr(cfg: metric_pb2.GroupedMRR, num_class: int) -> RecMetric:
    if not cfg.grouping_key:
        raise ValueError("grouped_mrr needs grouping_key (the column that groups samples)")
    metric = retrieval.RetrievalMRR(empty_target_action="skip")
    return RecMetric(metric, group_key=cfg.grouping_key, class_index=_binary_class(num_class))


def _calibration_error(cfg: metric_pb2.CalibrationError, num_class: int) -> RecMetric:
    if cfg.num_bins < 1:
        raise ValueError(f"calibration_error num_bins must be >= 1, found {cfg.num_bins}")
    metric = classification.BinaryCalibrationError(n_bins=cfg.num_bins)
    return RecMetric(metric, class_index=_binary_class(num_class))


@dataclass(frozen=True)
class _MetricKind:
    """How to build a metric, and the ``num_class`` values it works with."""

    build: Callable[[Any, int], RecMetric]
    num_class_rule: NumClassRule = ANY_NUM_CLASS
    #: settings that depend on ``num_class`` (``top_k``): ``(config, num_class) -> problem``
    settings_problem: Callable[[Any, int], Optional[str]] = lambda cfg, n: None


# MetricConfig oneof member -> its builder and num_class rule
_METRICS: dict[str, _MetricKind] = {
    "auc": _MetricKind(_auc, _binary_rule("auc")),
    "multiclass_auc": _MetricKind(
        _multiclass_auc,
        NumClassRule(
            lambda n: n > 1,
            "multiclass_auc needs class outputs (num_class > 1), found num_class: {n}; use auc "
            "for one logit per sample",
        ),
    ),
    "accuracy": _MetricKind(_accuracy, settings_problem=_top_k_problem),
    "grouped_auc": _MetricKind(_grouped_auc, _binary_rule("grouped_auc")),
    "recall_at_k": _MetricKind(
        _recall_at_k,
        NumClassRule(
            lambda n: n > 1, "recall_at_k needs class outputs (num_class > 1), found num_class {n}"
        ),
        _top_k_problem,
    ),
    "normalized_entropy": _MetricKind(_normalized_entropy, _binary_rule("normalized_entropy")),
    "grouped_ndcg": _MetricKind(_grouped_ndcg, _binary_rule("grouped_ndcg")),
    "grouped_mrr": _MetricKind(_grouped_mrr, _binary_rule("grouped_mrr")),
    "calibration": _MetricKind(
        lambda cfg, n: RecMetric(Calibration(), class_index=_binary_class(n)),
        _binary_rule("calibration"),
    ),
    "calibration_error": _MetricKind(_calibration_error, _binary_rule("calibration_error")),
    "xauc": _MetricKind(
        _xauc,
        NumClassRule(
            lambda n: n == 1, "xauc ranks regression outputs: it needs num_class 1, found {n}"
        ),
    ),
    "grouped_xauc": _MetricKind(
        _grouped_xauc,
        NumClassRule(
            lambda n: n == 1,
            "grouped_xauc ranks regression outputs: it needs num_class 1, found {n}",
        ),
    ),
    "mean_absolute_error": _MetricKind(
        lambda cfg, n: RecMetric(regression.MeanAbsoluteError(), "y", torch.float),
        _regression_rule("mean_absolute_error"),
    ),
    "mean_squared_error": _MetricKind(
        lambda cfg, n: RecMetric(regression.MeanSquaredError(), "y", torch.float),
        _regression_rule("mean_squared_error"),
    ),
}


def metric_name(config: metric_pb2.MetricConfig) -> str:
    """The name of the metric set in a ``MetricConfig`` (its oneof field name)."""
    name = config.WhichOneof("metric")
    if name is None:
        raise ValueError(f"a metrics entry sets no metric (choices: {', '.join(_METRICS)})")
    return name


def num_class_problem(config: metric_pb2.MetricConfig, num_class: int) -> Optional[str]:
    """What is wrong with using the metric of ``config`` with ``num_class`` outputs.

    Returns:
        The message, or None when the metric works with ``num_class`` (and when no metric is
        set or the metric is not implemented: :func:`create_metric` reports those). Settings
        bounded by ``num_class`` (``top_k``) are checked too. Config validation and model
        building both ask here.

    """
    name = config.WhichOneof("metric") or ""
    kind = _METRICS.get(name)
    if kind is None:
        return None
    problem = kind.num_class_rule.problem(num_class)
    return problem or kind.settings_problem(getattr(config, name), num_class)


def create_metric(config: metric_pb2.MetricConfig, num_class: int = 1) -> RecMetric:
    """Builds the metric a ``MetricConfig`` describes.

    Raises:
        ValueError: no metric set, a metric recforge does not implement, one that does not
            work with ``num_class``, or one whose settings are invalid.

    """
    name = metric_name(config)
    if name not in _METRICS:
        raise ValueError(f"metric '{name}' is not supported (supported: {', '.join(_METRICS)})")
    problem = num_class_problem(config, num_class)
    if problem is not None:
        raise ValueError(problem)
    return _METRICS[name].build(getattr(config, name), num_class)


def grouping_keys(configs: Any) -> list:
    """Columns that grouped metrics and session losses need in ``Batch.extras``.

    Args:
        configs: a ``ModelConfig`` (its metrics, losses and those of its task towers) or a
            list of ``MetricConfig``.

    """
    if not isinstance(configs, model_pb2.ModelConfig):
        return _metric_grouping_keys(configs)
    from recforge.loss import session_keys

    keys = _metric_grouping_keys(configs.metrics) + session_keys(configs.losses)
    model = configs.WhichOneof("model")
    for tower in getattr(getattr(configs, model), "task_towers", []) if model else []:
        keys += _metric_grouping_keys(tower.metrics) + session_keys(tower.losses)
    return list(dict.fromkeys(keys))


#: metrics that group samples by a column (their message's ``grouping_key``)
_GROUPED = ("grouped_auc", "grouped_xauc", "grouped_ndcg", "grouped_mrr")


def _metric_grouping_keys(configs: Any) -> list:
    return [
        getattr(c, c.WhichOneof("metric")).grouping_key
        for c in configs
        if c.WhichOneof("metric") in _GROUPED
    ]
