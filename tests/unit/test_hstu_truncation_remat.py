"""STU stack: mid-stack attention truncation and selective rematerialization."""

from __future__ import annotations

import itertools

import pytest
import torch

from recforge.modules.gr.stu import STULayer, STUStack
from recforge.modules.gr.truncation import truncate_history


def _stack(split: int = 1, tail: int = 2, ctx: int = 1, layers: int = 3) -> STUStack:
    torch.manual_seed(0)
    return STUStack(
        [
            STULayer(8, 2, 4, 4, output_dropout_ratio=0.0, contextual_seq_len=ctx)
            for _ in range(layers)
        ],
        split,
        tail,
        ctx,
    ).eval()


def test_truncate_history_keeps_prefix_tail_and_candidates():
    # [c | h h h h | t t], [c | h | t], [c | t]: contextual 1, tail 2
    x = torch.arange(12.0).view(12, 1)
    offsets = torch.tensor([0, 7, 10, 12])
    kept, new_offsets = truncate_history(x, offsets, torch.tensor([2, 1, 1]), 1, 2)
    assert kept.view(-1).tolist() == [0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert new_offsets.tolist() == [0, 5, 8, 10]
    flat, flat_offsets = truncate_history(x, torch.tensor([0, 12]), None, 0, 3)
    assert flat.view(-1).tolist() == [9.0, 10.0, 11.0] and flat_offsets.tolist() == [0, 3]


def test_layers_after_the_split_see_only_the_tail():
    stack = _stack(split=1, tail=2, ctx=1)
    x = torch.randn(12, 8)
    offsets, targets = torch.tensor([0, 7, 10, 12]), torch.tensor([2, 1, 1])
    seen: list[torch.Tensor] = []
    stack.layers[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        out, new_offsets = stack.run(x, offsets, 16, targets)
        first = stack.layers[0](x, offsets, 16, targets)
    assert new_offsets.tolist() == [0, 5, 8, 10] and out.shape == (10, 8)
    keep = [0, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    torch.testing.assert_close(seen[0], first[keep])
    with torch.no_grad():  # the later layers alone, on the kept rows, give the output
        rest = stack.layers[2](
            stack.layers[1](first[keep], new_offsets, 16, targets), new_offsets, 16, targets
        )
    torch.testing.assert_close(out, rest)


def test_a_dropped_event_still_reaches_the_output_through_the_first_layers():
    x = torch.randn(7, 8)
    offsets, targets = torch.tensor([0, 7]), torch.tensor([2])
    changed = x.clone()
    changed[1] = 3.0  # the oldest history event: dropped at the split (tail 2 keeps 3, 4)
    split_at_1 = _stack(split=1)
    with torch.no_grad():
        a, b = split_at_1(x, offsets, 16, targets), split_at_1(changed, offsets, 16, targets)
    assert not torch.allclose(a, b)  # layer 0 saw it and wrote it into the kept rows
    # the same stack with the first layer skipped (split at 0 is the input): no effect at all
    truncated_x, new_offsets = truncate_history(x, offsets, targets, 1, 2)
    truncated_c, _ = truncate_history(changed, offsets, targets, 1, 2)
    torch.testing.assert_close(truncated_x, truncated_c)
    with torch.no_grad():
        torch.testing.assert_close(
            split_at_1.layers[1](truncated_x, new_offsets, 16, targets),
            split_at_1.layers[1](truncated_c, new_offsets, 16, targets),
        )


def test_a_tail_longer_than_every_history_changes_nothing():
    x, offsets, targets = torch.randn(12, 8), torch.tensor([0, 7, 10, 12]), torch.tensor([2, 1, 1])
    full, cut = _stack(split=0, tail=0), _stack(split=2, tail=8)
    with torch.no_grad():
        torch.testing.assert_close(cut(x, offsets, 16, targets), full(x, offsets, 16, targets))


@pytest.mark.parametrize(("split", "tail"), [(1, 0), (0, 3), (3, 2), (5, 2)])
def test_bad_truncation_settings(split, tail):
    with pytest.raises(ValueError, match="attn_truncation"):
        _stack(split=split, tail=tail, layers=3)


def _saved_tensors(layer: STULayer, x: torch.Tensor, offsets: torch.Tensor) -> int:
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, offsets, 16, torch.tensor([1, 2]))
    return count


@pytest.mark.parametrize(("normed", "uvqk", "y"), list(itertools.product([False, True], repeat=3)))
def test_rematerialization_gives_the_stored_activation_gradients(normed, uvqk, y):
    torch.manual_seed(0)
    stored = STULayer(
        8,
        2,
        4,
        4,
        output_dropout_ratio=0.3,
        recompute_normed_x=False,
        recompute_uvqk=False,
        recompute_y=False,
    )
    remat = STULayer(
        8,
        2,
        4,
        4,
        output_dropout_ratio=0.3,
        recompute_normed_x=normed,
        recompute_uvqk=uvqk,
        recompute_y=y,
    )
    remat.load_state_dict(stored.state_dict())
    x = torch.randn(9, 8, requires_grad=True)
    offsets, targets = torch.tensor([0, 4, 9]), torch.tensor([1, 2])
    results = []
    for layer in (stored, remat):
        torch.manual_seed(5)  # the same dropout mask (checkpoint replays the RNG)
        out = layer(x, offsets, 16, targets)
        grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)
    if normed or uvqk or y:  # something is really recomputed: fewer tensors kept for backward
        assert _saved_tensors(remat, x, offsets) < _saved_tensors(stored, x, offsets)


_HSTU = """
stu {{ embedding_dim: 8 num_heads: 2 hidden_dim: 4 attention_dim: 4 output_dropout_ratio: 0.0 }}
input_dropout_ratio: 0.0 attn_num_layers: 2 {extra}
positional_encoder {{ num_position_buckets: 16 }}
input_preprocessor {{ uih_preprocessor {{ }} }}
output_postprocessor {{ l2norm_postprocessor {{ }} }}
"""


def test_the_retrieval_encoder_reads_the_last_row_after_truncation():
    from google.protobuf import text_format

    from recforge.modules.gr.hstu_encoder import HSTUUserEncoder
    from recforge.protos import module_pb2

    def encoder(extra: str) -> HSTUUserEncoder:
        torch.manual_seed(0)
        hstu = text_format.Parse(_HSTU.format(extra=extra), module_pb2.HSTU())
        return HSTUUserEncoder(6, hstu, 16, "uih", "uih_timestamp").eval()

    grouped = {"uih.sequence": torch.randn(9, 6), "uih.sequence_length": torch.tensor([7, 0, 2])}
    full = encoder("")
    long_tail = encoder("attn_truncation_split_layer: 1 attn_truncation_tail_len: 7")
    short_tail = encoder("attn_truncation_split_layer: 1 attn_truncation_tail_len: 3")
    with torch.no_grad():
        want = full(grouped)
        torch.testing.assert_close(long_tail(grouped), want)
        short = short_tail(grouped)
    assert short.shape == (3, 8)
    torch.testing.assert_close(short[1:], want[1:])  # 0 and 2 events: nothing dropped
    assert not torch.allclose(short[0], want[0])  # 4 of 7 events dropped after layer 0
