"""``RawFeature``: numeric values, used dense or bucketized into an embedding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.utils import (
    first_true,
    is_list_type,
    is_number_type,
    is_string_type,
    split_cells,
)

_FLOAT_PATTERN = r"(?i)^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*$"


def parse_normalizer(spec: str, feature_name: str = "?") -> Callable[[np.ndarray], np.ndarray]:
    """Parse a normalizer spec into a vectorised function.

    Supported specs (keys may come in any order):

    * ``method=log10,threshold=1e-10,default=-10``: ``log10(x)`` where ``x > threshold``,
      else ``default``.
    * ``method=zscore,mean=0,standard_deviation=1``: ``(x - mean) / standard_deviation``.
    * ``method=minmax,min=0,max=1``: ``(x - min) / (max - min)``.

    Args:
        spec: the normalizer string.
        feature_name: used in error messages.

    Returns:
        A function mapping a float64 array to a float64 array of the same shape.

    Raises:
        FeatureError: unknown method, unknown or malformed parameters.

    """
    params: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': expected key=value, found '{part}'"
            )
        params[key.strip()] = value.strip()
    method = params.pop("method", "")
    allowed = {
        "log10": {"threshold": 1e-10, "default": -10.0},
        "zscore": {"mean": 0.0, "standard_deviation": 1.0},
        "minmax": {"min": None, "max": None},
    }
    if method not in allowed:
        raise FeatureError(
            f"feature '{feature_name}': normalizer '{spec}': expected method=log10|zscore|"
            f"minmax, found method='{method}'"
        )
    args: dict[str, Any] = dict(allowed[method])
    for key, value in params.items():
        if key not in args:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': unknown parameter '{key}' for "
                f"method {method} (expected {sorted(args)})"
            )
        try:
            args[key] = float(value)
        except ValueError:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': expected a number for "
                f"'{key}', found '{value}'"
            ) from None
    missing = [k for k, v in args.items() if v is None]
    if missing:
        raise FeatureError(
            f"feature '{feature_name}': normalizer '{spec}': missing parameters {missing}"
        )
    if method == "log10":
        threshold, default = args["threshold"], args["default"]

        def log10(x: np.ndarray) -> np.ndarray:
            safe = np.where(x > threshold, x, 1.0)
            return np.where(x > threshold, np.log10(safe), default)

        return log10
    if method == "zscore":
        mean, std = args["mean"], args["standard_deviation"]
        if std == 0:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': standard_deviation is 0"
            )
        return lambda x: (x - mean) / std
    lo, hi = args["min"], args["max"]
    if hi <= lo:
        raise FeatureError(f"feature '{feature_name}': normalizer '{spec}': needs max > min")
    return lambda x: (x - lo) / (hi - lo)


class RawFeature(BaseFeature):
    """A numeric feature: dense ``float32 [B, value_dim]``, or bucketized ids.

    Values come from number columns, numeric strings, separator-joined strings
    (``value_dim > 1``) or list columns (``value_dim`` items per row). Null cells and null
    items take ``default_value`` (default ``"0"``; one number broadcast to every dim, or
    ``value_dim`` numbers joined by ``separator``); ``fg_encoded_default_value`` overrides it.
    A NaN or infinite value that was not a null is an error. The ``normalizer`` (see
    :func:`parse_normalizer`) is applied next, then, when ``boundaries`` are set, the value is
    bucketized with ``searchsorted(boundaries, x, side="right")`` into
    ``len(boundaries) + 1`` ids (``x < b[0] -> 0``, ``b[i-1] <= x < b[i] -> i``) and the
    feature is sparse (one id per dim, so bags of ``value_dim`` ids).

    Example:
        >>> from recforge.protos import feature_pb2
        >>> cfg = feature_pb2.RawFeature(feature_name="price")
        >>> RawFeature(cfg).parse({"price": pa.array([1.5, None])})["price.values"].tolist()
        [[1.5], [0.0]]

    """

    def __init__(self, feature_config: Any) -> None:
        super().__init__(feature_config)
        cfg = self.config
        if cfg.value_dim < 1:
            raise self._error(f"value_dim must be >= 1, found {cfg.value_dim}")
        self._boundaries = np.asarray(list(cfg.boundaries), dtype=np.float64)
        if self._boundaries.size:
            self._check_embedding_dim()
            if np.any(np.diff(self._boundaries) <= 0):
                raise self._error(
                    f"boundaries must be strictly increasing, found {list(cfg.boundaries)}"
                )
        self._normalize = (
            parse_normalizer(cfg.normalizer, self.name)
            if cfg.HasField("normalizer") and cfg.normalizer
            else None
        )
        self._default = self._parse_default()

    # ------------------------------------------------------------------ description
    @property
    def is_sparse(self) -> bool:
        """``True`` when ``boundaries`` are set (bucketized into an embedding)."""
        return bool(self._boundaries.size)

    @property
    def value_dim(self) -> int:
        """Numbers per sample."""
        return int(self.config.value_dim)

    @property
    def num_embeddings(self) -> int:
        """``len(boundaries) + 1`` when bucketized, else 0."""
        return int(self._boundaries.size + 1) if self.is_sparse else 0

    # ------------------------------------------------------------------ parsing
    def _parse_default(self) -> np.ndarray:
        cfg = self.config
        text = (
            cfg.fg_encoded_default_value
            if cfg.HasField("fg_encoded_default_value")
            else cfg.default_value
        )
        text = text or "0"
        parts = text.split(cfg.separator) if cfg.separator else [text]
        try:
            values = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            raise self._error(f"default value '{text}' is not a number") from None
        if values.size == 1:
            return np.full(self.value_dim, values[0])
        if values.size != self.value_dim:
            raise self._error(
                f"default value '{text}' has {values.size} numbers, expected 1 or value_dim="
                f"{self.value_dim}"
            )
        return values

    def _to_float(self, values: pa.Array, row_of: Callable[[int], int]) -> np.ndarray:
        """Cast flat non-null values ``[N]`` to float64."""
        dtype = values.type
        if pa.types.is_null(dtype):
            return np.zeros(len(values))
        if is_number_type(dtype):
            return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        if is_string_type(dtype):
            try:
                return pc.cast(pc.utf8_trim_whitespace(values), pa.float64()).to_numpy(
                    zero_copy_only=False
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                ok = pc.match_substring_regex(values, _FLOAT_PATTERN)
                bad = max(first_true(~ok.to_numpy(zero_copy_only=False)), 0)
                raise self._error(
                    f"expected numbers, found non-numeric value {values[bad].as_py()!r} at row "
                    f"{row_of(bad)}"
                ) from None
        raise self._error(f"expected numbers, found values of type {dtype}")

    def _dense_values(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(values float64 [B, D], was_null bool [B, D])``."""
        num_rows, dim = len(column), self.value_dim
        if pa.types.is_string_view(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            empty = pc.equal(column, "")
            if pc.any(empty).as_py():  # empty cells are nulls (-> default)
                column = pc.if_else(empty, pa.scalar(None, column.type), column)
            column = split_cells(column, self.config.separator)
        if is_list_type(column.type):
            lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
            bad = first_true((lengths != dim) & (lengths != 0))
            if bad >= 0:
                raise self._error(
                    f"expected {dim} values per row (value_dim), found {lengths[bad]} at row {bad}"
                )
            items = pc.list_flatten(column)
            starts = np.cumsum(lengths)
            null_items = pc.invert(pc.is_valid(items))
            if is_string_type(items.type):
                null_items = pc.or_(null_items, pc.equal(items.fill_null(""), ""))
                items = pc.if_else(null_items, "0", items)
            elif items.null_count:
                items = items.fill_null(0)
            flat = self._to_float(items, lambda i: int(np.searchsorted(starts, i, side="right")))
            out = np.zeros((num_rows, dim), dtype=np.float64)
            was_null = np.ones((num_rows, dim), dtype=bool)
            full = lengths == dim
            out[full] = flat.reshape(-1, dim)
            was_null[full] = null_items.to_numpy(zero_copy_only=False).reshape(-1, dim)
            return out, was_null
        if dim != 1:
            raise self._error(
                f"value_dim={dim} needs list cells or strings joined by the separator, found "
                f"single values of type {column.type}"
            )
        null = pc.invert(pc.is_valid(column))
        if is_string_type(column.type):
            if column.null_count:
                column = column.fill_null("0")
        elif not pa.types.is_null(column.type) and column.null_count:
            column = column.fill_null(0)
        flat = self._to_float(column, lambda i: i)
        return flat.reshape(num_rows, 1), null.to_numpy(zero_copy_only=False).reshape(num_rows, 1)

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse the values of one batch.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            Dense: ``{"{name}.values": float32 [B, value_dim]}``.
            Bucketized: ``{"{name}.values": int64 [B * value_dim], "{name}.lengths": int32 [B]}``
            (every length ``value_dim``).

        Raises:
            FeatureError: missing column, non-numeric value, NaN / inf, wrong list length.

        """
        column = self._get_column(columns)
        values, was_null = self._dense_values(column)
        if was_null.any():
            values = np.where(was_null, self._default[None, :], values)
        bad = first_true(~np.isfinite(values).reshape(-1))
        if bad >= 0:
            raise self._error(
                f"expected finite numbers, found {values.reshape(-1)[bad]} at row "
                f"{bad // self.value_dim}"
            )
        if self._normalize is not None:
            values = self._normalize(values)
        if not self.is_sparse:  # dense values become float32: larger ones would become inf
            bad = first_true(np.abs(values.reshape(-1)) > np.finfo(np.float32).max)
            if bad >= 0:
                raise self._error(
                    f"expected numbers within float32's range (3.4e38), found "
                    f"{values.reshape(-1)[bad]:g} at row {bad // self.value_dim}"
                )
        if self.is_sparse:
            ids = np.searchsorted(self._boundaries, values.reshape(-1), side="right")
            lengths = np.full(len(values), self.value_dim, dtype=np.int32)
            return {f"{self.name}.values": ids.astype(np.int64), f"{self.name}.lengths": lengths}
        return {f"{self.name}.values": values.astype(np.float32)}
