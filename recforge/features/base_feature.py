"""``BaseFeature``: one object per feature config; parses raw columns, declares its table."""

from __future__ import annotations

import abc
import ast
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa

from recforge.errors import RecforgeError
from recforge.features.utils import as_array

if TYPE_CHECKING:  # torchrec is heavy: imported only when a table config is asked for
    from torchrec import EmbeddingBagConfig, EmbeddingConfig


class FeatureError(RecforgeError):
    """A feature config or a column value is wrong; the message names feature and column."""


_POOLINGS = ("sum", "mean")
_DATA_TYPES = ("FP32", "FP16", "BF16")


def parse_init_fn(spec: str, feature_name: str = "?") -> Callable[..., Any]:
    """Parse an initialiser spec such as ``"nn.init.uniform_,a=-0.01,b=0.01"``.

    Args:
        spec: ``name[,key=value...]``; ``name`` is a ``torch.nn.init`` function, optionally
            prefixed by ``nn.init.`` or ``torch.nn.init.``; values are Python literals.
        feature_name: used in error messages.

    Returns:
        ``functools.partial(torch.nn.init.<name>, **kwargs)``.

    Raises:
        FeatureError: unknown function, malformed argument, or arguments the function does
            not take (tried on a 2 x 2 tensor).

    """
    import torch

    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise FeatureError(f"feature '{feature_name}': init_fn is empty")
    name = parts[0]
    for prefix in ("torch.nn.init.", "nn.init.", "init."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    fn = getattr(torch.nn.init, name, None)
    if fn is None or not callable(fn) or name.startswith("_"):
        raise FeatureError(
            f"feature '{feature_name}': init_fn '{spec}': expected a torch.nn.init function "
            f"such as nn.init.uniform_, found unknown '{parts[0]}'"
        )
    kwargs: dict[str, Any] = {}
    for part in parts[1:]:
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise FeatureError(
                f"feature '{feature_name}': init_fn '{spec}': expected key=value, found '{part}'"
            )
        try:
            value: Any = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        kwargs[key.strip()] = value
    try:  # a wrong keyword or value type would otherwise surface deep inside model building
        fn(torch.empty(2, 2), **kwargs)
    except TypeError as e:
        raise FeatureError(
            f"feature '{feature_name}': init_fn '{spec}': {parts[0]} does not take these "
            f"arguments: {e}"
        ) from None
    return functools.partial(fn, **kwargs)


class BaseFeature(abc.ABC):
    """One input feature: how to parse its column and, when sparse, its embedding table.

    Subclasses implement :meth:`parse` (vectorised over a whole record batch) and
    :attr:`num_embeddings` for sparse features.

    Args:
        feature_config: the kind's message (e.g. ``IdFeature``), or a ``FeatureConfig``
            whose ``feature`` oneof holds it.

    """

    def __init__(self, feature_config: Any) -> None:
        if feature_config.DESCRIPTOR.name == "FeatureConfig":
            feature_config = getattr(feature_config, feature_config.WhichOneof("feature"))
        self.config = feature_config
        self.name: str = feature_config.feature_name
        if not self.name:
            raise FeatureError(
                f"{feature_config.DESCRIPTOR.name} without feature_name: {feature_config}"
            )
        pooling = feature_config.pooling.lower()
        if pooling not in _POOLINGS:
            raise FeatureError(
                f"feature '{self.name}': pooling must be one of {_POOLINGS}, "
                f"found '{feature_config.pooling}'"
            )
        self.pooling: str = pooling
        if feature_config.data_type.upper() not in _DATA_TYPES:
            raise FeatureError(
                f"feature '{self.name}': data_type must be one of {_DATA_TYPES}, "
                f"found '{feature_config.data_type}'"
            )
        self._init_fn: Optional[Callable[..., Any]] = None
        if feature_config.HasField("init_fn") and feature_config.init_fn:
            self._init_fn = parse_init_fn(feature_config.init_fn, self.name)

    # ------------------------------------------------------------------ description
    @property
    @abc.abstractmethod
    def is_sparse(self) -> bool:
        """Whether the feature is looked up in an embedding table (ids) or is dense."""

    @property
    def inputs(self) -> list[str]:
        """Source column names: ``expression`` "side:col" -> "col"; unset -> feature name."""
        expression = self.config.expression if self.config.HasField("expression") else ""
        if not expression:
            return [self.name]
        return [expression.split(":", 1)[1] if ":" in expression else expression]

    @property
    def column(self) -> str:
        """The (single) source column."""
        return self.inputs[0]

    @property
    def is_sequence(self) -> bool:
        """Whether each row holds a sequence (see :mod:`recforge.features.sequence_feature`)."""
        return False

    @property
    def value_dim(self) -> int:
        """Values per sample of a dense feature (1 for sparse features)."""
        return 1

    @property
    def embedding_dim(self) -> int:
        """Embedding dimension of a sparse feature (0 for dense features)."""
        return int(self.config.embedding_dim) if self.is_sparse else 0

    @property
    def output_dim(self) -> int:
        """Width of the feature's model input: ``value_dim`` (dense) or ``embedding_dim``."""
        return self.embedding_dim if self.is_sparse else self.value_dim

    @property
    def trainable(self) -> bool:
        """Whether the feature's embedding table is trained."""
        return bool(self.config.trainable)

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table (0 for dense features)."""
        return 0

    @property
    def embedding_name(self) -> str:
        """Table name: ``embedding_name`` (shared tables) or ``"{feature_name}_emb"``."""
        if self.config.HasField("embedding_name") and self.config.embedding_name:
            return self.config.embedding_name
        return f"{self.name}_emb"

    def _table_kwargs(self) -> dict[str, Any]:
        from torchrec import DataType

        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "name": self.embedding_name,
            "feature_names": [self.name],
            "init_fn": self._init_fn,
            "data_type": getattr(DataType, self.config.data_type.upper()),
        }

    @property
    def emb_bag_config(self) -> Optional[EmbeddingBagConfig]:
        """The pooled torchrec table config of a sparse feature; ``None`` for dense features."""
        if not self.is_sparse:
            return None
        from torchrec import EmbeddingBagConfig, PoolingType

        pooling = PoolingType.MEAN if self.pooling == "mean" else PoolingType.SUM
        return EmbeddingBagConfig(pooling=pooling, **self._table_kwargs())

    @property
    def emb_config(self) -> Optional[EmbeddingConfig]:
        """The unpooled torchrec table config (``SEQUENCE`` groups); ``None`` when dense."""
        if not self.is_sparse:
            return None
        from torchrec import EmbeddingConfig

        return EmbeddingConfig(**self._table_kwargs())

    def _check_embedding_dim(self) -> None:
        if self.config.embedding_dim <= 0:
            raise FeatureError(
                f"feature '{self.name}': a sparse feature needs embedding_dim > 0, found "
                f"{self.config.embedding_dim}"
            )

    # ------------------------------------------------------------------ parsing
    def _get_column(self, columns: dict[str, pa.Array]) -> pa.Array:
        column = self.column
        if column not in columns:
            raise FeatureError(
                f"feature '{self.name}' (column '{column}'): column not found; available "
                f"columns: {sorted(columns)}"
            )
        return as_array(columns[column])

    def _error(self, message: str) -> FeatureError:
        return FeatureError(f"feature '{self.name}' (column '{self.column}'): {message}")

    @abc.abstractmethod
    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse the feature's columns of one record batch (vectorised).

        Args:
            columns: column name -> ``pa.Array`` (or ``ChunkedArray``) with ``B`` rows.

        Returns:
            Sparse: ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``.
            Dense: ``{"{name}.values": float32 [B, value_dim]}``.

        Raises:
            FeatureError: missing column or a value that cannot be parsed.

        """

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        return f"{type(self).__name__}(name={self.name!r}, column={self.column!r}, {kind})"
