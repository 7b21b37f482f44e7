"""``MultiTaskRank``: shared behaviour of multi-task ranking models (MMoE, PLE, DBMTL, ...).

Every task is a ``task_towers`` entry (``TaskTower`` / ``BayesTaskTower``) with its own label,
losses, metrics, weight and optional sample weight. A task's outputs, losses and metrics are
named with the suffix ``_<tower_name>``: ``logits_ctr``, ``probs_ctr``,
``binary_cross_entropy_ctr``, ``auc_ctr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torchmetrics import MeanMetric

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.loss import create_loss, loss_name
from recforge.loss.pareto import check_min_weights
from recforge.metrics import RecMetric, create_metric, metric_name
from recforge.metrics.train_metric import as_metric_config, decay_train_metrics
from recforge.models.rank_model import RankModel, _default_loss
from recforge.modules.mlp import MLP
from recforge.protos import tower_pb2


@dataclass
class Task:
    """One task of a multi-task model, read from its tower config."""

    name: str
    field: str
    label: str
    num_class: int
    weight: float
    sample_weight: Optional[str]
    space_label: Optional[str]
    in_space_weight: float
    out_space_weight: float
    min_weight: float
    losses: list = field(default_factory=list)
    metrics: list = field(default_factory=list)


class TaskHead(nn.Module):
    """A task's optional MLP and its output layer: ``[B, D] -> [B, num_class]``."""

    def __init__(self, in_features: int, num_class: int, mlp: Optional[Any] = None) -> None:
        super().__init__()
        self.mlp = MLP.from_config(in_features, mlp) if mlp is not None else nn.Identity()
        width = self.mlp.output_dim() if isinstance(self.mlp, MLP) else in_features
        self.output = nn.Linear(width, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Task logits ``[B, num_class]``."""
        return self.output(self.mlp(x))


class MultiTaskRank(RankModel):
    """A model with one output per task (``task_towers`` of its config message).

    Subclasses build the shared layers and the task heads in ``__init__`` (after
    ``super().__init__``), then call ``self.init_loss()`` and ``self.init_metric()``; their
    ``predict`` returns ``self._multi_task_output_to_prediction({tower_name: [B, C]})``.

    A task without ``losses`` uses the model's ``losses``, else binary cross entropy
    (softmax cross entropy for ``num_class > 1``); a task without ``metrics`` uses the model's
    ``metrics``. The model's ``train_metrics`` apply to every task. Each loss is multiplied by
    the task's ``weight``; samples are weighted by the task's ``sample_weight_name`` column
    and, with ``task_space_indicator_label``, by ``in_task_space_weight`` /
    ``out_task_space_weight``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks = [self._read_task(i, cfg) for i, cfg in enumerate(self._task_configs())]
        if not self._tasks:
            raise ConfigError(
                f"{type(self).__name__} needs at least one task_towers entry",
                field=f"model_config.{self._model_type}.task_towers",
            )
        names = [t.name for t in self._tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"task tower names must be unique, found {duplicates} more than once",
                field=f"model_config.{self._model_type}.task_towers",
            )
        try:
            check_min_weights([t.min_weight for t in self._tasks])
        except ValueError as e:
            raise ConfigError(str(e), field=f"model_config.{self._model_type}.task_towers") from e
        self._loss_tasks: dict[str, Task] = {}
        self._metric_tasks: dict[str, Task] = {}

    # ------------------------------------------------------------------ config
    def _task_configs(self) -> list:
        return list(self._model_config.task_towers)

    def _read_task(self, index: int, cfg: Any) -> Task:
        fld = f"model_config.{self._model_type}.task_towers[{index}]"
        name = cfg.tower_name
        if not name or not name.replace("_", "a").isalnum():
            raise ConfigError(
                f"tower_name must be a non-empty name of letters, digits and '_', found {name!r}",
                field=f"{fld}.tower_name",
            )
        label = cfg.label_name
        if not label and isinstance(cfg, tower_pb2.BayesTaskTower) and index < len(self._labels):
            label = self._labels[index]  # DBMTL: label_fields by tower order
        if label not in self._labels:
            raise ConfigError(
                f"task '{name}' reads label {label!r}, which is not in"
                f" data_config.label_fields ({', '.join(self._labels) or 'none'})",
                field=f"{fld}.label_name",
            )
        space_label = cfg.task_space_indicator_label or None
        if space_label is not None and space_label not in self._labels:
            raise ConfigError(
                f"task '{name}': task_space_indicator_label {space_label!r} is not in"
                f" data_config.label_fields ({', '.join(self._labels)})",
                field=f"{fld}.task_space_indicator_label",
            )
        sample_weight = cfg.sample_weight_name or None
        if sample_weight is not None and sample_weight not in self._sample_weights:
            raise ConfigError(
                f"task '{name}': sample_weight_name {sample_weight!r} is not in"
                f" data_config.sample_weight_fields ({', '.join(self._sample_weights) or 'none'})",
                field=f"{fld}.sample_weight_name",
            )
        if cfg.num_class < 1:
            raise ConfigError(f"num_class must be >= 1, found {cfg.num_class}", field=fld)
        losses, where = list(cfg.losses), f"{fld}.losses"
        if not losses:
            losses, where = list(self._base_model_config.losses), "model_config.losses"
        for i, config in enumerate(losses):
            _check_loss(config, cfg.num_class, f"{where}[{i}]")
        return Task(
            name=name,
            field=fld,
            label=label,
            num_class=cfg.num_class,
            weight=cfg.weight,
            sample_weight=sample_weight,
            space_label=space_label,
            in_space_weight=cfg.in_task_space_weight,
            out_space_weight=cfg.out_task_space_weight,
            min_weight=cfg.pareto_min_loss_weight,
            losses=losses or [_default_loss(cfg.num_class)],
            metrics=list(cfg.metrics) or list(self._base_model_config.metrics),
        )

    # ------------------------------------------------------------------ layers
    def init_input(self) -> int:
        """Builds the embedding group; returns the width of all groups concatenated."""
        group = self.init_embedding_group()
        return sum(group.group_total_dim(name) for name in group.group_names())

    def shared_input(self, batch: Batch) -> torch.Tensor:
        """Every feature group of the batch, concatenated: ``[B, D]``."""
        grouped = self.build_input(batch)
        return torch.cat([grouped[name] for name in self.embedding_group.group_names()], dim=1)

    def task_heads(self, in_features: Sequence[int]) -> nn.ModuleList:
        """One :class:`TaskHead` per task (its ``mlp`` and output layer), in task order."""
        configs = self._task_configs()
        return nn.ModuleList(
            TaskHead(d, t.num_class, cfg.mlp if cfg.HasField("mlp") else None)
            for d, t, cfg in zip(in_features, self._tasks, configs)
        )

    def _multi_task_output_to_prediction(
        self, outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Turns ``{tower_name: [B, num_class]}`` into ``logits_<t>``, ``probs_<t>``, ``y_<t>``."""
        predictions: dict[str, torch.Tensor] = {}
        for task in self._tasks:
            output = outputs[task.name]
            if task.num_class == 1:
                logits = output.squeeze(1)
                predictions[f"logits_{task.name}"] = logits
                predictions[f"probs_{task.name}"] = torch.sigmoid(logits)
                predictions[f"y_{task.name}"] = logits
            else:
                predictions[f"logits_{task.name}"] = output
                predictions[f"probs_{task.name}"] = torch.softmax(output, dim=1)
        return predictions

    # ------------------------------------------------------------------ losses
    def init_loss(self) -> None:
        """Builds ``<loss>_<task>`` for every loss of every task."""
        for task in self._tasks:
            for config in task.losses:
                name = f"{loss_name(config)}_{task.name}"
                if name in self._loss_modules:
                    raise ConfigError(
                        f"task '{task.name}' sets loss {loss_name(config)} twice", field=task.field
                    )
                try:
                    self._loss_modules[name] = create_loss(config)
                except ValueError as e:
                    raise ConfigError(str(e), field=f"{task.field}.losses") from e
                self._loss_tasks[name] = task

    def _task_sample_weight(self, task: Task, batch: Batch) -> Optional[torch.Tensor]:
        weight = batch.sample_weights[task.sample_weight] if task.sample_weight else None
        if task.space_label is not None:
            inside = (batch.labels[task.space_label] > 0).float()
            space = task.in_space_weight * inside + task.out_space_weight * (1 - inside)
            weight = space if weight is None else weight * space
        return weight

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Each task's losses against its label, times the task weight (sample-weighted)."""
        losses = {}
        for name, module in self._loss_modules.items():
            task = self._loss_tasks[name]
            group = batch.extras.get(module.group_key) if module.group_key else None
            value = module(
                predictions[f"{module.prediction_key}_{task.name}"],
                batch.labels[task.label],
                self._task_sample_weight(task, batch),
                group,
            )
            losses[name] = value * task.weight if task.weight != 1.0 else value
        return losses

    def task_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The sum of each task's losses, ``{tower_name: scalar}`` (Pareto weighting)."""
        totals: dict[str, torch.Tensor] = {}
        for name, value in losses.items():
            task = self._loss_tasks.get(name)
            if task is not None:
                totals[task.name] = totals[task.name] + value if task.name in totals else value
        return totals

    def pareto_min_weights(self) -> list[float]:
        """Each task's ``pareto_min_loss_weight``, in task order."""
        return [t.min_weight for t in self._tasks]

    # ------------------------------------------------------------------ metrics
    def init_metric(self) -> None:
        """Builds ``<metric>_<task>`` and ``<loss>_<task>`` means, and the train metrics."""
        for task in self._tasks:
            self._add_metrics(self._metric_modules, task, task.metrics)
            for name, loss_task in self._loss_tasks.items():
                if loss_task is task:
                    self._metric_modules[name] = RecMetric(MeanMetric(), prediction_key=name)
                    self._metric_tasks[name] = task
        configs = [as_metric_config(c) for c in self._train_metric_configs]
        for task in self._tasks:
            before = set(self._train_metric_modules)
            self._add_metrics(self._train_metric_modules, task, configs)
            added = {k: m for k, m in self._train_metric_modules.items() if k not in before}
            decayed = decay_train_metrics(added, self._train_metric_configs)
            self._train_metric_modules.update(decayed)

    def _add_metrics(self, modules: nn.ModuleDict, task: Task, configs: list) -> None:
        for config in configs:
            try:
                name = f"{metric_name(config)}_{task.name}"
                metric = create_metric(config, task.num_class)
            except ValueError as e:
                raise ConfigError(f"task '{task.name}': {e}", field=f"{task.field}.metrics") from e
            if name in modules:
                name = f"{name}_{len(modules)}"
            metric.prediction_key = f"{metric.prediction_key}_{task.name}"
            modules[name] = metric
            self._metric_tasks[name] = task

    def _update(
        self,
        metrics: nn.ModuleDict,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: dict[str, torch.Tensor],
    ) -> None:
        for name, metric in metrics.items():
            label = batch.labels[self._metric_tasks[name].label]
            if isinstance(metric.metric, MeanMetric):
                if metric.prediction_key in losses:
                    metric.metric.update(losses[metric.prediction_key], weight=label.numel())
                continue
            group = batch.extras.get(metric.group_key) if metric.group_key else None
            metric.update(predictions[metric.prediction_key], label, group)


# loss -> the num_class values it accepts, and what it needs
_LOSS_NUM_CLASS = {
    "binary_cross_entropy": (lambda n: n == 1, "num_class: 1"),
    "binary_focal_loss": (lambda n: n == 1, "num_class: 1"),
    "l2_loss": (lambda n: n == 1, "num_class: 1"),
    "softmax_cross_entropy": (lambda n: n > 1, "num_class > 1"),
    "jrc_loss": (lambda n: n == 2, "num_class: 2"),
}


def _check_loss(config: Any, num_class: int, fld: str) -> None:
    kind = config.WhichOneof("loss")
    if kind is None:
        raise ConfigError(f"no loss is set; set one of: {', '.join(_LOSS_NUM_CLASS)}", field=fld)
    accepts, needs = _LOSS_NUM_CLASS.get(kind, (lambda n: True, ""))
    if not accepts(num_class):
        raise ConfigError(f"{kind} needs {needs}, found num_class: {num_class}", field=fld)
