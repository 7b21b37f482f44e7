"""The ``Batch``: what the data pipeline hands to a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One mini batch of parsed features, labels and pass-through columns.

    Attributes:
        sparse_features: every sparse (id) feature, keyed by feature name; ``values`` int64,
            ``lengths`` int32 with ``B`` entries per key; optional ``weights`` float32.
        dense_features: every dense (raw) feature, keyed by feature name; ``values`` float32
            ``[B, sum(dims)]``.
        labels: label column name -> tensor ``[B]`` (float32); a jagged label (one value per
            candidate, see ``label_lengths``) holds ``[T]``.
        sample_weights: sample-weight column name -> tensor ``[B]`` (float32).
        label_lengths: jagged label column name -> its values per row ``[B]`` (int32).
        extras: other tensors derived from columns, e.g. int64 ids of a grouped-AUC key ``[B]``.
        reserves: columns passed through untouched (for predict outputs), as a pyarrow batch.

    """

    sparse_features: KeyedJaggedTensor
    dense_features: KeyedTensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    sample_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    label_lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    reserves: Optional[pa.RecordBatch] = None

    @property
    def batch_size(self) -> int:
        """Number of samples ``B``."""
        return int(self.dense_features.values().shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """Return a copy with every tensor on ``device``."""
        return Batch(
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            labels={k: v.to(device, non_blocking=non_blocking) for k, v in self.labels.items()},
            sample_weights={
                k: v.to(device, non_blocking=non_blocking) for k, v in self.sample_weights.items()
            },
            extras={k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()},
            label_lengths={
                k: v.to(device, non_blocking=non_blocking) for k, v in self.label_lengths.items()
            },
            reserves=self.reserves,
        )

    def record_stream(self, stream: torch.Stream) -> None:
        """Mark every tensor as used on ``stream`` (torchrec train pipelines on GPU)."""
        self.sparse_features.record_stream(stream)
        self.dense_features.record_stream(stream)
        for group in (self.labels, self.sample_weights, self.extras, self.label_lengths):
            for value in group.values():
                value.record_stream(stream)

    def pin_memory(self) -> Batch:
        """Return a copy in pinned memory (faster host-to-GPU copies)."""
        return Batch(
            sparse_features=self.sparse_features.pin_memory(),
            dense_features=KeyedTensor(
                keys=self.dense_features.keys(),
                length_per_key=self.dense_features.length_per_key(),
                values=self.dense_features.values().pin_memory(),
            ),
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            sample_weights={k: v.pin_memory() for k, v in self.sample_weights.items()},
            extras={k: v.pin_memory() for k, v in self.extras.items()},
            label_lengths={k: v.pin_memory() for k, v in self.label_lengths.items()},
            reserves=self.reserves,
        )
