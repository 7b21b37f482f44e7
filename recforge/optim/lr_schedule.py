"""Learning-rate schedules: constant, exponential decay, manual steps, cosine annealing.

Cosine annealing comes with or without warm restarts; each schedule has the warmup
TorchEasyRec gives it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from recforge.config import ConfigError

if TYPE_CHECKING:
    from recforge.protos import optimizer_pb2


class LearningRateSchedule:
    """Sets ``lr`` of every param group of an optimizer from the step or epoch.

    Works with torch optimizers and torchrec's keyed/fused optimizers alike (both expose
    ``param_groups``), which torch's ``LRScheduler`` does not accept.

    Args:
        optimizer: the optimizer whose groups are updated.
        base_lr: the configured learning rate.
        lr_fn: maps (step or epoch) -> learning rate.
        by_epoch: schedule on epochs instead of steps.
        on_update: called after every update, e.g. to hand the new rate to fused kernels
            that read ``param_groups`` only in ``step()``.

    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        lr_fn: Callable[[int], float],
        by_epoch: bool = False,
        on_update: Optional[Callable[[], None]] = None,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.lr_fn = lr_fn
        self.by_epoch = by_epoch
        self.on_update = on_update
        self.last_lr = base_lr

    def update(self, step: int, epoch: int) -> float:
        """Sets every param group's learning rate for this step and returns it.

        Always writes the groups: a restored optimizer state carries the rate of the step it
        was saved at, which need not be the one this step asks for.
        """
        # as TorchEasyRec: a base rate of 0 freezes the rate at 0, whatever the schedule says
        lr = self.lr_fn(epoch if self.by_epoch else step) if self.base_lr != 0 else 0.0
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.on_update is not None:
            self.on_update()
        self.last_lr = lr
        return lr

    def get_lr(self) -> list[float]:
        """Current learning rate of each param group."""
        return [g["lr"] for g in self.optimizer.param_groups]


def _exponential(
    base_lr: float, cfg: optimizer_pb2.ExponentialDecayLR, where: str
) -> Callable[[int], float]:
    def lr_at(t: int) -> float:
        if t < cfg.warmup_size:
            return cfg.warmup_learning_rate + (base_lr - cfg.warmup_learning_rate) * t / max(
                cfg.warmup_size, 1
            )
        progress = (t - cfg.warmup_size) / max(cfg.decay_size, 1)
        if cfg.staircase:
            progress = math.floor(progress)
        return max(base_lr * cfg.decay_factor**progress, cfg.min_learning_rate)

    return lr_at


def _manual(base_lr: float, cfg: optimizer_pb2.ManualStepLR, where: str) -> Callable[[int], float]:
    sizes, rates = list(cfg.schedule_sizes), list(cfg.learning_rates)
    if len(sizes) != len(rates):
        raise ConfigError(
            f"{len(sizes)} schedule_sizes but {len(rates)} learning_rates; they must pair up",
            field=where,
        )

    def lr_at(t: int) -> float:
        if cfg.warmup and sizes and t < sizes[0]:
            return rates[0] * t / sizes[0]
        lr = base_lr
        for size, rate in zip(sizes, rates):
            if t >= size:
                lr = rate
        return lr

    return lr_at


def _warmup(base_lr: float, cfg: Any, t: int) -> float:
    """Linear from ``warmup_learning_rate`` at 0 to the base rate at ``warmup_size``."""
    return cfg.warmup_learning_rate + (base_lr - cfg.warmup_learning_rate) * t / cfg.warmup_size


def _cosine_value(base_lr: float, floor: float, t_cur: float, period: float) -> float:
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t_cur / period))


def _cosine(
    base_lr: float, cfg: optimizer_pb2.CosineAnnealingLR, where: str
) -> Callable[[int], float]:
    """Cosine from the base rate down to ``min_learning_rate`` over ``T_max``, then flat.

    torch's ``CosineAnnealingLR`` gives the same values up to ``T_max`` but rises again after
    it; TorchEasyRec (and we) stay at the minimum.
    """
    if cfg.T_max <= 0:
        raise ConfigError(f"T_max must be > 0 (found {cfg.T_max})", field=f"{where}.T_max")

    def lr_at(t: int) -> float:
        if t < cfg.warmup_size:
            return _warmup(base_lr, cfg, t)
        t_cur = min(t - cfg.warmup_size, cfg.T_max)
        return _cosine_value(base_lr, cfg.min_learning_rate, t_cur, cfg.T_max)

    return lr_at


def _cosine_restarts(
    base_lr: float, cfg: optimizer_pb2.CosineAnnealingWarmRestartsLR, where: str
) -> Callable[[int], float]:
    """Cosine over periods of ``T_0``, ``T_0 * T_mult``, ...; back to the base rate at each start.

    The same values as torch's ``CosineAnnealingWarmRestarts`` (after the warmup).
    """
    if cfg.T_0 <= 0:
        raise ConfigError(f"T_0 must be > 0 (found {cfg.T_0})", field=f"{where}.T_0")
    if cfg.T_mult < 1:
        raise ConfigError(f"T_mult must be >= 1 (found {cfg.T_mult})", field=f"{where}.T_mult")

    def lr_at(t: int) -> float:
        if t < cfg.warmup_size:
            return _warmup(base_lr, cfg, t)
        t_cur, period = t - cfg.warmup_size, cfg.T_0
        if cfg.T_mult == 1:
            t_cur %= period
        else:  # integer arithmetic: a float log misplaces some period boundaries
            while t_cur >= period:
                t_cur -= period
                period *= cfg.T_mult
        return _cosine_value(base_lr, cfg.min_learning_rate, t_cur, period)

    return lr_at


def create_schedule(
    optimizer: torch.optim.Optimizer,
    config: Union[
        optimizer_pb2.SparseOptimizer, optimizer_pb2.DenseOptimizer, optimizer_pb2.PartOptimizer
    ],
    base_lr: float,
    on_update: Optional[Callable[[], None]] = None,
    field_path: str = "train_config.dense_optimizer",
) -> LearningRateSchedule:
    """Builds the schedule of a Sparse/Dense/PartOptimizer message's ``learning_rate`` oneof.

    Args:
        optimizer: the optimizer whose rates it sets.
        config: the message holding the ``learning_rate`` oneof (unset: constant).
        base_lr: the configured learning rate.
        on_update: passed to :class:`LearningRateSchedule`.
        field_path: where ``config`` is, for messages.

    Raises:
        ConfigError: a schedule setting is out of range.

    """
    which = config.WhichOneof("learning_rate") or "constant_learning_rate"
    cfg = getattr(config, which)
    where = f"{field_path}.{which}"
    builders: dict[str, Callable[..., Callable[[int], float]]] = {
        "exponential_decay_learning_rate": _exponential,
        "manual_step_learning_rate": _manual,
        "cosine_annealing_learning_rate": _cosine,
        "cosine_annealing_warm_restarts_learning_rate": _cosine_restarts,
    }
    if which in builders:
        lr_fn, by_epoch = builders[which](base_lr, cfg, where), cfg.by_epoch
    else:
        lr_fn, by_epoch = (lambda t: base_lr), False
    return LearningRateSchedule(optimizer, base_lr, lr_fn, by_epoch, on_update)
