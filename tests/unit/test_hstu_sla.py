"""Semi-local attention (sla_k1 / sla_k2) against a padded reference with the mask spelled out."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from recforge.modules.gr.attention import hstu_attention
from recforge.modules.gr.jagged import offsets_of

PAD = 14


def _sla_allowed(i: int, j: int, n: int, targets: int, k1: int, k2: int, ctx: int) -> bool:
    """TorchEasyRec's two key intervals of query ``i`` (its build_sla_func_tensor doc)."""
    if i >= n or j >= n:
        return False
    history = max(n - targets, 0)
    if i >= history:  # a candidate: every history key, not itself, no other candidate
        return j < history
    prefix = max(k2, ctx)
    return j in range(0, min(prefix, i + 1)) or j in range(max(prefix, i - k1 + 1), i + 1)


def _reference(q, k, v, lengths, targets, k1, k2, ctx, alpha, scaling) -> torch.Tensor:
    """Every sequence padded to PAD, dense SiLU attention with the explicit mask, unpadded."""
    outs, start = [], 0
    for b, n in enumerate(lengths):
        t = targets[b] if targets is not None else 0
        mask = torch.tensor(
            [[_sla_allowed(i, j, n, t, k1, k2, ctx) for j in range(PAD)] for i in range(PAD)]
        )
        pq, pk, pv = (torch.zeros(PAD, *x.shape[1:], dtype=x.dtype) for x in (q, k, v))
        pq, pk, pv = (
            p.index_copy(0, torch.arange(n), x[start : start + n])
            for p, x in ((pq, q), (pk, k), (pv, v))
        )
        scores = torch.einsum("ihd,jhd->hij", pq, pk) * alpha
        weights = F.silu(scores) / scaling * mask.to(q.dtype)
        outs.append(torch.einsum("hij,jhd->ihd", weights, pv)[:n])
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize(
    ("k1", "k2", "ctx", "with_targets"),
    [(3, 0, 0, False), (2, 2, 0, True), (0, 3, 0, True), (3, 1, 2, True), (4, 0, 2, False)],
)
def test_sla_equals_the_dense_reference_values_and_gradients(k1, k2, ctx, with_targets):
    gen = torch.Generator().manual_seed(k1 * 7 + k2 + ctx)
    lengths = [0, 1, 13, 5, 9, ctx + 1, 2]
    lengths = [max(n, ctx) if n else 0 for n in lengths]  # contextual sequences hold the prefix
    targets: Optional[list[int]] = None
    if with_targets:
        targets = [min(n - ctx, int(torch.randint(0, 4, (1,), generator=gen))) for n in lengths]
        targets = [max(t, 0) for t in targets]
    total, heads = sum(lengths), 2
    q, k, v = (torch.randn(total, heads, d, generator=gen, requires_grad=True) for d in (4, 4, 3))
    offsets = offsets_of(torch.tensor(lengths))
    nt = torch.tensor(targets) if targets is not None else None
    out = hstu_attention(q, k, v, offsets, 0.7, 16, True, nt, 0, None, ctx, k1, k2)
    ref = _reference(q, k, v, lengths, targets, k1, k2, ctx, 0.7, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_key_outside_the_window_has_no_effect():
    """k1 = 2, k2 = 1: the last row (9) sees keys 0, 8, 9; every other key is outside."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(10, 2, 4, generator=gen) for _ in range(3))
    offsets = torch.tensor([0, 10])
    before = hstu_attention(q, k, v, offsets, 1.0, 10, sla_k1=2, sla_k2=1)
    k2, v2 = k.clone(), v.clone()
    k2[3:8], v2[3:8] = 9.0, -9.0  # outside the window and the prefix of row 9
    after = hstu_attention(q, k2, v2, offsets, 1.0, 10, sla_k1=2, sla_k2=1)
    torch.testing.assert_close(after[9], before[9])
    assert not torch.allclose(after[5], before[5])  # row 5 sees key 4 (its window)
    k3, v3 = k.clone(), v.clone()
    k3[0], v3[0] = 9.0, -9.0  # the global prefix: every row sees it
    prefixed = hstu_attention(q, k3, v3, offsets, 1.0, 10, sla_k1=2, sla_k2=1)
    assert not torch.allclose(prefixed[9], before[9])
    plain = hstu_attention(q, k2, v2, offsets, 1.0, 10)  # without SLA the row sees them all
    assert not torch.allclose(plain[9], hstu_attention(q, k, v, offsets, 1.0, 10)[9])


def test_candidates_see_the_whole_history_but_not_themselves():
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(8, 1, 4, generator=gen) for _ in range(3))
    offsets, targets = torch.tensor([0, 8]), torch.tensor([2])
    before = hstu_attention(q, k, v, offsets, 1.0, 8, num_targets=targets, sla_k1=1, sla_k2=0)
    k2, v2 = k.clone(), v.clone()
    k2[0], v2[0] = 5.0, 5.0  # the oldest event: outside every history row's window but row 0's
    after = hstu_attention(q, k2, v2, offsets, 1.0, 8, num_targets=targets, sla_k1=1, sla_k2=0)
    torch.testing.assert_close(after[1:6], before[1:6])
    assert not torch.allclose(after[6], before[6]) and not torch.allclose(after[7], before[7])
    k3, v3 = k.clone(), v.clone()
    k3[6:], v3[6:] = 5.0, 5.0  # the candidates' own keys
    cands = hstu_attention(q, k3, v3, offsets, 1.0, 8, num_targets=targets, sla_k1=1, sla_k2=0)
    torch.testing.assert_close(cands, before)
