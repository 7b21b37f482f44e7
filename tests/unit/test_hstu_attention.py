"""Jagged HSTU attention against a padded, masked reference written independently."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from recforge.modules.gr.attention import hstu_attention
from recforge.modules.gr.jagged import offsets_of, row_index
from recforge.modules.gr.relative_bias import RelativeBucketedTimeAndPositionBias

MAX_LEN = 12


def _allowed(
    i: int, j: int, n: int, targets: int, causal: bool, window: int, contextual: int = 0
) -> bool:
    """The HSTU mask for one (query, key) pair, spelled out."""
    if i >= n or j >= n:
        return False
    history = n - targets
    if i == j:
        return True
    if i < contextual:  # a contextual token sees every token but the candidates
        return j < history

    def slot(p: int) -> int:
        # contextual tokens share slot 0; candidates share the first candidate's slot
        return 0 if p < contextual else min(p, history) - max(contextual - 1, 0)

    pi, pj = slot(i), slot(j)
    if pi == pj:
        return False
    if causal and pj > pi:
        return False
    return not (window > 0 and abs(pi - pj) > window)


def _reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: list[int],
    alpha: float,
    scaling: int,
    causal: bool,
    targets: Optional[list[int]],
    window: int,
    bias: Optional[torch.Tensor],
    contextual: int = 0,
) -> torch.Tensor:
    """Pads every sequence to MAX_LEN, masks with `_allowed`, unpads."""
    b, h = len(lengths), q.shape[1]
    pq = q.new_zeros(b, MAX_LEN, h, q.shape[2])
    pk, pv = torch.zeros_like(pq), q.new_zeros(b, MAX_LEN, h, v.shape[2])
    start = 0
    for s, n in enumerate(lengths):
        pq[s, :n], pk[s, :n], pv[s, :n] = (
            q[start : start + n],
            k[start : start + n],
            v[start : start + n],
        )
        start += n
    mask = torch.zeros(b, MAX_LEN, MAX_LEN, dtype=q.dtype)
    for s, n in enumerate(lengths):
        t = targets[s] if targets is not None else 0
        for i in range(MAX_LEN):
            for j in range(MAX_LEN):
                mask[s, i, j] = float(_allowed(i, j, n, t, causal, window, contextual))
    scores = torch.einsum("bihd,bjhd->bhij", pq, pk) * alpha
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    w = F.silu(scores) / scaling * mask.unsqueeze(1)
    out = torch.einsum("bhij,bjhd->bihd", w, pv)
    return torch.cat([out[s, :n] for s, n in enumerate(lengths)])


def _reference_bias(
    module: RelativeBucketedTimeAndPositionBias, ts: torch.Tensor, lengths: list[int]
) -> torch.Tensor:
    bias = torch.zeros(len(lengths), MAX_LEN, MAX_LEN, dtype=torch.float64)
    start = 0
    for s, n in enumerate(lengths):
        t = ts[start : start + n].tolist()
        for i in range(n):
            nxt = t[min(i + 1, n - 1)]
            for j in range(n):
                dt = abs(nxt - t[j])
                bucket = min(int(math.log(max(dt, 1.0)) / 0.301), module._num_buckets)
                bias[s, i, j] = module.pos_w[j - i + module._max_seq_len - 1] + module.ts_w[bucket]
        start += n
    return bias


CASES = [
    # lengths, causal, with targets, window
    ([0, 1, 5, 12, 0, 3, 1], True, False, 0),
    ([7, 0, 1, 12, 2], True, True, 0),
    ([4, 9, 1, 0, 12], False, False, 0),
    ([12, 6, 1, 0, 8], True, True, 3),
    ([0, 0, 1], True, False, 0),
]


@pytest.mark.parametrize("lengths,causal,with_targets,window", CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_jagged_equals_padded_reference(
    lengths: list[int], causal: bool, with_targets: bool, window: int, with_bias: bool
) -> None:
    g = torch.Generator().manual_seed(sum(lengths) + 7 * window)
    total, h, a, dv = sum(lengths), 2, 4, 3
    dtype = torch.float64
    q = torch.randn(total, h, a, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(total, h, a, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(total, h, dv, generator=g, dtype=dtype, requires_grad=True)
    offsets = offsets_of(torch.tensor(lengths))
    targets = [min(n, 2) for n in lengths] if with_targets else None
    num_targets = torch.tensor(targets) if targets is not None else None
    ts = torch.cumsum(torch.randint(0, 5000, (total,), generator=g), 0).to(dtype)
    module = RelativeBucketedTimeAndPositionBias(MAX_LEN, num_buckets=20).to(dtype)
    bias, ref_bias = None, None
    if with_bias and total:
        seq, pos = row_index(offsets, total)
        bias = module(ts, offsets, seq, pos, max(lengths))
        ref_bias = _reference_bias(module, ts, lengths)

    out = hstu_attention(q, k, v, offsets, 0.5, MAX_LEN, causal, num_targets, window, bias)
    ref = _reference(q, k, v, lengths, 0.5, MAX_LEN, causal, targets, window, ref_bias)
    assert out.shape == (total, h, dv)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)

    if total == 0:
        return
    up = torch.randn(total, h, dv, generator=g, dtype=dtype)
    params = [q, k, v] + ([module.pos_w, module.ts_w] if with_bias else [])
    grads = torch.autograd.grad((out * up).sum(), params)
    ref_grads = torch.autograd.grad((ref * up).sum(), params)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "lengths,with_targets,window",
    [([2, 3, 7, 12, 2], False, 0), ([5, 2, 12, 3], True, 0), ([12, 4, 9], True, 2)],
)
def test_contextual_tokens_match_the_reference(
    lengths: list[int], with_targets: bool, window: int
) -> None:
    g = torch.Generator().manual_seed(11 + window)
    total, contextual = sum(lengths), 2
    q, k, v = (
        torch.randn(total, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    offsets = offsets_of(torch.tensor(lengths))
    targets = [min(n - contextual, 1) for n in lengths] if with_targets else None
    num_targets = torch.tensor(targets) if targets is not None else None
    out = hstu_attention(
        q, k, v, offsets, 0.7, MAX_LEN, True, num_targets, window, None, contextual
    )
    ref = _reference(q, k, v, lengths, 0.7, MAX_LEN, True, targets, window, None, contextual)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(out.pow(2).sum(), [q, k, v])
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), [q, k, v])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_float32_matches_float64() -> None:
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([0, 1, 9, 30])
    q, k, v = (torch.randn(40, 4, 8, generator=g) for _ in range(3))
    offsets = offsets_of(lengths)
    out32 = hstu_attention(q, k, v, offsets, 1 / 8**0.5, 30)
    out64 = hstu_attention(q.double(), k.double(), v.double(), offsets, 1 / 8**0.5, 30)
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=0)


def test_an_event_only_sees_its_past() -> None:
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(6, 1, 4, generator=g) for _ in range(3))
    offsets = torch.tensor([0, 6])
    before = hstu_attention(q, k, v, offsets, 1.0, 6)
    k2, v2 = k.clone(), v.clone()
    k2[4:], v2[4:] = 9.0, 9.0
    after = hstu_attention(q, k2, v2, offsets, 1.0, 6)
    torch.testing.assert_close(after[:4], before[:4])
    assert not torch.allclose(after[4:], before[4:])
