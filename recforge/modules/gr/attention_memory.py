"""A clear error, not an out-of-memory kill, when a batch's HSTU attention cannot fit.

The PyTorch attention (``recforge.modules.gr.attention``) pads each batch to its longest
sequence and materialises the ``[B, H, N, N]`` scores of every layer (training keeps them for
backward), as TorchEasyRec's PyTorch kernel does; its GPU kernels do not. With long histories
(TorchEasyRec's kuairand configs allow 8,000 events) a CPU batch can need more memory than the
host has, and Linux then kills the process without a word. This check runs before the first
layer, on CPU tensors only (CUDA raises its own out-of-memory error).
"""

from __future__ import annotations

import torch

from recforge.errors import DataError
from recforge.utils.memory_estimate import available_memory

#: below this, no check (reading the host's free memory every step costs more than it saves)
_CHECK_ABOVE = 256 << 20
#: ``[B, H, N, N]`` tensors alive at once in one layer's forward (scores, SiLU, weights, ...)
_FORWARD_COPIES = 4
#: ... and kept per layer for backward in training (SiLU input, mask, weights)
_SAVED_COPIES = 3


def attention_bytes(
    batch: int, heads: int, layer_lengths: list[int], itemsize: int, training: bool
) -> int:
    """Bytes the scores of a batch's attention take at their peak (an estimate).

    Args:
        batch: sequences ``B``.
        heads: attention heads ``H``.
        layer_lengths: each STU layer's longest sequence ``N`` (contextual tokens and
            candidates included; shorter after an attention truncation).
        itemsize: bytes per score (4 for float32).
        training: whether backward keeps each layer's scores.

    """
    blocks = [batch * heads * n * n * itemsize for n in layer_lengths]
    if not blocks:
        return 0
    peak = _FORWARD_COPIES * blocks[-1]  # the last layer's forward, the others' saved scores
    return peak + (_SAVED_COPIES * sum(blocks[:-1]) if training else 0)


@torch.jit.unused
def check_attention_memory(
    offsets: torch.Tensor, heads: int, layer_lengths: list[int], itemsize: int, training: bool
) -> None:
    """Raises ``DataError`` when the batch's attention cannot fit in the available memory.

    Args:
        offsets: the batch's sequence offsets ``[B + 1]``.
        heads: attention heads.
        layer_lengths: each layer's longest sequence (see :func:`attention_bytes`).
        itemsize: bytes per score.
        training: whether backward keeps each layer's scores.

    """
    batch = offsets.numel() - 1
    if batch <= 0 or not layer_lengths:
        return
    need = attention_bytes(batch, heads, layer_lengths, itemsize, training)
    if need < _CHECK_ABOVE:
        return
    free = available_memory()
    if free and need > free:
        layers = len(layer_lengths)
        raise DataError(
            f"data_config.batch_size: the HSTU attention of this batch needs about"
            f" {need / (1 << 30):.1f} GiB ({batch} sequences padded to the longest,"
            f" {layer_lengths[0]} rows; {heads} heads, {layers} layers"
            f"{', kept for backward' if training else ''}), {free / (1 << 30):.1f} GiB of"
            " memory are available: lower batch_size, the histories' sequence_length, or set"
            " attn_truncation_split_layer / attn_truncation_tail_len (the PyTorch attention"
            " holds every layer's [B, H, N, N] scores; TorchEasyRec's GPU kernels do not)"
        )
