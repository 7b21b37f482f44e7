"""Variational dropout learns: a feature without signal ends with the higher dropout rate."""

import torch

from recforge.modules.variational_dropout import FeatureDropout


def test_a_feature_without_signal_ends_with_the_higher_dropout_rate():
    torch.manual_seed(0)
    layer = FeatureDropout(["signal", "noise"], [2, 2], regularization_lambda=1.0)
    with torch.no_grad():
        layer.feature_p.zero_()
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    params = list(net.parameters()) + list(layer.parameters())
    optimizer = torch.optim.Adam(params, lr=0.05)
    for _ in range(80):
        x = torch.randn(128, 4)
        y = (x[:, 0] + x[:, 1] > 0).float()
        logits = net(layer(x)).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad()
        (loss + layer.penalty(128)).backward()
        optimizer.step()
    signal, noise = layer.dropout_rates().tolist()
    assert noise > 0.5 > signal, (signal, noise)
