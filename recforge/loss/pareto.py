"""Pareto-efficient loss weighting of multi-task models (Lin et al. 2019).

"A Pareto-Efficient Algorithm for Multiple Objective Optimization in E-Commerce
Recommendation", RecSys 2019.

Each training step finds task weights ``w`` (``sum(w) = 1``, ``w_t >= c_t``) that minimise
``|| sum_t w_t * grad_t ||^2``, where ``grad_t`` is the gradient of task ``t``'s loss with
respect to the shared parameters: the multiple-gradient-descent direction, which does not
increase any task's loss to first order. Two tasks have a closed form; more tasks use
Frank-Wolfe on the simplex, with pairwise steps (linear convergence; Sener & Koltun 2018 use
plain ones). It solves the bounded problem itself, where the paper relaxes the bounds and
projects the result back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn


def min_norm_weights(
    gram: torch.Tensor,
    min_weights: Optional[Sequence[float]] = None,
    max_iter: int = 1000,
    tol: float = 1e-10,
) -> torch.Tensor:
    """Weights ``w`` minimising ``w^T gram w`` with ``sum(w) = 1`` and ``w >= min_weights``.

    Args:
        gram: ``[K, K]`` Gram matrix of the task gradients, ``G @ G.T``.
        min_weights: lower bound of each weight (default 0); they sum to at most 1.
        max_iter: Frank-Wolfe iterations (``K > 2``).
        tol: stop when the Frank-Wolfe gap is below ``tol`` times the largest squared
            gradient norm.

    Returns:
        ``[K]`` float64 weights on the CPU.

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
        >>> min_norm_weights(g @ g.T)  # the shorter gradient gets the larger weight
        tensor([0.9000, 0.1000], dtype=torch.float64)

    """
    m = gram.detach().double().cpu()
    k = m.shape[0]
    c = torch.zeros(k, dtype=torch.float64)
    if min_weights is not None:
        c = torch.as_tensor(list(min_weights), dtype=torch.float64)
    check_min_weights(c.tolist())
    free = 1.0 - float(c.sum())
    if k == 1 or free <= 1e-12:
        return c + free / k
    if k == 2:
        # w = base + u * d with u in [0, 1]: minimise the quadratic in u, then clip
        base = c + torch.tensor([0.0, free], dtype=torch.float64)
        d = torch.tensor([free, -free], dtype=torch.float64)
        curvature = float(d @ m @ d)
        if curvature <= 1e-12 * max(float(m.diagonal().sum()), 1e-30):
            u: float | torch.Tensor = 0.5  # parallel, equal gradients: every split is optimal
        else:
            u = min(max(-float(d @ m @ base) / curvature, 0.0), 1.0)
        return base + u * d
    # pairwise Frank-Wolfe on w = c + free * u, u in the simplex: move mass from the support
    # vertex with the largest gradient to the vertex with the smallest (linear convergence)
    u = torch.full((k,), 1.0 / k, dtype=torch.float64)
    scale = max(float(m.diagonal().max()), 1e-30)
    for _ in range(max_iter):
        w = c + free * u
        grad = m @ w
        toward = int(torch.argmin(grad))
        support = torch.nonzero(u > 0).flatten()
        away = int(support[torch.argmax(grad[support])])
        if float(grad[away] - grad[toward]) <= tol * scale or toward == away:
            break
        d = torch.zeros(k, dtype=torch.float64)
        d[toward], d[away] = free, -free
        curvature = float(d @ m @ d)
        limit = float(u[away])
        step = limit if curvature <= 0 else min(max(-float(d @ grad) / curvature, 0.0), limit)
        u[toward] += step
        u[away] -= step
        if step == limit:
            u[away] = 0.0
    return c + free * u


def check_min_weights(min_weights: Sequence[float]) -> None:
    """Raises ValueError unless every lower bound is >= 0 and they sum to at most 1."""
    if any(c < 0 for c in min_weights) or sum(min_weights) > 1 + 1e-6:
        raise ValueError(
            "pareto_min_loss_weight must be >= 0 for every task and sum to at most 1;"
            f" found {list(min_weights)}"
        )


def pareto_weights(
    task_losses: Sequence[torch.Tensor],
    parameters: Sequence[nn.Parameter],
    min_weights: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Pareto-efficient weights of ``task_losses`` (see the module docstring).

    The gradients are taken with respect to the parameters that two or more tasks reach (the
    shared ones; all reached ones if no parameter is shared), without touching ``.grad``.
    Under several processes the per-task gradients are averaged first, so every rank picks
    the same weights.

    Args:
        task_losses: ``K`` scalar losses that share a graph (it is retained).
        parameters: candidate parameters, e.g. every dense parameter of the model.
        min_weights: lower bound of each weight.

    Returns:
        ``[K]`` weights (float64, CPU) summing to 1.

    """
    params = [p for p in parameters if p.requires_grad]
    grads: list[tuple[Optional[torch.Tensor], ...]] = []
    for loss in task_losses:
        if loss.requires_grad:
            grads.append(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
        else:
            grads.append((None,) * len(params))
    reached = [sum(g[i] is not None for g in grads) for i in range(len(params))]
    columns = [i for i, n in enumerate(reached) if n >= 2] or [
        i for i, n in enumerate(reached) if n >= 1
    ]
    if not columns:
        return min_norm_weights(torch.eye(len(task_losses)), min_weights)
    flat = torch.stack(
        [
            torch.cat(
                [
                    (g[i] if g[i] is not None else torch.zeros_like(params[i])).reshape(-1).float()  # type: ignore[union-attr]
                    for i in columns
                ]
            )
            for g in grads
        ]
    )
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
    gram = flat.double() @ flat.double().T
    return min_norm_weights(gram, min_weights)
