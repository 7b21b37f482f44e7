r"""Mock values for the input columns of feature configs (the data side of ``recforge mock-data``).

:func:`plan_feature` turns one ``FeatureConfig`` into :class:`ColumnsPlan`\ s: the columns the
feature reads and a function drawing ``n`` rows of them in the format the config implies.
The format follows ``data_config.fg_mode`` as in TorchEasyRec:

* ``FG_DAG`` / ``FG_NORMAL`` (raw input): one column per input of
  the feature, named by its ``expression`` (``"user:user_id"`` reads ``user_id``); raw
  values: integer ids in ``[0, num_buckets)``, vocabulary strings (and a few out-of-vocabulary
  ones), arbitrary integers for hashed ids, numbers spread over the ``boundaries`` and shaped
  for the ``normalizer``; multi-values joined by the feature's ``separator``; sequences joined
  by ``sequence_delim`` (the columns of a ``sequence_feature`` are ``{sequence_name}__{input}``
  and share each row's length).
* ``FG_NONE`` (encoded input): one column per feature, named by ``feature_name``, holding the
  encoded values: ids in ``[0, num_embeddings)`` (bucket ids for ``boundaries``), normalized
  numbers for dense features, multi-values joined by ``data_config.fg_encoded_multival_sep``.
* ``FG_BUCKETIZE``: one column per feature, named by ``feature_name``, holding the values
  before bucketizing (as in ``FG_DAG``).

The inputs of the other FG kinds (and their ``sequence_`` variants) are read from their
message fields by name, so they get plausible inputs: crossed ids, lookup maps
``"k1:v1\x1dk2:v2"`` and match maps ``"pk^sk:v|..."`` whose values fit the id field
(``num_buckets``, vocabularies) or are numbers, expression variables as numbers, terms joined
by ``separator`` (overlap), texts (tokenize), ``"key:value"`` lists (kv_dot_product), ids with
a 0 / 1 mask of the same length (bool_mask), numbers or ``value_map`` keys (combine), ...;
kinds recforge does not build yet reach their "not supported" message. A tokenize_feature's
encoded ids lie in its tokenizer's vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.config.errors import ConfigError
from recforge.features.sequence_feature import SEQUENCE_NAME_SEPARATOR

if TYPE_CHECKING:
    from recforge.protos import feature_pb2

FG_NONE = "FG_NONE"
FG_NORMAL = "FG_NORMAL"
FG_DAG = "FG_DAG"
FG_BUCKETIZE = "FG_BUCKETIZE"
FG_MODES = (FG_NONE, FG_NORMAL, FG_DAG, FG_BUCKETIZE)

#: share of drawn vocabulary values that are out of the vocabulary
OOV_RATE = 0.03
#: values per multi-value cell (uniform in this range, inclusive)
MULTI_VALUES = (1, 4)
#: entry separator of lookup maps (fixed by TorchEasyRec's FG)
MAP_SEPARATOR = "\x1d"

Columns = dict[str, pa.Array]
Maker = Callable[[np.random.Generator, int], Columns]


@dataclass(frozen=True)
class MockFormat:
    """How the data of a config is laid out and how varied it is.

    Attributes:
        fg_mode: ``FG_NONE``, ``FG_NORMAL``, ``FG_DAG`` or ``FG_BUCKETIZE``.
        multival_sep: ``data_config.fg_encoded_multival_sep`` (multi-values with FG_NONE).
        cardinality: distinct values drawn for ids from a larger id space.
        null_rate: share of null cells in feature columns.

    """

    fg_mode: str = FG_DAG
    multival_sep: str = "\x03"
    cardinality: int = 1000
    null_rate: float = 0.02

    @property
    def encoded(self) -> bool:
        """Whether columns hold encoded ids and final numbers (``FG_NONE``)."""
        return self.fg_mode == FG_NONE

    @property
    def by_feature_name(self) -> bool:
        """Whether columns are named by ``feature_name`` (``FG_NONE``, ``FG_BUCKETIZE``)."""
        return self.fg_mode in (FG_NONE, FG_BUCKETIZE)


@dataclass
class IdDomain:
    """The distinct values an id column draws from, most popular first.

    Attributes:
        values: the distinct values (int64 or string).
        oov: values outside the vocabulary, drawn at :data:`OOV_RATE` (vocabularies only).

    """

    values: pa.Array
    oov: Optional[pa.Array] = None

    def draw(self, rng: np.random.Generator, n: int) -> pa.Array:
        """``n`` values with Zipf-like popularity (the first values are the most frequent)."""
        k = len(self.values)
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        out = self.values.take(pa.array(rng.choice(k, size=n, p=weights / weights.sum())))
        if self.oov is not None and len(self.oov):
            hit = rng.random(n) < OOV_RATE
            if hit.any():
                other = self.oov.take(pa.array(rng.integers(0, len(self.oov), n)))
                out = pc.if_else(pa.array(hit), other, out)
        return out


@dataclass
class ColumnsPlan:
    """Columns read by one feature and how to draw them.

    Attributes:
        feature: the feature's name (for messages).
        columns: the column names, in the order ``make`` returns them.
        make: ``(rng, n) -> {column: pa.Array of n rows}``.
        domain: the values of a single-valued id column (``None`` for other plans): the
            sampler's item table draws its ids from it, the planted signal keys on it.

    """

    feature: str
    columns: tuple[str, ...]
    make: Maker
    domain: Optional[IdDomain] = None


# ------------------------------------------------------------------------------ helpers
def _has(msg: Any, name: str) -> bool:
    return name in msg.DESCRIPTOR.fields_by_name


def _get(msg: Any, name: str, default: Any = None) -> Any:
    return getattr(msg, name) if _has(msg, name) else default


def _is_set(msg: Any, name: str) -> bool:
    """Whether a singular field is set explicitly (repeated / map: non-empty)."""
    if not _has(msg, name):
        return False
    fd = msg.DESCRIPTOR.fields_by_name[name]
    if fd.is_repeated:
        return len(getattr(msg, name)) > 0
    return msg.HasField(name)


def input_column(expression: str) -> str:
    """``"user:user_id"`` -> ``"user_id"`` (the column an FG input reads)."""
    return expression.split(":", 1)[1] if ":" in expression else expression


def _input_side(expression: str) -> str:
    return expression.split(":", 1)[0] if ":" in expression else ""


def _int_subset(rng: np.random.Generator, space: int, k: int) -> np.ndarray:
    """About ``min(k, space)`` distinct integers of ``[0, space)``, in random order."""
    if space <= k:
        return rng.permutation(space).astype(np.int64)
    picked = np.unique(rng.integers(0, space, size=int(k * 1.2) + 8))
    return rng.permutation(picked)[:k].astype(np.int64)


def _counts(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high + 1, size=n)


def join_cells(flat: pa.Array, counts: np.ndarray, separator: str, null: np.ndarray) -> pa.Array:
    """Join ``flat`` values into one string per row (``counts[i]`` values in row ``i``).

    Args:
        flat: ``sum(counts)`` values of any type (cast to strings).
        counts: values per row ``[n]``.
        separator: put between the values of a row.
        null: rows that are null ``bool [n]``.

    Returns:
        ``string [n]``.

    """
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    strings = flat if pa.types.is_string(flat.type) else pc.cast(flat, pa.string())
    lists = pa.ListArray.from_arrays(pa.array(offsets), strings, mask=pa.array(null))
    return pc.binary_join(lists, separator)


def _with_nulls(array: pa.Array, null: np.ndarray) -> pa.Array:
    if not null.any():
        return array
    return pc.if_else(pa.array(null), pa.nulls(len(array), array.type), array)


def _null_mask(rng: np.random.Generator, n: int, fmt: MockFormat) -> np.ndarray:
    return rng.random(n) < fmt.null_rate


def _numbers(values: np.ndarray) -> pa.Array:
    return pa.array(np.round(values, 4), pa.float64())


# ------------------------------------------------------------------------------ values
@dataclass
class NumberSpec:
    """Numbers a raw-valued feature reads: spread over ``boundaries``, shaped for a normalizer.

    Attributes:
        boundaries: bucket boundaries (empty: dense).
        method: normalizer method (``log10``, ``zscore``, ``minmax``) or ``""``.
        params: the normalizer's parameters.

    """

    boundaries: np.ndarray = field(default_factory=lambda: np.zeros(0))
    method: str = ""
    params: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def of(msg: Any) -> NumberSpec:
        """The spec of a feature message (its ``boundaries`` and ``normalizer``)."""
        spec = NumberSpec(np.asarray(list(_get(msg, "boundaries", [])), dtype=np.float64))
        normalizer = _get(msg, "normalizer", "") or ""
        for part in normalizer.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                continue
            if key.strip() == "method":
                spec.method = value.strip()
            else:
                try:
                    spec.params[key.strip()] = float(value)
                except ValueError:
                    pass
        return spec

    def normalized(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Values after the normalizer (before bucketizing)."""
        if self.boundaries.size:
            b = self.boundaries
            width = (b[-1] - b[0]) / max(b.size - 1, 1) or 1.0
            lows = np.concatenate([[b[0] - width], b])
            highs = np.concatenate([b, [b[-1] + width]])
            bucket = rng.integers(0, b.size + 1, size=n)
            return lows[bucket] + rng.random(n) * (highs[bucket] - lows[bucket])
        if self.method == "log10":
            return rng.uniform(-1.0, 3.0, size=n)
        if self.method == "zscore":
            return rng.normal(0.0, 1.0, size=n)
        return rng.random(n)

    def raw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Values as a data table holds them (the normalizer inverted)."""
        y = self.normalized(rng, n)
        p = self.params
        if self.method == "log10":
            return np.power(10.0, y)
        if self.method == "zscore":
            return y * p.get("standard_deviation", 1.0) + p.get("mean", 0.0)
        if self.method == "minmax" and "min" in p and "max" in p:
            return p["min"] + y * (p["max"] - p["min"])
        return y

    def buckets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Bucket ids in ``[0, len(boundaries) + 1)``."""
        return rng.integers(0, self.boundaries.size + 1, size=n).astype(np.int64)


def bucket_size(msg: Any) -> Optional[int]:
    """The number of encoded ids of a feature message (``None``: dense or unknown).

    ``num_buckets``, ``hash_bucket_size``, ``zch.zch_size``, ``len(vocab_list) + 2`` (ids 0 and 1
    are the default and out-of-vocabulary ids), the largest ``vocab_dict`` id + 1, or
    ``len(boundaries) + 1``.
    """
    if _get(msg, "num_buckets", 0):
        return int(msg.num_buckets)
    if _get(msg, "hash_bucket_size", 0):
        return int(msg.hash_bucket_size)
    if _is_set(msg, "zch") and msg.zch.zch_size:
        return int(msg.zch.zch_size)
    if _is_set(msg, "vocab_list"):
        return len(msg.vocab_list) + 2
    if _is_set(msg, "vocab_dict"):
        top = max(msg.vocab_dict.values())
        if _is_set(msg, "default_bucketize_value"):
            top = max(top, msg.default_bucketize_value)
        return max(int(top) + 1, 2)
    if _is_set(msg, "boundaries"):
        return len(msg.boundaries) + 1
    return None


def _vocab_file_tokens(msg: Any, name: str) -> list[str]:
    path = msg.vocab_file
    if _is_set(msg, "asset_dir") and not os.path.isabs(path):
        path = os.path.join(msg.asset_dir, path)
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.split()[0] for line in f if line.strip()]
    except OSError as err:
        raise ConfigError(
            f"feature '{name}': vocab_file '{path}' cannot be read for its mock values: "
            f"{err.strerror}"
        ) from None
    return tokens


def raw_id_domain(msg: Any, name: str, rng: np.random.Generator, fmt: MockFormat) -> IdDomain:
    """The raw values (before bucketizing) an id-valued feature reads."""
    if _get(msg, "num_buckets", 0):
        return IdDomain(pa.array(_int_subset(rng, int(msg.num_buckets), fmt.cardinality)))
    vocab: list[str] = []
    if _is_set(msg, "vocab_list"):
        vocab = list(msg.vocab_list)
    elif _is_set(msg, "vocab_dict"):
        vocab = sorted(msg.vocab_dict)
    elif _is_set(msg, "vocab_file"):
        vocab = _vocab_file_tokens(msg, name)
    if vocab:
        oov = pa.array([f"{name}_oov{i}" for i in range(3)], pa.string())
        order = rng.permutation(len(vocab))
        return IdDomain(pa.array([vocab[i] for i in order], pa.string()), oov)
    # hashed ids: any integers; a space 10x the cardinality keeps them sparse
    space = max(10 * fmt.cardinality, 1000)
    return IdDomain(pa.array(_int_subset(rng, space, fmt.cardinality)))


def encoded_id_domain(size: int, rng: np.random.Generator, fmt: MockFormat) -> IdDomain:
    """Encoded ids: a subset of ``[0, size)``."""
    return IdDomain(pa.array(_int_subset(rng, size, fmt.cardinality)))


# ------------------------------------------------------------------------------ elements
@dataclass
class ValueSpec:
    """How one feature output / input is drawn: flat values, and how a cell joins them.

    Attributes:
        draw: ``(rng, n) -> n`` flat values (one per cell or per sequence element).
        per_cell: ``(low, high)`` values per cell (multi-value), or ``None`` (single).
        separator: joins the values of a multi-value cell.
        domain: the id domain of a single-valued id spec.

    """

    draw: Callable[[np.random.Generator, int], pa.Array]
    per_cell: Optional[tuple[int, int]] = None
    separator: str = "\x1d"
    domain: Optional[IdDomain] = None

    def cells(self, rng: np.random.Generator, n: int, null: np.ndarray) -> pa.Array:
        """``n`` cells: single values, or joined multi-values; null where ``null``."""
        if self.per_cell is None:
            return _with_nulls(self.draw(rng, n), null)
        counts = _counts(rng, n, *self.per_cell)
        counts[null] = 0
        return join_cells(self.draw(rng, int(counts.sum())), counts, self.separator, null)


def _id_is_multi(msg: Any) -> Optional[tuple[int, int]]:
    """Values per cell of an id feature: ``None`` (single) or ``(low, high)``.

    Multi-valued when the config says so: an explicit ``separator``, ``value_dim > 1``
    (exactly that many), or ``pooling: "mean"``.
    """
    value_dim = int(_get(msg, "value_dim", 0) or 0)
    if value_dim > 1:
        return (value_dim, value_dim)
    if value_dim == 1:
        return None
    if _is_set(msg, "separator") or (_get(msg, "pooling", "sum") or "").lower() == "mean":
        return MULTI_VALUES
    return None


def id_value_spec(
    msg: Any,
    name: str,
    rng: np.random.Generator,
    fmt: MockFormat,
    size: Optional[int] = None,
    in_sequence: bool = False,
) -> ValueSpec:
    """Values of an id-valued feature output (raw or encoded per ``fmt``).

    Args:
        msg: the feature message (``IdFeature`` or any kind with bucketizing fields).
        name: the feature name (messages, vocabulary OOV values).
        rng: draws the id domain.
        fmt: the data format.
        size: the number of encoded ids (default: :func:`bucket_size`).
        in_sequence: a sequence element (single-valued).

    Raises:
        ConfigError: ``FG_NONE`` and the range of the encoded ids cannot be told.

    """
    multi = None if in_sequence else _id_is_multi(msg)
    weighted = bool(_get(msg, "weighted", False))
    if fmt.encoded:
        size = size if size is not None else bucket_size(msg)
        if size is None:
            raise ConfigError(
                f"feature '{name}': mock-data cannot tell the range of its encoded ids "
                "(set num_buckets, hash_bucket_size, vocab_list, vocab_dict or boundaries)"
            )
        domain = encoded_id_domain(size, rng, fmt)
        separator = fmt.multival_sep
    else:
        domain = raw_id_domain(msg, name, rng, fmt)
        separator = _get(msg, "separator", "\x1d")
    if weighted:  # "id:weight" pairs, TorchEasyRec's weighted id input

        def draw(r: np.random.Generator, n: int) -> pa.Array:
            ids = pc.cast(domain.draw(r, n), pa.string())
            weights = pc.cast(_numbers(r.random(n)), pa.string())
            return pc.binary_join_element_wise(ids, weights, ":")

        return ValueSpec(draw, multi or MULTI_VALUES, separator)
    return ValueSpec(domain.draw, multi, separator, domain if multi is None else None)


def number_value_spec(msg: Any, fmt: MockFormat, value_dim: Optional[int] = None) -> ValueSpec:
    """Values of a number-valued feature output: raw numbers, normalized ones or bucket ids."""
    spec = NumberSpec.of(msg)
    dim = int(value_dim if value_dim is not None else (_get(msg, "value_dim", 1) or 1))
    if fmt.encoded and spec.boundaries.size:

        def draw(r: np.random.Generator, n: int) -> pa.Array:
            return pa.array(spec.buckets(r, n))

    elif fmt.encoded:

        def draw(r: np.random.Generator, n: int) -> pa.Array:
            return _numbers(spec.normalized(r, n))

    else:

        def draw(r: np.random.Generator, n: int) -> pa.Array:
            return _numbers(spec.raw(r, n))

    separator = fmt.multival_sep if fmt.encoded else _get(msg, "separator", "\x1d")
    return ValueSpec(draw, None if dim == 1 else (dim, dim), separator)


def _sequence_cells(
    specs: Sequence[ValueSpec],
    rng: np.random.Generator,
    n: int,
    length: int,
    delim: str,
    fmt: MockFormat,
) -> list[pa.Array]:
    """Sequences sharing each row's length: one column per spec, elements joined by ``delim``."""
    lengths = _counts(rng, n, 1, max(length, 1))
    null = _null_mask(rng, n, fmt)
    lengths[null] = 0
    total = int(lengths.sum())
    out = []
    for spec in specs:
        elements = spec.cells(rng, total, np.zeros(total, dtype=bool))
        out.append(join_cells(elements, lengths, delim, null))
    return out


# ------------------------------------------------------------------------------ plans
def _single_plan(feature: str, column: str, spec: ValueSpec, fmt: MockFormat) -> ColumnsPlan:
    def make(rng: np.random.Generator, n: int) -> Columns:
        return {column: spec.cells(rng, n, _null_mask(rng, n, fmt))}

    return ColumnsPlan(feature, (column,), make, spec.domain)


def _sequence_plan(
    feature: str,
    columns: Sequence[str],
    specs: Sequence[ValueSpec],
    length: int,
    delim: str,
    fmt: MockFormat,
) -> ColumnsPlan:
    def make(rng: np.random.Generator, n: int) -> Columns:
        return dict(zip(columns, _sequence_cells(specs, rng, n, length, delim, fmt)))

    return ColumnsPlan(feature, tuple(columns), make)


#: kinds whose output is always ids (others are ids with bucketizing fields, else numbers)
_ID_KINDS = ("id_feature", "combo_feature", "bool_mask_feature", "tokenize_feature")


def _tokenizer_size(msg: Any, name: str) -> int:
    """The vocabulary size of a tokenize_feature's tokenizer file."""
    from recforge.features.base_feature import FeatureError
    from recforge.features.tokenize_feature import TokenizeFeature

    try:
        return TokenizeFeature(msg).num_embeddings
    except FeatureError as err:
        raise ConfigError(f"mock-data: {err}") from None


def _output_spec(
    kind: str, msg: Any, name: str, rng: np.random.Generator, fmt: MockFormat, in_sequence: bool
) -> ValueSpec:
    """The column of a feature named by ``feature_name`` (``FG_NONE`` / ``FG_BUCKETIZE``)."""
    base = _kind_base(kind)
    if base == "tokenize_feature":  # token ids whatever the mode: there is no bucketizer
        # several ids per row, or per element of a sequence (sequence_tokenize_feature)
        domain = encoded_id_domain(_tokenizer_size(msg, name), rng, fmt)
        return ValueSpec(domain.draw, MULTI_VALUES, fmt.multival_sep)
    size = None
    if base == "custom_feature" and (_is_set(msg, "vocab_list") or _is_set(msg, "vocab_dict")):
        # a custom feature's vocabulary is the whole table (default_bucketize_value is set)
        size = len(msg.vocab_list) or int(max(msg.vocab_dict.values())) + 1
    has_ids = bucket_size(msg) is not None and not _is_set(msg, "boundaries")
    if base in _ID_KINDS or has_ids:
        return id_value_spec(msg, name, rng, fmt, size=size, in_sequence=in_sequence)
    return number_value_spec(msg, fmt, int(_get(msg, "value_dim", 1) or 1))


def _kind_base(kind: str) -> str:
    return kind[len("sequence_") :] if kind.startswith("sequence_") else kind


def plan_feature(
    feature_config: feature_pb2.FeatureConfig, rng: np.random.Generator, fmt: MockFormat
) -> list[ColumnsPlan]:
    """The columns one ``FeatureConfig`` reads, with their value generators.

    Args:
        feature_config: a ``FeatureConfig`` message (any kind of its ``feature`` oneof).
        rng: draws the id domains (vocabularies, id subsets) of the feature.
        fmt: the data format.

    Returns:
        One plan per column, or one plan for the columns of a sequence (they share lengths).

    Raises:
        ConfigError: no feature kind set, or inputs that cannot be generated (the message
            names the feature).

    """
    kind = feature_config.WhichOneof("feature")
    if kind is None:
        raise ConfigError(f"feature config {str(feature_config).strip()!r}: no feature kind set")
    msg = getattr(feature_config, kind)
    if kind == "sequence_feature":
        return [_plan_sequence_group(msg, rng, fmt)]
    name = msg.feature_name
    is_sequence = kind.startswith("sequence_")
    length = int(_get(msg, "sequence_length", 0) or 0)
    delim = _get(msg, "sequence_delim", ";")
    if fmt.by_feature_name:
        spec = _output_spec(kind, msg, name, rng, fmt, is_sequence)
        if is_sequence:
            return [_sequence_plan(name, [name], [spec], length, delim, fmt)]
        return [_single_plan(name, name, spec, fmt)]
    base = _kind_base(kind)
    if base in ("id_feature", "raw_feature"):
        column = input_column(_get(msg, "expression", "") or name)
        if base == "id_feature":
            spec = id_value_spec(msg, name, rng, fmt, in_sequence=is_sequence)
        else:
            spec = number_value_spec(msg, fmt)
        if is_sequence:
            return [_sequence_plan(name, [column], [spec], length, delim, fmt)]
        return [_single_plan(name, column, spec, fmt)]
    inputs = _raw_inputs(base, msg, name, rng, fmt)
    if not is_sequence:
        return [_single_plan(name, column, spec, fmt) for column, spec, _ in inputs]
    plans = [_single_plan(name, c, s, fmt) for c, s, seq in inputs if not seq]
    sequence = [(c, s) for c, s, seq in inputs if seq]
    if sequence:
        columns, specs = zip(*sequence)
        plans.append(_sequence_plan(name, columns, specs, length, delim, fmt))
    return plans


def _plan_sequence_group(
    sequence: feature_pb2.SequenceFeature, rng: np.random.Generator, fmt: MockFormat
) -> ColumnsPlan:
    """A ``sequence_feature``: its element columns, sharing each row's length."""
    prefix = sequence.sequence_name + SEQUENCE_NAME_SEPARATOR
    columns: list[str] = []
    specs: list[ValueSpec] = []
    side: list[tuple[str, ValueSpec]] = []
    for element in sequence.features:
        kind = element.WhichOneof("feature")
        if kind is None:
            continue
        msg = getattr(element, kind)
        name = prefix + msg.feature_name
        if fmt.by_feature_name:
            columns.append(name)
            specs.append(_output_spec(kind, msg, name, rng, fmt, in_sequence=True))
        elif kind in ("id_feature", "raw_feature"):
            # as recforge.features.sequence_element_configs names them
            columns.append(prefix + input_column(_get(msg, "expression", "") or msg.feature_name))
            if kind == "id_feature":
                specs.append(id_value_spec(msg, name, rng, fmt, in_sequence=True))
            else:
                specs.append(number_value_spec(msg, fmt))
        else:
            for column, spec, is_seq in _raw_inputs(kind, msg, name, rng, fmt):
                if is_seq:
                    columns.append(prefix + column)
                    specs.append(spec)
                else:
                    side.append((column, spec))
    if not columns:
        raise ConfigError(
            f"sequence_feature '{sequence.sequence_name}': no element features to generate"
        )
    seq_plan = _sequence_plan(
        sequence.sequence_name,
        columns,
        specs,
        int(sequence.sequence_length),
        sequence.sequence_delim,
        fmt,
    )
    if not side:
        return seq_plan

    def make(r: np.random.Generator, n: int) -> Columns:
        out = seq_plan.make(r, n)
        for column, spec in side:
            out.setdefault(column, spec.cells(r, n, _null_mask(r, n, fmt)))
        return out

    names = tuple(dict.fromkeys([*columns, *(c for c, _ in side)]))
    return ColumnsPlan(sequence.sequence_name, names, make)


# ------------------------------------------------------------------------------ other kinds
#: fields holding FG inputs, per feature kind recforge does not implement, and their role
_INPUT_FIELDS: dict[str, list[tuple[str, str]]] = {
    "combo_feature": [("expression", "id")],
    "lookup_feature": [("map", "map"), ("key", "key")],
    "match_feature": [("nested_map", "nested_map"), ("pkey", "pkey"), ("skey", "skey")],
    "expr_feature": [("variables", "number")],
    "overlap_feature": [("query", "terms"), ("title", "terms")],
    "tokenize_feature": [("expression", "text")],
    "kv_dot_product": [("query", "kv"), ("document", "kv")],
    "bool_mask_feature": [("expression", "id"), ("expression", "mask")],
    "combine_feature": [("expression", "combine")],
    "custom_feature": [("expression", "id")],
}
#: kinds with one input: that input is a sequence in a sequence (unless sequence_fields say)
_SINGLE_INPUT = ("tokenize_feature", "combine_feature")
_WORDS = [f"w{i}" for i in range(30)]


def _inputs_of(kind: str, msg: Any, name: str) -> list[tuple[str, str]]:
    """``[(expression, role)]`` of a feature of another kind (``"ALL"`` keys are no column)."""
    if kind not in _INPUT_FIELDS:
        raise ConfigError(
            f"feature '{name}': mock-data does not know the inputs of {kind}; "
            f"known kinds: id_feature, raw_feature, sequence_feature, {', '.join(_INPUT_FIELDS)}"
        )
    out: list[tuple[str, str]] = []
    for field_name, role in _INPUT_FIELDS[kind]:
        value = _get(msg, field_name)
        if value is None:
            continue
        expressions = [value] if isinstance(value, str) else list(value)
        if kind == "bool_mask_feature":  # first input: values; second: their mask
            index = 0 if role == "id" else 1
            expressions = expressions[index : index + 1]
        out += [(e, role) for e in expressions if e and e != "ALL"]
    if not out:
        raise ConfigError(f"feature '{name}' ({kind}): no input fields set")
    return out


def _is_sequence_input(kind: str, msg: Any, expression: str, num_inputs: int) -> bool:
    """TorchEasyRec's rule for which inputs of a sequence feature are sequences."""
    fields = list(_get(msg, "sequence_fields", []) or [])
    column = input_column(expression)
    if fields:
        return column in fields
    side = _input_side(expression)
    if kind == "bool_mask_feature":  # values and mask pair up per element
        return side not in ("feature", "const")
    if num_inputs == 1 or kind in _SINGLE_INPUT:
        return side != "feature"
    return side == "item"


def _map_value_strings(msg: Any) -> Callable[[np.random.Generator, int], pa.Array]:
    """Draws the values of lookup / match maps: ids fitting the config's id field, else numbers.

    ``num_buckets``: integers in ``[0, num_buckets)``; ``vocab_list`` / ``vocab_dict``: their
    keys; ``hash_bucket_size`` (or ``need_discrete``): integers; otherwise numbers in [0, 1).
    """
    vocab = list(_get(msg, "vocab_list", []) or []) or sorted(_get(msg, "vocab_dict", {}) or {})
    buckets = int(_get(msg, "num_buckets", 0) or 0)
    discrete = bool(_get(msg, "need_discrete", False)) or int(_get(msg, "hash_bucket_size", 0) or 0)

    def draw(r: np.random.Generator, total: int) -> pa.Array:
        if vocab:
            return pa.array(vocab, pa.string()).take(pa.array(r.integers(0, len(vocab), total)))
        if buckets or discrete:
            return pc.cast(pa.array(r.integers(0, buckets or 100, total)), pa.string())
        return pc.cast(_numbers(r.random(total)), pa.string())

    return draw


def _raw_inputs(
    kind: str,
    msg: Any,
    name: str,
    rng: np.random.Generator,
    fmt: MockFormat,
) -> list[tuple[str, ValueSpec, bool]]:
    """``[(column, spec, is_sequence_input)]`` of a feature kind recforge does not implement."""
    kind = _kind_base(kind)
    inputs = [(e, r) for e, r in _inputs_of(kind, msg, name) if _input_side(e) != "const"]
    sep = _get(msg, "separator", "\x1d") or "\x1d"
    keys = IdDomain(pa.array(_int_subset(rng, 1000, 20)))
    pkeys = IdDomain(pa.array(_int_subset(rng, 1000, 10)))
    skeys = IdDomain(pa.array(_int_subset(rng, 1000, 10)))
    map_values = _map_value_strings(msg)

    def map_entries(r: np.random.Generator, n: int) -> pa.Array:
        counts = _counts(r, n, *MULTI_VALUES)
        total = int(counts.sum())
        values = map_values(r, total)
        pairs = pc.binary_join_element_wise(pc.cast(keys.draw(r, total), pa.string()), values, ":")
        return join_cells(pairs, counts, MAP_SEPARATOR, np.zeros(n, dtype=bool))

    def nested_map(r: np.random.Generator, n: int) -> pa.Array:
        total = n * 2
        inner = pc.binary_join_element_wise(
            pc.cast(skeys.draw(r, total), pa.string()), map_values(r, total), ":"
        )
        groups = pc.binary_join_element_wise(pc.cast(pkeys.draw(r, total), pa.string()), inner, "^")
        return join_cells(groups, np.full(n, 2), "|", np.zeros(n, dtype=bool))

    def terms(r: np.random.Generator, n: int) -> pa.Array:
        counts = _counts(r, n, 1, 5)
        words = pa.array(_WORDS).take(pa.array(r.integers(0, len(_WORDS), int(counts.sum()))))
        return join_cells(words, counts, sep, np.zeros(n, dtype=bool))

    def text(r: np.random.Generator, n: int) -> pa.Array:
        counts = _counts(r, n, 2, 8)
        words = pa.array(_WORDS).take(pa.array(r.integers(0, len(_WORDS), int(counts.sum()))))
        return join_cells(words, counts, " ", np.zeros(n, dtype=bool))

    def kv(r: np.random.Generator, n: int) -> pa.Array:
        counts = _counts(r, n, 1, 4)
        total = int(counts.sum())
        words = pa.array(_WORDS).take(pa.array(r.integers(0, len(_WORDS), total)))
        pairs = pc.binary_join_element_wise(
            words, pc.cast(_numbers(r.random(total)), pa.string()), ":"
        )
        return join_cells(pairs, counts, sep, np.zeros(n, dtype=bool))

    def numbers(r: np.random.Generator, n: int) -> pa.Array:
        return _numbers(r.random(n))

    def mask(r: np.random.Generator, n: int) -> pa.Array:
        return pa.array(r.integers(0, 2, n))

    specs: dict[str, ValueSpec] = {
        "key": ValueSpec(keys.draw, domain=keys),
        "pkey": ValueSpec(pkeys.draw, domain=pkeys),
        "skey": ValueSpec(skeys.draw, domain=skeys),
        "map": ValueSpec(map_entries),
        "nested_map": ValueSpec(nested_map),
        "terms": ValueSpec(terms),
        "text": ValueSpec(text),
        "kv": ValueSpec(kv),
        "number": ValueSpec(numbers),
        "mask": ValueSpec(mask),
    }
    if kind == "combine_feature" and _is_set(msg, "value_map"):
        values = IdDomain(pa.array(sorted(msg.value_map), pa.string()))
        specs["combine"] = ValueSpec(values.draw, MULTI_VALUES, sep)
    elif kind == "combine_feature" and _get(msg, "num_buckets", 0):
        # integers whose sum over a cell stays an id below num_buckets
        top = max(int(msg.num_buckets) // MULTI_VALUES[1], 1)
        specs["combine"] = ValueSpec(
            lambda r, n: pa.array(r.integers(0, top, n)), MULTI_VALUES, sep
        )
    else:
        specs["combine"] = ValueSpec(numbers, MULTI_VALUES, sep)
    if kind == "bool_mask_feature":  # values and a mask item per value, 3 of each per row
        values = raw_id_domain(msg, name, rng, fmt)
        specs["mask"] = ValueSpec(mask, (3, 3), sep)
    out = []
    for expression, role in inputs:
        if kind == "bool_mask_feature" and role == "id":
            spec = ValueSpec(values.draw, (3, 3), sep)
        elif role == "id":
            domain = IdDomain(pa.array(_int_subset(rng, 10 * fmt.cardinality, 50)))
            spec = ValueSpec(domain.draw, domain=domain)
        else:
            spec = specs[role]
        is_seq = _is_sequence_input(kind, msg, expression, len(inputs))
        out.append((input_column(expression), spec, is_seq))
    return out
