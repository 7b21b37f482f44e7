"""``BaseModel``: the contract every recforge model follows, and the Train/Predict wrappers."""

from __future__ import annotations

import pkgutil
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollectionInterface,
    EmbeddingCollectionInterface,
)

from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.loss.pareto import check_min_weights, pareto_weights
from recforge.protos import model_pb2
from recforge.utils.registry import create_class, get_register_class_meta, import_modules

_MODEL_CLASS_MAP: dict[str, type] = {}
_meta_cls = get_register_class_meta(_MODEL_CLASS_MAP, have_abstract_class=False)
_builtins_loaded = False


def _load_builtin_models() -> None:
    """Imports every module of ``recforge.models`` once, so that their classes register."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import recforge.models as package

        import_modules(
            f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
        )


class BaseModel(nn.Module, metaclass=_meta_cls):
    """Base of every model: subclassing it registers the class under its name.

    Args:
        model_config: the ``model_config`` message.
        features: every feature the data provides.
        labels: label column names.
        sample_weights: sample-weight column names (empty: unweighted).

    """

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self._base_model_config = model_config
        self._model_type = model_config.WhichOneof("model")
        self._model_config = getattr(model_config, self._model_type) if self._model_type else None
        self._features = list(features)
        self._labels = list(labels)
        self._sample_weights = list(sample_weights)
        self._embedding_device: Optional[torch.device] = kwargs.get("embedding_device")
        self._loss_modules = nn.ModuleDict()
        self._metric_modules = nn.ModuleDict()
        self._train_metric_modules = nn.ModuleDict()

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

    @abstractmethod
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Runs the model: returns named outputs (``logits`` ``[B]``, ``probs`` ``[B]``, ...)."""

    @abstractmethod
    def init_loss(self) -> None:
        """Builds the loss modules into ``self._loss_modules``."""

    @abstractmethod
    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Returns named scalar losses; their sum is what training minimises."""

    @abstractmethod
    def init_metric(self) -> None:
        """Builds the metric modules into ``self._metric_modules``."""

    @abstractmethod
    def update_metric(
        self,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Adds a batch to the eval metrics (and the mean of each loss)."""

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Adds a batch to the train metrics (``train_metrics`` of the config)."""

    def compute_metric(self) -> dict[str, torch.Tensor]:
        """Computes every eval metric, then resets them."""
        values = {}
        for name, metric in self._metric_modules.items():
            values[name] = metric.compute()
            metric.reset()
        return values

    def compute_train_metric(self) -> dict[str, torch.Tensor]:
        """Computes every train metric without resetting it."""
        return {name: metric.compute() for name, metric in self._train_metric_modules.items()}

    def reset_train_metric(self) -> None:
        """Forgets the batches added to the train metrics (the trainer's log window)."""
        for metric in self._train_metric_modules.values():
            metric.reset()

    def task_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objectives that Pareto loss weighting balances (default: each loss)."""
        return losses

    def pareto_min_weights(self) -> Optional[list[float]]:
        """Lower bounds of the Pareto weights, one per ``task_losses`` entry (None: zeros)."""
        return None

    def sparse_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Splits embedding-table weights into (trainable, frozen) lists.

        Walks the module tree for torchrec embedding collections; a table whose features are
        all ``trainable: false`` is frozen.
        """
        frozen_tables = {
            f.emb_bag_config.name for f in self._features if f.is_sparse and not f.trainable
        }
        trainable, frozen = [], []
        for module in self.modules():
            if isinstance(module, (EmbeddingBagCollectionInterface, EmbeddingCollectionInterface)):
                for name, param in module.named_parameters():
                    table = name.split(".")[-2] if "." in name else name
                    base = table.removesuffix("_wide")
                    (frozen if base in frozen_tables else trainable).append(param)
        return trainable, frozen


class TrainWrapper(nn.Module):
    """Runs predict + loss for training, optionally under autocast.

    With ``model_config.use_pareto_loss_weight`` the total loss of a training step is
    ``sum_t w_t * L_t`` over the model's ``task_losses``, with the Pareto-efficient weights
    ``w`` of :mod:`recforge.loss.pareto` (the min-norm convex combination of the tasks'
    gradients of the shared dense parameters); the weights come back among the losses as
    ``pareto_weight_<task>``. Without it (and in eval mode) the total is the sum of the losses.

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
        config = getattr(module, "_base_model_config", None)
        self._pareto = bool(config is not None and config.use_pareto_loss_weight)
        if self._pareto:
            check_min_weights(module.pareto_min_weights() or [])

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Batch]]:
        """Returns ``(total_loss, (losses, predictions, batch))``; the extras are detached."""
        with _autocast(batch, self._autocast_dtype):
            predictions = self.model.predict(batch)
            losses = self.model.loss(predictions, batch)
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
