"""B2I dynamic routing (MIND's capsule layer): a behaviour sequence -> up to K interest capsules.

Configured by the ``B2ICapsule`` message; see :class:`CapsuleLayer`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from recforge.modules.masked_attention import sequence_mask
from recforge.protos import module_pb2

ROUTING_INIT_METHODS = ("normal", "zeros")
# routing weight (in behaviours) below which an interest counts as empty
EMPTY_CAPSULE_WEIGHT = 1e-3


def squash(x: torch.Tensor, power: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """Scales each vector of the last dim to length ``(|x|^2 / (1 + |x|^2)) ^ power``.

    Short vectors shrink towards 0, long ones approach length 1; the direction is kept.
    ``power < 1`` shrinks short vectors less.

    Args:
        x: capsules ``[..., D]``.
        power: the exponent (``B2ICapsule.squash_pow``).
        eps: lower bound of ``|x|`` (a zero vector stays zero).

    Returns:
        ``[..., D]``.

    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=eps)
    squared = norm * norm
    return torch.pow(squared / (1.0 + squared), power) / norm * x


class CapsuleLayer(nn.Module):
    """Behaviour-to-interest (B2I) dynamic routing of MIND (Li et al. 2019).

    The ``T`` behaviours of a user (padded or cut to ``max_seq_len``) are mapped by one shared
    bilinear matrix to low capsules ``[B, S, H]`` and routed to ``K = max_k`` high capsules
    (the interests) over ``num_iters`` iterations: routing weights are a softmax over the
    interests of ``routing_logits_scale * logits``, an interest is the weighted sum of the
    low capsules, and the next logits add the agreement of each low capsule (L2-normalised)
    with each interest. The last iteration's interests are squashed (``squash_pow``). Only
    the last iteration passes gradients to the low capsules.

    A user with ``n`` behaviours gets ``max(1, min(max_k, ceil(log2 n)))`` interests (all
    ``max_k`` with ``const_caps_num``); the others are zero vectors and masked. Without
    ``const_caps_num`` so is an interest the routing gave (almost) no behaviour (unlike
    TorchEasyRec; a user keeps at least its first interest). Padded behaviours get routing
    weight zero, so their values never change the interests.

    Initial routing logits are ``N(0, routing_logits_stddev^2)`` (``routing_init_method:
    "normal"``) or zero (``"zeros"``; all interests then come out equal). In training they are
    drawn afresh for every batch, as in TorchEasyRec; in eval mode a fixed draw (the buffer
    ``eval_routing_logits``, saved with the model) is used, so that exported towers,
    evaluation and serving are deterministic; TorchEasyRec draws afresh in inference too.

    Args:
        config: the ``B2ICapsule`` message.
        input_dim: width ``L`` of a behaviour embedding.
        input_len: padded length ``T`` of the incoming sequences (cut or padded to
            ``max_seq_len``).

    Raises:
        ValueError: a non-positive size or an unknown ``routing_init_method``.

    Shapes:
        ``forward(sequence [B, T, L], lengths [B])`` -> ``(interests [B, K, H], mask [B, K])``.

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        eval_routing_logits: torch.Tensor

    def __init__(self, config: module_pb2.B2ICapsule, input_dim: int, input_len: int) -> None:
        super().__init__()
        for name in ("max_k", "max_seq_len", "high_dim", "num_iters"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(config, name)}")
        if config.routing_init_method not in ROUTING_INIT_METHODS:
            raise ValueError(
                f"routing_init_method must be one of {', '.join(ROUTING_INIT_METHODS)};"
                f" found '{config.routing_init_method}'"
            )
        for name in ("routing_logits_scale", "routing_logits_stddev", "squash_pow"):
            if not math.isfinite(getattr(config, name)):
                raise ValueError(f"{name} must be a finite number, found {getattr(config, name)}")
        self.max_k = int(config.max_k)
        self.max_seq_len = int(config.max_seq_len)
        self.high_dim = int(config.high_dim)
        self.num_iters = int(config.num_iters)
        self._scale = float(config.routing_logits_scale)
        self._stddev = float(config.routing_logits_stddev)
        self._squash_pow = float(config.squash_pow)
        self._const_caps_num = bool(config.const_caps_num)
        self._random_init = config.routing_init_method == "normal"
        self._input_len = int(input_len)
        self.bilinear = nn.Parameter(torch.randn(input_dim, self.high_dim))
        eval_logits = torch.zeros(self.max_seq_len, self.max_k)
        if self._random_init:
            eval_logits.normal_()
        self.register_buffer("eval_routing_logits", eval_logits)

    def output_dim(self) -> int:
        """Width ``H`` of an interest."""
        return self.high_dim

    def capsule_mask(self, lengths: torch.Tensor) -> torch.Tensor:
        """Which of the ``max_k`` interests a user has ``[B, K]`` (from its behaviour count)."""
        if self._const_caps_num:
            count = torch.full_like(lengths, self.max_k, dtype=torch.float32)
        else:
            # log2(0) = -inf: a user without behaviours still gets one (zero) interest
            count = torch.log2(lengths.float()).clamp(min=1.0, max=float(self.max_k))
        return sequence_mask(count, self.max_k)

    def _initial_logits(self, low: torch.Tensor) -> torch.Tensor:
        batch, length = low.shape[0], self.max_seq_len
        if not self._random_init:
            return low.new_zeros((batch, length, self.max_k))
        if self.training:
            logits = torch.randn((batch, length, self.max_k), device=low.device, dtype=low.dtype)
        else:
            logits = self.eval_routing_logits.to(low.dtype).unsqueeze(0).expand(batch, -1, -1)
        return logits * self._stddev

    def forward(
        self, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Routes each user's behaviours to its interests.

        Args:
            sequence: behaviour embeddings ``[B, T, L]`` (zero-padded after ``lengths``).
            lengths: behaviours per user ``[B]``.

        Returns:
            ``(interests [B, K, H], mask [B, K])``; masked interests are zero vectors.

        """
        if self._input_len >= self.max_seq_len:
            sequence = sequence[:, : self.max_seq_len]
        else:
            sequence = F.pad(sequence, (0, 0, 0, self.max_seq_len - self._input_len))
        seq_mask = sequence_mask(lengths, self.max_seq_len)  # [B, S]
        caps_mask = self.capsule_mask(lengths)  # [B, K]
        sequence = sequence * seq_mask.unsqueeze(2).to(sequence.dtype)
        low = torch.matmul(sequence, self.bilinear)  # [B, S, H]
        low_fixed = low.detach()
        low_unit = F.normalize(low_fixed, dim=-1)
        logits = self._initial_logits(low).detach()
        weight_mask = seq_mask.unsqueeze(2).to(low.dtype)
        missing = ~caps_mask.unsqueeze(1)  # [B, 1, K]
        interests = low.new_zeros((low.shape[0], self.max_k, self.high_dim))
        for step in range(self.num_iters):
            logits = logits.masked_fill(missing, float("-inf"))
            weights = torch.softmax(logits * self._scale, dim=2) * weight_mask  # [B, S, K]
            if step + 1 < self.num_iters:
                interests = torch.einsum("bsk,bsh->bkh", weights, low_fixed)
                # as TorchEasyRec: the next logits are this iteration's routing weights plus
                # the agreement (the paper accumulates raw logits instead)
                logits = weights + torch.einsum("bkh,bsh->bsk", interests, low_unit)
            else:
                interests = squash(torch.einsum("bsk,bsh->bkh", weights, low), self._squash_pow)
        # an interest no behaviour was routed to is empty: downstream it would become one
        # user-independent vector (concat_mlp of the user features and zeros) that wins
        # best-of-K retrieval for the same items for everyone; TorchEasyRec keeps it, here it
        # is masked (a user keeps its first interest when all are empty); const_caps_num
        # asks for all max_k interests, so it keeps them
        if not self._const_caps_num:
            routed = caps_mask & (weights.sum(dim=1) > EMPTY_CAPSULE_WEIGHT)  # [B, K]
            first = torch.arange(self.max_k, device=routed.device) == 0
            none = ~routed.any(dim=1, keepdim=True)
            caps_mask = caps_mask & (routed | (none & first.unsqueeze(0)))
        interests = interests * caps_mask.unsqueeze(2).to(interests.dtype)
        return interests, caps_mask
