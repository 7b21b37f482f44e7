"""Embeddings of dense (raw) features: TorchEasyRec's ``mlp`` and ``autodis`` ``dense_emb``.

A raw feature (or a derived kind with a number output) that sets ``mlp {}`` or
``autodis {...}`` enters its DEEP group as an ``embedding_dim``-wide vector instead of its
numbers:

* :class:`MLPEmbedding`: a linear map without bias, ``x [B, V] @ W [V, D]``;
* :class:`AutoDisEmbedding` (AutoDis, https://arxiv.org/abs/2012.08986), for one number
  ``x``: ``h = leaky_relu(w * x)`` over ``num_channels`` channels, ``s = M h +
  keep_prob * h``, ``p = softmax(s / temperature)``, output ``sum_c p_c * meta_c``.

Initialisation follows TorchEasyRec (Glorot-normal style standard deviations, ``meta``
standard normal). Where we differ: TorchEasyRec stacks the features of equal settings into one
module; recforge keeps one module per feature (the same numbers, named by feature).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class MLPEmbedding(nn.Module):
    """``[B, value_dim]`` -> ``[B, embedding_dim]`` by one bias-free linear layer.

    Args:
        value_dim: numbers per sample ``V``.
        embedding_dim: output width ``D``.

    """

    def __init__(self, value_dim: int, embedding_dim: int) -> None:
        super().__init__()
        std = math.sqrt(2.0 / (value_dim + embedding_dim))
        self.weight = nn.Parameter(torch.randn(value_dim, embedding_dim) * std)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Embeds ``values`` ``[B, V]`` into ``[B, D]``."""
        return values @ self.weight


class AutoDisEmbedding(nn.Module):
    """``[B, 1]`` -> ``[B, embedding_dim]``: a soft discretisation into ``num_channels``.

    Args:
        embedding_dim: output width ``D``.
        num_channels: channels (meta embeddings) ``C``.
        temperature: softmax temperature.
        keep_prob: weight of each channel's own activation in the channel mix.

    """

    def __init__(
        self, embedding_dim: int, num_channels: int, temperature: float, keep_prob: float
    ) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.keep_prob = float(keep_prob)
        self.meta = nn.Parameter(torch.randn(num_channels, embedding_dim))
        self.proj_w = nn.Parameter(torch.randn(num_channels) * math.sqrt(2.0 / (1 + num_channels)))
        self.proj_m = nn.Parameter(
            torch.randn(num_channels, num_channels) * math.sqrt(1.0 / num_channels)
        )

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Embeds one number per sample ``[B, 1]`` into ``[B, D]``."""
        hidden = nn.functional.leaky_relu(values * self.proj_w)  # [B, C]
        mixed = hidden @ self.proj_m.t() + self.keep_prob * hidden  # [B, C]
        weights = torch.softmax(mixed / self.temperature, dim=-1)  # [B, C]
        return weights @ self.meta


def build_dense_embedding(config: Any) -> nn.Module:
    """The module of a ``RawFeature`` message whose ``dense_emb`` is set.

    Args:
        config: the ``RawFeature`` message (``embedding_dim``, ``value_dim`` and the
            ``autodis`` / ``mlp`` settings).

    Raises:
        ValueError: ``dense_emb`` unset.

    """
    kind = config.WhichOneof("dense_emb")
    dim = int(config.embedding_dim)
    if kind == "mlp":
        return MLPEmbedding(max(int(config.value_dim), 1), dim)
    if kind == "autodis":
        auto = config.autodis
        return AutoDisEmbedding(dim, int(auto.num_channels), auto.temperature, auto.keep_prob)
    raise ValueError(f"feature '{config.feature_name}' has no dense_emb")
