"""TorchScript-compatible assembly of the flat tensor dict into torchrec inputs.

These functions use only dict / list / tensor operations, so an export wrapper can
``torch.jit.script`` a module that calls them (keep the key lists as annotated ``list[str]``
attributes). No ``from __future__ import annotations`` here: TorchScript reads the hints.
"""

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


def infer_batch_size(
    parsed: dict[str, torch.Tensor],
    sparse_keys: list[str],
    dense_keys: list[str],
    label_keys: list[str],
) -> int:
    """Return ``B`` from the first sparse lengths, dense values or label tensor (else 0)."""
    if len(sparse_keys) > 0:
        return parsed[sparse_keys[0] + ".lengths"].shape[0]
    if len(dense_keys) > 0:
        return parsed[dense_keys[0] + ".values"].shape[0]
    if len(label_keys) > 0:
        return parsed["label." + label_keys[0]].shape[0]
    return 0


def build_sparse_features(
    parsed: dict[str, torch.Tensor],
    keys: list[str],
    batch_size: int,
    weighted_keys: Optional[list[str]] = None,
    mean_weighted_keys: Optional[list[str]] = None,
) -> KeyedJaggedTensor:
    """Concatenate per-feature ids (and id weights) into one ``KeyedJaggedTensor``.

    Args:
        parsed: holds ``"{key}.values"`` int64 ``[N_key]`` and ``"{key}.lengths"`` int32
            ``[B]`` for every key, and ``"{key}.weights"`` float32 ``[N_key]`` for every
            weighted key.
        keys: sparse feature names, in order.
        batch_size: ``B`` (the stride, also used when there are no keys).
        weighted_keys: keys whose ids carry weights (weighted id features); when any, the
            result has ``weights`` ``[sum N_key]``, 1 for the ids of the other keys.
        mean_weighted_keys: weighted keys pooled by mean: each weight is divided by its
            bag's length, so that a SUM-pooled table gives ``sum_i w_i e_i / L``.

    Returns:
        ``KeyedJaggedTensor`` with ``keys``, ``values`` ``[sum N_key]``, ``lengths``
        ``[len(keys) * B]`` and, with weighted keys, ``weights``.

    """
    if len(keys) == 0:
        return KeyedJaggedTensor(
            keys=[],
            values=torch.empty(0, dtype=torch.int64),
            lengths=torch.empty(0, dtype=torch.int32),
            stride=batch_size,
        )
    weighted: list[str] = weighted_keys if weighted_keys is not None else []
    mean_weighted: list[str] = mean_weighted_keys if mean_weighted_keys is not None else []
    values: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    for key in keys:
        key_values = parsed[key + ".values"]
        key_lengths = parsed[key + ".lengths"]
        values.append(key_values)
        lengths.append(key_lengths)
        if len(weighted) > 0:
            if key in weighted:
                key_weights = parsed[key + ".weights"].to(torch.float32)
                if key in mean_weighted:
                    counts = key_lengths.clamp(min=1).to(torch.float32)
                    key_weights = key_weights / torch.repeat_interleave(counts, key_lengths)
                weights.append(key_weights)
            else:
                weights.append(torch.ones_like(key_values, dtype=torch.float32))
    if len(weighted) > 0:
        return KeyedJaggedTensor(
            keys=keys,
            values=torch.cat(values),
            lengths=torch.cat(lengths),
            weights=torch.cat(weights),
            stride=batch_size,
        )
    return KeyedJaggedTensor(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths), stride=batch_size
    )


def build_dense_features(
    parsed: dict[str, torch.Tensor], keys: list[str], dims: list[int], batch_size: int
) -> KeyedTensor:
    """Concatenate per-feature dense values into one ``KeyedTensor``.

    Args:
        parsed: holds ``"{key}.values"`` float32 ``[B, dim]`` for every key.
        keys: dense feature names, in order.
        dims: each key's ``dim``.
        batch_size: ``B`` (used when there are no keys: values ``[B, 0]``).

    Returns:
        ``KeyedTensor`` with ``values`` ``[B, sum(dims)]``, ``key_dim=1``.

    """
    if len(keys) == 0:
        # a size list, so that torch.fx can trace it when batch_size is traced (export)
        empty = torch.empty([batch_size, 0])
        return KeyedTensor(keys=[], length_per_key=[], values=empty, key_dim=1)
    tensors: list[torch.Tensor] = []
    for key in keys:
        tensors.append(parsed[key + ".values"])
    return KeyedTensor(keys=keys, length_per_key=dims, values=torch.cat(tensors, dim=1), key_dim=1)
