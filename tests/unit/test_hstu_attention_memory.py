"""A batch whose HSTU attention cannot fit in memory is a one-line error, not an OOM kill."""

from __future__ import annotations

import pytest
import torch

from recforge.errors import DataError
from recforge.modules.gr import attention_memory
from recforge.modules.gr.stu import STULayer, STUStack


def stack() -> STUStack:
    torch.manual_seed(0)
    layers = [STULayer(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4) for _ in "ab"]
    return STUStack(layers)


def test_the_estimate_grows_with_the_square_of_the_longest_sequence_and_the_layers():
    one = attention_memory.attention_bytes(8, 4, [1000] * 3, 4, training=True)
    assert attention_memory.attention_bytes(8, 4, [2000] * 3, 4, training=True) == 4 * one
    # training keeps each layer's scores for backward; evaluation holds one layer's at a time
    assert attention_memory.attention_bytes(8, 4, [1000] * 3, 4, training=False) < one
    assert one == 8 * 4 * 1000 * 1000 * 4 * (4 + 3 * 2)
    # layers after an attention truncation attend over the kept rows only
    assert attention_memory.attention_bytes(8, 4, [1000, 100, 100], 4, training=True) < one / 2


def test_a_truncating_stack_counts_its_later_layers_at_the_kept_length():
    layers = [STULayer(embedding_dim=8, num_heads=2, hidden_dim=4, attention_dim=4) for _ in "abc"]
    truncating = STUStack(layers, truncation_split_layer=1, truncation_tail_len=10)
    offsets = torch.tensor([0, 500, 520])
    assert truncating._layer_lengths(offsets, torch.tensor([2, 1])) == [500, 12, 12]
    assert stack()._layer_lengths(offsets, None) == [500, 500]


def test_a_batch_larger_than_the_free_memory_is_a_data_error_naming_the_settings(monkeypatch):
    model = stack().train()
    offsets = torch.tensor([0, 3000, 3002])  # one long history: 2 x 3000^2 scores per layer
    x = torch.randn(3002, 8)
    monkeypatch.setattr(attention_memory, "available_memory", lambda: 512 << 20)
    with pytest.raises(DataError, match="data_config.batch_size: the HSTU attention") as info:
        model.run(x, offsets, 3000)
    message = str(info.value)
    assert "3000 rows" in message and "2 heads, 2 layers" in message
    assert "attn_truncation_tail_len" in message and "0.5 GiB of memory are available" in message


def test_batches_that_fit_run_without_reading_the_free_memory(monkeypatch):
    def unexpected() -> int:
        raise AssertionError("small batches must not read /proc/meminfo")

    monkeypatch.setattr(attention_memory, "available_memory", unexpected)
    offsets = torch.tensor([0, 5, 12])
    out, _ = stack().run(torch.randn(12, 8), offsets, 12)
    assert out.shape == (12, 8)
