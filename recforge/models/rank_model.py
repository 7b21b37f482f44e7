"""``RankModel``: shared behaviour of ranking (CTR / regression / multi-class) models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn
from torchmetrics import MeanMetric

from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.features.base_feature import parse_init_fn
from recforge.loss import create_loss, loss_name
from recforge.metrics import RecMetric, create_metric, metric_name
from recforge.metrics.train_metric import as_metric_config, decay_train_metrics
from recforge.models.model import BaseModel
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2


class RankModel(BaseModel):
    """A model that scores each sample against one label.

    Subclasses build their layers in ``__init__`` and implement ``predict`` by turning the
    grouped embeddings (``self.build_input(batch)``) into logits and returning
    ``self._output_to_prediction(logits)``. Losses and metrics come from the config.

    Outputs of ``predict``: ``logits`` and ``probs`` (``[B]`` for ``num_class == 1``,
    ``[B, C]`` otherwise); ``y`` ``[B]`` (the raw output) for regression losses.
    """

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(model_config, features, labels, sample_weights, **kwargs)
        self._num_class = model_config.num_class
        self._label_name = self._labels[0] if self._labels else ""
        self._sample_weight_name = self._sample_weights[0] if self._sample_weights else None
        self._loss_configs = list(model_config.losses) or [_default_loss(self._num_class)]
        self._metric_configs = list(model_config.metrics)
        self._train_metric_configs = list(model_config.train_metrics)
        self.embedding_group: Optional[EmbeddingGroup] = None
        self._loss_prediction_keys: dict[str, str] = {}

    def init_embedding_group(
        self, wide_embedding_dim: int = 4, wide_init_fn: str = ""
    ) -> EmbeddingGroup:
        """Builds ``self.embedding_group`` from the config's feature groups.

        Args:
            wide_embedding_dim: width of WIDE-group tables.
            wide_init_fn: init of WIDE-group tables, e.g. ``nn.init.zeros_`` (empty: default).

        """
        self.embedding_group = EmbeddingGroup(
            self._features,
            self._base_model_config.feature_groups,
            wide_embedding_dim=wide_embedding_dim,
            wide_init_fn=parse_init_fn(wide_init_fn, "wide") if wide_init_fn else None,
            device=self._embedding_device,
        )
        return self.embedding_group

    def require_groups(self, *group_names: str) -> None:
        """Raises ``EmbeddingGroupError`` naming the model when a feature group is missing."""
        have = self.embedding_group.group_names()
        for name in group_names:
            if name not in have:
                raise EmbeddingGroupError(
                    f"{type(self).__name__} needs a feature group named '{name}'"
                    f" (groups: {', '.join(have)})"
                )

    def require_fields(self, *field_names: str) -> None:
        """Raises ``ValueError`` naming the config field when a required sub-message is unset."""
        for name in field_names:
            if not self._model_config.HasField(name):
                raise ValueError(
                    f"{type(self).__name__} needs {self._model_type}.{name} in the config"
                )

    def uniform_group_dim(self, group_name: str) -> int:
        """The embedding dim shared by every feature of a group, for layers over ``[B, N, D]``.

        Raises:
            EmbeddingGroupError: the group's features have different dims.

        """
        dims = sorted(set(self.embedding_group.group_dims(group_name)))
        if len(dims) != 1:
            raise EmbeddingGroupError(
                f"{type(self).__name__}'s feature group '{group_name}' needs features of one"
                f" embedding dim, found dims {dims}"
            )
        return dims[0]

    def build_input(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds the batch: ``{group_name: [B, group_dim]}``."""
        return self.embedding_group(batch.sparse_features, batch.dense_features)

    def output_head(self, in_features: int) -> nn.Linear:
        """The last linear layer: ``[B, in_features] -> [B, num_class]``."""
        return nn.Linear(in_features, self._num_class)

    def init_final_and_head(self, width: int) -> None:
        """Builds ``self.final`` (the config's optional ``final`` MLP) and ``self.head``.

        Args:
            width: width ``D`` of the hidden tensor that :meth:`final_and_head` receives.

        """
        self.final = None
        if self._model_config.HasField("final"):
            self.final = MLP.from_config(width, self._model_config.final)
            width = self.final.output_dim()
        self.head = self.output_head(width)

    def final_and_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Applies the optional final MLP and the head: ``[B, D] -> [B, num_class]``."""
        if self.final is not None:
            hidden = self.final(hidden)
        return self.head(hidden)

    def _output_to_prediction(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Turns the head's output ``[B, num_class]`` into named predictions."""
        if self._num_class == 1:
            logits = output.squeeze(1)
            return {"logits": logits, "probs": torch.sigmoid(logits), "y": logits}
        return {"logits": output, "probs": torch.softmax(output, dim=1)}

    def init_loss(self) -> None:
        """Builds one loss module per ``losses`` entry (BCE when none is configured)."""
        for config in self._loss_configs:
            self._loss_modules[loss_name(config)] = create_loss(config)

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Each configured loss of the predictions against the label (sample-weighted)."""
        label = batch.labels[self._label_name]
        weight = batch.sample_weights.get(self._sample_weight_name or "")
        return {
            name: module(
                predictions[module.prediction_key],
                label,
                weight,
                batch.extras.get(module.group_key) if module.group_key else None,
            )
            for name, module in self._loss_modules.items()
        }

    def init_metric(self) -> None:
        """Builds the eval metrics, a mean metric per loss, and the train metrics."""
        self._metric_modules.update(self._build_metrics(self._metric_configs))
        for name in self._loss_modules:
            self._metric_modules[name] = RecMetric(MeanMetric(), prediction_key=name)
        metrics = self._build_metrics([as_metric_config(c) for c in self._train_metric_configs])
        self._train_metric_modules.update(decay_train_metrics(metrics, self._train_metric_configs))

    def _build_metrics(self, configs: list[Any]) -> dict[str, RecMetric]:
        metrics = {}
        for config in configs:
            name = metric_name(config)
            key = name if name not in metrics else f"{name}_{len(metrics)}"
            metrics[key] = create_metric(config, self._num_class)
        return metrics

    def update_metric(
        self,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Adds a batch to the eval metrics and, when given, to each loss's mean."""
        self._update(self._metric_modules, predictions, batch, losses or {})

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Adds a batch to the train metrics."""
        self._update(self._train_metric_modules, predictions, batch, {})

    def _update(
        self,
        metrics: nn.ModuleDict,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: dict[str, torch.Tensor],
    ) -> None:
        label = batch.labels[self._label_name]
        for metric in metrics.values():
            if isinstance(metric.metric, MeanMetric):
                if metric.prediction_key in losses:
                    metric.metric.update(losses[metric.prediction_key], weight=label.numel())
                continue
            group = batch.extras.get(metric.group_key) if metric.group_key else None
            metric.update(predictions[metric.prediction_key], label, group)


def _default_loss(num_class: int) -> Any:
    from recforge.protos import loss_pb2

    config = loss_pb2.LossConfig()
    if num_class > 1:
        config.softmax_cross_entropy.SetInParent()
    else:
        config.binary_cross_entropy.SetInParent()
    return config
