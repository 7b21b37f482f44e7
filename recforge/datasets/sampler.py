"""Negative sampling from an item table for match (retrieval) models.

The :class:`NegativeSampler` draws ``num_sample`` items per batch from an item table (uniform,
or proportional to ``weight ^ popularity_exponent``) and appends their rows to the batch: item
columns come from the table, every other column is null (user features of the negative rows
are empty and never read), labels are 0 and sample weights 1. The model finds the number of
appended rows in ``Batch.extras[NUM_NEGATIVES_KEY]``, the log of each item row's expected count
among the candidates in ``Batch.extras[LOG_Q_KEY]`` (for log-Q correction) and each item row's
position in the item table in ``Batch.extras[ITEM_INDEX_KEY]`` (-1: not in the table).

When the item id column is the input of a sequence feature (a candidate sequence such as
``cand_seq__video_id``, :attr:`NegativeSampler.candidate_sequence`), a row holds several
positive items: they are split as that feature splits them, every positive is avoided by the
draws, ``LOG_Q_KEY`` and ``ITEM_INDEX_KEY`` hold one entry per positive (``Q`` in all, then
the negatives) and ``Batch.extras[CAND_POS_LENGTHS_KEY]`` ``[B]`` each row's positive count
(TorchEasyRec's ``cand_pos_lengths``). TorchEasyRec appends the negatives to the last row's
candidates; here they stay rows of their own (one item each), as for single positives.

The samplers that read user-item edge tables (``negative_sampler_v2``,
``hard_negative_sampler``, ``hard_negative_sampler_v2``) live in
:mod:`recforge.datasets.edge_sampler`; hard negatives are appended after the shared negatives
and belong to one user each: ``Batch.extras[HARD_NEG_INDICES_KEY]`` ``[H, 2]`` holds the batch
row of each one's user and its slot among that user's hard negatives.

Each DataLoader worker of each rank draws from its own generator seeded by
``(data_config.seed, rank, worker, epoch)``, so runs repeat exactly.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch

from recforge.datasets.errors import DataError
from recforge.datasets.readers import expand_input_path
from recforge.utils import storage

if TYPE_CHECKING:
    from recforge.protos import data_pb2, sampler_pb2

logger = logging.getLogger(__name__)

NUM_NEGATIVES_KEY = "__num_negatives__"
LOG_Q_KEY = "__log_q__"
ITEM_INDEX_KEY = "__item_index__"
HARD_NEG_INDICES_KEY = "__hard_neg_indices__"
CAND_POS_LENGTHS_KEY = "__cand_pos_lengths__"

_FIELD = "data_config.negative_sampler"


class SequenceSplitter(Protocol):
    """What the sampler needs of a sequence feature: its cells split into elements."""

    def split_sequence(self, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """``(elements [Q], lengths [B])`` of a column, as the feature parses it."""
        ...


_ATTRS_COLUMN = "attrs"
_ID_FALLBACK = "id"


#: TorchEasyRec's local side tables declare each column's type in the header: ``id:int64``
_TYPED_HEADER = re.compile(r"^(?P<name>[^:]+):(?P<type>int32|int64|float|double|string)$")
_HEADER_TYPES = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
}


def _csv_delimiter(path: str, delimiter: str) -> str:
    """``delimiter``, or a tab for .tsv files and for headers split by tabs, not by it."""
    if path.endswith(".tsv"):
        return "\t"
    if delimiter != "\t":
        with storage.open_file(path, "r", encoding="utf-8", errors="replace") as f:
            header = f.readline()
        if "\t" in header and delimiter not in header:
            return "\t"  # TorchEasyRec's local side tables are tab-separated
    return delimiter


def _read_csv(path: str, delimiter: str) -> pa.Table:
    options = pa_csv.ParseOptions(delimiter=_csv_delimiter(path, delimiter))
    try:
        table = pa_csv.read_csv(storage.arrow_source(path), parse_options=options)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: cannot be read as csv: {err}") from None
    names, columns = [], []
    for name, column in zip(table.column_names, table.columns):
        typed = _TYPED_HEADER.match(name)
        if typed:
            name = typed.group("name")
            column = cast_or_error(
                column,
                _HEADER_TYPES[typed.group("type")],
                f"{path}: column '{name}' does not hold the type its header declares",
            )
        names.append(name)
        columns.append(column)
    return pa.table(columns, names=names)


def read_table_files(
    files: list[str], delimiter: str, what: str
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Reads side-table files (parquet or csv) into one table.

    Args:
        files: the files (``expand_input_path``).
        delimiter: csv field delimiter (tab-separated headers are recognised).
        what: what the table is, for messages (e.g. ``"item table 'items/'"``).

    Returns:
        ``(table, file index of each row, 0-based row of each row in its file)``.

    Raises:
        DataError: a file cannot be read, or the files' columns do not agree.

    """
    tables = []
    for path in files:
        if path.endswith((".csv", ".txt", ".tsv")):
            tables.append(_read_csv(path, delimiter))
        else:
            try:
                tables.append(pq.read_table(storage.arrow_source(path)))
            except (pa.ArrowInvalid, OSError) as err:
                raise DataError(f"{path}: cannot be read as parquet: {err}") from None
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as err:
        raise DataError(f"{what}: its files do not agree: {err}") from None
    sizes = [t.num_rows for t in tables]
    file_index = np.repeat(np.arange(len(files)), sizes)
    rows = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, np.int64)
    return table, file_index, rows


def where_row(files: list[str], file_index: np.ndarray, rows: np.ndarray, i: int) -> str:
    """``FILE: row R`` of row ``i`` of a table from :func:`read_table_files` (csv: its line)."""
    path = files[int(file_index[i])]
    where = f"{path}: row {int(rows[i])}"
    if path.endswith((".csv", ".txt", ".tsv")):
        where += f" (line {int(rows[i]) + 2})"
    return where


@dataclass
class ItemTable:
    """The items a sampler draws from and a retrieval evaluation ranks.

    Attributes:
        path: the input path the table was read from (for messages).
        id_field: the item id column name (as the train / eval data calls it).
        table: one row per item: the id column and the attribute columns.
        weights: popularity per item (ones when the table has no weight column).
        has_weights: whether the table had a weight column.

    """

    path: str
    id_field: str
    table: pa.Table
    weights: np.ndarray
    has_weights: bool

    @property
    def num_items(self) -> int:
        """Number of items."""
        return self.table.num_rows

    def index_of(self, ids: pa.Array) -> np.ndarray:
        """Row of each id in the table (int64; -1 where the id is not in the table)."""
        table_ids = self.table.column(self.id_field)
        ids = pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids
        ids = cast_or_error(
            ids,
            table_ids.type,
            f"item ids of type {ids.type} cannot be compared with the item table"
            f" '{self.path}' column '{self.id_field}' of type {table_ids.type}",
        )
        index = pc.index_in(ids, value_set=table_ids.combine_chunks())
        return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def cast_or_error(values: Any, to_type: pa.DataType, problem: str) -> Any:
    """``values`` (an arrow array) cast to ``to_type``.

    Raises:
        DataError: ``problem`` followed by arrow's reason, when the cast fails.

    """
    if values.type == to_type:
        return values
    try:
        return pc.cast(values, to_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataError(f"{problem}: {err}") from None


def load_item_table(
    config: sampler_pb2.NegativeSampler,
    delimiter: str = ",",
    field: str = _FIELD,
    path_field: str = "input_path",
) -> ItemTable:
    """Reads and checks the item table of a ``NegativeSampler`` message.

    Args:
        config: the ``NegativeSampler`` message.
        delimiter: csv delimiter (``data_config.delimiter``).
        field: the sampler's config path, for messages.
        path_field: the name of the item table path's field in the sampler's own message.

    Returns:
        The table with the id column (named ``item_id_field``) and every ``attr_fields``
        column, plus the popularity weights.

    Raises:
        DataError: no input path / id field, a missing id or attribute column (the message
            names the column and the file), duplicate ids, or negative weights.

    """
    path = config.input_path
    if not path:
        raise DataError(f"{field}.{path_field} is empty; name the item table")
    if not config.item_id_field:
        raise DataError(f"{field}.item_id_field is empty; name the item id column")
    where = f"item table '{path}'"
    files = expand_input_path(path)
    table, _, _ = read_table_files(files, config.field_delimiter or delimiter, where)
    columns = table.column_names
    id_field = config.item_id_field
    if id_field not in columns:
        if _ID_FALLBACK not in columns:
            raise DataError(
                f"{where} has no item id column '{id_field}' ({field}.item_id_field)"
                f" nor '{_ID_FALLBACK}'; its columns: {columns}"
            )
        table = table.rename_columns([id_field if c == _ID_FALLBACK else c for c in columns])
        columns = table.column_names
    attrs = [f for f in dict.fromkeys(config.attr_fields) if f != id_field]
    missing = [f for f in attrs if f not in columns]
    if missing and _ATTRS_COLUMN in columns:
        table = _split_attrs(table, list(config.attr_fields), config.attr_delimiter, where, field)
        columns = table.column_names
        missing = [f for f in attrs if f not in columns]
    if missing:
        raise DataError(
            f"{where} has no column '{missing[0]}' named in {field}.attr_fields; its"
            f" columns: {columns}"
        )
    if table.column(id_field).null_count:
        raise DataError(f"{where}: item id column '{id_field}' has nulls")
    if pc.count_distinct(table.column(id_field)).as_py() != table.num_rows:
        raise DataError(f"{where}: item id column '{id_field}' has duplicate ids")
    has_weights = bool(config.weight_field) and config.weight_field in columns
    if has_weights:
        weight_column = pc.cast(table.column(config.weight_field), pa.float64())
        weights = weight_column.to_numpy().astype(np.float64)
        if np.isnan(weights).any() or (weights < 0).any() or weights.sum() <= 0:
            raise DataError(
                f"{where}: weight column '{config.weight_field}' needs non-negative numbers"
                " with a positive sum and no nulls"
            )
    else:
        weights = np.ones(table.num_rows)
    return ItemTable(
        path=path,
        id_field=id_field,
        table=table.select([id_field, *attrs]).combine_chunks(),
        weights=weights,
        has_weights=has_weights,
    )


def _split_attrs(
    table: pa.Table, fields: list[str], delimiter: str, where: str, field: str
) -> pa.Table:
    """TorchEasyRec's layout: one string column ``attrs`` with the values of ``fields``."""
    parts = pc.split_pattern(pc.cast(table.column(_ATTRS_COLUMN), pa.string()), delimiter)
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    if (lengths != len(fields)).any():
        row = int(np.flatnonzero(lengths != len(fields))[0])
        raise DataError(
            f"{where}: row {row} of column '{_ATTRS_COLUMN}' has {lengths[row]} values"
            f" separated by '{delimiter}', expected {len(fields)} ({field}.attr_fields)"
        )
    for i, name in enumerate(fields):
        if name in table.column_names:
            continue
        table = table.append_column(name, pc.list_element(parts, i))
    return table


class NegativeSampler:
    """Draws negatives from an item table and appends their rows to record batches.

    Args:
        config: the ``NegativeSampler`` message.
        num_sample: negatives per batch.
        delimiter: csv delimiter of the item table.
        field: the sampler's config path, for messages.
        path_field: the name of the item table path's field in the sampler's own message.

    Raises:
        DataError: see :func:`load_item_table`; ``num_sample`` of 0 or larger than the table.

    """

    def __init__(
        self,
        config: sampler_pb2.NegativeSampler,
        num_sample: int,
        delimiter: str = ",",
        field: str = _FIELD,
        path_field: str = "input_path",
    ) -> None:
        self.config = config
        self.field = field
        self.items = load_item_table(config, delimiter, field, path_field)
        self.num_sample = int(num_sample)
        if self.num_sample <= 0:
            raise DataError(f"{field}.num_sample must be > 0 (found {self.num_sample})")
        if self.num_sample > self.items.num_items:
            raise DataError(
                f"{field}.num_sample ({self.num_sample}) is larger than the item table"
                f" '{self.items.path}' ({self.items.num_items} items)"
            )
        exponent = float(config.popularity_exponent)
        weights = self.items.weights
        probs = weights**exponent if self.items.has_weights and exponent != 0 else None
        if probs is not None and probs.sum() <= 0:
            raise DataError(f"{field}: every item has weight 0")
        self._probs = None if probs is None else probs / probs.sum()
        self._cdf = None if self._probs is None else np.cumsum(self._probs)
        # popularity of an item as a positive (for the log-Q of in-batch negatives)
        self._popularity = weights / weights.sum()
        self.id_field = self.items.id_field
        #: the sequence feature whose input is the item id column (several positives per
        #: row), set by the dataset; None: one positive per row
        self.candidate_sequence: Optional[SequenceSplitter] = None

    @property
    def input_columns(self) -> list[str]:
        """Columns of the input data the sampler reads (the item id)."""
        return [self.id_field]

    @property
    def columns(self) -> list[str]:
        """Columns a negative row carries (the id and attribute columns)."""
        return list(self.items.table.column_names)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` table rows drawn with replacement (uniform or by popularity)."""
        n = self.items.num_items
        if self._cdf is None:
            return rng.integers(0, n, size)
        index = np.searchsorted(self._cdf, rng.random(size) * self._cdf[-1], side="right")
        return np.minimum(index, n - 1)

    def sample(
        self, rng: np.random.Generator, positives: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Draws ``num_sample`` table rows, redrawing those equal to a positive of the batch.

        Args:
            rng: the generator.
            positives: table rows of the batch's positive items (-1: not in the table).

        """
        index = self.draw(rng, self.num_sample)
        if positives is not None and positives.size:
            for _ in range(int(self.config.max_redraws)):
                hits = np.flatnonzero(np.isin(index, positives))
                if not hits.size:
                    break
                index[hits] = self.draw(rng, hits.size)
        return index

    def sampling_prob(self, index: np.ndarray) -> np.ndarray:
        """Probability that one draw returns each of the table rows ``index``."""
        if self._probs is None:
            return np.full(index.shape, 1.0 / self.items.num_items)
        return self._probs[index]

    def append_negatives(
        self, rb: pa.RecordBatch, rng: np.random.Generator, labels: list[str], weights: list[str]
    ) -> tuple[pa.RecordBatch, dict[str, torch.Tensor]]:
        """Returns ``rb`` with ``num_sample`` negative rows appended, and the batch extras.

        Args:
            rb: the batch of ``B`` positive rows.
            rng: the generator.
            labels: label columns (0 on negative rows).
            weights: sample-weight columns (1 on negative rows).

        Returns:
            ``(record batch of B + num_sample + H rows, extras)`` (``H`` hard negatives, see
            :meth:`sample_hard_negatives`) with the extras described in the module docstring.

        Raises:
            DataError: an item table column cannot be cast to the input data's type.

        """
        positives, counts = self.positive_rows(rb)
        index = self.sample_negatives(rb, rng, positives, counts)
        hard, hard_pairs = self.sample_hard_negatives(rb, rng)
        combined = self.with_item_rows(rb, np.concatenate([index, hard]), labels, weights)
        # log of the expected count of each item among a batch's candidates (its positives)
        num_pos = positives.size
        in_batch = np.maximum(self._popularity[np.maximum(positives, 0)], 1e-12) * num_pos
        in_batch = np.where(positives >= 0, in_batch, 1.0 / self.items.num_items * num_pos)
        sampled = self.sampling_prob(index) * index.size
        # a user's hard negatives are its own: each is a candidate once (log 1)
        log_q = np.log(np.concatenate([in_batch, sampled, np.ones(hard.size)]))
        rows = np.concatenate([positives, index, hard]).astype(np.int64)
        extras = {
            NUM_NEGATIVES_KEY: torch.tensor([index.size + hard.size], dtype=torch.int64),
            LOG_Q_KEY: torch.from_numpy(log_q.astype(np.float32)),
            ITEM_INDEX_KEY: torch.from_numpy(rows),
        }
        if hard_pairs is not None:
            extras[HARD_NEG_INDICES_KEY] = torch.from_numpy(hard_pairs.astype(np.int64))
        if counts is not None:
            extras[CAND_POS_LENGTHS_KEY] = torch.from_numpy(counts.astype(np.int64))
        return combined, extras

    def positive_rows(self, rb: pa.RecordBatch) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Table rows of the batch's positive items and each row's positive count.

        Args:
            rb: the batch of ``B`` positive rows.

        Returns:
            ``(table rows [Q], counts [B])`` (-1: not in the table); ``counts`` is None (and
            ``Q = B``) unless the item id column is a candidate sequence, whose cells are split
            as its feature splits them (so the counts equal the parsed sequence lengths).

        """
        batch_size = rb.num_rows
        if self.id_field not in rb.schema.names:
            return np.full(batch_size, -1, dtype=np.int64), None
        column = rb.column(self.id_field)
        if self.candidate_sequence is None:
            return self.items.index_of(column), None
        values, counts = self.candidate_sequence.split_sequence(column)
        return self.items.index_of(values), np.asarray(counts, dtype=np.int64)

    def sample_negatives(
        self,
        rb: pa.RecordBatch,
        rng: np.random.Generator,
        positives: np.ndarray,
        counts: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Table rows of the negatives shared by the batch's users ``[num_sample]``.

        Args:
            rb: the batch of positive rows.
            rng: the generator.
            positives: table row of each positive item ``[Q]`` (-1: not in the table).
            counts: positives of each row ``[B]`` (None: one each, ``Q = B``).

        """
        return self.sample(rng, positives[positives >= 0])

    def sample_hard_negatives(
        self, rb: pa.RecordBatch, rng: np.random.Generator
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Per-user hard negatives: ``(table rows [H], (batch row, slot) pairs [H, 2])``.

        None for the pairs: the sampler draws no hard negatives.
        """
        return np.zeros(0, dtype=np.int64), None

    def with_item_rows(
        self, rb: pa.RecordBatch, index: np.ndarray, labels: list[str], weights: list[str]
    ) -> pa.RecordBatch:
        """``rb`` with the item table rows ``index`` appended (labels 0, weights 1).

        Raises:
            DataError: an item table column cannot be cast to the input data's type.

        """
        negatives = self.items.table.take(pa.array(index, pa.int64()))
        n = len(index)
        arrays = []
        for field in rb.schema:
            if field.name in negatives.column_names:
                column = negatives.column(field.name).combine_chunks()
                extra = cast_or_error(
                    column,
                    field.type,
                    f"item table '{self.items.path}' column '{field.name}' of type"
                    f" {column.type} cannot be cast to the input data's type {field.type}",
                )
            elif field.name in labels:
                extra = pc.cast(pa.array(np.zeros(n)), field.type)
            elif field.name in weights:
                extra = pc.cast(pa.array(np.ones(n)), field.type)
            else:
                extra = pa.nulls(n, field.type)
            arrays.append(pa.concat_arrays([rb.column(field.name), extra]))
        return pa.RecordBatch.from_arrays(arrays, schema=rb.schema)


def sampler_for(data_config: data_pb2.DataConfig, mode: str) -> Optional[NegativeSampler]:
    """The negative sampler of ``data_config`` for ``mode`` (None: none configured, predict)."""
    kind = data_config.WhichOneof("sampler")
    if mode == "predict" or kind is None:
        return None
    config = getattr(data_config, kind)
    num = config.num_sample
    if mode == "eval" and config.num_eval_sample:
        num = config.num_eval_sample
    if kind == "negative_sampler":
        sampler = NegativeSampler(config, num, data_config.delimiter)
    else:
        from recforge.datasets.edge_sampler import edge_sampler  # it builds on this module

        sampler = edge_sampler(kind, config, num, data_config.delimiter)
    logger.debug(
        "%s: %d items from %s, %d per batch",
        kind,
        sampler.items.num_items,
        os.path.basename(sampler.items.path),
        num,
    )
    return sampler
