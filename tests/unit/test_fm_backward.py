"""The factorization machine's training path computes exactly what autograd computes."""

import pytest
import torch

from recforge.modules.fm import FactorizationMachine


def _autograd_fm(embeddings: torch.Tensor) -> torch.Tensor:
    """The FM as plain tensor ops, differentiated by autograd."""
    return 0.5 * (embeddings.sum(dim=1).pow(2) - embeddings.pow(2).sum(dim=1))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_training_fm_values_and_gradients_are_bit_identical(scale: float) -> None:
    torch.manual_seed(3)
    # a column slice of a wider lookup output, viewed as [B, N, D]: not contiguous, as in DeepFM
    lookup = torch.randn(257, 8 + 7 * 16) * scale
    a, b = lookup.clone().requires_grad_(), lookup.clone().requires_grad_()
    fm = FactorizationMachine().train()
    out = fm(b[:, 8:].view(257, 7, 16))
    expected = _autograd_fm(a[:, 8:].view(257, 7, 16))
    assert out.grad_fn is not None and "PairwiseInteraction" in type(out.grad_fn).__name__
    assert torch.equal(out, expected)
    grad = torch.randn(257, 16)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(a.grad, b.grad)
    assert a.grad[:, :8].abs().sum() == 0 and a.grad[:, 8:].abs().sum() > 0


def test_training_fm_gradient_through_the_logit_sum() -> None:
    """DeepFM sums the FM over D: the incoming gradient is an expanded (stride-0) tensor."""
    torch.manual_seed(4)
    x = torch.randn(64, 5, 4)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    FactorizationMachine().train()(b).sum(dim=1, keepdim=True).sum().backward()
    _autograd_fm(a).sum(dim=1, keepdim=True).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_eval_and_scripted_fm_use_the_plain_ops() -> None:
    x = torch.randn(16, 3, 4)
    fm = FactorizationMachine().eval()
    assert fm(x.requires_grad_()).grad_fn.name() != "_PairwiseInteractionBackward"
    assert torch.equal(fm(x), _autograd_fm(x))
    scripted = torch.jit.script(FactorizationMachine().train())
    assert torch.equal(scripted(x), _autograd_fm(x))
