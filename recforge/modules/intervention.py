"""DC2VR's intervention layer: moves a task's representation along directions of other tasks'."""

from __future__ import annotations

import torch
from torch import nn


class OrthonormalProjection(nn.Module):
    """A ``[n, k]`` matrix with orthonormal columns (``n > k``), learned without constraints.

    The free parameter ``raw`` is mapped to the Q factor of its reduced QR decomposition, with
    each column's sign fixed by the sign of ``R``'s diagonal so that the map is continuous.
    (TorchEasyRec uses ``torch.nn.utils.parametrizations.orthogonal``; a parametrization does
    not survive ``torch.fx`` tracing, which export needs, and the QR map covers the same set of
    matrices.)

    Args:
        in_dim: ``n``, the width of the projected vectors.
        out_dim: ``k``, the width of the projection.

    Shapes:
        ``forward(x [B, n])`` -> ``[B, k]``; ``weight()`` -> ``[n, k]``.

    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim < 1 or in_dim <= out_dim:
            raise ValueError(
                f"low_rank_dim must be >= 1 and below the projected width {in_dim}, found {out_dim}"
            )
        self.raw = nn.Parameter(torch.empty(in_dim, out_dim))
        nn.init.orthogonal_(self.raw)

    def weight(self) -> torch.Tensor:
        """The orthonormal matrix ``Q`` (``Q^T Q = I``): ``[n, k]``."""
        q, r = torch.linalg.qr(self.raw)
        signs = torch.sign(torch.diagonal(r))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        return q * signs.unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projects ``x``: ``[B, n] -> [B, k]``."""
        return x @ self.weight()


class Intervention(nn.Module):
    """Shifts a base representation's low-rank component by its difference from a source's.

    ``out = base + (P_b(base) - P_s(stop_gradient(source))) Q_b^T`` where ``P_b(x) = x Q_b``
    and ``P_s(x) = x Q_s`` project into a shared ``low_rank_dim`` space through orthonormal
    matrices: outside the subspace spanned by ``Q_b`` the base is unchanged, inside it its
    coordinates become ``2 P_b(base) - P_s(source)`` (TorchEasyRec's sign: the base moves
    away from the source). Dropout is applied to the output. The source is detached, so the
    intervened task does not train the source towers.

    Args:
        base_dim: width of the base (the intervened task's hidden vector).
        source_dim: width of the source (the intervening tasks' vectors, concatenated).
        low_rank_dim: width of the shared subspace (below both widths).
        dropout_ratio: dropout on the output.

    Shapes:
        ``forward(base [B, base_dim], source [B, source_dim])`` -> ``[B, base_dim]``.

    Example:
        >>> Intervention(8, 6, 2)(torch.randn(3, 8), torch.randn(3, 6)).shape
        torch.Size([3, 8])

    """

    def __init__(
        self, base_dim: int, source_dim: int, low_rank_dim: int, dropout_ratio: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio must be in [0, 1), found {dropout_ratio}")
        self.base_projection = OrthonormalProjection(base_dim, low_rank_dim)
        self.source_projection = OrthonormalProjection(source_dim, low_rank_dim)
        self.dropout = nn.Dropout(dropout_ratio)
        self._base_dim = base_dim

    def output_dim(self) -> int:
        """Width of the output (the base's)."""
        return self._base_dim

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Intervenes on ``base`` with ``source``: ``[B, base_dim]``."""
        q_base = self.base_projection.weight()
        shift = base @ q_base - self.source_projection(source.detach())
        return self.dropout(base + shift @ q_base.t())
