"""``RankModel``: shared behaviour of ranking (CTR / regression / multi-class) models.

A ranking model scores one or more :class:`Task` s. A single-task model (DeepFM, DCN, ...)
has one task, named ``""``, read from ``model_config``'s ``num_class``, ``losses`` and
``metrics`` and the first label; multi-task models (:mod:`recforge.models.multi_task_rank`)
read one task per ``task_towers`` entry. Losses, metrics, outputs and their names are built the
same way for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn
from torchmetrics import MeanMetric

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.features.base_feature import parse_init_fn
from recforge.loss import create_loss, loss_name, num_class_problem
from recforge.metrics import RecMetric, create_metric, metric_name
from recforge.metrics.train_metric import as_metric_config, decay_train_metrics
from recforge.models.model import BaseModel, SamplerConfig, errors_at
from recforge.modules.embedding import EmbeddingGroup, EmbeddingGroupError
from recforge.modules.mlp import MLP
from recforge.protos import loss_pb2, model_pb2


@dataclass
class Task:
    """One label a ranking model scores, with its losses and metrics.

    Attributes:
        name: the tower name (``""`` for a single-task model); outputs, losses and metrics of
            the task end in ``_<name>``.
        field: where the task is in the config (for error messages).
        label: the label column.
        num_class: outputs of the task's head.
        losses: ``(field path, LossConfig)`` of each loss.
        metrics: ``(field path, MetricConfig)`` of each eval metric.
        train_metrics: ``(field path, TrainMetricConfig)`` of each train metric.
        weight: multiplies each of the task's losses.
        sample_weight: the sample-weight column (None: unweighted).
        space_label: label column telling whether a sample is in the task's sample space.
        in_space_weight: sample weight inside the sample space (with ``space_label``).
        out_space_weight: sample weight outside it.
        min_weight: lower bound of the task's Pareto weight.

    """

    name: str
    field: str
    label: str
    num_class: int
    losses: list[tuple[str, Any]] = field(default_factory=list)  # type: ignore[operator]
    metrics: list[tuple[str, Any]] = field(default_factory=list)  # type: ignore[operator]
    train_metrics: list[tuple[str, Any]] = field(default_factory=list)  # type: ignore[operator]
    weight: float = 1.0
    sample_weight: Optional[str] = None
    space_label: Optional[str] = None
    in_space_weight: float = 1.0
    out_space_weight: float = 1.0
    min_weight: float = 0.0

    @property
    def suffix(self) -> str:
        """``_<name>``, or ``""`` for the task of a single-task model."""
        return f"_{self.name}" if self.name else ""

    def key(self, name: str) -> str:
        """The name of an output, loss or metric of this task (``probs`` -> ``probs_ctr``)."""
        return f"{name}{self.suffix}"

    def error_prefix(self) -> str:
        """How messages about the task start (``task 'ctr': ``; nothing for a single task)."""
        return f"task '{self.name}': " if self.name else ""


class RankModel(BaseModel):
    """A model that scores each sample against its label(s).

    Subclasses build their layers in ``__init__`` and implement ``predict`` by turning the
    grouped embeddings (``self.build_input(batch)``) into the head's output and returning
    ``self._output_to_prediction(output)``. Losses and metrics come from the config; the
    framework builds them after ``__init__``.

    Outputs of ``predict``: ``logits`` and ``probs`` (``[B]`` for ``num_class == 1``,
    ``[B, C]`` otherwise); ``y`` ``[B]`` (the raw output) for regression losses. A model
    without ``losses`` trains with binary cross entropy (softmax cross entropy for
    ``num_class > 1``).
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
        self._num_class = model_config.num_class
        self.embedding_group: Optional[EmbeddingGroup] = None
        self._tasks = self._read_tasks()
        self._loss_tasks: dict[str, Task] = {}
        self._metric_tasks: dict[str, Task] = {}

    # ------------------------------------------------------------------ tasks
    def _read_tasks(self) -> list[Task]:
        """The task of a single-task model: ``num_class``, ``losses``, ``metrics``, label 0."""
        mc = self._base_model_config
        losses = [(f"model_config.losses[{i}]", c) for i, c in enumerate(mc.losses)]
        check_losses(losses, self._num_class)
        return [
            Task(
                name="",
                field="model_config",
                label=self._labels[0] if self._labels else "",
                num_class=self._num_class,
                losses=losses or [("model_config.losses", default_loss(self._num_class))],
                metrics=[(f"model_config.metrics[{i}]", c) for i, c in enumerate(mc.metrics)],
                train_metrics=model_train_metrics(mc),
                sample_weight=self._sample_weights[0] if self._sample_weights else None,
            )
        ]

    # ------------------------------------------------------------------ layers
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
            variational_dropout=self.variational_dropout_config(),
            embedding_l2=self.embedding_l2_regularization(),
        )
        return self.embedding_group

    def require_groups(self, *group_names: str) -> None:
        """Raises ``EmbeddingGroupError`` naming the model when a feature group is missing."""
        assert self.embedding_group is not None, "init_embedding_group() first"
        have = self.embedding_group.group_names()
        for name in group_names:
            if name not in have:
                raise EmbeddingGroupError(
                    f"{type(self).__name__} needs a feature group named '{name}'"
                    f" (groups: {', '.join(have)})"
                )

    def uniform_group_dim(self, group_name: str) -> int:
        """The embedding dim shared by every feature of a group, for layers over ``[B, N, D]``.

        Raises:
            EmbeddingGroupError: the group's features have different dims.

        """
        assert self.embedding_group is not None, "init_embedding_group() first"
        dims = sorted(set(self.embedding_group.group_dims(group_name)))
        if len(dims) != 1:
            raise EmbeddingGroupError(
                f"{type(self).__name__}'s feature group '{group_name}' needs features of one"
                f" embedding dim, found dims {dims}"
            )
        return dims[0]

    def init_sparse_dense_groups(self) -> int:
        """Builds the embedding group and reads it as DLRM does: ``sparse`` and ``dense``.

        ``sparse`` holds ``N`` embeddings of one dim ``D`` (a model with a single group uses it
        as ``sparse``); ``dense`` (optional) goes through the model's ``dense_mlp``, whose last
        width must be ``D``, and becomes one more vector (see :meth:`sparse_dense_vectors`).
        Sets ``self.dense_mlp`` (None without ``dense``).

        Returns:
            The vectors per sample: ``N``, or ``N + 1`` with ``dense``.

        Raises:
            ConfigError: ``dense_mlp`` does not end in ``D``.
            EmbeddingGroupError: no ``sparse`` group, or its dims differ.

        """
        group = self.init_embedding_group()
        names = group.group_names()
        self._sparse = names[0] if len(names) == 1 else "sparse"
        self.require_groups(self._sparse)
        self._dim = self.uniform_group_dim(self._sparse)
        num_vectors = group.group_feature_count(self._sparse)
        self.dense_mlp = None
        if "dense" in names and self._sparse != "dense":
            self.dense_mlp = self.layer_from_config(
                MLP, group.group_total_dim("dense"), "dense_mlp"
            )
            if self.dense_mlp.output_dim() != self._dim:
                raise ConfigError(
                    f"{type(self).__name__}'s dense_mlp must end in the sparse embedding dim"
                    f" {self._dim}, found hidden_units"
                    f" {list(self._model_config.dense_mlp.hidden_units)}",
                    field=self.config_field("dense_mlp.hidden_units"),
                )
            num_vectors += 1
        return num_vectors

    def sparse_dense_vectors(
        self, grouped: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The vectors of :meth:`init_sparse_dense_groups` from the embedded groups.

        Returns:
            ``([B, N(+1), D]`` vectors, the dense vector first; the dense vector ``[B, D]``
            or None without ``dense``).

        """
        sparse = grouped[self._sparse]
        vectors = sparse.view(sparse.shape[0], -1, self._dim)
        dense = None
        if self.dense_mlp is not None:
            dense = self.dense_mlp(grouped["dense"])
            vectors = torch.cat([dense.unsqueeze(1), vectors], dim=1)
        return vectors, dense

    def build_input(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds the batch: ``{group_name: [B, group_dim]}``."""
        assert self.embedding_group is not None, "init_embedding_group() first"
        return self.embedding_group(batch.sparse_features, batch.dense_features)

    def output_head(self, in_features: int) -> nn.Linear:
        """The last linear layer: ``[B, in_features] -> [B, num_class]``."""
        return nn.Linear(in_features, self._num_class)

    def init_final_and_head(self, width: int, required: bool = False) -> None:
        """Builds ``self.final`` (the config's ``final`` MLP) and ``self.head``.

        ``final`` means the same in every model: an MLP between the model's hidden vector and
        the head. Unset, or set without ``hidden_units``, there is none (``self.final`` is
        None) unless the model requires one.

        Args:
            width: width ``D`` of the hidden tensor that :meth:`final_and_head` receives.
            required: the model needs a ``final`` MLP (DLRM).

        Raises:
            ConfigError: ``required`` and no ``final { hidden_units }``.

        """
        final = self._model_config.final
        self.final = None
        if self._model_config.HasField("final") and final.hidden_units:
            with self.config_errors("final"):
                self.final = MLP.from_config(width, final)
            width = self.final.output_dim()
        elif required:
            raise ConfigError(
                f"{type(self).__name__} needs {self._model_type}.final {{ hidden_units }}",
                field=self.config_field("final"),
            )
        self.head = self.output_head(width)

    def final_and_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Applies the final MLP (when there is one) and the head: ``[B, D] -> [B, num_class]``."""
        if self.final is not None:
            hidden = self.final(hidden)
        return self.head(hidden)

    # ------------------------------------------------------------------ outputs
    def _output_to_prediction(
        self, output: Union[torch.Tensor, dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Named predictions of every task.

        Args:
            output: the head's output ``[B, num_class]`` (single-task model), or
                ``{tower_name: [B, num_class]}`` (one entry per task).

        """
        outputs = output if isinstance(output, dict) else {self._tasks[0].name: output}
        predictions: dict[str, torch.Tensor] = {}
        for task in self._tasks:
            predictions.update(
                self.class_predictions(outputs[task.name], task.num_class, task.suffix)
            )
        return predictions

    @property
    def output_names(self) -> list[str]:
        """``logits``, ``probs`` (and ``y`` for ``num_class == 1``) of each task."""
        return [n for t in self._tasks for n in self.class_prediction_names(t.num_class, t.suffix)]

    # ------------------------------------------------------------------ losses
    def init_loss(self) -> None:
        """Builds one loss module per loss of each task (``<loss>`` / ``<loss>_<task>``)."""
        for task in self._tasks:
            for fld, config in task.losses:
                with errors_at(fld, task.error_prefix()):
                    name = task.key(loss_name(config))
                    module = create_loss(config)
                if name in self._loss_modules:
                    raise ConfigError(
                        f"{task.error_prefix()}loss {loss_name(config)} is set twice", field=fld
                    )
                self._loss_modules[name] = module
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
        return {name: self.task_loss(name, predictions, batch) for name in self._loss_modules}

    def task_loss(
        self, name: str, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        """The loss ``name`` of a task against its label, times the task weight: a scalar."""
        module = self._loss_modules[name]
        task = self._loss_tasks[name]
        group = batch.extras.get(module.group_key) if module.group_key else None  # type: ignore[call-overload]
        value = module(
            predictions[task.key(module.prediction_key)],  # type: ignore[arg-type]
            batch.labels[task.label],
            self._task_sample_weight(task, batch),
            group,
        )
        return value * task.weight if task.weight != 1.0 else value

    # ------------------------------------------------------------------ metrics
    def init_metric(self) -> None:
        """Builds each task's metrics, a mean metric per loss, and its train metrics.

        Train metrics are decayed running values (:class:`DecayedTrainMetric`).
        """
        for task in self._tasks:
            self._add_metrics(self._metric_modules, task, task.metrics)
            for name, loss_task in self._loss_tasks.items():
                if loss_task is task:
                    self._metric_modules[name] = RecMetric(MeanMetric(), prediction_key=name)
                    self._metric_tasks[name] = task
        for task in self._tasks:
            configs, decays = [], []
            for fld, config in task.train_metrics:
                with errors_at(fld, task.error_prefix()):
                    configs.append((fld, as_metric_config(config)))
                if not 0 <= config.decay_rate < 1:
                    raise ConfigError(
                        f"decay_rate must be in [0, 1); found {config.decay_rate}",
                        field=f"{fld}.decay_rate",
                    )
                decays.append(config)
            self._add_metrics(self._train_metric_modules, task, configs, decays)

    def _add_metrics(
        self,
        modules: nn.ModuleDict,
        task: Task,
        configs: list[tuple[str, Any]],
        decays: Optional[list[Any]] = None,
    ) -> None:
        """Builds ``configs`` into ``modules``; with ``decays`` (TrainMetricConfigs), decayed."""
        for i, (fld, config) in enumerate(configs):
            with errors_at(fld, task.error_prefix()):
                name = task.key(metric_name(config))
                metric = create_metric(config, task.num_class)
            if name in modules:
                name = f"{name}_{len(modules)}"
            metric.prediction_key = task.key(metric.prediction_key)
            if decays is not None:
                metric = decay_train_metrics({name: metric}, [decays[i]])[name]
            modules[name] = metric
            self._metric_tasks[name] = task

    def metric_label(
        self, name: str, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        """The label of the task metric ``name`` belongs to."""
        return batch.labels[self._metric_tasks[name].label]


def model_train_metrics(model_config: model_pb2.ModelConfig) -> list[tuple[str, Any]]:
    """``(field path, TrainMetricConfig)`` of each of the model's ``train_metrics``."""
    configs = model_config.train_metrics
    return [(f"model_config.train_metrics[{i}]", c) for i, c in enumerate(configs)]


def check_losses(losses: list[tuple[str, Any]], num_class: int) -> None:
    """Raises ``ConfigError`` at the first loss that is unset or does not suit ``num_class``.

    Args:
        losses: ``(field path, LossConfig)`` of each loss.
        num_class: outputs of the head the losses read.

    """
    for fld, config in losses:
        with errors_at(fld):
            loss_name(config)
        problem = num_class_problem(config, num_class)
        if problem is not None:
            raise ConfigError(problem, field=fld)


def default_loss(num_class: int) -> loss_pb2.LossConfig:
    """The loss of a task without ``losses``: BCE, or softmax cross entropy for classes."""
    config = loss_pb2.LossConfig()
    if num_class > 1:
        config.softmax_cross_entropy.SetInParent()
    else:
        config.binary_cross_entropy.SetInParent()
    return config
