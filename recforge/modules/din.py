"""DIN target attention: a candidate (query) attends over a behaviour sequence."""

from __future__ import annotations

import torch
from torch import nn

from recforge.modules.masked_attention import (
    check_query,
    clip_sequence,
    effective_length,
    masked_attention_pool,
    pad_query,
)
from recforge.modules.mlp import MLP
from recforge.protos import module_pb2


class DINEncoder(nn.Module):
    """Deep Interest Network attention pooling (Zhou et al. 2018).

    Each sequence element ``s_t`` gets a score from ``attn_mlp([q, s_t, q - s_t, q * s_t])``
    followed by a linear layer; scores of padded positions are masked out, normalised by a
    softmax over the sequence, and the output is the score-weighted sum of the elements. An
    empty sequence pools to zeros. A query narrower than the sequence elements is padded with
    zeros on the right (as TorchEasyRec does); a wider one is an error.

    Args:
        query_dim: width ``Dq`` of the query (the candidate's embeddings).
        sequence_dim: width ``Ds`` of each sequence element (``Dq <= Ds``).
        max_length: ``T``, the padded sequence length.
        attn_mlp: the attention MLP config.
        name: the feature group, for error messages.
        max_seq_length: read only the first ``max_seq_length`` elements (0: all ``T``).

    Shapes:
        ``forward(query [B, Dq], sequence [B, T, Ds], lengths [B]) -> [B, Ds]``.

    Raises:
        ValueError: the query is wider than the sequence elements.

    """

    def __init__(
        self,
        query_dim: int,
        sequence_dim: int,
        max_length: int,
        attn_mlp: module_pb2.MLP,
        name: str = "?",
        max_seq_length: int = 0,
    ) -> None:
        super().__init__()
        check_query(query_dim, sequence_dim, "DIN", name)
        self._query_pad = sequence_dim - query_dim
        self._dim = sequence_dim
        self._length = effective_length(max_length, max_seq_length)
        self.attn_mlp = MLP.from_config(4 * sequence_dim, attn_mlp)
        self.score = nn.Linear(self.attn_mlp.output_dim(), 1)

    def output_dim(self) -> int:
        """Width of the pooled output."""
        return self._dim

    def forward(
        self, query: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Pools ``sequence`` ``[B, T, Ds]`` by attention to ``query`` ``[B, Dq]``: ``[B, Ds]``."""
        sequence, lengths = clip_sequence(sequence, lengths, self._length)
        query = pad_query(query, self._query_pad)
        expanded = query.unsqueeze(1).expand_as(sequence)
        features = torch.cat(
            [expanded, sequence, expanded - sequence, expanded * sequence], dim=2
        )  # [B, T, 4D]
        hidden = self.attn_mlp(features.reshape(-1, 4 * self._dim))
        scores = self.score(hidden).reshape(-1, self._length)  # [B, T]
        return masked_attention_pool(scores, sequence, lengths)
