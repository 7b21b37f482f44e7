"""``BaseModel``: the contract every recforge model follows, and the Train/Predict wrappers."""

from __future__ import annotations

import contextlib
import functools
import math
import pkgutil
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, Union

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollectionInterface,
    EmbeddingCollectionInterface,
)

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.errors import RecforgeError
from recforge.features import BaseFeature
from recforge.loss.pareto import check_min_weights, pareto_weights
from recforge.modules.embedding import table_bases
from recforge.protos import model_pb2, module_pb2, sampler_pb2
from recforge.utils.registry import create_class, get_register_class_meta, import_modules

_MODEL_CLASS_MAP: dict[str, type] = {}
_RegisterMeta = get_register_class_meta(_MODEL_CLASS_MAP, have_abstract_class=False)
#: the message of ``data_config``'s ``sampler`` oneof that appends negatives to the items
SamplerConfig = Union[
    sampler_pb2.NegativeSampler,
    sampler_pb2.NegativeSamplerV2,
    sampler_pb2.HardNegativeSampler,
    sampler_pb2.HardNegativeSamplerV2,
]
_builtins_loaded = False

# the hooks the framework runs once, after a model's __init__
_SETUP_HOOKS = ("init_loss", "init_metric")


def _load_builtin_models() -> None:
    """Imports every module of ``recforge.models`` once, so that their classes register."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import recforge.models as package

        import_modules(
            f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
        )


@contextlib.contextmanager
def errors_at(field: str, prefix: str = "") -> Iterator[None]:
    """Turns a ``ValueError`` raised inside into a ``ConfigError`` at config field ``field``.

    Layers and losses raise ``ValueError`` for bad settings; raised while building from a
    config field, that is a config mistake: the CLI prints it as one line naming the field.

    Args:
        field: the field path, e.g. ``model_config.dcn_v1.deep``.
        prefix: put before the message (e.g. ``task 'ctr': ``).

    """
    try:
        yield
    except RecforgeError:
        raise
    except ValueError as e:
        raise ConfigError(f"{prefix}{e}", field=field) from e


class _ModelMeta(_RegisterMeta):  # type: ignore[misc, valid-type]
    """Registers each model class; builds a model's layers, losses and metrics after ``__init__``.

    ``Model(config, features, labels)`` runs ``__init__`` (the base classes' state), then
    ``build()`` (the model's layers), ``init_loss()`` and ``init_metric()``: a model file
    defines ``build`` without restating the constructor, cannot forget the hooks, and the
    hooks see every attribute ``build`` set.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        model = super().__call__(*args, **kwargs)
        model.build()
        for hook in _SETUP_HOOKS:
            getattr(model, hook)()
        return model


def _run_once(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wraps a setup hook so that it builds its modules once per model.

    A model written before the framework ran the hooks calls them at the end of its own
    ``__init__``; the framework's call after ``__init__`` then does nothing. ``super()`` calls
    inside the hook run as usual.
    """

    @functools.wraps(hook)
    def wrapper(self: Any) -> None:
        done = self.__dict__.setdefault("_setup_hooks_done", set())
        if hook.__name__ in done:
            return
        hook(self)
        done.add(hook.__name__)

    wrapper._runs_once = True  # type: ignore[attr-defined]
    return wrapper


class BaseModel(nn.Module, metaclass=_ModelMeta):
    """Base of every model: subclassing it registers the class under its name.

    A subclass builds its layers in :meth:`build` and implements ``predict``, ``init_loss``,
    ``loss`` and ``init_metric``; the framework calls ``build``, ``init_loss`` and
    ``init_metric`` once, in that order, right after ``__init__``. Pipelines read the model
    through its public properties (:attr:`features`, :attr:`feature_groups`,
    :attr:`output_names`, ...).

    Args:
        model_config: the ``model_config`` message.
        features: every feature the data provides.
        labels: label column names (``data_config.label_fields``).
        sample_weights: sample-weight column names (empty: unweighted).
        embedding_device: where the embedding tables are allocated (None: the default device;
            ``meta`` for sharding plans).
        negative_sampler: ``data_config.negative_sampler`` when the data set appends sampled
            negatives (match models check the item columns it provides).

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
        super().__init__()
        self._base_model_config = model_config
        self._model_type = model_config.WhichOneof("model")
        # the model kind's message (its type depends on the kind)
        self._model_config: Any = (
            getattr(model_config, self._model_type) if self._model_type else None
        )
        self._features = list(features)
        self._labels = list(labels)
        self._sample_weights = list(sample_weights)
        self._embedding_device = embedding_device
        self._negative_sampler = negative_sampler
        self._loss_modules = nn.ModuleDict()
        self._metric_modules = nn.ModuleDict()
        self._train_metric_modules = nn.ModuleDict()

    def build(self) -> None:
        """Builds the model's layers from :attr:`model_config` and :attr:`features`.

        Called once by the framework after ``__init__``; a model class overrides it instead of
        restating the constructor. The default builds nothing (a model that builds its layers
        in its own ``__init__`` still works).
        """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _SETUP_HOOKS:
            hook = cls.__dict__.get(name)
            if callable(hook) and not getattr(hook, "_runs_once", False):
                setattr(cls, name, _run_once(hook))

    @classmethod
    def create_class(cls, name: str) -> type[BaseModel]:
        """Returns the registered model class called ``name`` (e.g. ``DeepFM``).

        Raises:
            RegistryError: unknown name; the message lists the registered models.

        """
        _load_builtin_models()
        return create_class(_MODEL_CLASS_MAP, name)

    @classmethod
    def registered_models(cls) -> list[str]:
        """Names of every registered concrete model class."""
        _load_builtin_models()
        return sorted(_MODEL_CLASS_MAP)

    # ---- what pipelines read ------------------------------------------------------------
    @property
    def model_config(self) -> model_pb2.ModelConfig:
        """The ``model_config`` message the model was built from."""
        return self._base_model_config

    @property
    def features(self) -> list[BaseFeature]:
        """Every feature the model reads, in config order (the inputs of an export)."""
        return list(self._features)

    @property
    def feature_groups(self) -> list[model_pb2.FeatureGroupConfig]:
        """The ``feature_groups`` of the config, in config order."""
        return list(self._base_model_config.feature_groups)

    @property
    def labels(self) -> list[str]:
        """The label columns the model was built with."""
        return list(self._labels)

    @property
    def sample_weights(self) -> list[str]:
        """The sample-weight columns the model was built with."""
        return list(self._sample_weights)

    @property
    def output_names(self) -> list[str]:
        """Names of the tensors ``predict`` returns, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not list its outputs")

    @property
    def has_train_metrics(self) -> bool:
        """Whether the config asks for train metrics (``train_metrics``)."""
        return len(self._train_metric_modules) > 0

    # ---- the contract ---------------------------------------------------------------------
    @abstractmethod
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Runs the model: returns named outputs (``logits`` ``[B]``, ``probs`` ``[B]``, ...)."""

    @abstractmethod
    def init_loss(self) -> None:
        """Builds the loss modules into ``self._loss_modules`` (called once, after __init__)."""

    @abstractmethod
    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Returns named scalar losses; their sum is what training minimises."""

    @abstractmethod
    def init_metric(self) -> None:
        """Builds ``self._metric_modules`` and ``self._train_metric_modules`` (once)."""

    def metric_label(
        self, name: str, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        """The label ``[B]`` that metric ``name`` compares its prediction with.

        Default: the first label column.
        """
        return batch.labels[self._labels[0]]

    def update_metric(
        self,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Adds a batch to the eval metrics and, when given, to the mean of each loss."""
        self._update_metrics(self._metric_modules, predictions, batch, losses or {})

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Adds a batch to the train metrics (``train_metrics`` of the config)."""
        self._update_metrics(self._train_metric_modules, predictions, batch, {})

    def _update_metrics(
        self,
        metrics: nn.ModuleDict,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: dict[str, torch.Tensor],
    ) -> None:
        """Adds a batch to ``metrics``: each reads its prediction, label and group column.

        A ``MeanMetric`` named after a loss averages that loss (weighted by the batch size);
        it is skipped when ``losses`` lacks it (train metrics, prediction-only updates).
        """
        for name, metric in metrics.items():
            label = self.metric_label(name, predictions, batch)
            if isinstance(metric.metric, MeanMetric):
                if metric.prediction_key in losses:
                    metric.metric.update(losses[metric.prediction_key], weight=label.numel())  # type: ignore[index]
                continue
            group = batch.extras.get(metric.group_key) if metric.group_key else None  # type: ignore[call-overload]
            metric.update(predictions[metric.prediction_key], label, group)  # type: ignore[index, operator]

    def compute_metric(self) -> dict[str, torch.Tensor]:
        """Computes every eval metric, then resets them."""
        values = {}
        for name, metric in self._metric_modules.items():
            values[name] = metric.compute()  # type: ignore[operator]
            metric.reset()  # type: ignore[operator]
        return values

    def compute_train_metric(self) -> dict[str, torch.Tensor]:
        """Computes every train metric without resetting it."""
        return {name: metric.compute() for name, metric in self._train_metric_modules.items()}  # type: ignore[operator]

    def reset_train_metric(self) -> None:
        """Forgets the batches added to the train metrics (the trainer's log window)."""
        for metric in self._train_metric_modules.values():
            metric.reset()  # type: ignore[operator]

    def variational_dropout_config(self) -> Optional[module_pb2.VariationalDropout]:
        """``model_config.variational_dropout`` when it is set (the embedding groups apply it)."""
        config = self._base_model_config
        if not config.HasField("variational_dropout"):
            return None
        weight = config.variational_dropout.regularization_lambda
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"regularization_lambda must be a finite number >= 0, found {weight:g}",
                field="model_config.variational_dropout.regularization_lambda",
            )
        return config.variational_dropout

    def embedding_l2_regularization(self) -> float:
        """``model_config.embedding_l2_regularization`` (a recforge extension), checked."""
        weight = self._base_model_config.embedding_l2_regularization
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"embedding_l2_regularization must be a finite number >= 0, found {weight:g}",
                field="model_config.embedding_l2_regularization",
            )
        return weight

    def regularization_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms of shared layers, added beside :meth:`loss` by :class:`TrainWrapper`.

        Today: each feature group's variational-dropout term, ``<group>_feature_p_loss``
        (:meth:`recforge.modules.embedding.EmbeddingGroup.variational_dropout_losses`), and
        the L2 penalty on the batch's embeddings, ``embedding_l2_loss``
        (``model_config.embedding_l2_regularization``; summed over the model's embedding
        groups), so every model with feature groups gets them without code of its own.
        """
        from recforge.modules.embedding import EmbeddingGroup

        losses: dict[str, torch.Tensor] = {}
        for module in self.modules():
            if isinstance(module, EmbeddingGroup):
                losses.update(module.variational_dropout_losses(batch.batch_size))
                penalty = module.embedding_regularization_loss()
                if penalty is not None:
                    previous = losses.get("embedding_l2_loss")
                    losses["embedding_l2_loss"] = (
                        penalty if previous is None else previous + penalty
                    )
        return losses

    def task_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objectives that Pareto loss weighting balances (default: each loss)."""
        return losses

    def pareto_min_weights(self) -> Optional[list[float]]:
        """Lower bounds of the Pareto weights, one per ``task_losses`` entry (None: zeros)."""
        return None

    # ---- helpers for subclasses -------------------------------------------------------------
    @staticmethod
    def class_predictions(
        output: torch.Tensor, num_class: int, suffix: str = ""
    ) -> dict[str, torch.Tensor]:
        """Turns a head's output ``[B, num_class]`` into named predictions.

        ``num_class == 1``: ``logits`` ``[B]``, ``probs`` (sigmoid) ``[B]`` and ``y`` ``[B]``
        (the raw output, for regression losses and metrics); otherwise ``logits`` and
        ``probs`` (softmax) ``[B, num_class]``. Each name ends in ``suffix`` (``_<task>``).
        """
        if num_class == 1:
            logits = output.squeeze(1)
            return {
                f"logits{suffix}": logits,
                f"probs{suffix}": torch.sigmoid(logits),
                f"y{suffix}": logits,
            }
        return {f"logits{suffix}": output, f"probs{suffix}": torch.softmax(output, dim=1)}

    @staticmethod
    def class_prediction_names(num_class: int, suffix: str = "") -> list[str]:
        """The names :meth:`class_predictions` returns for ``num_class``."""
        names = ["logits", "probs", "y"] if num_class == 1 else ["logits", "probs"]
        return [f"{name}{suffix}" for name in names]

    def config_field(self, path: str = "") -> str:
        """The path of a field of the model message, e.g. ``model_config.dcn_v1.deep``."""
        base = f"model_config.{self._model_type}"
        return f"{base}.{path}" if path else base

    def require_fields(self, *field_names: str) -> None:
        """Raises ``ConfigError`` naming the field when a required sub-message is unset."""
        for name in field_names:
            if not self._model_config.HasField(name):
                raise ConfigError(
                    f"{type(self).__name__} needs {self._model_type}.{name}, which is not set",
                    field=self.config_field(name),
                )

    def config_errors(self, path: str) -> contextlib.AbstractContextManager[None]:
        """A ``ValueError`` raised inside becomes a ``ConfigError`` at model field ``path``.

        See :func:`errors_at`; the message starts with the model's class name.

        Example:
            >>> with self.config_errors("deep"):  # doctest: +SKIP
            ...     self.deep = MLP.from_config(dim, self._model_config.deep)

        """
        return errors_at(self.config_field(path), f"{type(self).__name__}: ")

    def layer_from_config(self, layer: Any, in_features: int, field: str) -> Any:
        """``layer.from_config(in_features, <model message>.<field>)``, e.g. the ``deep`` MLP.

        Args:
            layer: a module class with ``from_config(in_features, message)`` (``MLP``,
                ``CrossNet``, ``CIN``, ...).
            in_features: the layer's input width.
            field: the field of the model message that configures it.

        Raises:
            ConfigError: the field's settings are invalid (names the field).

        """
        with self.config_errors(field):
            return layer.from_config(in_features, getattr(self._model_config, field))

    def sparse_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Splits embedding-table weights into (trainable, frozen) lists.

        Walks the module tree for torchrec embedding collections; a table whose features are
        all ``trainable: false`` is frozen.
        """
        frozen_tables = {
            f.emb_bag_config.name  # type: ignore[union-attr]  # sparse features have one
            for f in self._features
            if f.is_sparse and not f.trainable
        }
        bases = table_bases(self)
        trainable: list[nn.Parameter] = []
        frozen: list[nn.Parameter] = []
        for module in self.modules():
            if isinstance(module, (EmbeddingBagCollectionInterface, EmbeddingCollectionInterface)):
                for name, param in module.named_parameters():
                    table = name.split(".")[-2] if "." in name else name
                    base = bases.get(table, table.removesuffix("_wide"))
                    (frozen if base in frozen_tables else trainable).append(param)
        return trainable, frozen


class TrainWrapper(nn.Module):
    """Runs predict + loss for training, optionally under autocast.

    With ``model_config.use_pareto_loss_weight`` the total loss of a training step is
    ``sum_t w_t * L_t`` over the model's ``task_losses``, with the Pareto-efficient weights
    ``w`` of :mod:`recforge.loss.pareto` (the min-norm convex combination of the tasks'
    gradients of the shared dense parameters); the weights come back among the losses as
    ``pareto_weight_<task>``. Without it (and in eval mode) the total is the sum of the losses.
    The model's :meth:`~BaseModel.regularization_losses` are added to the total unweighted
    and come back among the losses.

    Args:
        module: the model.
        mixed_precision: ``bf16``, ``fp16`` or empty for fp32.
        dense_ema: the moving averages of the dense parameters
            (:class:`recforge.utils.dense_ema.DenseEMA`), held here so that checkpoints of the
            wrapper carry them; None without ``dense_optimizer.ema``.

    """

    def __init__(
        self,
        module: BaseModel,
        mixed_precision: str = "",
        dense_ema: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.model = module
        if dense_ema is not None:
            self.dense_ema = dense_ema
        self._autocast_dtype = _autocast_dtype(mixed_precision)
        self._pareto = bool(module.model_config.use_pareto_loss_weight)
        if self._pareto:
            check_min_weights(module.pareto_min_weights() or [])

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Batch]]:
        """Returns ``(total_loss, (losses, predictions, batch))``; the extras are detached."""
        with _autocast(batch, self._autocast_dtype):
            predictions = self.model.predict(batch)
            losses = self.model.loss(predictions, batch)
            regularization = self.model.regularization_losses(batch)
        extras: dict[str, torch.Tensor] = {}
        if self._pareto and self.model.training and torch.is_grad_enabled():
            objectives = self.model.task_losses(losses)
            weights = pareto_weights(
                list(objectives.values()),
                _dense_parameters(self.model),
                self.model.pareto_min_weights(),
            )
            values = list(objectives.values())
            total_loss = torch.stack([float(w) * v for w, v in zip(weights, values)]).sum()
            device = total_loss.device
            extras = {
                f"pareto_weight_{k}": w.float().to(device) for k, w in zip(objectives, weights)
            }
        else:
            total_loss = torch.stack(list(losses.values())).sum()
        if regularization:
            total_loss = total_loss + torch.stack(list(regularization.values())).sum()
            losses = {**losses, **regularization}
        losses = {k: v.detach() for k, v in losses.items()}
        losses.update(extras)
        predictions = {k: v.detach() for k, v in predictions.items()}
        return total_loss, (losses, predictions, batch)


def _dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters outside the embedding tables (what Pareto weighting differentiates)."""
    from recforge.modules.embedding import EmbeddingGroup

    tables = {
        id(p) for m in model.modules() if isinstance(m, EmbeddingGroup) for p in m.parameters()
    }
    return [p for p in model.parameters() if p.requires_grad and id(p) not in tables]


class PredictWrapper(nn.Module):
    """Runs predict for inference and returns CPU tensors.

    Args:
        module: the model.
        output_cols: keep only these outputs (None: all).
        mixed_precision: ``bf16``, ``fp16`` or empty for fp32.

    """

    def __init__(
        self,
        module: BaseModel,
        output_cols: Optional[Sequence[str]] = None,
        mixed_precision: str = "",
    ) -> None:
        super().__init__()
        self.model = module
        self._output_cols = list(output_cols) if output_cols else None
        self._autocast_dtype = _autocast_dtype(mixed_precision)

    def forward(self, batch: Batch) -> tuple[None, tuple[dict[str, torch.Tensor], Batch]]:
        """Returns ``(None, (predictions, batch))`` with predictions on the CPU."""
        with _autocast(batch, self._autocast_dtype):
            predictions = self.model.predict(batch)
        if self._output_cols is not None:
            missing = [c for c in self._output_cols if c not in predictions]
            if missing:
                raise KeyError(f"outputs {missing} not produced (outputs: {list(predictions)})")
            predictions = {k: predictions[k] for k in self._output_cols}
        return None, ({k: v.detach().float().cpu() for k, v in predictions.items()}, batch)


def _autocast_dtype(mixed_precision: str) -> Optional[torch.dtype]:
    choices = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    key = (mixed_precision or "").lower()
    if key not in choices:
        raise ValueError(
            f"mixed_precision must be one of bf16, fp16 or empty; got '{mixed_precision}'"
        )
    return choices[key]


def _autocast(batch: Batch, dtype: Optional[torch.dtype]) -> torch.autocast:
    device_type = batch.dense_features.values().device.type
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=dtype is not None)
