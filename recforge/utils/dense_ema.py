"""Exponential moving average of the dense parameters (``dense_optimizer.ema``).

The averages live in a :class:`DenseEMA` module that the :class:`~recforge.models.model.
TrainWrapper` holds as ``dense_ema``, so they are saved and restored with the model in every
checkpoint (keys ``model.dense_ema.<parameter name with '.' as '__'>`` and
``model.dense_ema.n_averaged``). Embedding tables are not averaged: like TorchEasyRec, the
average covers the parameters the dense optimizer trains.

After every optimizer step that updated the parameters ``ema = decay * ema + (1 - decay) *
param``; the first update copies the parameters. Evaluation and export use the averages when
``eval_config.use_dense_ema`` / ``export_config.use_dense_ema`` say so, which defaults to
whether ``dense_optimizer.ema`` is set (TorchEasyRec's rule).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from recforge.config import ConfigError

if TYPE_CHECKING:
    from recforge.protos import eval_pb2, export_pb2, train_pb2

logger = logging.getLogger(__name__)

EMA_ATTRIBUTE = "dense_ema"
_SEPARATOR = "__"


def dense_named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of every parameter outside the embedding tables, in model order.

    Args:
        model: the model (a ``BaseModel``); tables live in its ``EmbeddingGroup`` modules.

    """
    from recforge.modules.embedding import EmbeddingGroup

    table_prefixes = tuple(
        f"{name}." for name, module in model.named_modules() if isinstance(module, EmbeddingGroup)
    )
    return {
        name: param
        for name, param in model.named_parameters()
        if not (table_prefixes and name.startswith(table_prefixes))
    }


def use_dense_ema(
    config: Optional[Union[eval_pb2.EvalConfig, export_pb2.ExportConfig]],
    train_config: Optional[train_pb2.TrainConfig],
) -> bool:
    """Whether eval or export should read the averaged weights.

    Args:
        config: an ``EvalConfig`` or ``ExportConfig`` (its ``use_dense_ema``), or None.
        train_config: the ``TrainConfig`` (its ``dense_optimizer.ema``), or None.

    Returns:
        ``config.use_dense_ema`` where set, else whether ``dense_optimizer.ema`` is set.

    """
    if config is not None and config.HasField("use_dense_ema"):
        return bool(config.use_dense_ema)
    return bool(
        train_config is not None
        and train_config.HasField("dense_optimizer")
        and train_config.dense_optimizer.HasField("ema")
    )


def ema_key(name: str) -> str:
    """The buffer name of the average of parameter ``name`` (``deep.mlp.0.weight``)."""
    return name.replace(".", _SEPARATOR)


def param_name(key: str) -> str:
    """Inverse of :func:`ema_key`."""
    return key.replace(_SEPARATOR, ".")


class DenseEMA(nn.Module):
    """Moving averages of a model's dense parameters, as buffers.

    Args:
        model: the model whose dense parameters are averaged.
        decay: the weight of the old average in each update, in ``[0, 1]``.

    Example:
        >>> ema = DenseEMA(model, decay=0.999)  # doctest: +SKIP
        >>> wrapper = TrainWrapper(model, dense_ema=ema)  # doctest: +SKIP
        >>> ema.bind(model)  # after sharding  # doctest: +SKIP
        >>> ema.update()  # after each optimizer step  # doctest: +SKIP
        >>> with ema.swapped():  # the model now holds the averages  # doctest: +SKIP
        ...     evaluate()

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        n_averaged: torch.Tensor

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(
                f"decay must be in [0, 1]; found {decay}",
                field="train_config.dense_optimizer.ema.decay",
            )
        self.decay = float(decay)
        self.names = list(dense_named_parameters(model))
        keys = [ema_key(n) for n in self.names]
        if len(set(keys)) != len(keys):
            raise RuntimeError(f"dense parameter names collide once '.' becomes '__': {keys}")
        with torch.no_grad():
            for name, param in dense_named_parameters(model).items():
                self.register_buffer(ema_key(name), param.detach().clone())
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.int64))
        self._params: list[torch.Tensor] = []  # the model's parameters
        self._copy_next: Optional[bool] = None

    def averages(self) -> list[torch.Tensor]:
        """The average of each parameter, in :attr:`names` order."""
        return [getattr(self, ema_key(n)) for n in self.names]

    def bind(self, model: nn.Module) -> None:
        """Looks up the parameters to average in ``model`` (call it after sharding).

        Raises:
            RuntimeError: ``model`` lacks a parameter this EMA was built for.

        """
        found = dense_named_parameters(model)
        missing = [n for n in self.names if n not in found]
        if missing:
            raise RuntimeError(f"the model has no dense parameters {missing} to average")
        self._params = [found[n] for n in self.names]
        self._copy_next = None

    @torch.no_grad()
    def update(self) -> None:
        """Folds the current parameters into the averages (after an optimizer step)."""
        if not self._params:
            raise RuntimeError("DenseEMA.update() before bind()")
        if self._copy_next is None:  # one host sync, on the first update after (re)binding
            self._copy_next = int(self.n_averaged) == 0
        averages = self.averages()
        if self._copy_next:
            torch._foreach_copy_(averages, self._params)
            self._copy_next = False
        else:
            torch._foreach_lerp_(averages, self._params, 1.0 - self.decay)
        self.n_averaged.add_(1)

    @torch.no_grad()
    def reset(self, names: Optional[list[str]] = None) -> None:
        """Sets the averages of ``names`` (default: all) to the current parameter values."""
        if not self._params:
            raise RuntimeError("DenseEMA.reset() before bind()")
        chosen = set(self.names if names is None else names)
        for name, average, param in zip(self.names, self.averages(), self._params):
            if name in chosen:
                average.copy_(param)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the model's parameters hold the averages (and vice versa)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        if not self._params:
            raise RuntimeError("DenseEMA.swapped() before bind()")
        averages = self.averages()
        saved = [p.detach().clone() for p in self._params]
        torch._foreach_copy_(self._params, averages)
        torch._foreach_copy_(averages, saved)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Overwrites the model's parameters with the averages (eval / export from a checkpoint)."""
        if not self._params:
            raise RuntimeError("DenseEMA.copy_to_model() before bind()")
        torch._foreach_copy_(self._params, self.averages())


@contextlib.contextmanager
def detached(module: nn.Module) -> Iterator[None]:
    """Within the block the EMA is no part of ``module``'s state dict.

    For restoring a checkpoint that was written without it.
    """
    owners = [m for m in module.modules() if EMA_ATTRIBUTE in m._modules]
    removed = [(m, m._modules.pop(EMA_ATTRIBUTE)) for m in owners]
    try:
        yield
    finally:
        for owner, ema in removed:
            owner._modules[EMA_ATTRIBUTE] = ema


def create_dense_ema(
    train_config: Optional[train_pb2.TrainConfig], model: nn.Module
) -> Optional[DenseEMA]:
    """The EMA that ``train_config.dense_optimizer.ema`` asks for, or None."""
    if train_config is None or not train_config.dense_optimizer.HasField("ema"):
        return None
    return DenseEMA(model, train_config.dense_optimizer.ema.decay)


def checkpoint_has_ema(checkpoint_path: str) -> bool:
    """Whether a checkpoint holds dense EMA averages."""
    from recforge.errors import CheckpointError
    from recforge.utils.checkpoint_format import CheckpointFiles

    try:
        metadata = CheckpointFiles(checkpoint_path).metadata()
    except CheckpointError:  # not a readable checkpoint: restoring it reports why
        return False
    return f"model.{EMA_ATTRIBUTE}.n_averaged" in metadata.state_dict_metadata


def ema_for_inference(
    use: bool,
    explicit: bool,
    checkpoint_path: str,
    model: nn.Module,
    train_config: Optional[train_pb2.TrainConfig],
) -> Optional[DenseEMA]:
    """The EMA module to restore for evaluating / exporting a checkpoint, or None.

    Args:
        use: whether the averages are wanted (see :func:`use_dense_ema`).
        explicit: whether ``use_dense_ema: true`` was set in the config (not just defaulted).
        checkpoint_path: the checkpoint.
        model: the model to be restored.
        train_config: gives the decay (unused for inference, but kept for a valid module).

    Raises:
        CheckpointError: ``use_dense_ema: true`` was set explicitly and the checkpoint holds no
            averages.

    """
    if not use:
        return None
    if not checkpoint_has_ema(checkpoint_path):
        from recforge.errors import CheckpointError

        if explicit:
            raise CheckpointError(
                f"use_dense_ema is true but checkpoint '{checkpoint_path}' holds no dense EMA"
                " (train with train_config.dense_optimizer.ema set, or set use_dense_ema: false)"
            )
        logger.warning("checkpoint %s holds no dense EMA: using the raw weights", checkpoint_path)
        return None
    decay = (
        train_config.dense_optimizer.ema.decay
        if train_config is not None and train_config.dense_optimizer.HasField("ema")
        else 0.999
    )
    return DenseEMA(model, decay)
