"""Metrics torchmetrics does not provide: normalized entropy, XAUC and grouped XAUC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class NormalizedEntropy(Metric):
    """Normalized entropy (He et al. 2014) of binary probabilities.

    ``NE = mean(CE(p_i, y_i)) / H(mean(y))``: the log loss divided by the log loss of always
    predicting the base rate. Below 1 beats the base rate; lower is better.

    ``update(preds [B] probabilities, target [B] 0/1)``; ``compute()`` returns a scalar.

    Args:
        eps: probabilities and the base rate are clamped to ``[eps, 1 - eps]``.

    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        cross_entropy: torch.Tensor
        positives: torch.Tensor
        count: torch.Tensor

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        for name in ("cross_entropy", "positives", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch of probabilities and labels."""
        p = preds.double().clamp(self.eps, 1 - self.eps)
        y = target.double()
        self.cross_entropy += -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).sum()
        self.positives += y.sum()
        self.count += y.numel()

    def compute(self) -> torch.Tensor:
        """The normalized entropy of everything added."""
        rate = (self.positives / self.count.clamp_min(1)).clamp(self.eps, 1 - self.eps)
        base = -(rate * torch.log(rate) + (1 - rate) * torch.log1p(-rate))
        return (self.cross_entropy / self.count.clamp_min(1) / base).float()


def pairwise_concordance(
    preds: torch.Tensor, target: torch.Tensor, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(concordant, comparable)`` pair counts over every pair (O(n^2), chunked).

    A pair is comparable when the targets differ; it is concordant when the predictions
    order it as the targets do (a prediction tie counts one half).
    """
    preds, target = preds.double(), target.double()
    concordant = torch.zeros((), dtype=torch.float64)
    comparable = torch.zeros((), dtype=torch.float64)
    for start in range(0, preds.numel(), chunk):
        p, t = preds[start : start + chunk, None], target[start : start + chunk, None]
        higher = target[None, :] > t  # pairs (i, j) with t_j > t_i: each unordered pair once
        dp = preds[None, :] - p
        concordant += ((dp > 0) & higher).sum() + 0.5 * ((dp == 0) & higher).sum()
        comparable += higher.sum()
    return concordant, comparable


def _sampled_concordance(
    preds: torch.Tensor, target: torch.Tensor, num_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    n = preds.numel()
    i = torch.randint(0, n, (num_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (num_pairs,), generator=generator)) % n  # j != i
    dt = target[j].double() - target[i].double()
    dp = preds[j].double() - preds[i].double()
    comparable = dt != 0
    agree = (dt * dp > 0).double() + 0.5 * (dp == 0).double()
    return (agree * comparable).sum(), comparable.sum().double()


class XAUC(Metric):
    """XAUC: pairwise ordering accuracy of regression predictions (e.g. watch time).

    Over pairs of samples with different targets, the fraction whose predictions are ordered
    as their targets (prediction ties count one half); 0.5 for a constant prediction, AUC for
    0/1 targets. The exact value needs every pair of the eval set, so by default a random
    ``sample_ratio`` of the pairs is used (a fixed seed: the same sample for the same data).

    Args:
        sample_ratio: fraction of the ``n * (n - 1) / 2`` pairs to sample; ``>= 1``: exact.
        max_pairs: sample this many pairs instead (exact when there are no more pairs).
        in_batch: exact XAUC of each batch, averaged over the batches.

    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        batch_sum: torch.Tensor  # in_batch
        batches: torch.Tensor  # in_batch
        preds: list[torch.Tensor]
        target: list[torch.Tensor]

    def __init__(
        self, sample_ratio: float = 1e-3, max_pairs: Optional[int] = None, in_batch: bool = False
    ) -> None:
        super().__init__()
        if sample_ratio <= 0:
            raise ValueError(f"xauc sample_ratio must be > 0, found {sample_ratio}")
        self.sample_ratio = sample_ratio
        self.max_pairs = int(max_pairs) if max_pairs else None
        self.in_batch = in_batch
        if in_batch:
            self.add_state(
                "batch_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(
                "batches", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
            )
        else:
            self.add_state("preds", default=[], dist_reduce_fx="cat")
            self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch of predictions ``[B]`` and targets ``[B]``."""
        if self.in_batch:
            concordant, comparable = pairwise_concordance(preds, target)
            if comparable > 0:
                self.batch_sum += concordant / comparable
                self.batches += 1
        else:
            self.preds.append(preds.detach().float())
            self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        """The XAUC of everything added (0.5 when no pair has different targets)."""
        if self.in_batch:
            return (
                self.batch_sum / self.batches if self.batches > 0 else torch.tensor(0.5)
            ).float()
        if len(self.preds) == 0:  # a list, or one tensor once synced across ranks
            return torch.tensor(0.5)
        preds, target = dim_zero_cat(self.preds).cpu(), dim_zero_cat(self.target).cpu()
        n = preds.numel()
        total_pairs = n * (n - 1) // 2
        wanted = self.max_pairs or int(total_pairs * min(self.sample_ratio, 1.0))
        if (self.sample_ratio >= 1 and not self.max_pairs) or wanted >= total_pairs:
            concordant, comparable = pairwise_concordance(preds, target)
        else:
            generator = torch.Generator().manual_seed(0)
            concordant, comparable = _sampled_concordance(preds, target, max(wanted, 1), generator)
        if comparable == 0:
            return torch.tensor(0.5)
        return (concordant / comparable).float()


def _pairs_within_groups(
    sizes: torch.Tensor, max_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample pairs ``(i, j)`` inside each group of rows sorted by group.

    A group of ``n`` rows gives all of its ``n * (n - 1) / 2`` pairs when there are at most
    ``max_pairs`` of them, else ``max_pairs`` pairs drawn at random (``i != j``).

    Args:
        sizes: rows per group ``[G]`` (groups are consecutive runs of rows).
        max_pairs: most pairs per group.
        generator: the random source of the sampled groups' pairs.

    Returns:
        ``(i [P], j [P], group [P])``: row indices and the group of each pair.

    """
    starts = torch.cumsum(sizes, 0) - sizes
    all_pairs = sizes * (sizes - 1) // 2
    exact = (all_pairs <= max_pairs) & (sizes > 1)
    # exact groups: row r pairs with every later row of its group
    row_group = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    rows = torch.arange(int(sizes.sum()))
    later = (starts + sizes)[row_group] - rows - 1
    later = torch.where(exact[row_group], later, torch.zeros_like(later))
    i_exact = torch.repeat_interleave(rows, later)
    first = torch.cumsum(later, 0) - later
    j_exact = i_exact + 1 + torch.arange(i_exact.numel()) - torch.repeat_interleave(first, later)
    # larger groups: max_pairs random pairs each
    big = torch.nonzero(~exact & (sizes > 1)).flatten()
    g_big = torch.repeat_interleave(big, max_pairs)
    n_big = sizes[g_big]
    draws = torch.rand((2, g_big.numel()), generator=generator, dtype=torch.float64)
    offset = torch.floor(draws[0] * n_big)
    step = 1 + torch.floor(draws[1] * (n_big - 1))
    i_big = starts[g_big] + offset.long()
    j_big = starts[g_big] + ((offset + step) % n_big).long()
    return (
        torch.cat([i_exact, i_big]),
        torch.cat([j_exact, j_big]),
        torch.cat([row_group[i_exact], g_big]),
    )


class GroupedXAUC(Metric):
    """XAUC within each group (e.g. each user's videos), averaged over the groups.

    A group's XAUC is :class:`XAUC`'s pairwise ordering accuracy over pairs of its samples
    with different targets: every pair when the group has at most ``max_pairs_per_group``
    pairs, else that many random pairs (a fixed seed: the same sample for the same data).
    Groups are weighted by their sample count, as TorchEasyRec does. Where we differ from
    TorchEasyRec: a group whose targets are all equal has no pair to order and is left out
    (TorchEasyRec scores it 0), and prediction ties count one half, as in :class:`XAUC`.

    ``update(preds [B], target [B], group [B] int64)``; ``compute()`` returns a scalar (0.5
    when no group has two different targets).

    Args:
        max_pairs_per_group: most pairs compared in one group (TorchEasyRec's default 100).

    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        preds: list[torch.Tensor]
        target: list[torch.Tensor]
        group: list[torch.Tensor]

    def __init__(self, max_pairs_per_group: int = 100) -> None:
        super().__init__()
        if max_pairs_per_group < 1:
            raise ValueError(f"max_pairs_per_group must be >= 1, found {max_pairs_per_group}")
        self.max_pairs_per_group = int(max_pairs_per_group)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, group: torch.Tensor) -> None:
        """Adds a batch of predictions, targets and group ids (all ``[B]``)."""
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().double())
        self.group.append(group.detach().long())

    def compute(self) -> torch.Tensor:
        """The sample-weighted mean of the groups' XAUC."""
        if len(self.preds) == 0:  # a list, or one tensor once synced across ranks
            return torch.tensor(0.5)
        preds, target = dim_zero_cat(self.preds).cpu(), dim_zero_cat(self.target).cpu()
        group = dim_zero_cat(self.group).cpu()
        order = torch.argsort(group, stable=True)
        preds, target = preds[order], target[order]
        _, sizes = torch.unique_consecutive(group[order], return_counts=True)
        generator = torch.Generator().manual_seed(0)
        i, j, pair_group = _pairs_within_groups(sizes, self.max_pairs_per_group, generator)
        dt, dp = target[j] - target[i], preds[j] - preds[i]
        comparable = (dt != 0).double()
        agree = ((dt * dp > 0).double() + 0.5 * (dp == 0).double()) * comparable
        groups = sizes.numel()
        concordant = torch.zeros(groups, dtype=torch.float64).index_add_(0, pair_group, agree)
        counted = torch.zeros(groups, dtype=torch.float64).index_add_(0, pair_group, comparable)
        scored = counted > 0
        if not bool(scored.any()):
            return torch.tensor(0.5)
        weight = sizes[scored].double()
        xauc = concordant[scored] / counted[scored]
        return ((xauc * weight).sum() / weight.sum()).float()
