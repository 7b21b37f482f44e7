"""PEPNet's gates: the gate unit, the embedding gate (EPNet) and the per-task layer gates (PPNet).

Both gates read the embeddings they scale with their gradient stopped (``detach``): the gates
learn from the personalisation input and the loss, without pushing the scaled embeddings
towards their own gate values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recforge.modules.dropout import Dropout
from recforge.modules.mlp import create_activation


class GateNU(nn.Module):
    """Gate neural unit: ``gamma * sigmoid(W_2 ReLU(W_1 x))``, values in ``(0, gamma)``.

    Args:
        input_dim: width of ``x``.
        hidden_dim: width of the hidden layer.
        output_dim: width of the gate.
        gamma: the gate's upper bound (2: a gate of 1, the identity, sits mid-range).

    Shapes:
        ``[B, input_dim]`` -> ``[B, output_dim]``.

    Example:
        >>> GateNU(6, 4, 3)(torch.randn(2, 6)).shape
        torch.Size([2, 3])

    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, gamma: float = 2.0):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"the gate's hidden width must be >= 1, found {hidden_dim}")
        self.gamma = gamma
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, output_dim),
            nn.Sigmoid(),
        )
        self._output_dim = output_dim

    def output_dim(self) -> int:
        """Width of the gate."""
        return self._output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values ``[B, output_dim]``."""
        return self.gamma * self.layers(x)


class EPNet(nn.Module):
    """Embedding personalisation: scales the main embeddings by a gate of the domain features.

    The gate reads ``[domain, main.detach()]`` and has the main embeddings' width.

    Args:
        main_dim: width ``D`` of the main embeddings.
        domain_dim: width ``D_d`` of the domain embeddings.
        hidden_dim: width of the gate's hidden layer.
        gamma: the gate's upper bound.

    Shapes:
        ``forward(main [B, D], domain [B, D_d])`` -> ``[B, D]``.

    """

    def __init__(self, main_dim: int, domain_dim: int, hidden_dim: int, gamma: float = 2.0):
        super().__init__()
        self.gate = GateNU(domain_dim + main_dim, hidden_dim, main_dim, gamma)

    def output_dim(self) -> int:
        """Width of the output (the main embeddings' width)."""
        return self.gate.output_dim()

    def forward(self, main: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """The gated main embeddings ``[B, D]``."""
        return self.gate(torch.cat([domain, main.detach()], dim=1)) * main


class _GatedLayer(nn.Module):
    """One PPNet layer: ``Dropout(act(Linear(h)) * gate(g))``: ``[B, D_in]`` -> ``[B, D_out]``."""

    def __init__(
        self, in_dim: int, units: int, gate_dim: int, activation: str, ratio: float, gamma: float
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, units)
        self.activation = create_activation(activation)
        self.gate = GateNU(gate_dim, units, units, gamma)
        self.dropout = Dropout(ratio) if ratio > 0 else nn.Identity()

    def forward(self, hidden: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
        """The gated layer output."""
        return self.dropout(self.activation(self.linear(hidden)) * self.gate(gate_input))


class PPNet(nn.Module):
    """Parameter personalisation: one gated MLP per task over the (EPNet-scaled) embeddings.

    Every layer of every task's MLP is ``Dropout(act(Linear(h)) * gate(g))``, where the gate
    input ``g = [uia, main.detach()]`` is the same for all layers and the gate has the layer's
    width.

    Args:
        main_dim: width ``D`` of the main embeddings.
        uia_dim: width ``D_u`` of the user/item/author personalisation embeddings.
        num_task: number of task MLPs.
        hidden_units: width of each layer (the same for every task).
        activation: activation name (``nn.ReLU``, ...).
        dropout_ratio: none, one ratio for every layer, or one per layer.
        gamma: the gates' upper bound.

    Shapes:
        ``forward(main [B, D], uia [B, D_u])`` -> ``num_task`` tensors ``[B, hidden_units[-1]]``.

    Example:
        >>> [t.shape for t in PPNet(6, 4, 2, [5, 3])(torch.randn(2, 6), torch.randn(2, 4))]
        [torch.Size([2, 3]), torch.Size([2, 3])]

    """

    def __init__(
        self,
        main_dim: int,
        uia_dim: int,
        num_task: int,
        hidden_units: Sequence[int],
        activation: str = "nn.ReLU",
        dropout_ratio: Sequence[float] = (),
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if not hidden_units:
            raise ValueError("PPNet needs at least one entry in ppnet_hidden_units")
        dropout = list(dropout_ratio) or [0.0]
        if len(dropout) == 1:
            dropout = dropout * len(hidden_units)
        if len(dropout) != len(hidden_units):
            raise ValueError(
                f"ppnet_dropout_ratio has {len(dropout)} values for {len(hidden_units)} layers;"
                " give one value or one per layer"
            )
        self.tasks = nn.ModuleList()
        for _ in range(num_task):
            layers = nn.ModuleList()
            width = main_dim
            for units, ratio in zip(hidden_units, dropout):
                layers.append(
                    _GatedLayer(width, units, uia_dim + main_dim, activation, ratio, gamma)
                )
                width = units
            self.tasks.append(layers)
        self._output_dim = hidden_units[-1]

    def output_dim(self) -> int:
        """Width of each task's output."""
        return self._output_dim

    def forward(self, main: torch.Tensor, uia: torch.Tensor) -> list[torch.Tensor]:
        """One ``[B, hidden_units[-1]]`` tensor per task."""
        gate_input = torch.cat([uia, main.detach()], dim=1)
        outputs: list[torch.Tensor] = []
        for layers in self.tasks:
            hidden = main
            for layer in layers:  # type: ignore[attr-defined]
                hidden = layer(hidden, gate_input)
            outputs.append(hidden)
        return outputs
