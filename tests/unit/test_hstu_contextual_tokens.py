"""ContextualTokens: one token per feature (or one for all with concat), a linear map each."""

from __future__ import annotations

import pytest
import torch

from recforge.modules.gr.contextual import ContextualTokens


def test_each_feature_is_its_own_linear_token():
    torch.manual_seed(0)
    tokens = ContextualTokens([3, 3], embedding_dim=4)
    context = torch.randn(2, 6)
    out = tokens(context)
    assert out.shape == (2, 2, 4)
    want = context[:, 3:] @ tokens.weight[1] + tokens.bias[1]
    torch.testing.assert_close(out[:, 1], want)


def test_concat_makes_one_token_of_mixed_widths():
    tokens = ContextualTokens([2, 5], embedding_dim=4, concat=True)
    assert tokens.num_tokens == 1 and tokens.weight.shape == (1, 7, 4)
    assert tokens(torch.randn(3, 7)).shape == (3, 1, 4)
    with pytest.raises(ValueError, match=r"one embedding width, found \[2, 5\] \(or set x\)"):
        ContextualTokens([2, 5], embedding_dim=4, hint=" (or set x)")
