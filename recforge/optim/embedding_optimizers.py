"""Torch optimizers with the math of fbgemm's fused embedding kernels that torch lacks.

fbgemm trains embedding tables with row-wise optimizers (row-wise Adagrad, LARS-SGD, LAMB,
partial row-wise LAMB / Adam) inside backward. Where its fused kernel cannot run a table (on
the CPU only SGD and (row-wise) Adagrad exist), recforge trains the table with a dense kernel
and one of these optimizers, which follow the fused kernels' update rules row by row.

Every parameter is an embedding table of shape ``(num_rows, dim)``. Like the fused kernels,
which only visit the rows looked up in a batch, a step leaves rows whose gradient is all zero
(their weights and their optimizer state) untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch
from torch import Tensor

# fbgemm's WeightDecayMode values (the row-wise Adagrad kernel's weight_decay_mode)
WEIGHT_DECAY_NONE, WEIGHT_DECAY_L2, WEIGHT_DECAY_DECOUPLE = 0, 1, 2


def _row_norm(x: Tensor) -> Tensor:
    """``(rows, dim) -> (rows, 1)`` Euclidean norm of each row."""
    return x.norm(dim=1, keepdim=True)


class _RowWiseOptimizer(torch.optim.Optimizer):
    """Base: runs ``_update`` on the touched rows of every 2-D parameter.

    Subclasses declare their state as ``{name: per_row}`` in ``_STATE`` (``per_row``: one value
    per row instead of one per element) and implement ``_update``.
    """

    _STATE: dict[str, bool] = {}

    def __init__(self, params: Iterable[Tensor], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"{type(self).__name__} trains embedding tables (2-D), got a"
                        f" {p.dim()}-D parameter of shape {tuple(p.shape)}"
                    )

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            for name, per_row in self._STATE.items():
                shape = (p.shape[0], 1) if per_row else p.shape
                state[name] = torch.full(
                    shape, self._initial_value(name, group), dtype=p.dtype, device=p.device
                )
        return state

    def _initial_value(self, name: str, group: dict[str, Any]) -> float:
        return 0.0

    @torch.no_grad()
    def step(  # type: ignore[override]  # one signature for torch's two overloads
        self, closure: Optional[Callable[[], float]] = None
    ) -> Optional[float]:
        """Updates the touched rows of every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not take sparse gradients")
                state = self._init_state(p, group)
                state["step"] += 1
                rows = p.grad.ne(0).any(dim=1).nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                slots = {name: state[name][rows] for name in self._STATE}
                new_weight = self._update(
                    p[rows], p.grad[rows], slots, group, int(state["step"].item())
                )
                p.index_copy_(0, rows, new_weight)
                for name, value in slots.items():
                    state[name].index_copy_(0, rows, value)
        return loss

    def _update(
        self, w: Tensor, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> Tensor:
        """New weights of the touched rows; updates ``slots`` (their state) in place.

        Args:
            w: ``(rows, dim)`` weights of the touched rows.
            g: ``(rows, dim)`` their gradients.
            slots: their optimizer state, ``(rows, dim)`` or ``(rows, 1)`` per entry.
            group: the param group (hyper-parameters).
            step: this step's number, from 1 (bias corrections use it, as fbgemm's ``iter``).

        """
        raise NotImplementedError


class RowWiseAdagrad(_RowWiseOptimizer):
    """Adagrad with one accumulator per row, as fbgemm's ``EXACT_ROWWISE_ADAGRAD``.

    ``sum += mean(g'^2)`` over the row (``g' = g + weight_decay * w`` under L2), then
    ``w = c * w - lr / (sqrt(sum) + eps) * g`` with ``c`` = 1 (NONE), ``1 - lr / (sqrt(sum) + eps)
    * weight_decay`` (L2) or ``1 - lr * weight_decay`` (DECOUPLE).

    Unlike torchrec's ``RowWiseAdagrad`` (always L2), ``weight_decay`` acts only through
    ``weight_decay_mode``, as in the fused kernel.

    Args:
        params: embedding tables.
        lr: learning rate.
        eps: added to the root of the accumulator.
        weight_decay: decay factor.
        weight_decay_mode: 0 NONE, 1 L2, 2 DECOUPLE (fbgemm's WeightDecayMode values).
        initial_accumulator_value: the accumulator's starting value.

    """

    _STATE = {"sum": True}

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_decay_mode: int = WEIGHT_DECAY_NONE,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or initial_accumulator_value < 0:
            raise ValueError(
                "lr, eps, weight_decay and initial_accumulator_value must be >= 0 (found"
                f" {lr}, {eps}, {weight_decay}, {initial_accumulator_value})"
            )
        if int(weight_decay_mode) not in (
            WEIGHT_DECAY_NONE,
            WEIGHT_DECAY_L2,
            WEIGHT_DECAY_DECOUPLE,
        ):
            raise ValueError(f"weight_decay_mode must be 0, 1 or 2 (found {weight_decay_mode})")
        defaults = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mode=int(weight_decay_mode),
            initial_accumulator_value=initial_accumulator_value,
        )
        super().__init__(params, defaults)

    def _initial_value(self, name: str, group: dict[str, Any]) -> float:
        return group["initial_accumulator_value"]

    def _update(
        self, w: Tensor, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> Tensor:
        lr, decay, mode = group["lr"], group["weight_decay"], group["weight_decay_mode"]
        g_for_sum = g + decay * w if mode == WEIGHT_DECAY_L2 else g
        slots["sum"] += g_for_sum.square().mean(dim=1, keepdim=True)
        multiplier = lr / (slots["sum"].sqrt() + group["eps"])
        if mode == WEIGHT_DECAY_L2:
            correction = 1.0 - multiplier * decay
        elif mode == WEIGHT_DECAY_DECOUPLE:
            correction = torch.full_like(multiplier, 1.0 - lr * decay)
        else:
            correction = torch.ones_like(multiplier)
        return correction * w - multiplier * g


class LarsSGD(_RowWiseOptimizer):
    """SGD with momentum and a layer-wise (here: row-wise) rate, as fbgemm's ``LARS_SGD``.

    Per row: ``rate = lr * eta * |w| / (|g| + weight_decay * |w|)``,
    ``m = momentum * m + rate * (g + weight_decay * w)``, ``w -= m``.

    Args:
        params: embedding tables.
        lr: learning rate.
        momentum: momentum factor.
        weight_decay: decay factor.
        eta: trust coefficient (fbgemm's default 0.001; the config has no field for it).

    """

    _STATE = {"momentum_buffer": False}

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta < 0:
            raise ValueError(
                f"lr, momentum, weight_decay and eta must be >= 0 (found {lr}, {momentum},"
                f" {weight_decay}, {eta})"
            )
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    def _update(
        self, w: Tensor, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> Tensor:
        decay = group["weight_decay"]
        w_norm = _row_norm(w)
        rate = group["lr"] * group["eta"] * w_norm / (_row_norm(g) + decay * w_norm)
        buffer = slots["momentum_buffer"]
        buffer.mul_(group["momentum"]).add_(rate * (g + decay * w))
        return w - buffer


class _AdamFamily(_RowWiseOptimizer):
    """Shared arguments of the Adam-like kernels (LAMB, partial row-wise LAMB / Adam)."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, eps and weight_decay must be >= 0 (found {lr}, {eps}, {weight_decay})"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1) (found {tuple(betas)})")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    def _moments(
        self, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> tuple[Tensor, Tensor]:
        """Updates ``exp_avg`` / ``exp_avg_sq`` and returns their bias-corrected values."""
        beta1, beta2 = group["betas"]
        slots["exp_avg"].mul_(beta1).add_(g, alpha=1.0 - beta1)
        squares = g.square()
        if self._STATE["exp_avg_sq"]:  # one second moment per row: the mean over the row
            squares = squares.mean(dim=1, keepdim=True)
        slots["exp_avg_sq"].mul_(beta2).add_(squares, alpha=1.0 - beta2)
        m_hat = slots["exp_avg"] / (1.0 - beta1**step)
        v_hat = slots["exp_avg_sq"] / (1.0 - beta2**step)
        return m_hat, v_hat


class _LambUpdate(_AdamFamily):
    def _update(
        self, w: Tensor, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> Tensor:
        m_hat, v_hat = self._moments(g, slots, group, step)
        direction = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * w
        trust_ratio = _row_norm(w) / _row_norm(direction)
        return w - group["lr"] * trust_ratio * direction


class LAMB(_LambUpdate):
    """LAMB with a row-wise trust ratio, as fbgemm's ``LAMB``.

    ``r = m_hat / (sqrt(v_hat) + eps) + weight_decay * w``; ``w -= lr * |w| / |r| * r`` per row:
    each row moves by ``lr * |w|``.

    Args:
        params: embedding tables.
        lr: learning rate.
        betas: decay of the first and second moments.
        eps: added to the root of the second moment.
        weight_decay: decay factor (added to the direction, before the trust ratio).

    """

    _STATE = {"exp_avg": False, "exp_avg_sq": False}


class PartialRowWiseLAMB(_LambUpdate):
    """LAMB whose second moment is one value per row, as fbgemm's ``PARTIAL_ROWWISE_LAMB``.

    As :class:`LAMB`, with ``v`` the moving average of the row's mean squared gradient.
    """

    _STATE = {"exp_avg": False, "exp_avg_sq": True}


class PartialRowWiseAdam(_AdamFamily):
    """Adam whose second moment is one value per row, as fbgemm's ``PARTIAL_ROWWISE_ADAM``.

    ``w -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w)`` with ``v`` the moving
    average of the row's mean squared gradient (decoupled weight decay, as in AdamW).
    """

    _STATE = {"exp_avg": False, "exp_avg_sq": True}

    def _update(
        self, w: Tensor, g: Tensor, slots: dict[str, Tensor], group: dict[str, Any], step: int
    ) -> Tensor:
        m_hat, v_hat = self._moments(g, slots, group, step)
        update = m_hat / (v_hat.sqrt() + group["eps"]) + group["weight_decay"] * w
        return w - group["lr"] * update
