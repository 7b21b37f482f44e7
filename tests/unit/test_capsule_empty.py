"""MIND's capsule layer masks interests that the routing gave no behaviour."""

import torch

from recforge.modules.capsule import CapsuleLayer
from recforge.protos import module_pb2


def routed_to_first(**fields) -> CapsuleLayer:
    """A layer whose fixed (eval) routing sends every behaviour to interest 0."""
    config = module_pb2.B2ICapsule(max_k=3, max_seq_len=6, high_dim=4, num_iters=3, **fields)
    torch.manual_seed(0)
    layer = CapsuleLayer(config, input_dim=3, input_len=6).eval()
    layer.eval_routing_logits.zero_()
    layer.eval_routing_logits[:, 0] = 5.0
    return layer


def test_an_interest_without_behaviours_is_masked_and_zero():
    layer = routed_to_first()
    # identical behaviours agree with the first interest: the routing keeps them there
    same = torch.randn(1, 1, 3).expand(3, 6, 3)
    interests, mask = layer(same, torch.tensor([6, 4, 0]))
    # 6 and 4 behaviours allow 3 and 2 interests, but all went to the first
    assert mask.tolist() == [[True, False, False], [True, False, False], [True, False, False]]
    assert (interests[~mask] == 0).all()
    assert (interests[:2, 0].norm(dim=1) > 0).all()


def test_interests_that_got_behaviours_stay():
    layer = routed_to_first()
    layer.eval_routing_logits[3:, 0] = 0.0
    layer.eval_routing_logits[3:, 2] = 5.0  # behaviours 3.. go to interest 2
    same = torch.randn(1, 1, 3).expand(2, 6, 3)
    _, mask = layer(same, torch.tensor([6, 3]))
    assert mask.tolist() == [[True, False, True], [True, False, False]]


def test_const_caps_num_keeps_every_interest():
    layer = routed_to_first(const_caps_num=True)
    _, mask = layer(torch.randn(2, 6, 3), torch.tensor([6, 1]))
    assert mask.all()
