"""The framework-free DeepFM the hand-written reference loops train (torch only).

It is the model recforge's ``DeepFM`` builds from the benchmark configs: per field a deep table
(``emb_dim``) and a wide table (``wide_dim``), both initialised uniform in
``+-sqrt(1 / rows of the field's table)`` as torchrec does; the logit is
``head(mlp([deep embeddings, dense])) + sum(wide) + sum(FM)`` with a zero-initialised head.
All fields live in one table with per-field row offsets (one lookup per batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn


class HandDeepFM(nn.Module):
    """DeepFM over ``len(table_rows)`` single-id fields and ``num_dense`` dense columns.

    Args:
        table_rows: rows of each field's table.
        emb_dim: deep/FM embedding width.
        wide_dim: wide embedding width (summed into the logit, as recforge's DeepFM does).
        num_dense: dense input columns, concatenated to the deep MLP's input.
        hidden: MLP widths.
        dropout: dropout after every MLP layer (0: none).
        sparse: ``nn.EmbeddingBag(sparse=True)`` (sparse gradients) instead of ``nn.Embedding``
            (dense gradients of the whole table every step).
        dropout_class: the dropout module (``nn.Dropout``, or recforge's faster CPU kernel to
            compare the frameworks' loops with the same kernels).

    """

    def __init__(
        self,
        table_rows: Sequence[int],
        emb_dim: int,
        wide_dim: int,
        num_dense: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        sparse: bool = False,
        dropout_class: type[nn.Module] = nn.Dropout,
    ) -> None:
        super().__init__()
        self.num_fields, self.emb_dim, self.sparse = len(table_rows), emb_dim, sparse
        offsets = [0]
        for rows in table_rows[:-1]:
            offsets.append(offsets[-1] + rows)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64))
        total = sum(table_rows)
        if sparse:
            self.emb = nn.EmbeddingBag(total, emb_dim, mode="sum", sparse=True)
            self.wide = nn.EmbeddingBag(total, wide_dim, mode="sum", sparse=True)
        else:
            self.emb = nn.Embedding(total, emb_dim)
            self.wide = nn.Embedding(total, wide_dim)
        with torch.no_grad():
            for start, rows in zip(offsets, table_rows):
                bound = math.sqrt(1.0 / rows)
                self.emb.weight[start : start + rows].uniform_(-bound, bound)
                self.wide.weight[start : start + rows].uniform_(-bound, bound)
        layers: list[nn.Module] = []
        width = self.num_fields * emb_dim + num_dense
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(dropout_class(dropout))
            width = units
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The two tables (trained by the sparse optimizer)."""
        return [self.emb.weight, self.wide.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        """Everything else (trained by the dense optimizer)."""
        return list(self.mlp.parameters()) + list(self.head.parameters())

    def _lookup(self, table: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return table(ids.reshape(-1, 1)).view(ids.shape[0], self.num_fields, -1)
        return table(ids)

    def forward(self, ids: torch.Tensor, dense: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``[B]`` of ids ``int64 [B, fields]`` (field-local) and dense ``[B, D]``."""
        ids = ids + self.offsets
        emb = self._lookup(self.emb, ids)  # [B, F, D]
        wide = self._lookup(self.wide, ids).sum(dim=(1, 2))
        summed = emb.sum(dim=1)
        fm = 0.5 * (summed * summed - (emb * emb).sum(dim=1)).sum(dim=1)
        deep_in = emb.flatten(1)
        if dense is not None:
            deep_in = torch.cat([deep_in, dense], dim=1)
        return self.head(self.mlp(deep_in)).squeeze(1) + wide + fm
