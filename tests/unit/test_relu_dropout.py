"""The MLP's in-place ReLU and fused ReLU + Dropout compute exactly what the layers compute."""

import pytest
import torch

from recforge.modules.dropout import Dropout
from recforge.modules.mlp import MLP


def _layer_by_layer(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP's modules applied one by one (no fusion, nothing in place)."""
    for layer in mlp.mlp:
        x = layer(x)
    return x


def test_relu_dropout_equals_dropout_of_relu_values_gradients_and_draws() -> None:
    drop = Dropout(0.3).train()
    x = torch.randn(64, 40)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(7)
    expected = drop(torch.relu(a))
    after_expected = torch.rand(4)
    torch.manual_seed(7)
    fused = drop.relu_dropout(b * 1.0)  # an intermediate, as a linear layer's output is
    after_fused = torch.rand(4)
    assert torch.equal(fused, expected)
    assert torch.equal(after_fused, after_expected)  # the same random draws were consumed
    grad = torch.randn(64, 40)
    expected.backward(grad)
    fused.backward(grad)
    assert torch.equal(a.grad, b.grad)
    assert (fused == 0).sum() > (torch.relu(x) == 0).sum()  # dropout did zero elements


@pytest.mark.parametrize(
    "options",
    [
        {"dropout_ratio": [0.2]},
        {},
        {"dropout_ratio": [0.3], "use_bn": True},
        {"dropout_ratio": [0.1, 0.0], "use_ln": True},
        {"dropout_ratio": [0.2], "activation": "nn.PReLU"},
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_mlp_matches_its_layers_applied_one_by_one(options: dict, training: bool) -> None:
    torch.manual_seed(0)
    mlp = MLP(12, [16, 8], **options).train(training)
    x = torch.randn(32, 12)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(3)
    expected = _layer_by_layer(mlp, a)
    torch.manual_seed(3)
    out = mlp(b)
    assert torch.equal(out, expected)
    expected_grads = torch.autograd.grad(expected.square().sum(), [a, *mlp.parameters()])
    grads = torch.autograd.grad(out.square().sum(), [b, *mlp.parameters()])
    for got, want in zip(grads, expected_grads):
        assert torch.equal(got, want)
