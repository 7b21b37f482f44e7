"""MaskNet's instance-guided mask blocks, stacked in parallel or in series."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class MaskBlock(nn.Module):
    """One mask block: ``ReLU(LayerNorm(W (mask(e) * h)))``.

    The instance-guided mask ``mask(e) = W_2 ReLU(W_1 e)`` is computed from the feature
    embeddings ``e`` and scales the block's input ``h`` elementwise before a hidden layer.

    Args:
        input_dim: width of ``h`` (the normalised embeddings, or the previous block's output).
        mask_input_dim: width of ``e``.
        hidden_dim: output width.
        aggregation_dim: width of the mask generator's hidden layer.

    Shapes:
        ``forward(h [B, input_dim], e [B, mask_input_dim])`` -> ``[B, hidden_dim]``.

    """

    def __init__(
        self, input_dim: int, mask_input_dim: int, hidden_dim: int, aggregation_dim: int
    ) -> None:
        super().__init__()
        if hidden_dim < 1 or aggregation_dim < 1:
            raise ValueError(
                "MaskBlock needs hidden_dim >= 1 and an aggregation dim >= 1 (aggregation_dim, or"
                f" reduction_ratio * input width), found {hidden_dim} and {aggregation_dim}"
            )
        self.mask = nn.Sequential(
            nn.Linear(mask_input_dim, aggregation_dim),
            nn.ReLU(),
            nn.Linear(aggregation_dim, input_dim),
        )
        self.hidden = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False), nn.LayerNorm(hidden_dim), nn.ReLU()
        )
        self._output_dim = hidden_dim

    def output_dim(self) -> int:
        """Width of the output."""
        return self._output_dim

    def forward(self, inputs: torch.Tensor, mask_inputs: torch.Tensor) -> torch.Tensor:
        """Masks ``inputs`` with a mask generated from ``mask_inputs``: ``[B, hidden_dim]``."""
        return self.hidden(self.mask(mask_inputs) * inputs)


class MaskNetModule(nn.Module):
    """MaskNet: ``n`` mask blocks over layer-normalised embeddings, then an optional MLP.

    Parallel blocks each mask the normalised embeddings and their outputs are concatenated;
    serial blocks each mask the previous block's output. Every mask is generated from the raw
    embeddings.

    Args:
        in_features: embedding width ``D``.
        n_mask_blocks: number of blocks.
        hidden_dim: output width of each block.
        aggregation_dim: width of each mask generator's hidden layer.
        top_mlp: optional MLP config over the blocks' output.
        use_parallel: parallel (True) or serial (False) blocks.

    Shapes:
        input ``[B, D]`` -> output ``[B, output_dim()]``.

    Example:
        >>> MaskNetModule(8, n_mask_blocks=2, hidden_dim=6, aggregation_dim=8)(
        ...     torch.randn(3, 8)).shape
        torch.Size([3, 12])

    """

    def __init__(
        self,
        in_features: int,
        n_mask_blocks: int,
        hidden_dim: int,
        aggregation_dim: int,
        top_mlp: Optional[module_pb2.MLP] = None,
        use_parallel: bool = True,
    ) -> None:
        super().__init__()
        if n_mask_blocks < 1:
            raise ValueError(f"MaskNet needs n_mask_blocks >= 1, found {n_mask_blocks}")
        self._use_parallel = use_parallel
        self.input_norm = nn.LayerNorm(in_features)
        self.blocks = nn.ModuleList()
        width = in_features
        for _ in range(n_mask_blocks):
            block_input = in_features if use_parallel else width
            self.blocks.append(MaskBlock(block_input, in_features, hidden_dim, aggregation_dim))
            width = hidden_dim
        width = hidden_dim * n_mask_blocks if use_parallel else hidden_dim
        self.top_mlp: Optional[MLP] = None
        if top_mlp is not None and top_mlp.hidden_units:
            self.top_mlp = MLP.from_config(width, top_mlp)
            width = self.top_mlp.output_dim()
        self._output_dim = width

    @classmethod
    def from_config(cls, in_features: int, config: module_pb2.MaskNetModule) -> MaskNetModule:
        """Builds the module described by a ``MaskNetModule`` message.

        The aggregation dim is ``aggregation_dim`` when that is set and ``reduction_ratio`` is
        not, else ``reduction_ratio * in_features``.
        """
        block = config.mask_block
        if block.HasField("aggregation_dim") and not block.HasField("reduction_ratio"):
            aggregation_dim = block.aggregation_dim
        else:
            aggregation_dim = int(block.reduction_ratio * in_features)
        return cls(
            in_features,
            config.n_mask_blocks,
            block.hidden_dim,
            aggregation_dim,
            config.top_mlp if config.HasField("top_mlp") else None,
            config.use_parallel,
        )

    def output_dim(self) -> int:
        """Width of the output."""
        return self._output_dim

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Runs the blocks (and the top MLP): ``[B, D] -> [B, output_dim()]``."""
        normed = self.input_norm(embeddings)
        if self._use_parallel:
            hidden = torch.cat([block(normed, embeddings) for block in self.blocks], dim=1)
        else:
            hidden = normed
            for block in self.blocks:
                hidden = block(hidden, embeddings)
        if self.top_mlp is not None:
            hidden = self.top_mlp(hidden)
        return hidden
