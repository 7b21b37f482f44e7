"""Grouped AUC: the mean of per-group AUCs (e.g. per user), a common ranking metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class GroupedAUC(Metric):
    """Mean AUC over groups that contain both a positive and a negative sample.

    ``update(preds [B], target [B], group [B] int64)``; ``compute()`` returns a scalar
    (0.5 when no group has both classes). Groups are weighted equally.
    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        preds: list[torch.Tensor]
        target: list[torch.Tensor]
        group: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, group: torch.Tensor) -> None:
        """Adds a batch of scores, 0/1 labels and group ids (all ``[B]``)."""
        self.preds.append(preds.float())
        self.target.append(target.long())
        self.group.append(group.long())

    def compute(self) -> torch.Tensor:
        """Mean per-group AUC, computed vectorised over all groups at once."""
        if len(self.preds) == 0:  # a list, or one tensor once synced across ranks
            return torch.tensor(0.5)
        preds = dim_zero_cat(self.preds)
        target = dim_zero_cat(self.target)
        group = dim_zero_cat(self.group)
        # rank scores within each group (average ranks for ties) by sorting on (group, score)
        _, group_idx = torch.unique(group, return_inverse=True)
        order = torch.argsort(preds, stable=True)
        order = order[torch.argsort(group_idx[order], stable=True)]
        g, p, t = group_idx[order], preds[order], target[order]
        n = g.numel()
        position = torch.arange(n, dtype=torch.float64)
        # tie blocks: same group and same score share the mean position
        new_block = torch.ones(n, dtype=torch.bool)
        new_block[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
        block = torch.cumsum(new_block.long(), 0) - 1
        block_sum = torch.zeros(int(block[-1]) + 1, dtype=torch.float64).index_add_(
            0, block, position
        )
        block_count = torch.bincount(block).double()
        mean_position = (block_sum / block_count)[block]
        num_groups = int(g.max()) + 1
        group_start = torch.zeros(num_groups, dtype=torch.float64).scatter_reduce_(
            0, g, position, reduce="amin", include_self=False
        )
        rank = mean_position - group_start[g] + 1.0
        pos = torch.bincount(g, weights=t.double(), minlength=num_groups)
        total = torch.bincount(g, minlength=num_groups).double()
        neg = total - pos
        pos_rank_sum = torch.zeros(num_groups, dtype=torch.float64).index_add_(
            0, g, rank * t.double()
        )
        valid = (pos > 0) & (neg > 0)
        if not bool(valid.any()):
            return torch.tensor(0.5)
        auc = (pos_rank_sum - pos * (pos + 1) / 2) / (pos * neg).clamp_min(1)
        return auc[valid].mean().float()
