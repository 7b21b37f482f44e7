"""Learning-rate schedules (constant, exponential decay with warmup, manual steps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

import torch


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
        lr = self.lr_fn(epoch if self.by_epoch else step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.on_update is not None:
            self.on_update()
        self.last_lr = lr
        return lr

    def get_lr(self) -> list[float]:
        """Current learning rate of each param group."""
        return [g["lr"] for g in self.optimizer.param_groups]


def _exponential(base_lr: float, cfg: Any) -> Callable[[int], float]:
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


def _manual(base_lr: float, cfg: Any) -> Callable[[int], float]:
    sizes, rates = list(cfg.schedule_sizes), list(cfg.learning_rates)
    if len(sizes) != len(rates):
        raise ValueError(
            f"manual_step_learning_rate has {len(sizes)} schedule_sizes but {len(rates)}"
            " learning_rates; they must pair up"
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


def create_schedule(
    optimizer: torch.optim.Optimizer,
    config: Any,
    base_lr: float,
    on_update: Optional[Callable[[], None]] = None,
) -> LearningRateSchedule:
    """Builds the schedule of a Sparse/DenseOptimizer message's ``learning_rate`` oneof.

    ``on_update`` is passed to :class:`LearningRateSchedule`.
    """
    which = config.WhichOneof("learning_rate") or "constant_learning_rate"
    cfg = getattr(config, which)
    if which == "exponential_decay_learning_rate":
        lr_fn, by_epoch = _exponential(base_lr, cfg), cfg.by_epoch
    elif which == "manual_step_learning_rate":
        lr_fn, by_epoch = _manual(base_lr, cfg), cfg.by_epoch
    else:
        lr_fn, by_epoch = (lambda t: base_lr), False
    return LearningRateSchedule(optimizer, base_lr, lr_fn, by_epoch, on_update)
