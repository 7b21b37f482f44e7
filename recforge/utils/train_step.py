"""The optimizer step of training: gradient accumulation, loss scaling, clipping and the EMA.

What each ``train_config`` field does (TorchEasyRec's semantics unless noted):

* ``gradient_accumulation_steps: k`` (> 1): every batch's loss is divided by ``k`` before
  backward, and the dense optimizer steps (and gradients are zeroed) after every ``k``-th
  batch, counted by the global step, so the dense update equals one step on the mean loss of
  the ``k`` batches. Embedding tables trained by a fused kernel apply their update inside
  backward, on every batch, with the gradient of ``loss / k``: their update is not accumulated
  (for SGD: ``k`` steps of ``lr / k``, each at the current table values). Tables on the
  data-parallel fallback kernel are trained by a torch optimizer and accumulate like the dense
  parameters. Learning-rate schedules and ``global_step`` count batches. The gradients of a
  window cut by the end of training, or by a checkpoint that a run resumes from, are dropped.
* ``grad_clipping`` (``norm`` | ``value``): clips the gradients of the dense parameters (not
  the tables: see the sparse optimizers' own clipping) before each optimizer step, after
  unscaling. ``enable_global_grad_clip`` changes nothing here: dense gradients are identical
  on every rank after DDP's all-reduce, so the local norm is the global norm.
* ``grad_scaler``: ``torch.amp.GradScaler`` with the configured settings multiplies the loss
  before backward; the dense gradients are unscaled before clipping, and a step whose dense
  gradients hold inf/NaN is skipped (the scale backs off). Where we differ: TorchEasyRec hands
  the scaled gradient to the fused table kernels as it is (SGD tables then move
  ``init_scale`` times too far, and an overflow writes inf into the tables); here the
  gradient entering the embedding lookups is unscaled on its way back, and zeroed when it is
  not finite, so that tables see the true gradient.
* ``dense_optimizer.ema``: :class:`recforge.utils.dense_ema.DenseEMA` is updated after every
  optimizer step that changed the parameters.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.utils.dense_ema import DenseEMA, dense_named_parameters

if TYPE_CHECKING:
    from recforge.protos import train_pb2

logger = logging.getLogger(__name__)

CLIPPING_TYPES = ("norm", "value", "none")


class _ScaledStep:
    """What ``GradScaler`` sees of the optimizer: the dense parameters, and a step of all.

    ``GradScaler`` unscales (and checks for inf/NaN) the gradients of ``param_groups`` only;
    table gradients reach the tables already unscaled (see the module docstring).
    """

    def __init__(self, params: list[nn.Parameter], optimizer: Any) -> None:
        self.param_groups = [{"params": params}]
        self._optimizer = optimizer
        self.stepped = False

    def step(self) -> None:
        self._optimizer.step()
        self.stepped = True


def _check_clipping(train_config: train_pb2.TrainConfig) -> tuple[str, float, float]:
    """``(clipping type, max_gradient, norm_type)`` of ``train_config.grad_clipping``."""
    if not train_config.HasField("grad_clipping"):
        return "none", 0.0, 2.0
    cfg = train_config.grad_clipping
    field = "train_config.grad_clipping"
    kind = cfg.clipping_type.lower()
    if kind not in CLIPPING_TYPES:
        raise ConfigError(
            f"clipping_type must be one of {', '.join(CLIPPING_TYPES)}; found"
            f" '{cfg.clipping_type}'",
            field=f"{field}.clipping_type",
        )
    if kind != "none" and not cfg.max_gradient > 0:
        raise ConfigError(
            f"max_gradient must be > 0; found {cfg.max_gradient}", field=f"{field}.max_gradient"
        )
    if kind == "norm" and not cfg.norm_type > 0:
        raise ConfigError(
            f"norm_type must be > 0 (or inf); found {cfg.norm_type}", field=f"{field}.norm_type"
        )
    return kind, float(cfg.max_gradient), float(cfg.norm_type)


def _create_scaler(
    train_config: train_pb2.TrainConfig, device: torch.device
) -> Optional[torch.amp.GradScaler]:
    if not train_config.HasField("grad_scaler"):
        return None
    cfg = train_config.grad_scaler
    field = "train_config.grad_scaler"
    if not cfg.init_scale > 0:
        raise ConfigError(
            f"init_scale must be > 0; found {cfg.init_scale}", field=f"{field}.init_scale"
        )
    if not cfg.growth_factor > 1:
        raise ConfigError(
            f"growth_factor must be > 1; found {cfg.growth_factor}", field=f"{field}.growth_factor"
        )
    if not 0 < cfg.backoff_factor < 1:
        raise ConfigError(
            f"backoff_factor must be in (0, 1); found {cfg.backoff_factor}",
            field=f"{field}.backoff_factor",
        )
    if not cfg.growth_interval > 0:
        raise ConfigError(
            f"growth_interval must be > 0; found {cfg.growth_interval}",
            field=f"{field}.growth_interval",
        )
    if train_config.mixed_precision.lower() != "fp16":
        logger.warning(
            "train_config.grad_scaler is set but mixed_precision is '%s', not fp16: loss"
            " scaling only guards fp16 gradients against underflow",
            train_config.mixed_precision,
        )
    return torch.amp.GradScaler(
        device.type,
        init_scale=cfg.init_scale,
        growth_factor=cfg.growth_factor,
        backoff_factor=cfg.backoff_factor,
        growth_interval=cfg.growth_interval,
    )


class TrainStep:
    """Backward and optimizer step of each batch, as ``train_config`` asks.

    Args:
        train_config: the ``TrainConfig`` message.
        optimizer: the (combined, keyed) optimizer of the sharded model.
        model: the inner model (``TrainWrapper.model``), after sharding.
        device: this rank's device.
        dense_ema: the wrapper's EMA, or None.

    Raises:
        ConfigError: an invalid ``grad_clipping`` or ``grad_scaler`` setting.

    Example:
        >>> step = TrainStep(train_config, sharded.optimizer, model, device)  # doctest: +SKIP
        >>> loss, _ = sharded.model(batch)  # doctest: +SKIP
        >>> step.backward(loss)  # doctest: +SKIP
        >>> step.step(global_step + 1)  # doctest: +SKIP

    """

    def __init__(
        self,
        train_config: train_pb2.TrainConfig,
        optimizer: Any,
        model: nn.Module,
        device: torch.device,
        dense_ema: Optional[DenseEMA] = None,
    ) -> None:
        self.optimizer = optimizer
        self.accumulation = max(int(train_config.gradient_accumulation_steps), 1)
        self.clipping, self.max_gradient, self.norm_type = _check_clipping(train_config)
        self.dense_params = [p for p in dense_named_parameters(model).values() if p.requires_grad]
        self.scaler = _create_scaler(train_config, device)
        self.ema = dense_ema
        if self.ema is not None:
            self.ema.bind(model)
        self._scaled_step: Optional[_ScaledStep] = None
        self._inv_scale = 1.0
        if self.scaler is not None:
            self._scaled_step = _ScaledStep(self.dense_params, optimizer)
            self._inv_scale = 1.0 / self.scaler.get_scale()
            self._hook_embedding_outputs(model)

    def _hook_embedding_outputs(self, model: nn.Module) -> None:
        from recforge.modules.embedding import EmbeddingGroup

        for module in model.modules():
            if isinstance(module, EmbeddingGroup):
                module.register_forward_hook(self._on_embedding_output)

    def _on_embedding_output(
        self, module: nn.Module, inputs: Any, output: dict[str, torch.Tensor]
    ) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        for value in output.values():
            if value.requires_grad:
                value.register_hook(self._unscale_table_grad)

    def _unscale_table_grad(self, grad: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(grad).all()
        return torch.where(finite, grad * self._inv_scale, torch.zeros_like(grad))

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagates one batch's loss (divided by the accumulation steps, scaled)."""
        if self.accumulation > 1:
            loss = loss / self.accumulation
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def step(self, global_step: int) -> bool:
        """Steps the optimizers after batch number ``global_step`` (1-based) if it ends a window.

        Returns:
            Whether the dense parameters were updated (False inside an accumulation window
            and when the grad scaler skipped a step over inf/NaN gradients).

        """
        if self.accumulation > 1 and global_step % self.accumulation:
            return False
        if self.scaler is not None:
            assert self._scaled_step is not None  # made with the scaler
            self.scaler.unscale_(self._scaled_step)  # type: ignore[arg-type]  # duck-typed
        if self.clipping == "norm":
            torch.nn.utils.clip_grad_norm_(self.dense_params, self.max_gradient, self.norm_type)
        elif self.clipping == "value":
            torch.nn.utils.clip_grad_value_(self.dense_params, self.max_gradient)
        if self.scaler is not None:
            assert self._scaled_step is not None
            self._scaled_step.stepped = False
            self.scaler.step(self._scaled_step)  # type: ignore[arg-type]  # duck-typed
            self.scaler.update()
            self._inv_scale = 1.0 / self.scaler.get_scale()
            stepped = self._scaled_step.stepped
        else:
            self.optimizer.step()
            stepped = True
        if stepped and self.ema is not None:
            self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        return stepped
