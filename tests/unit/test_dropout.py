"""recforge's CPU dropout: drop rate, scaling, gradient, eval identity, reproducibility."""

from __future__ import annotations

import pytest
import torch

from recforge.modules.dropout import Dropout
from recforge.modules.mlp import MLP


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_drop_rate_and_scaling_match_p(p: float) -> None:
    torch.manual_seed(0)
    dropout = Dropout(p).train()
    x = torch.ones(1000, 1000)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    # kept values carry 1 / keep probability, so the expectation is unchanged
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 0.01


def test_neighbouring_elements_are_independent() -> None:
    # four elements share one 64-bit draw: their masks must still be independent
    torch.manual_seed(1)
    kept = Dropout(0.5).train()(torch.ones(400_000, 4)) != 0
    both = (kept[:, 0] & kept[:, 1]).float().mean().item()
    all_four = kept.all(dim=1).float().mean().item()
    assert abs(both - 0.25) < 0.005
    assert abs(all_four - 0.0625) < 0.003


def test_gradient_is_the_same_mask_and_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = Dropout(0.3).train()(x)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    kept = y.detach() != 0
    scale = y.detach()[kept] / x.detach()[kept]
    assert torch.allclose(scale, torch.full_like(scale, 1 / 0.7), rtol=1e-4)
    expected = torch.where(kept, upstream / 0.7, torch.zeros_like(upstream))
    assert torch.allclose(x.grad, expected, rtol=1e-4, atol=1e-6)


def test_eval_mode_and_zero_p_are_identity() -> None:
    x = torch.randn(8, 5)
    assert Dropout(0.4).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_same_seed_same_mask() -> None:
    x = torch.ones(128, 50)
    torch.manual_seed(3)
    first = Dropout(0.2).train()(x)
    torch.manual_seed(3)
    second = Dropout(0.2).train()(x)
    torch.manual_seed(4)
    third = Dropout(0.2).train()(x)
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_invalid_probability_is_refused() -> None:
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\), got 1.0"):
        Dropout(1.0)


def test_mlp_uses_it_and_scripts_in_eval() -> None:
    mlp = MLP(6, [8, 4], dropout_ratio=[0.25])
    assert sum(isinstance(m, Dropout) for m in mlp.modules()) == 2
    mlp.eval()
    x = torch.randn(3, 6)
    assert torch.allclose(torch.jit.script(mlp)(x), mlp(x))
