"""``BaseFeature``: one object per feature config; parses raw columns, declares its table."""

from __future__ import annotations

import abc
import ast
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.errors import RecforgeError
from recforge.features.fg_mode import (
    DEFAULT_MULTIVAL_SEP,
    FG_BUCKETIZE,
    FG_DAG,
    FG_NONE,
    FG_NORMAL,
    fg_mode_name,
)
from recforge.features.utils import (
    as_array,
    first_beyond_int64,
    first_true,
    flatten_cells,
    is_list_type,
    is_string_type,
    row_of_value,
    split_cells,
)

if TYPE_CHECKING:  # torchrec is heavy: imported only when a table config is asked for
    from torchrec import EmbeddingBagConfig, EmbeddingConfig


class FeatureError(RecforgeError):
    """A feature config or a column value is wrong; the message names feature and column."""


_POOLINGS = ("sum", "mean")
_DATA_TYPES = ("FP32", "FP16", "BF16")
#: the end of an FG_NONE error: what to do when the data holds raw values
RAW_VALUES_HINT = "; if the column holds raw values, set data_config.fg_mode: FG_DAG (or FG_NORMAL)"
#: an integer, possibly signed and padded with spaces
INT_PATTERN = r"^\s*[+-]?\d+\s*$"


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
    except (ValueError, RuntimeError):
        pass  # about the trial tensor's shape (dirac_ wants 3-5 dims), not the arguments
    except TypeError as e:
        raise FeatureError(
            f"feature '{feature_name}': init_fn '{spec}': {parts[0]} does not take these "
            f"arguments: {e}"
        ) from None
    return functools.partial(fn, **kwargs)


class BaseFeature(abc.ABC):
    r"""One input feature: how to parse its column and, when sparse, its embedding table.

    Subclasses implement :meth:`parse` (vectorised over a whole record batch) and
    :attr:`num_embeddings` for sparse features.

    What a column holds depends on ``fg_mode`` (see :mod:`recforge.features.fg_mode`):
    ``FG_NONE`` and ``FG_BUCKETIZE`` read the column named by ``feature_name`` (FG output,
    multi-values joined by ``fg_encoded_multival_sep``); ``FG_NORMAL`` / ``FG_DAG`` read the
    raw column named by ``expression`` and compute the feature from it.

    Args:
        feature_config: the kind's message (e.g. ``IdFeature``), or a ``FeatureConfig``
            whose ``feature`` oneof holds it.
        fg_mode: ``data_config.fg_mode`` (an ``FgMode`` value); TorchEasyRec's default
            ``FG_NONE``.
        fg_encoded_multival_sep: ``data_config.fg_encoded_multival_sep`` (empty ->
            ``"\x03"``).

    """

    def __init__(
        self,
        feature_config: Any,
        fg_mode: int = FG_NONE,
        fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
    ) -> None:
        if feature_config.DESCRIPTOR.name == "FeatureConfig":
            feature_config = getattr(feature_config, feature_config.WhichOneof("feature"))
        self.config = feature_config
        self.name: str = feature_config.feature_name
        if not self.name:
            raise FeatureError(
                f"{feature_config.DESCRIPTOR.name} without feature_name: {feature_config}"
            )
        if fg_mode not in (FG_NONE, FG_NORMAL, FG_DAG, FG_BUCKETIZE):
            raise FeatureError(
                f"feature '{self.name}': fg_mode must be one of FG_NONE, FG_NORMAL, FG_DAG, "
                f"FG_BUCKETIZE, found {fg_mode_name(fg_mode)}"
            )
        self.fg_mode: int = int(fg_mode)
        self.multival_sep: str = fg_encoded_multival_sep or DEFAULT_MULTIVAL_SEP
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
        if self.stub_type and self.fg_mode == FG_NORMAL:
            raise FeatureError(
                f"feature '{self.name}': stub_type (an FG_DAG intermediate result) needs"
                " fg_mode FG_DAG, found FG_NORMAL (as in TorchEasyRec)"
            )
        self.setup()

    def setup(self) -> None:
        """The kind's own checks and parts, run once at the end of the base constructor.

        Subclasses override this instead of the constructor (whose keywords they would
        otherwise restate); ``self.config``, ``self.name``, ``self.fg_mode`` and
        ``self.pooling`` are set by then. A subclass of a kind calls ``super().setup()``.
        """
        return None

    # ------------------------------------------------------------------ description
    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """Fields of the kind's config message that name files the feature reads.

        Dotted paths into the message (e.g. ``vocab_file``,
        ``text_normalizer.stop_char_file``); a relative path in one is read relative to the
        message's ``asset_dir`` when set, as in TorchEasyRec. ``recforge export`` copies each
        such file into the export directory and points the exported config at the copy, so
        the export can be moved (see :mod:`recforge.export.assets`). None by default.
        """
        return ()

    @property
    def table_size_source(self) -> str:
        """The config field that sets the table's row count (named in range errors)."""
        return "embedding table size"

    @property
    @abc.abstractmethod
    def is_sparse(self) -> bool:
        """Whether the feature is looked up in an embedding table (ids) or is dense."""

    @property
    def fg_encoded(self) -> bool:
        """Whether the column holds final values (``FG_NONE``): ids, bucket ids, normalized."""
        return self.fg_mode == FG_NONE

    @property
    def reads_fg_output(self) -> bool:
        """Whether the column is FG output named by ``feature_name`` (FG_NONE, FG_BUCKETIZE)."""
        return self.fg_mode in (FG_NONE, FG_BUCKETIZE)

    @property
    def value_separator(self) -> str:
        """The multi-value separator inside a string cell.

        ``fg_encoded_multival_sep`` for FG output (FG_NONE, FG_BUCKETIZE), else the
        feature's ``separator``.
        """
        return self.multival_sep if self.reads_fg_output else self.config.separator

    @property
    def expression_column(self) -> str:
        """The raw column of ``expression`` ("side:col" -> "col"); unset -> feature name."""
        expression = self.config.expression if self.config.HasField("expression") else ""
        if not expression:
            return self.name
        return expression.split(":", 1)[1] if ":" in expression else expression

    @property
    def inputs(self) -> list[str]:
        """Source column names.

        ``[feature_name]`` for FG output (FG_NONE, FG_BUCKETIZE), else the raw column of
        ``expression`` (the feature name when unset).
        """
        if self.reads_fg_output:
            return [self.name]
        return [self.expression_column]

    @property
    def column(self) -> str:
        """The (single) source column."""
        return self.inputs[0]

    @property
    def is_sequence(self) -> bool:
        """Whether each row holds a sequence (see :mod:`recforge.features.sequence_feature`)."""
        return False

    @property
    def element_lengths_key(self) -> Optional[str]:
        """The sparse key holding the values per sequence element, for multi-value elements.

        ``None`` (one id per element) except for sequences whose elements hold several ids
        (:class:`~recforge.features.sequence_tokenize.SequenceTokenizeFeature`): their
        ``"{name}.lengths"`` is the ids per row, and the key named here has the ids per element
        as values and the elements per row as lengths.
        """
        return None

    @property
    def stub_type(self) -> bool:
        """``stub_type``: only an input of other features (``feature:<name>``), no model input.

        See :mod:`recforge.features.fg_dag`.
        """
        config = self.config
        return "stub_type" in config.DESCRIPTOR.fields_by_name and bool(config.stub_type)

    @property
    def is_weighted(self) -> bool:
        """Whether each id carries a weight (``"{name}.weights"``, weighted pooling)."""
        return False

    @property
    def value_dim(self) -> int:
        """Values per sample of a dense feature (1 for sparse features)."""
        return 1

    @property
    def dense_width(self) -> int:
        """Width of a dense feature's parsed ``"{name}.values"`` ``[B, dense_width]``.

        ``value_dim``, except for dense sequences (see
        :class:`~recforge.features.sequence_feature.SequenceRawFeature`).
        """
        return self.value_dim

    @property
    def embedding_dim(self) -> int:
        """Embedding dimension of a sparse feature (0 for dense features)."""
        return int(self.config.embedding_dim) if self.is_sparse else 0

    @property
    def dense_embedding(self) -> Optional[Any]:
        """The ``RawFeature`` message of a dense feature embedded by ``mlp`` / ``autodis``.

        ``None`` (the default) when the feature enters its group as its numbers; see
        :mod:`recforge.modules.dense_embedding`.
        """
        return None

    @property
    def output_dim(self) -> int:
        """Width of the feature's model input: ``value_dim`` (dense) or ``embedding_dim``.

        A dense feature with a dense embedding (``mlp`` / ``autodis``) is its
        ``embedding_dim`` wide.
        """
        if self.is_sparse:
            return self.embedding_dim
        embedding = self.dense_embedding
        return int(embedding.embedding_dim) if embedding is not None else self.value_dim

    @property
    def trainable(self) -> bool:
        """Whether the feature's embedding table is trained."""
        return bool(self.config.trainable)

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table (0 for dense features)."""
        return 0

    @property
    def zch_config(self) -> Optional[Any]:
        """The ``zch`` message when the ids go through a zero-collision remapper, else None.

        Such a feature's ids are raw 63-bit hashes, mapped to table rows inside the model
        (:mod:`recforge.modules.zch`).
        """
        return None

    @property
    def encoded_id_limit(self) -> int:
        """Encoded ids (fg_mode FG_NONE) must be below this.

        The table's rows, or the hash range of a zch feature (remapped in the model).
        """
        return self.num_embeddings

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
        if self.is_weighted:
            # weighted tables pool by SUM; a mean's 1 / L is in the ids' weights (see
            # recforge.datasets.batch_builder.build_sparse_features): torch's embedding
            # bags weigh only sums
            pooling = PoolingType.SUM
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
    def missing_column_hint(self, available: Any) -> str:
        """A hint for a missing column: FG output is read under ``feature_name``.

        Args:
            available: the column names the data has (any container).

        Returns:
            ``""``, or ``"; ..."`` when the mode reads ``feature_name`` but the data has the
            ``expression``'s raw column.

        """
        source = self.expression_column
        if not self.reads_fg_output or source == self.column or source not in available:
            return ""
        return (
            f"; fg_mode {fg_mode_name(self.fg_mode)} reads FG output from the column named by "
            f"feature_name, and the data has the expression's column '{source}'{RAW_VALUES_HINT}"
        )

    def _get_column(self, columns: dict[str, pa.Array]) -> pa.Array:
        column = self.column
        if column not in columns:
            raise FeatureError(
                f"feature '{self.name}' (column '{column}'): column not found; available "
                f"columns: {sorted(columns)}{self.missing_column_hint(columns)}"
            )
        return as_array(columns[column])

    def _error(self, message: str) -> FeatureError:
        return FeatureError(f"feature '{self.name}' (column '{self.column}'): {message}")

    def _flatten_ids(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """Split id cells into ``(values [N], lengths int32 [B])``.

        String cells are split on :attr:`value_separator`; list columns are multi-value
        natively; nulls and empty strings give empty bags.
        """
        if pa.types.is_null(column.type):
            return pa.array([], pa.int64()), np.zeros(len(column), dtype=np.int32)
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            column = split_cells(column, self.value_separator)
        elif not (is_list_type(column.type) or pa.types.is_integer(column.type)):
            if not (pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
                raise self._error(
                    f"expected integer, string or list ids, found column type {column.type}"
                )
        return flatten_cells(column)

    def _check_one_per_row(self, column: pa.Array, lengths: np.ndarray, why: str) -> None:
        """FG output: a cell that holds several values where one is expected is an error."""
        bad = first_true(lengths > 1)
        if bad >= 0:
            raise self._error(
                f"expected one encoded id per row ({why}), found {int(lengths[bad])} in "
                f"{column[bad].as_py()!r} at row {bad}"
            )

    def _not_encoded(self, value: Any, row: int, what: str) -> FeatureError:
        """The error for an FG_NONE cell that is no integer id (hints at the raw modes)."""
        hint = ""
        separator = getattr(self.config, "separator", "")
        if (
            isinstance(value, str)
            and separator
            and separator in value
            and self.multival_sep not in value
        ):
            hint = (
                f"; multi-values are joined by data_config.fg_encoded_multival_sep "
                f"({self.multival_sep!r}), found the feature's separator ({separator!r})"
            )
        return self._error(
            f"{value!r} at row {row} is not an encoded {what} (fg_mode FG_NONE expects "
            f"integers in [0, {self.num_embeddings})){hint}{RAW_VALUES_HINT}"
        )

    def _encoded_ids(self, values: pa.Array, lengths: np.ndarray, what: str = "id") -> np.ndarray:
        """FG_NONE: flat encoded ids ``[N]`` -> ``int64 [N]``, each in ``[0, num_embeddings)``.

        Args:
            values: the flat ids (integers, integral floats or digit strings).
            lengths: ``int32 [B]`` values per row (to name the row of a bad value).
            what: what an id is, for messages (``"id"``, ``"bucket id"``).

        Raises:
            FeatureError: a value that is no integer, or out of range (naming column and row).

        """
        dtype = values.type
        # the range is checked on the values as read: uint64 and float ids beyond int64 would
        # wrap around (be reported as negative) once cast
        if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
            ids = values.to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(dtype):
            ids = values.to_numpy(zero_copy_only=False)
            bad = first_true(~np.isfinite(ids) | (ids != np.floor(ids)))
            if bad >= 0:
                raise self._not_encoded(ids[bad].item(), row_of_value(lengths, bad), what)
        elif is_string_type(dtype):
            try:
                ids = pc.cast(pc.utf8_trim_whitespace(values), pa.int64()).to_numpy(
                    zero_copy_only=False
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok = pc.match_substring_regex(values, INT_PATTERN).to_numpy(zero_copy_only=False)
                bad = first_true(~ok)
                if bad < 0:  # every value is an integer: one is beyond int64, so out of range
                    bad = max(first_beyond_int64(values), 0)
                raise self._not_encoded(
                    values[bad].as_py(), row_of_value(lengths, bad), what
                ) from None
        else:
            raise self._error(f"expected encoded integer {what}s, found values of type {dtype}")
        size = self.encoded_id_limit
        bad = first_true((ids < 0) | (ids >= size))
        if bad >= 0:
            raise self._error(
                f"encoded {what} {int(ids[bad])} at row {row_of_value(lengths, bad)} out of "
                f"range [0, {size}) ({self.table_size_source} sets the table's rows; fg_mode "
                f"FG_NONE reads final table rows){RAW_VALUES_HINT}"
            )
        return ids.astype(np.int64, copy=False)

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
