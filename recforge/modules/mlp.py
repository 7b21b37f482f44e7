"""Multi-layer perceptron configured by the ``MLP`` proto message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from recforge.modules.activation import create_activation
from recforge.modules.dropout import Dropout
from recforge.protos import module_pb2


class MLP(nn.Module):
    """Stacked ``Linear -> [BatchNorm | LayerNorm] -> activation -> [Dropout]`` layers.

    Args:
        in_features: input width ``D_in``.
        hidden_units: width of each layer.
        dropout_ratio: one ratio for every layer, or one per layer (empty: no dropout).
        activation: activation name, e.g. ``nn.ReLU``, ``nn.PReLU(num_parameters=8)`` or
            ``Dice`` (see :func:`~recforge.modules.activation.create_activation`).
        use_bn: batch normalisation after each linear layer.
        bias: linear layers have a bias.
        use_ln: layer normalisation after each linear layer.

    Shapes:
        input ``[B, D_in]`` -> output ``[B, hidden_units[-1]]``.

    """

    def __init__(
        self,
        in_features: int,
        hidden_units: Sequence[int],
        dropout_ratio: Optional[Sequence[float]] = None,
        activation: str = "nn.ReLU",
        use_bn: bool = False,
        bias: bool = True,
        use_ln: bool = False,
    ) -> None:
        super().__init__()
        if not hidden_units:
            raise ValueError("MLP needs at least one entry in hidden_units")
        dropout = list(dropout_ratio or [])
        if len(dropout) == 1:
            dropout = dropout * len(hidden_units)
        if dropout and len(dropout) != len(hidden_units):
            raise ValueError(
                f"MLP dropout_ratio has {len(dropout)} values for {len(hidden_units)} layers;"
                " give one value or one per layer"
            )
        layers: list[nn.Module] = []
        # index in self.mlp of each hidden layer's last module (hidden_layers reads them)
        self._layer_ends: list[int] = []
        width = in_features
        for i, units in enumerate(hidden_units):
            layers.append(nn.Linear(width, units, bias=bias and not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(units))
            if use_ln:
                layers.append(nn.LayerNorm(units))
            layers.append(create_activation(activation, hidden_size=units))
            if dropout and dropout[i] > 0:
                layers.append(Dropout(dropout[i]))
            self._layer_ends.append(len(layers) - 1)
            width = units
        self.mlp = nn.Sequential(*layers)
        # plain ReLUs (they follow a linear layer or a norm, whose output no backward reads, so
        # they may work in place) and those followed by a Dropout (computed together with it)
        self._inplace_relu = [type(m) is nn.ReLU for m in layers]
        self._relu_dropout = [
            relu and i + 1 < len(layers) and isinstance(layers[i + 1], Dropout)
            for i, relu in enumerate(self._inplace_relu)
        ]
        self._output_dim = width
        # None: compute in the input's dtype; see set_compute_dtype
        self._compute_dtype: Optional[torch.dtype] = None

    @classmethod
    def from_config(cls, in_features: int, config: module_pb2.MLP) -> MLP:
        """Builds the MLP described by an ``MLP`` message."""
        return cls(
            in_features,
            list(config.hidden_units),
            list(config.dropout_ratio),
            config.activation,
            config.use_bn,
            config.bias,
            config.use_ln,
        )

    def output_dim(self) -> int:
        """Width of the output."""
        return self._output_dim

    def set_compute_dtype(self, dtype: Optional[torch.dtype]) -> None:
        """Stores the weights in ``dtype`` and computes in it (None: back to float32).

        The input is cast to ``dtype`` and the output back to the input's dtype, so the rest
        of the model is unchanged. Used by export's ``mlp_dtype: "bfloat16"``.
        """
        self.mlp.to(dtype or torch.float32)
        self._compute_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the layers: ``[B, D_in] -> [B, D_out]``."""
        dtype = self._compute_dtype
        hidden = x if dtype is None else x.to(dtype)
        if torch.jit.is_scripting():  # alone in its condition, so TorchScript skips the rest
            hidden = self.mlp(hidden)
        else:
            hidden = self._apply_layers(hidden)
        return hidden if dtype is None else hidden.to(x.dtype)

    def _apply_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        """``self.mlp(hidden)`` with ReLU in place and ReLU + Dropout fused (same values).

        In-place ReLU saves one ``[B, units]`` tensor per layer (in training and in exported
        models); in training on the CPU a ReLU and the Dropout after it run as one in-place
        pass (:meth:`Dropout.relu_dropout`) instead of four passes that each allocate.
        """
        skip_next = False
        for i, layer in enumerate(self.mlp):
            if skip_next:
                skip_next = False
            elif self._relu_dropout[i] and self.training:
                hidden = self.mlp[i + 1].relu_dropout(hidden)  # type: ignore[operator]
                skip_next = True
            elif self._inplace_relu[i]:
                hidden = torch.relu_(hidden)
            else:
                hidden = layer(hidden)
        return hidden

    def hidden_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Applies the layers and returns every layer's output (after its activation/dropout).

        Shapes:
            ``[B, D_in]`` -> one ``[B, hidden_units[i]]`` tensor per layer; the last one is
            :meth:`forward`'s output.
        """
        dtype = self._compute_dtype
        hidden = x if dtype is None else x.to(dtype)
        outputs: list[torch.Tensor] = []
        for i, layer in enumerate(self.mlp):
            hidden = layer(hidden)
            if i in self._layer_ends:
                outputs.append(hidden if dtype is None else hidden.to(x.dtype))
        return outputs
