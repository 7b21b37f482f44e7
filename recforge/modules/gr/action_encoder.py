"""HSTU's action encoder (TorchEasyRec's ``SimpleActionEncoder``) on the history's events.

An event's action is an integer bitmask (clicked = 1, liked = 2, ...). Each configured action
weight is one action type with a learned embedding; an event's encoding is the concatenation,
over the types, of the type's embedding where ``action & weight`` is set, else zeros. With
watch-time thresholds, an event whose watch time reaches a threshold also sets that
threshold's weight (a derived action type).

In ``dlrm_hstu`` the candidates, whose actions are what the model predicts, all get one
learned row instead (``candidate_rows``), as TorchEasyRec's encoder appends to the history's.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class SimpleActionEncoder(nn.Module):
    """Bitmask actions ``[L]`` -> ``[L, num_types * action_embedding_dim]``.

    Args:
        action_embedding_dim: width of each type's embedding.
        action_weights: the bit of each action type.
        watchtime_to_action_thresholds: watch times that make an extra action type each.
        watchtime_to_action_weights: the bit each threshold sets.
        embedding_init_std: standard deviation of the embeddings' normal initialisation.
        candidate_row: also learn the row every candidate gets (``candidate_rows``).

    Example:
        >>> enc = SimpleActionEncoder(2, [1, 2])
        >>> enc(torch.tensor([0, 1, 3])).shape
        torch.Size([3, 4])

    """

    combined_weights: torch.Tensor
    thresholds: torch.Tensor
    threshold_weights: torch.Tensor

    def __init__(
        self,
        action_embedding_dim: int,
        action_weights: list[int],
        watchtime_to_action_thresholds: Optional[list[int]] = None,
        watchtime_to_action_weights: Optional[list[int]] = None,
        embedding_init_std: float = 0.1,
        candidate_row: bool = False,
    ) -> None:
        super().__init__()
        thresholds = list(watchtime_to_action_thresholds or [])
        weights = list(watchtime_to_action_weights or [])
        if len(thresholds) != len(weights):
            raise ValueError(
                "watchtime_to_action_thresholds and watchtime_to_action_weights must have the"
                f" same length, found {len(thresholds)} and {len(weights)}"
            )
        if not action_weights and not thresholds:
            raise ValueError("the action encoder needs action_weights")
        if action_embedding_dim <= 0:
            raise ValueError(f"action_embedding_dim must be > 0, found {action_embedding_dim}")
        self._dim = action_embedding_dim
        self._num_types = len(action_weights) + len(thresholds)
        self.register_buffer(
            "combined_weights", torch.tensor(list(action_weights) + weights, dtype=torch.int64)
        )
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))
        self.register_buffer("threshold_weights", torch.tensor(weights, dtype=torch.int64))
        self.need_watchtime = bool(thresholds)
        self.embeddings = nn.Parameter(
            torch.empty(self._num_types, action_embedding_dim).normal_(0.0, embedding_init_std)
        )
        self.candidate_embedding: Optional[nn.Parameter] = None
        if candidate_row:
            self.candidate_embedding = nn.Parameter(
                torch.empty(1, self.output_dim).normal_(0.0, embedding_init_std)
            )

    @property
    def output_dim(self) -> int:
        """Width of an event's encoding."""
        return self._num_types * self._dim

    def forward(
        self, actions: torch.Tensor, watchtimes: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Encodes the events' actions.

        Args:
            actions: bitmask per event ``[L]`` (integers, or floats holding integers).
            watchtimes: watch time per event ``[L]`` (read with watch-time thresholds).

        Returns:
            ``[L, output_dim]``.

        """
        actions = actions.to(torch.int64)
        if watchtimes is not None and self.thresholds.numel() > 0:
            reached = watchtimes.view(-1, 1).to(torch.float32) >= self.thresholds.view(1, -1)
            extra = (reached.to(torch.int64) * self.threshold_weights.view(1, -1)).sum(dim=1)
            actions = torch.bitwise_or(actions, extra)
        on = torch.bitwise_and(actions.view(-1, 1), self.combined_weights.view(1, -1)) > 0
        encoded = on.unsqueeze(-1).to(self.embeddings.dtype) * self.embeddings.unsqueeze(0)
        return encoded.reshape(-1, self.output_dim)

    def candidate_rows(self, like: torch.Tensor) -> torch.Tensor:
        """The candidates' action rows ``[T, output_dim]``, one per row of ``like`` ``[T, *]``.

        Raises:
            RuntimeError: the encoder was built without ``candidate_row``.

        """
        if self.candidate_embedding is None:
            raise RuntimeError("this action encoder has no candidate row (candidate_row=False)")
        # [T, 1] zeros broadcast against [1, A]: the row count follows the data when traced
        zeros = torch.zeros_like(like[:, :1]).to(self.candidate_embedding.dtype)
        return zeros + self.candidate_embedding
