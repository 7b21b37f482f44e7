"""HSTU's content and action MLPs: a sequence's rows to the sequence width.

TorchEasyRec's ``SimpleContextualizedMLP``: Linear -> swish layer norm -> Linear -> layer norm.
Its ``ParameterizedContextualizedMLP``: a linear map whose matrix and bias each user's
contextual features produce (see :class:`ParameterizedContextualizedMLP`).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from recforge.modules.gr.jagged import jagged_bmm_add
from recforge.protos import module_pb2

# traced export graphs call it as one opaque (scripted) function: it depends on the data
torch.fx.wrap("jagged_bmm_add")


def _xavier_zero_bias(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


class SwishLayerNorm(nn.Module):
    """``x * sigmoid(layer_norm(x))``.

    Args:
        dim: the normalised width.
        eps: layer norm epsilon.

    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[*, dim]`` -> ``[*, dim]``."""
        return x * torch.sigmoid(self.norm(x))


class SimpleContextualizedMLP(nn.Module):
    """``[L, in_dim]`` -> ``[L, out_dim]`` (see the module docstring).

    Args:
        in_dim: input width.
        out_dim: output width (the sequence width).
        hidden_dim: hidden width.

    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if hidden_dim <= 0:
            raise ValueError(f"simple_mlp.hidden_dim must be > 0, found {hidden_dim}")
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            SwishLayerNorm(hidden_dim),
            nn.Linear(hidden_dim, out_dim),
            nn.LayerNorm(out_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[L, in_dim]`` -> ``[L, out_dim]``."""
        return self.mlp(x)


class ParameterizedContextualizedMLP(nn.Module):
    """Rows ``[L, in_dim]`` -> ``[L, out_dim]`` through a map each user's context generates.

    The user's contextual features (dropout in training) are compressed by a linear layer to
    ``hidden_dim``; from that, a linear layer makes the ``[in_dim, out_dim]`` matrix (layer
    normed over all its entries) and a small MLP (linear, swish layer norm, linear) the
    ``[out_dim]`` bias; every row of the user's sequence is multiplied by that matrix and gets
    that bias. Linear layers start with Xavier weights and zero biases (TorchEasyRec's).

    Args:
        context_dim: width of the contextual features ``C``.
        in_dim: input width.
        out_dim: output width (the sequence width).
        hidden_dim: width of the compressed context.
        contextual_dropout_ratio: dropout on the contextual features in training.

    Raises:
        ValueError: no contextual features, or a width that is not positive.

    Example:
        >>> mlp = ParameterizedContextualizedMLP(4, 3, 8, hidden_dim=5)
        >>> offsets = torch.tensor([0, 2, 5])
        >>> mlp(torch.randn(5, 3), offsets, torch.randn(2, 4)).shape
        torch.Size([5, 8])

    """

    def __init__(
        self,
        context_dim: int,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        contextual_dropout_ratio: float = 0.3,
    ) -> None:
        super().__init__()
        if context_dim <= 0:
            raise ValueError(
                "parameterized_mlp needs contextual features (the DEEP 'contextual' feature group)"
            )
        if hidden_dim <= 0:
            raise ValueError(f"parameterized_mlp.hidden_dim must be > 0, found {hidden_dim}")
        self._in_dim = in_dim
        self._out_dim = out_dim
        self._dropout = contextual_dropout_ratio
        self.compress = nn.Linear(context_dim, hidden_dim)
        self.weight_generator = nn.Linear(hidden_dim, in_dim * out_dim)
        self.weight_norm = nn.LayerNorm([in_dim, out_dim])
        self.bias_generator = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            SwishLayerNorm(hidden_dim),
            nn.Linear(hidden_dim, out_dim),
        )
        self.apply(_xavier_zero_bias)

    def forward(
        self, x: torch.Tensor, offsets: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Rows ``[L, in_dim]`` (offsets ``[B + 1]``) and context ``[B, C]`` -> ``[L, out_dim]``."""
        context = F.dropout(context, p=self._dropout, training=self.training)
        shared = self.compress(context)
        weights = self.weight_norm(
            self.weight_generator(shared).reshape(-1, self._in_dim, self._out_dim)
        )
        return jagged_bmm_add(x, offsets, weights.to(x.dtype), self.bias_generator(shared))


ContextualizedMLP = Union[SimpleContextualizedMLP, ParameterizedContextualizedMLP]


def contextualized_mlp(
    cfg: module_pb2.GRContextualizedMLP, in_dim: int, out_dim: int, context_dim: int, name: str
) -> ContextualizedMLP:
    """The MLP ``cfg`` (``simple_mlp`` or ``parameterized_mlp``) from ``in_dim`` to ``out_dim``.

    Args:
        cfg: the ``GRContextualizedMLP`` message.
        in_dim: input width.
        out_dim: output width.
        context_dim: width of the contextual features (0: none).
        name: the field's name (``content_mlp``, ``action_mlp``), for the error.

    Raises:
        ValueError: neither kind set, or bad settings.

    """
    kind = cfg.WhichOneof("contextualized_mlp")
    if kind == "simple_mlp":
        return SimpleContextualizedMLP(in_dim, out_dim, cfg.simple_mlp.hidden_dim)
    if kind == "parameterized_mlp":
        p = cfg.parameterized_mlp
        return ParameterizedContextualizedMLP(
            context_dim, in_dim, out_dim, p.hidden_dim, p.contextual_dropout_ratio
        )
    raise ValueError(f"{name} needs simple_mlp {{ hidden_dim }} or parameterized_mlp {{ ... }}")


def run_contextualized_mlp(
    mlp: ContextualizedMLP,
    x: torch.Tensor,
    offsets: torch.Tensor,
    context: Optional[torch.Tensor],
) -> torch.Tensor:
    """``mlp`` on rows ``[L, in_dim]``; offsets ``[B + 1]`` and context ``[B, C]`` as it needs."""
    if isinstance(mlp, ParameterizedContextualizedMLP):
        if context is None:
            raise ValueError("parameterized_mlp needs the contextual features")
        return mlp(x, offsets, context)
    return mlp(x)
