"""Samplers that read user-item edge tables: ``negative_sampler_v2`` and the hard-negative ones.

Table layouts follow TorchEasyRec (parquet, or csv with a header; TorchEasyRec's typed,
tab-separated headers such as ``id:int64<TAB>weight:float`` are read too):

- user table ``user_input_path``: ``id`` (or the ``user_id_field`` name) | ``weight``;
- item table ``item_input_path``: ``id`` (or ``item_id_field``) | ``weight`` | ``attrs``
  (or one column per ``attr_fields`` entry), as ``negative_sampler``'s item table;
- edge tables ``pos_edge_input_path`` / ``hard_neg_edge_input_path``: ``userid`` | ``itemid``
  | ``weight`` (``user_id_field`` / ``item_id_field`` names are accepted too).

``negative_sampler_v2`` draws the batch's shared negatives uniformly among the items (as
TorchEasyRec's conditional ``random`` strategy) and, like TorchEasyRec, conditions each drawn
negative on one row of the batch: with ``B`` rows, row ``r`` draws ``ceil(num_sample / B)``
of them. A negative never is one of its row's user's positive items (the positive edge table
and the row's own item) unless that user has every item as a positive.
``hard_negative_sampler`` draws the shared negatives as ``negative_sampler`` does (by the item
weights, redrawing the batch's items) and appends up to ``num_hard_sample`` hard negatives per
user from the hard-negative edge table; ``hard_negative_sampler_v2`` draws the shared ones as
``negative_sampler_v2``.

Every DataLoader worker of every rank reads the whole tables (any user can appear in any
slot) and draws with the dataset's generator of ``(data_config.seed, rank, worker, epoch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.datasets.errors import DataError
from recforge.datasets.readers import expand_input_path
from recforge.datasets.sampler import (
    ItemTable,
    NegativeSampler,
    cast_or_error,
    read_table_files,
    where_row,
)
from recforge.protos import sampler_pb2

#: TorchEasyRec's column names in the user / edge tables
_USER_ID = "id"
_EDGE_USER = "userid"
_EDGE_ITEM = "itemid"
#: rejection rounds before a negative that hits its user's positives is drawn exactly
_REDRAW_ROUNDS = 4
#: the sampler messages that read a user table and user-item edges
EdgeSamplerConfig = Union[
    sampler_pb2.NegativeSamplerV2,
    sampler_pb2.HardNegativeSampler,
    sampler_pb2.HardNegativeSamplerV2,
]


def _column(table: pa.Table, names: list[str], what: str, field: str) -> str:
    """The first of ``names`` that ``table`` has."""
    for name in names:
        if name in table.column_names:
            return name
    raise DataError(
        f"{what} has no column {' or '.join(repr(n) for n in names)} ({field}); its columns:"
        f" {table.column_names}"
    )


def _first_null(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])


def _first_bad_cast(column: pa.ChunkedArray, to_type: pa.DataType) -> int:
    """The first row of ``column`` that cannot be cast to ``to_type`` (bisecting; 0 if none)."""
    lo, hi = 0, len(column)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(column.slice(lo, mid - lo), to_type)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


@dataclass
class UserTable:
    """The users of a sampler's user table (TorchEasyRec's ``user_input_path``).

    Attributes:
        path: where it was read from.
        ids: the user ids.

    """

    path: str
    ids: pa.Array


def load_user_table(config: EdgeSamplerConfig, delimiter: str, field: str) -> UserTable:
    """Reads and checks ``config.user_input_path``.

    Raises:
        DataError: no path, no id column, or a row without an id (naming file and row).

    """
    path = config.user_input_path
    if not path:
        raise DataError(f"{field}.user_input_path is empty; name the user table")
    what = f"user table '{path}'"
    files = expand_input_path(path)
    table, file_index, rows = read_table_files(files, config.field_delimiter or delimiter, what)
    name = _column(table, [_USER_ID, config.user_id_field], what, f"{field}.user_input_path")
    ids = table.column(name)
    if ids.null_count:
        i = _first_null(ids)
        raise DataError(f"{where_row(files, file_index, rows, i)}: user id '{name}' is empty")
    return UserTable(path=path, ids=ids.combine_chunks())


@dataclass
class EdgeTable:
    """User -> item edges, grouped by user, with the items as rows of the item table.

    Attributes:
        path: where it was read from.
        users: the distinct user ids of the edges.
        offsets: user ``k``'s items are ``items[offsets[k]:offsets[k + 1]]`` ``[U + 1]``.
        items: item table rows of the edges, grouped by user ``[E]``.

    """

    path: str
    users: pa.Array
    offsets: np.ndarray
    items: np.ndarray

    def user_index(self, ids: pa.Array) -> np.ndarray:
        """Position of each user id among :attr:`users` (int64; -1: the user has no edge)."""
        if not len(self.users):
            return np.full(len(ids), -1, dtype=np.int64)
        ids = cast_or_error(
            ids,
            self.users.type,
            f"user ids of type {ids.type} cannot be compared with the edge table"
            f" '{self.path}' user ids of type {self.users.type}",
        )
        index = pc.index_in(ids, value_set=self.users)
        return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def degree(self, users: np.ndarray) -> np.ndarray:
        """Edges of each user index (0 for -1)."""
        counts = np.diff(self.offsets)
        return np.where(users >= 0, counts[np.maximum(users, 0)], 0)


def load_edge_table(
    path: str,
    config: EdgeSamplerConfig,
    items: ItemTable,
    delimiter: str,
    field: str,
    strict_items: bool,
) -> EdgeTable:
    """Reads a user -> item edge table.

    Args:
        path: the table's path (``config.<path_field>``).
        config: the sampler message (``user_id_field``, ``item_id_field``).
        items: the item table; edges are kept as its rows.
        delimiter: csv delimiter.
        field: the path's config field, for messages.
        strict_items: an edge to an item the item table lacks is an error (hard negatives
            need the item's attributes); otherwise it is dropped (a positive edge to an item
            that is never drawn excludes nothing).

    Raises:
        DataError: no path, a missing column, or a bad row (naming file and row).

    """
    if not path:
        raise DataError(f"{field} is empty; name the edge table")
    what = f"edge table '{path}'"
    files = expand_input_path(path)
    table, file_index, rows = read_table_files(files, delimiter, what)
    user_name = _column(table, [_EDGE_USER, config.user_id_field], what, field)
    item_name = _column(table, [_EDGE_ITEM, config.item_id_field], what, field)
    user_ids, item_ids = table.column(user_name), table.column(item_name)
    for name, column in ((user_name, user_ids), (item_name, item_ids)):
        if column.null_count:
            i = _first_null(column)
            raise DataError(f"{where_row(files, file_index, rows, i)}: '{name}' is empty")
    try:
        item_rows = items.index_of(item_ids)
    except DataError as err:
        i = _first_bad_cast(item_ids, items.table.column(items.id_field).type)
        raise DataError(f"{where_row(files, file_index, rows, i)}: '{item_name}': {err}") from None
    unknown = np.flatnonzero(item_rows < 0)
    if unknown.size and strict_items:
        i = int(unknown[0])
        raise DataError(
            f"{where_row(files, file_index, rows, i)}: item '{item_ids[i].as_py()}' is not in"
            f" the item table '{items.path}'"
        )
    keep = item_rows >= 0
    users = pc.unique(user_ids)
    codes = pc.index_in(user_ids, value_set=users).to_numpy(zero_copy_only=False)
    codes, item_rows = codes[keep].astype(np.int64), item_rows[keep]
    order = np.argsort(codes, kind="stable")
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=len(users)), out=offsets[1:])
    return EdgeTable(path=path, users=users, offsets=offsets, items=item_rows[order])


def _item_view(config: EdgeSamplerConfig, weighted: bool) -> sampler_pb2.NegativeSampler:
    """The item-table part of an edge sampler's message, as a ``NegativeSampler`` message."""
    view = sampler_pb2.NegativeSampler(
        input_path=config.item_input_path,
        item_id_field=config.item_id_field,
        attr_delimiter=config.attr_delimiter,
        field_delimiter=config.field_delimiter,
    )
    view.attr_fields.extend(config.attr_fields)
    # TorchEasyRec: "node_weight" strategy without edge exclusion, "random" (uniform) with it
    view.popularity_exponent = 1.0 if weighted else 0.0
    return view


class EdgeSampler(NegativeSampler):
    """Base of the edge-table samplers: the item table plus the user id of each batch row.

    Args:
        config: the sampler message.
        num_sample: shared negatives per batch.
        delimiter: csv delimiter of the tables (``field_delimiter`` wins).
        field: the sampler's config path (e.g. ``data_config.negative_sampler_v2``).
        exclude_positives: draw the shared negatives away from each user's positive edges
            (``pos_edge_input_path``); otherwise by item weight, away from the batch's items.
        num_hard_sample: most hard negatives per user (0: none).

    Raises:
        DataError: a missing or bad table, or field.

    """

    def __init__(
        self,
        config: EdgeSamplerConfig,
        num_sample: int,
        delimiter: str,
        field: str,
        exclude_positives: bool,
        num_hard_sample: int = 0,
    ) -> None:
        super().__init__(
            _item_view(config, weighted=not exclude_positives),
            num_sample,
            delimiter,
            field=field,
            path_field="item_input_path",
        )
        if not config.user_id_field:
            raise DataError(f"{field}.user_id_field is empty; name the user id column")
        self.user_id_field = config.user_id_field
        delimiter = config.field_delimiter or delimiter
        # TorchEasyRec requires the user table (its graph's user nodes); sampling here needs
        # only the edges, so it is read to check it and to keep configs interchangeable
        self.users = load_user_table(config, delimiter, field)
        self.positive_edges: Optional[EdgeTable] = None
        if exclude_positives:
            self.positive_edges = load_edge_table(
                config.pos_edge_input_path,
                config,
                self.items,
                delimiter,
                f"{field}.pos_edge_input_path",
                strict_items=False,
            )
        self.num_hard_sample = int(num_hard_sample)
        self.hard_edges: Optional[EdgeTable] = None
        if self.num_hard_sample:
            self.hard_edges = load_edge_table(
                config.hard_neg_edge_input_path,
                config,
                self.items,
                delimiter,
                f"{field}.hard_neg_edge_input_path",
                strict_items=True,
            )

    @property
    def input_columns(self) -> list[str]:
        """The item id and the user id columns."""
        return [self.id_field, self.user_id_field]

    def _user_column(self, rb: pa.RecordBatch) -> pa.Array:
        if self.user_id_field not in rb.schema.names:
            raise DataError(
                f"the input data has no user id column '{self.user_id_field}'"
                f" ({self.field}.user_id_field)"
            )
        return rb.column(self.user_id_field)

    def sample_negatives(
        self,
        rb: pa.RecordBatch,
        rng: np.random.Generator,
        positives: np.ndarray,
        counts: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Shared negatives; each avoids the positives of the user of the row it is drawn for.

        With several positives per row (``counts``), each positive counts as a row of its
        user.
        """
        if self.positive_edges is None:
            return super().sample_negatives(rb, rng, positives, counts)
        users = self.positive_edges.user_index(self._user_column(rb))
        if counts is not None:
            users = np.repeat(users, counts)
        return self.sample_excluding(rng, users, positives)

    def sample_excluding(
        self, rng: np.random.Generator, users: np.ndarray, positives: np.ndarray
    ) -> np.ndarray:
        """``num_sample`` item rows; negative ``j`` avoids the positives of row ``owner(j)``.

        TorchEasyRec leaves this to graphlearn's conditional negative sampler; here a negative
        that still hits after :data:`_REDRAW_ROUNDS` rejection rounds is drawn exactly among
        its user's other items, so it is a positive only when the user has no other item.

        Args:
            rng: the generator.
            users: each batch row's user among the positive edges' users ``[B]`` (-1: none).
            positives: each batch row's item row ``[B]`` (-1: not in the item table).

        Returns:
            Item table rows ``[num_sample]``.

        """
        edges = self.positive_edges
        assert edges is not None
        n = self.items.num_items
        batch_size = max(len(users), 1)
        per_row = math.ceil(self.num_sample / batch_size)
        owner = np.repeat(np.arange(batch_size), per_row)[: self.num_sample]
        # the (row, item) pairs that are excluded, as keys row * n + item
        degree = edges.degree(users)
        starts = edges.offsets[np.maximum(users, 0)]
        rows = np.repeat(np.arange(len(users)), degree)
        within = np.arange(rows.size) - np.repeat(np.cumsum(degree) - degree, degree)
        edge_items = edges.items[np.repeat(starts, degree) + within]
        own = positives >= 0
        excluded = np.concatenate([rows * n + edge_items, np.flatnonzero(own) * n + positives[own]])
        index = self.draw(rng, self.num_sample)
        for _ in range(_REDRAW_ROUNDS):
            hits = np.flatnonzero(np.isin(owner * n + index, excluded))
            if not hits.size:
                return index
            index[hits] = self.draw(rng, hits.size)
        for j in np.flatnonzero(np.isin(owner * n + index, excluded)):
            row = owner[j]
            banned = excluded[(excluded >= row * n) & (excluded < (row + 1) * n)] - row * n
            allowed = np.setdiff1d(np.arange(n), banned, assume_unique=False)
            if allowed.size:
                index[j] = rng.choice(allowed)
        return index

    def sample_hard_negatives(
        self, rb: pa.RecordBatch, rng: np.random.Generator
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Up to ``num_hard_sample`` items of each row's user from the hard-negative edges.

        A user with more hard edges gets a random ``num_hard_sample`` of them.

        Returns:
            ``(item rows [H], pairs [H, 2])``: pair ``(r, s)`` is slot ``s`` of row ``r``'s
            hard negatives, grouped by row.

        """
        edges = self.hard_edges
        if edges is None:
            return super().sample_hard_negatives(rb, rng)
        users = edges.user_index(self._user_column(rb))
        degree = edges.degree(users)
        take = np.minimum(degree, self.num_hard_sample)
        starts = edges.offsets[np.maximum(users, 0)]
        rows = np.repeat(np.arange(len(users)), take)
        slots = np.arange(rows.size) - np.repeat(np.cumsum(take) - take, take)
        picks = np.repeat(starts, take) + slots
        for row in np.flatnonzero(degree > self.num_hard_sample):
            chosen = rng.choice(degree[row], self.num_hard_sample, replace=False)
            picks[rows == row] = starts[row] + np.sort(chosen)
        pairs = np.stack([rows, slots], axis=1).astype(np.int64).reshape(-1, 2)
        return edges.items[picks].astype(np.int64), pairs


def edge_sampler(
    kind: str, config: EdgeSamplerConfig, num_sample: int, delimiter: str
) -> EdgeSampler:
    """The edge sampler of ``data_config.<kind>``, drawing ``num_sample`` shared negatives.

    ``kind``: ``negative_sampler_v2``, ``hard_negative_sampler`` or
    ``hard_negative_sampler_v2``.

    Raises:
        DataError: an unknown kind, a bad table or field.

    """
    field = f"data_config.{kind}"
    if kind == "negative_sampler_v2":
        return EdgeSampler(config, num_sample, delimiter, field, exclude_positives=True)
    if kind in ("hard_negative_sampler", "hard_negative_sampler_v2"):
        if config.num_hard_sample <= 0:
            raise DataError(f"{field}.num_hard_sample must be > 0 (found 0)")
        return EdgeSampler(
            config,
            num_sample,
            delimiter,
            field,
            exclude_positives=kind.endswith("_v2"),
            num_hard_sample=config.num_hard_sample,
        )
    raise DataError(f"data_config.{kind} is not supported")
