"""Dropout with a cheaper random mask on the CPU.

Measured on the project's 2-core CPU (torch 2.13, a ``[4096, 400]`` float tensor, forward +
backward): ``nn.Dropout`` takes ~16 ms, most of it in ``bernoulli_``, which draws one random
number per element; it was 29% of a Frappe DeepFM training step (MLP [400, 400, 400], dropout
0.2). This module draws 64 random bits per four elements and compares 16-bit lanes with a
threshold (~6 ms for the same tensor), so the drop probability is rounded to a multiple of
1/65536; the kept values are scaled by the exact inverse of the resulting keep probability.
Other devices use ``torch.nn.functional.dropout`` (fused kernels on GPUs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_LANES = 65536  # values of one 16-bit lane
_LANES_PER_DRAW = 4  # 16-bit lanes in one int64 draw


def _keep_mask(shape: torch.Size, threshold: int) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability ``(2**15 - threshold) / 2**16``.

    Each int64 draw gives four independent uniform 16-bit lanes.
    """
    numel = shape.numel()
    draws = torch.randint(
        -(2**63), 2**63 - 1, ((numel + _LANES_PER_DRAW - 1) // _LANES_PER_DRAW,), dtype=torch.int64
    )
    lanes = draws.view(torch.int16)[:numel].view(shape)
    return lanes >= threshold


class _MaskedScale(torch.autograd.Function):
    """``x * mask * scale``; the gradient is scaled by the same factors.

    The mask enters as its bytes (0 or 1): cheaper on the CPU than ``where`` or a multiply by
    the bool tensor, with the same values.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        keep = mask.view(torch.uint8)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


class _ReLUMaskedScale(torch.autograd.Function):
    """``relu(x) * where(keep, scale, 0)`` computed in place in ``x`` (which autograd marks dirty).

    Only for an ``x`` that no other backward needs (the output of a linear layer or a norm):
    three in-place passes replace ReLU's and dropout's four allocating ones, and the backward
    reads the saved output, positive exactly where ReLU passed and dropout kept an element.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        # the mask's bytes, as in _MaskedScale (masked_fill_ costs several times more)
        out = x.clamp_min_(0.0).mul_(keep.view(torch.uint8)).mul_(scale)
        ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0.0).mul_(ctx.scale), None, None


class Dropout(nn.Module):
    """Drop-in replacement for ``nn.Dropout`` that is ~2.5x faster on the CPU (see the module doc).

    Args:
        p: probability of zeroing an element, in ``[0, 1)``.

    Shapes:
        any ``[*]`` -> the same shape. Identity in eval mode (and so in exported models).

    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # P(lane >= threshold) = (2**15 - threshold) / 2**16 for a uniform int16 lane
        self._threshold = int(round(p * _LANES)) - _LANES // 2
        self._scale = _LANES / (_LANES // 2 - self._threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zeroes elements with probability ``p`` and scales the rest (training only)."""
        if not self.training or self.p == 0.0:
            return x
        if torch.jit.is_scripting():  # alone in its condition, so TorchScript skips the rest
            return nn.functional.dropout(x, self.p, True)
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        return _MaskedScale.apply(x, _keep_mask(x.shape, self._threshold), self._scale)

    def relu_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(relu(x))``, computed in place in ``x`` when training on the CPU.

        The caller guarantees that nothing else needs ``x`` (for autograd: the output of a
        linear layer or a norm, whose backward does not read it). The values, gradients and
        random draws are those of ``forward(torch.relu(x))``.
        """
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return self.forward(torch.relu(x))
        return _ReLUMaskedScale.apply(x, _keep_mask(x.shape, self._threshold), self._scale)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"p={self.p}"
