"""HSTU content encoders: history and candidate item embeddings brought to one width.

TorchEasyRec's ``GRContentEncoder`` kinds: ``slice_content_encoder`` keeps the first
``uih_dim`` columns of each candidate row (candidates must be at least as wide as the
history); ``pad_content_encoder`` appends one learned row of ``cand_dim - uih_dim`` values to
every history row (candidates must be wider); ``mlp_content_encoder`` maps each side by its
own MLP (``uih_mlp``, ``target_mlp``; equal output widths).
"""

from __future__ import annotations

import torch
from torch import nn

from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class ContentEncoder(nn.Module):
    """``(history [L, uih_dim], candidates [T, cand_dim])`` -> both ``[*, output_dim]``.

    Args:
        config: the ``GRContentEncoder`` message (one kind set).
        uih_dim: width of the history rows.
        cand_dim: width of the candidate rows.

    Raises:
        ValueError: no kind set, or the widths do not suit the kind.

    """

    def __init__(self, config: module_pb2.GRContentEncoder, uih_dim: int, cand_dim: int) -> None:
        super().__init__()
        kind = config.WhichOneof("content_encoder")
        self._kind = kind or ""
        self._uih_dim = uih_dim
        self.pad: nn.Parameter | None = None
        self.uih_mlp: MLP | None = None
        self.target_mlp: MLP | None = None
        if kind == "slice_content_encoder":
            if cand_dim < uih_dim:
                raise ValueError(
                    f"slice_content_encoder needs candidate rows at least as wide as the history"
                    f" rows, found {cand_dim} < {uih_dim}"
                )
            self._output_dim = uih_dim
        elif kind == "pad_content_encoder":
            if cand_dim <= uih_dim:
                raise ValueError(
                    f"pad_content_encoder needs candidate rows wider than the history rows,"
                    f" found {cand_dim} <= {uih_dim}"
                )
            self.pad = nn.Parameter(torch.empty(1, cand_dim - uih_dim).normal_(0.0, 0.1))
            self._output_dim = cand_dim
        elif kind == "mlp_content_encoder":
            mlp = config.mlp_content_encoder
            self.uih_mlp = MLP.from_config(uih_dim, mlp.uih_mlp)
            self.target_mlp = MLP.from_config(cand_dim, mlp.target_mlp)
            if self.uih_mlp.output_dim() != self.target_mlp.output_dim():
                raise ValueError(
                    f"mlp_content_encoder: uih_mlp outputs {self.uih_mlp.output_dim()} values"
                    f" and target_mlp {self.target_mlp.output_dim()}; they must be equal"
                )
            self._output_dim = self.uih_mlp.output_dim()
        else:
            raise ValueError(
                "content_encoder needs one of slice_content_encoder, pad_content_encoder,"
                " mlp_content_encoder"
            )

    @property
    def output_dim(self) -> int:
        """Width of the encoded rows."""
        return self._output_dim

    def forward(
        self, uih: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[L, uih_dim]``, ``[T, cand_dim]`` -> ``[L, output_dim]``, ``[T, output_dim]``."""
        if self.pad is not None:
            return torch.cat([uih, self.pad.expand(uih.shape[0], -1)], dim=1), candidates
        if self.uih_mlp is not None and self.target_mlp is not None:
            return self.uih_mlp(uih), self.target_mlp(candidates)
        return uih, candidates[:, : self._uih_dim]
