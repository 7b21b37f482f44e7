"""``RawFeature``: numeric values, used dense or bucketized into an embedding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.expression import ExpressionError, compile_expression
from recforge.features.utils import (
    FLOAT_PATTERN,
    fill_empty_bags,
    first_true,
    is_list_type,
    is_number_type,
    is_string_type,
    split_cells,
)


def _split_normalizer(spec: str, feature_name: str) -> tuple[dict[str, str], Optional[str]]:
    """``key=value`` pairs of a normalizer spec, and the text after ``expr=`` (or ``None``).

    Everything after ``expr=`` is the expression, commas included (``expr=min(x,1)``), so
    ``expr`` must be the last key.
    """
    params: dict[str, str] = {}
    start = 0
    while start <= len(spec):
        end = spec.find(",", start)
        end = len(spec) if end < 0 else end
        part = spec[start:end]
        key, sep, value = part.partition("=")
        if sep and key.strip() == "expr":
            return params, spec[start + len(key) + 1 :].strip()
        if part.strip():
            if not sep:
                raise FeatureError(
                    f"feature '{feature_name}': normalizer '{spec}': expected key=value, found "
                    f"'{part}'"
                )
            params[key.strip()] = value.strip()
        start = end + 1
    return params, None


def _expression_normalizer(
    spec: str, text: str, feature_name: str
) -> Callable[[np.ndarray], np.ndarray]:
    """``method=expression,expr=...``: the expression of one variable ``x``, per number."""
    try:
        expression = compile_expression(text, ["x"])
    except ExpressionError as e:
        raise FeatureError(f"feature '{feature_name}': normalizer '{spec}': {e}") from None

    def normalize(x: np.ndarray) -> np.ndarray:
        # one number at a time, whatever value_dim is: x is never a vector here
        return expression.evaluate({"x": x.reshape(-1)}).reshape(x.shape)

    return normalize


def parse_normalizer(spec: str, feature_name: str = "?") -> Callable[[np.ndarray], np.ndarray]:
    """Parse a normalizer spec into a vectorised function.

    Supported specs (keys may come in any order, but ``expr`` last):

    * ``method=log10,threshold=1e-10,default=-10``: ``log10(x)`` where ``x > threshold``,
      else ``default``.
    * ``method=zscore,mean=0,standard_deviation=1``: ``(x - mean) / standard_deviation``.
    * ``method=minmax,min=0,max=1``: ``(x - min) / (max - min)``.
    * ``method=expression,expr=log(x+3)``: an expression of the language of
      :mod:`recforge.features.expression` in the variable ``x`` (each number on its own);
      everything after ``expr=`` is the expression, commas included.

    Args:
        spec: the normalizer string.
        feature_name: used in error messages.

    Returns:
        A function mapping a float64 array to a float64 array of the same shape.

    Raises:
        FeatureError: unknown method, unknown or malformed parameters, an expression that
            does not compile (the message gives the position in the expression).

    """
    params, expr = _split_normalizer(spec, feature_name)
    if expr is not None and "method=" in expr:
        raise FeatureError(
            f"feature '{feature_name}': normalizer '{spec}': expected expr= as the last key "
            f"(everything after it is the expression), found expr={expr}"
        )
    method = params.pop("method", "")
    if method == "expression":
        unknown = sorted(params)
        if unknown:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': unknown parameter "
                f"'{unknown[0]}' for method expression (expected ['expr'])"
            )
        if not expr:
            raise FeatureError(
                f"feature '{feature_name}': normalizer '{spec}': missing parameters ['expr'] "
                "(e.g. method=expression,expr=log(x+3))"
            )
        return _expression_normalizer(spec, expr, feature_name)
    if expr is not None:
        params["expr"] = expr
    allowed: dict[str, dict[str, Any]] = {
        "log10": {"threshold": 1e-10, "default": -10.0},
        "zscore": {"mean": 0.0, "standard_deviation": 1.0},
        "minmax": {"min": None, "max": None},
    }
    if method not in allowed:
        raise FeatureError(
            f"feature '{feature_name}': normalizer '{spec}': expected method=log10|zscore|"
            f"minmax|expression, found method='{method}'"
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
    ``value_dim`` numbers joined by ``separator``). A NaN or infinite value that was not a
    null is an error. The ``normalizer`` (see :func:`parse_normalizer`) is applied next (a
    number it turns into NaN or inf, e.g. ``method=expression,expr=log(x)`` of 0, is an error,
    and so, at build, is a ``default_value`` it turns into one), then, when ``boundaries``
    are set, the value is bucketized with ``searchsorted(boundaries, x, side="right")`` into
    ``len(boundaries) + 1`` ids (``x < b[0] -> 0``, ``b[i-1] <= x < b[i] -> i``) and the
    feature is sparse (one id per dim, so bags of ``value_dim`` ids).

    FG output (see :mod:`recforge.features.fg_mode`) is read from the column named by
    ``feature_name``, multi-values joined by ``fg_encoded_multival_sep``, and the normalizer
    is not applied again:

    * ``FG_BUCKETIZE``: the numbers are normalized already; ``boundaries`` still bucketize.
      A null cell takes what the FG writes for one: ``default_value`` normalized.
    * ``FG_NONE``: dense numbers are final; with ``boundaries`` the cells hold the bucket ids
      (integers in ``[0, len(boundaries) + 1)``, ``value_dim`` per row).
      ``fg_encoded_default_value`` (joined by the same separator) fills null cells; without
      it a null bucket-id cell is an empty bag, and a null dense cell takes
      ``default_value`` normalized, as in FG_BUCKETIZE (TorchEasyRec leaves it NaN).

    Example:
        >>> from recforge.protos import feature_pb2
        >>> cfg = feature_pb2.RawFeature(feature_name="price")
        >>> RawFeature(cfg).parse({"price": pa.array([1.5, None])})["price.values"].tolist()
        [[1.5], [0.0]]

    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
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
        default = self._parse_default()
        if self._normalize is not None:
            normalized = self._normalize(default)
            bad = first_true(~np.isfinite(normalized))
            if bad >= 0:
                raise self._error(
                    f"normalizer '{cfg.normalizer}' turns the default value "
                    f"{default[bad]:g} into {normalized[bad]}; expected a finite number (set "
                    "default_value to a number the normalizer accepts)"
                )
            if self.reads_fg_output:
                default = normalized
        #: what a null cell takes: ``float64 [value_dim]`` (before normalization in the raw
        #: modes, after it for FG output)
        self._default: np.ndarray = default
        #: FG_NONE bucket ids of a null cell (``None``: an empty bag)
        self._default_ids: Optional[np.ndarray] = None
        if self.fg_encoded:
            self._parse_encoded_default()
        if self.dense_embedding is not None:
            self._check_dense_embedding()

    def _check_dense_embedding(self) -> None:
        cfg = self.config
        if cfg.embedding_dim <= 0:
            raise self._error(
                f"{cfg.WhichOneof('dense_emb')} embeds the numbers: it needs embedding_dim > 0,"
                f" found {cfg.embedding_dim}"
            )
        if cfg.HasField("autodis"):
            auto = cfg.autodis
            if self.value_dim != 1:
                raise self._error(
                    f"autodis embeds one number per sample: value_dim must be 1, found"
                    f" {self.value_dim} (use mlp for several)"
                )
            if auto.num_channels < 1:
                raise self._error(f"autodis.num_channels must be >= 1, found {auto.num_channels}")
            if not auto.temperature > 0:
                raise self._error(f"autodis.temperature must be > 0, found {auto.temperature:g}")

    # ------------------------------------------------------------------ description
    @property
    def table_size_source(self) -> str:
        """Bucket ids index ``len(boundaries) + 1`` rows."""
        return "boundaries"

    @property
    def is_sparse(self) -> bool:
        """``True`` when ``boundaries`` are set (bucketized into an embedding)."""
        return bool(self._boundaries.size)

    @property
    def value_dim(self) -> int:
        """Numbers per sample."""
        return int(self.config.value_dim)

    @property
    def dense_embedding(self) -> Optional[Any]:
        """This config when ``mlp`` / ``autodis`` is set and the feature is dense.

        As in TorchEasyRec, a bucketized feature (``boundaries``) and a sequence ignore them.
        """
        if self.is_sparse or self.is_sequence or self.config.WhichOneof("dense_emb") is None:
            return None
        return self.config

    @property
    def num_embeddings(self) -> int:
        """``len(boundaries) + 1`` when bucketized, else 0."""
        return int(self._boundaries.size + 1) if self.is_sparse else 0

    @property
    def raw_default(self) -> np.ndarray:
        """What a null raw cell takes, before normalization: ``float64 [value_dim]``."""
        return self._parse_default()

    def bucket_ids(self, values: np.ndarray) -> np.ndarray:
        """Raw numbers ``[N]`` -> normalized (when a normalizer is set) -> bucket ids ``[N]``.

        Bucket ``i`` holds values in ``[boundaries[i-1], boundaries[i])``; ids are
        ``int64`` in ``[0, len(boundaries)]``.
        """
        if self._normalize is not None:
            values = self._normalize(values)
        return np.searchsorted(self._boundaries, values, side="right").astype(np.int64)

    # ------------------------------------------------------------------ parsing
    def _numbers(self, text: str, sep: str, field: str) -> np.ndarray:
        """``text`` as 1 or ``value_dim`` floats joined by ``sep``, broadcast to ``value_dim``."""
        parts = text.split(sep) if sep else [text]
        try:
            values = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            raise self._error(f"{field} '{text}' is not a number") from None
        if values.size == 1:
            return np.full(self.value_dim, values[0])
        if values.size != self.value_dim:
            raise self._error(
                f"{field} '{text}' has {values.size} numbers, expected 1 or value_dim="
                f"{self.value_dim}"
            )
        return values

    def _parse_default(self) -> np.ndarray:
        text = self.config.default_value or "0"
        return self._numbers(text, self.config.separator, "default value")

    def _parse_encoded_default(self) -> None:
        """FG_NONE: ``fg_encoded_default_value`` (unset or empty: keep the defaults)."""
        cfg = self.config
        if not cfg.HasField("fg_encoded_default_value") or not cfg.fg_encoded_default_value:
            return
        text = cfg.fg_encoded_default_value
        if not self.is_sparse:
            self._default = self._numbers(text, self.multival_sep, "fg_encoded_default_value")
            return
        tokens = text.split(self.multival_sep)
        wrong = self._error(
            f"fg_encoded_default_value {text!r}: expected {self.value_dim} bucket ids "
            f"(value_dim) in [0, {self.num_embeddings}) joined by fg_encoded_multival_sep "
            f"({self.multival_sep!r})"
        )
        if len(tokens) != self.value_dim:
            raise wrong
        try:
            self._default_ids = self._encoded_ids(
                pa.array(tokens), np.array([len(tokens)], dtype=np.int32), "bucket id"
            )
        except FeatureError:
            raise wrong from None

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
                ok = pc.match_substring_regex(values, FLOAT_PATTERN)
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
            column = split_cells(column, self.value_separator)
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

    def _parse_bucket_ids(self, column: pa.Array) -> dict[str, np.ndarray]:
        """FG_NONE with ``boundaries``: the cells hold the bucket ids themselves."""
        values, lengths = self._flatten_ids(column)
        if self.value_dim == 1:
            self._check_one_per_row(column, lengths, "a bucketized value_dim 1 raw feature")
        else:
            bad = first_true((lengths != 0) & (lengths != self.value_dim))
            if bad >= 0:
                raise self._error(
                    f"expected {self.value_dim} bucket ids per row (value_dim), found "
                    f"{int(lengths[bad])} in {column[bad].as_py()!r} at row {bad}"
                )
        ids = (
            self._encoded_ids(values, lengths, "bucket id")
            if len(values)
            else np.zeros(0, dtype=np.int64)
        )
        ids, lengths = fill_empty_bags(ids, lengths, self._default_ids)
        return {f"{self.name}.values": ids, f"{self.name}.lengths": lengths}

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Parse the values of one batch.

        Args:
            columns: column name -> array of ``B`` rows; the feature reads ``self.column``.

        Returns:
            Dense: ``{"{name}.values": float32 [B, value_dim]}``.
            Bucketized: ``{"{name}.values": int64 [B * value_dim], "{name}.lengths": int32 [B]}``
            (every length ``value_dim``; FG_NONE: 0 for a null cell without
            ``fg_encoded_default_value``).

        Raises:
            FeatureError: missing column, non-numeric value, NaN / inf, wrong list length;
                FG_NONE: a bucket id that is no integer or out of range.

        """
        column = self._get_column(columns)
        if self.fg_encoded and self.is_sparse:
            return self._parse_bucket_ids(column)
        values, was_null = self._dense_values(column)
        if was_null.any():
            values = np.where(was_null, self._default[None, :], values)
        bad = first_true(~np.isfinite(values).reshape(-1))
        if bad >= 0:
            raise self._error(
                f"expected finite numbers, found {values.reshape(-1)[bad]} at row "
                f"{bad // self.value_dim}"
            )
        if self._normalize is not None and not self.reads_fg_output:
            raw, values = values, self._normalize(values)
            # an expression normalizer can leave the finite numbers (log(x+3) of -5); TorchEasyRec
            # passes NaN / inf on to the model, we stop at the value that made it
            bad = first_true(~np.isfinite(values).reshape(-1))
            if bad >= 0:
                raise self._error(
                    f"normalizer '{self.config.normalizer}' turns {raw.reshape(-1)[bad]:g} at "
                    f"row {bad // self.value_dim} into {values.reshape(-1)[bad]}; expected it to "
                    "give finite numbers"
                )
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
