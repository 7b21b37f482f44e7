"""``MultiTaskRank``: shared behaviour of multi-task ranking models (MMoE, PLE, DBMTL, ...).

Every task is a ``task_towers`` entry (``TaskTower`` / ``BayesTaskTower``) with its own label,
losses, metrics, weight and optional sample weight. A task's outputs, losses and metrics are
named with the suffix ``_<tower_name>``: ``logits_ctr``, ``probs_ctr``,
``binary_cross_entropy_ctr``, ``auc_ctr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.loss.pareto import check_min_weights
from recforge.models.rank_model import (
    RankModel,
    Task,
    check_losses,
    default_loss,
    model_train_metrics,
)
from recforge.modules.mlp import MLP
from recforge.modules.mmoe import MMoE
from recforge.protos import model_pb2, tower_pb2

if TYPE_CHECKING:
    from recforge.models.model import SamplerConfig
    from recforge.protos import module_pb2


class TaskHead(nn.Module):
    """A task's optional MLP and its output layer: ``[B, D] -> [B, num_class]``."""

    def __init__(
        self, in_features: int, num_class: int, mlp: Optional[module_pb2.MLP] = None
    ) -> None:
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
    ``super().__init__``); their ``predict`` returns
    ``self._output_to_prediction({tower_name: [B, C]})``.

    A task without ``losses`` uses the model's ``losses``, else binary cross entropy
    (softmax cross entropy for ``num_class > 1``); a task without ``metrics`` uses the model's
    ``metrics``, and one without ``train_metrics`` the model's ``train_metrics`` (TorchEasyRec
    reads only the towers' train metrics and ignores the model's on multi-task models; recforge
    lets the model's stand in, as for ``metrics``, so no setting goes unread). Each loss is
    multiplied by the task's ``weight``; samples are weighted by the task's
    ``sample_weight_name`` column and, with ``task_space_indicator_label``, by
    ``in_task_space_weight`` / ``out_task_space_weight``.
    """

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] = (),
        *,
        embedding_device: Optional[torch.device] = None,
        negative_sampler: Optional[SamplerConfig] = None,
    ) -> None:
        super().__init__(
            model_config,
            features,
            labels,
            sample_weights,
            embedding_device=embedding_device,
            negative_sampler=negative_sampler,
        )
        towers = self.config_field(self._TASKS_FIELD)
        if not self._tasks:
            raise ConfigError(
                f"{type(self).__name__} needs at least one {self._TASKS_FIELD} entry",
                field=towers,
            )
        names = [t.name for t in self._tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"task tower names must be unique, found {duplicates} more than once",
                field=towers,
            )
        try:
            check_min_weights([t.min_weight for t in self._tasks])
        except ValueError as e:
            raise ConfigError(str(e), field=towers) from e

    #: the config field listing the tasks, and each task's name field (dlrm_hstu overrides)
    _TASKS_FIELD = "task_towers"
    _TASK_NAME_FIELD = "tower_name"

    # ------------------------------------------------------------------ config
    def _task_configs(self) -> list:
        return list(self._model_config.task_towers)

    def _read_tasks(self) -> list[Task]:
        """One task per ``task_towers`` entry."""
        return [self._read_task(i, cfg) for i, cfg in enumerate(self._task_configs())]

    def _read_task(self, index: int, cfg: Any) -> Task:
        fld = f"{self.config_field(self._TASKS_FIELD)}[{index}]"
        name_field = self._TASK_NAME_FIELD
        name = getattr(cfg, name_field)
        if not name or not name.replace("_", "a").isalnum():
            raise ConfigError(
                f"{name_field} must be a non-empty name of letters, digits and '_', found {name!r}",
                field=f"{fld}.{name_field}",
            )
        fields = cfg.DESCRIPTOR.fields_by_name
        label = cfg.label_name
        by_order = (tower_pb2.BayesTaskTower, tower_pb2.InterventionTaskTower)
        if not label and isinstance(cfg, by_order) and index < len(self._labels):
            label = self._labels[index]  # DBMTL, DC2VR: label_fields by tower order
        if label not in self._labels:
            raise ConfigError(
                f"task '{name}' reads label {label!r}, which is not in"
                f" data_config.label_fields ({', '.join(self._labels) or 'none'})",
                field=f"{fld}.label_name",
            )
        has_space = "task_space_indicator_label" in fields
        space_label = (cfg.task_space_indicator_label if has_space else "") or None
        if space_label is not None and space_label not in self._labels:
            raise ConfigError(
                f"task '{name}': task_space_indicator_label {space_label!r} is not in"
                f" data_config.label_fields ({', '.join(self._labels)})",
                field=f"{fld}.task_space_indicator_label",
            )
        # InterventionTaskTower and FusionSubTaskConfig have no sample_weight_name
        has_weight = "sample_weight_name" in fields
        sample_weight = (cfg.sample_weight_name if has_weight else "") or None
        if sample_weight is not None and sample_weight not in self._sample_weights:
            raise ConfigError(
                f"task '{name}': sample_weight_name {sample_weight!r} is not in"
                f" data_config.sample_weight_fields ({', '.join(self._sample_weights) or 'none'})",
                field=f"{fld}.sample_weight_name",
            )
        if cfg.num_class < 1:
            raise ConfigError(f"num_class must be >= 1, found {cfg.num_class}", field=fld)
        losses = [(f"{fld}.losses[{i}]", c) for i, c in enumerate(cfg.losses)]
        if not losses:
            model_losses = self._base_model_config.losses
            losses = [(f"model_config.losses[{i}]", c) for i, c in enumerate(model_losses)]
        check_losses(losses, cfg.num_class)
        metrics = [(f"{fld}.metrics[{i}]", c) for i, c in enumerate(cfg.metrics)]
        if not metrics:
            model_metrics = self._base_model_config.metrics
            metrics = [(f"model_config.metrics[{i}]", c) for i, c in enumerate(model_metrics)]
        train_metrics = [(f"{fld}.train_metrics[{i}]", c) for i, c in enumerate(cfg.train_metrics)]
        if not train_metrics:
            train_metrics = model_train_metrics(self._base_model_config)
        return Task(
            name=name,
            field=fld,
            label=label,
            num_class=cfg.num_class,
            losses=losses or [(f"{fld}.losses", default_loss(cfg.num_class))],
            metrics=metrics,
            train_metrics=train_metrics,
            weight=cfg.weight,
            sample_weight=sample_weight,
            space_label=space_label,
            in_space_weight=cfg.in_task_space_weight if has_space else 1.0,
            out_space_weight=cfg.out_task_space_weight if has_space else 1.0,
            min_weight=cfg.pareto_min_loss_weight if "pareto_min_loss_weight" in fields else 0.0,
        )

    # ------------------------------------------------------------------ layers
    def init_input(self) -> int:
        """Builds the embedding group; returns the width of all groups concatenated."""
        group = self.init_embedding_group()
        return sum(group.group_total_dim(name) for name in group.group_names())

    def shared_input(self, batch: Batch) -> torch.Tensor:
        """Every feature group of the batch, concatenated: ``[B, D]``."""
        grouped = self.build_input(batch)
        assert self.embedding_group is not None  # built by build_input's caller
        return torch.cat([grouped[name] for name in self.embedding_group.group_names()], dim=1)

    def build_bottom(self, width: int) -> int:
        """Builds the optional shared bottom: ``bottom_mlp``, then MMoE over ``expert_mlp``.

        Sets ``self.bottom`` (an MLP or None) and ``self.mmoe`` (``num_expert`` experts of
        ``expert_mlp`` with one ``gate_mlp`` gate per task, or None); see
        :meth:`bottom_task_inputs`.

        Args:
            width: the width of the bottom's input.

        Returns:
            The width of each task's input.

        """
        cfg = self._model_config
        self.bottom: Optional[MLP] = None
        if cfg.bottom_mlp.hidden_units:
            self.bottom = self.layer_from_config(MLP, width, "bottom_mlp")
            width = self.bottom.output_dim()
        self.mmoe: Optional[MMoE] = None
        if cfg.expert_mlp.hidden_units:
            gate_mlp = cfg.gate_mlp if cfg.HasField("gate_mlp") else None
            with self.config_errors("expert_mlp"):
                self.mmoe = MMoE(width, cfg.expert_mlp, cfg.num_expert, len(self._tasks), gate_mlp)
            width = self.mmoe.output_dim()
        return width

    def bottom_task_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each task's input from the shared bottom of :meth:`build_bottom`: ``[B, D]`` each."""
        if self.bottom is not None:
            x = self.bottom(x)
        return self.mmoe(x) if self.mmoe is not None else [x] * len(self._tasks)

    def task_heads(self, in_features: Sequence[int]) -> nn.ModuleList:
        """One :class:`TaskHead` per task (its ``mlp`` and output layer), in task order."""
        configs = self._task_configs()
        heads = nn.ModuleList()
        for d, t, cfg in zip(in_features, self._tasks, configs):
            with self.config_errors(f"{t.field.rsplit('.', 1)[-1]}.mlp"):
                heads.append(TaskHead(d, t.num_class, cfg.mlp if cfg.HasField("mlp") else None))
        return heads

    # ------------------------------------------------------------------ losses
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
