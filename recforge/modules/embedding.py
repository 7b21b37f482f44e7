"""EmbeddingGroup: feature groups -> one torchrec EmbeddingBagCollection -> a tensor per group."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recforge.features import BaseFeature
from recforge.protos import model_pb2

WIDE_TABLE_SUFFIX = "_wide"


class EmbeddingGroupError(ValueError):
    """A feature group cannot be built from the features it names."""


class EmbeddingGroup(nn.Module):
    """Looks up every sparse feature once and concatenates features per group.

    Sparse features of DEEP groups share one table per ``embedding_name``; WIDE groups use a
    separate table per feature of width ``wide_embedding_dim`` (named ``<table>_wide``). Dense
    (raw) features enter DEEP groups as they are.

    Args:
        features: all features of the model.
        feature_groups: the ``feature_groups`` of the model config.
        wide_embedding_dim: embedding width of WIDE groups.
        wide_init_fn: optional init function for WIDE tables.
        device: where the tables are created (``meta`` defers allocation to sharding).

    Shapes:
        ``forward(sparse_features, dense_features)`` returns ``{group_name: [B, group_dim]}``.

    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        wide_embedding_dim: int = 4,
        wide_init_fn: Optional[object] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        by_name = {f.name: f for f in features}
        tables: dict[str, EmbeddingBagConfig] = {}
        group_keys: dict[str, list[str]] = {}
        group_dims: dict[str, list[int]] = {}
        for group in feature_groups:
            is_wide = group.group_type == model_pb2.WIDE
            keys, dims = [], []
            for name in group.feature_names:
                feature = by_name.get(name)
                if feature is None:
                    raise EmbeddingGroupError(
                        f"feature group '{group.group_name}' names undefined feature '{name}'"
                    )
                if not feature.is_sparse:
                    if is_wide:
                        raise EmbeddingGroupError(
                            f"feature '{name}' is a dense raw feature and cannot be in WIDE group"
                            f" '{group.group_name}'; give it boundaries to bucketize it"
                        )
                    keys.append(name)
                    dims.append(feature.output_dim)
                    continue
                table = copy.deepcopy(feature.emb_bag_config)
                if is_wide:
                    table.name += WIDE_TABLE_SUFFIX
                    table.embedding_dim = wide_embedding_dim
                    if wide_init_fn is not None:
                        table.init_fn = wide_init_fn
                existing = tables.get(table.name)
                if existing is None:
                    table.feature_names = [name]
                    tables[table.name] = table
                elif name not in existing.feature_names:
                    if existing.embedding_dim != table.embedding_dim:
                        raise EmbeddingGroupError(
                            f"features sharing table '{table.name}' have different embedding"
                            f" dims ({existing.embedding_dim} and {table.embedding_dim})"
                        )
                    existing.feature_names.append(name)
                keys.append((name, table.name))
                dims.append(table.embedding_dim)
            if not keys:
                raise EmbeddingGroupError(f"feature group '{group.group_name}' has no features")
            group_keys[group.group_name] = keys
            group_dims[group.group_name] = dims
        # torchrec names a pooled output "<feature>@<table>" when the feature feeds several tables
        tables_of_feature: dict[str, int] = {}
        for table in tables.values():
            for name in table.feature_names:
                tables_of_feature[name] = tables_of_feature.get(name, 0) + 1
        for group_name, keys in group_keys.items():
            resolved = []
            for key in keys:
                if isinstance(key, tuple):
                    name, table_name = key
                    key = f"{name}@{table_name}" if tables_of_feature[name] > 1 else name
                resolved.append(key)
            group_keys[group_name] = resolved
        self._group_keys = group_keys
        self._group_dims = group_dims
        self._group_names = list(group_keys)
        self._key_lists: list[list[str]] = [group_keys[g] for g in self._group_names]
        self._has_sparse = bool(tables)
        # decided here, not from the batch, so that forward traces (torch.fx) and scripts
        self._has_dense = any(
            not by_name[name].is_sparse for group in feature_groups for name in group.feature_names
        )
        self.ebc = (
            EmbeddingBagCollection(tables=list(tables.values()), device=device) if tables else None
        )

    def group_names(self) -> list[str]:
        """Names of the groups, in config order."""
        return list(self._group_names)

    def group_dims(self, group_name: str) -> list[int]:
        """Width of each feature of a group, in group order."""
        self._check_group(group_name)
        return list(self._group_dims[group_name])

    def group_total_dim(self, group_name: str) -> int:
        """Width of a group's output tensor."""
        return sum(self.group_dims(group_name))

    def group_feature_count(self, group_name: str) -> int:
        """Number of features in a group."""
        return len(self.group_dims(group_name))

    def _check_group(self, group_name: str) -> None:
        if group_name not in self._group_dims:
            raise EmbeddingGroupError(
                f"unknown feature group '{group_name}' (groups: {', '.join(self._group_names)})"
            )

    def forward(
        self, sparse_features: KeyedJaggedTensor, dense_features: KeyedTensor
    ) -> dict[str, torch.Tensor]:
        """Embeds and groups the features.

        Args:
            sparse_features: every sparse feature (extra keys are ignored).
            dense_features: every dense feature ``[B, sum(dims)]``.

        Returns:
            ``{group_name: [B, group_total_dim]}``.

        """
        keyed: list[KeyedTensor] = []
        if self.ebc is not None:
            keyed.append(self.ebc(sparse_features))
        if self._has_dense:
            keyed.append(dense_features)
        grouped = KeyedTensor.regroup(keyed, self._key_lists)
        return {name: grouped[i] for i, name in enumerate(self._group_names)}
