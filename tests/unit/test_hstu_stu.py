"""STU layers, the STU stack and the positional/time encoder: shapes, causality, settings."""

from __future__ import annotations

import pytest
import torch

from recforge.modules.gr.positional import HSTUPositionalEncoder
from recforge.modules.gr.stu import STULayer, STUStack


def _stack(group_norm: bool = False, layers: int = 2) -> STUStack:
    torch.manual_seed(0)
    return STUStack(
        [
            STULayer(16, 2, 8, 4, output_dropout_ratio=0.0, use_group_norm=group_norm)
            for _ in range(layers)
        ]
    ).eval()


@pytest.mark.parametrize("group_norm", [False, True])
def test_shapes_and_empty_sequences(group_norm: bool) -> None:
    stack = _stack(group_norm)
    offsets = torch.tensor([0, 0, 1, 6, 6])
    out = stack(torch.randn(6, 16), offsets, max_seq_len=8)
    assert out.shape == (6, 16)
    assert torch.isfinite(out).all()
    empty = stack(torch.randn(0, 16), torch.tensor([0, 0]), max_seq_len=8)
    assert empty.shape == (0, 16)


def test_changing_a_later_event_leaves_earlier_outputs() -> None:
    stack = _stack(layers=3)
    x = torch.randn(9, 16)
    offsets = torch.tensor([0, 4, 9])
    before = stack(x, offsets, 8)
    changed = x.clone()
    changed[7] = 5.0  # the 4th event of the second sequence
    after = stack(changed, offsets, 8)
    torch.testing.assert_close(after[:7], before[:7])
    assert not torch.allclose(after[7:], before[7:])


def test_sequences_do_not_see_each_other() -> None:
    stack = _stack()
    x = torch.randn(7, 16)
    both = stack(x, torch.tensor([0, 3, 7]), 8)
    alone = stack(x[3:], torch.tensor([0, 4]), 8)
    torch.testing.assert_close(both[3:], alone, atol=1e-6, rtol=0)


def test_order_matters() -> None:
    stack = _stack()
    x = torch.randn(5, 16)
    offsets = torch.tensor([0, 5])
    out = stack(x, offsets, 8)
    out_rev = stack(x.flip(0), offsets, 8)
    assert not torch.allclose(out[-1], out_rev[-1], atol=1e-4)


def test_dropout_only_in_training() -> None:
    layer = STULayer(16, 2, 8, 4, output_dropout_ratio=0.5)
    x, offsets = torch.randn(6, 16), torch.tensor([0, 6])
    layer.eval()
    torch.testing.assert_close(layer(x, offsets, 8), layer(x, offsets, 8))
    layer.train()
    assert not torch.allclose(layer(x, offsets, 8), layer(x, offsets, 8))


def test_positions_count_back_from_the_newest_event() -> None:
    enc = HSTUPositionalEncoder(embedding_dim=4, num_position_buckets=4)
    with torch.no_grad():
        enc.position_weight.copy_(torch.arange(4.0).view(4, 1).expand(4, 4))
    x = torch.zeros(6, 4)
    out = enc(x, torch.tensor([0, 1, 6]))
    # one event -> index 1; five events -> 5 4 3 2 1, clipped at 3
    assert out[:, 0].tolist() == [1.0, 3.0, 3.0, 3.0, 2.0, 1.0]
    targets = enc(x, torch.tensor([0, 1, 6]), num_targets=torch.tensor([0, 2]))
    assert targets[:, 0].tolist() == [1.0, 3.0, 2.0, 1.0, 0.0, 0.0]


def test_time_buckets_from_the_anchor() -> None:
    enc = HSTUPositionalEncoder(
        embedding_dim=2,
        num_position_buckets=2,
        num_time_buckets=5,
        use_time_encoding=True,
        time_bucket_increments=1.0,
    )
    with torch.no_grad():
        enc.position_weight.zero_()
        enc.time_weight.copy_(torch.arange(6.0).view(6, 1).expand(6, 2))
    ts = torch.tensor([0.0, 91.0, 100.0])
    out = enc(torch.zeros(3, 2), torch.tensor([0, 3]), timestamps=ts)
    # sqrt(100) = 10 -> clipped to 5; sqrt(9) = 3; gap 0 -> 0
    assert out[:, 0].tolist() == [5.0, 3.0, 0.0]
    out = enc(torch.zeros(3, 2), torch.tensor([0, 3]), ts, query_time=torch.tensor([104.0]))
    assert out[:, 0].tolist() == [5.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="timestamps"):
        enc(torch.zeros(3, 2), torch.tensor([0, 3]))


def test_action_encoder_sets_the_embedding_of_each_action_bit():
    from recforge.modules.gr.action_encoder import SimpleActionEncoder

    enc = SimpleActionEncoder(2, [1, 2, 4], [30], [8])
    with torch.no_grad():
        enc.embeddings.copy_(torch.arange(1.0, 5.0).view(4, 1).expand(4, 2))
    out = enc(torch.tensor([0.0, 1.0, 6.0, 1.0]), torch.tensor([0.0, 40.0, 10.0, 30.0]))
    assert out.shape == (4, 8)
    # types: bit 1, bit 2, bit 4, watch time >= 30 (bit 8)
    assert out[:, ::2].tolist() == [[0, 0, 0, 0], [1, 0, 0, 4], [0, 2, 3, 0], [1, 0, 0, 4]]
    with pytest.raises(ValueError, match="same length"):
        SimpleActionEncoder(2, [1], [30], [])


def test_contextual_tokens_take_the_first_positions():
    enc = HSTUPositionalEncoder(embedding_dim=4, num_position_buckets=8)
    with torch.no_grad():
        enc.position_weight.copy_(torch.arange(8.0).view(8, 1).expand(8, 4))
    contextual = HSTUPositionalEncoder(
        embedding_dim=4, num_position_buckets=8, contextual_seq_len=2
    )
    contextual.load_state_dict(enc.state_dict())
    # two contextual tokens, then three events: positions 0 1, then 3 + 2 .. 1 + 2
    out = contextual(torch.zeros(5, 4), torch.tensor([0, 5]))
    assert out[:, 0].tolist() == [0.0, 1.0, 5.0, 4.0, 3.0]
