"""Streaming readers: CSV and parquet files -> ``pyarrow.RecordBatch`` of exactly ``batch_size``.

Readers never hold a whole file in memory (CSV is parsed block by block, parquet row group by
row group), shard their input between ``num_slots`` consumers (distributed ranks x DataLoader
workers) so that every row is read once per epoch, and can shuffle files and rows per epoch.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recforge.datasets.errors import DataError, DataFileNotFoundError
from recforge.protos import data_pb2
from recforge.utils import storage

_GLOB_CHARS = re.compile(r"[*?\[]")
ODPS_SCHEME = "odps://"
#: what to do instead of reading MaxCompute tables (TorchEasyRec's OdpsDataset)
ODPS_ADVICE = (
    "MaxCompute (ODPS) is not available in recforge; export the tables to parquet and point the "
    "config at the files: python -m recforge.train_eval --pipeline_config_path CONFIG "
    "--train_input_path 'data/train/*.parquet' --eval_input_path 'data/eval/*.parquet' "
    '--edit_config_json \'{"data_config.dataset_type": "ParquetDataset"}\' (recforge train: '
    "the same three fields in --edit_config_json; recforge mock-data writes sample files)"
)


def check_not_odps(data_config: data_pb2.DataConfig, paths: dict[str, str]) -> None:
    """Refuse, before anything runs, a config that reads MaxCompute tables.

    Args:
        data_config: the ``DataConfig`` message.
        paths: field path -> input path, e.g. ``{"train_input_path": "odps://p/tables/t"}``.

    Raises:
        DataError: ``dataset_type: OdpsDataset`` or an ``odps://`` path; the message names
            the field and says how to use parquet files instead.

    """
    if data_config.dataset_type == data_pb2.OdpsDataset:
        raise DataError(
            "data_config.dataset_type: expected ParquetDataset or CsvDataset, found "
            f"OdpsDataset: {ODPS_ADVICE}"
        )
    for field, path in paths.items():
        if any(p.strip().startswith(ODPS_SCHEME) for p in (path or "").split(",")):
            raise DataError(
                f"{field}: expected parquet or csv files, found the MaxCompute table "
                f"'{path}': {ODPS_ADVICE}"
            )


#: with ``iter_batches(with_origin=True)``, each batch carries these two columns: the index of
#: the row's file in ``BaseReader.files`` and the row's 0-based position in that file (header
#: excluded), so that an error can name the file and row it comes from
ORIGIN_FILE = "__recforge_origin_file"
ORIGIN_ROW = "__recforge_origin_row"


def expand_input_path(input_path: str) -> list[str]:
    """Expand a comma-separated list of files, directories and glob patterns.

    Args:
        input_path: e.g. ``"data/train_*.parquet,extra.parquet"``. A directory stands for
            the files directly inside it (names starting with ``.`` or ``_`` are skipped).

    Returns:
        The files, each pattern's matches sorted, duplicates removed, order kept.

    Raises:
        DataFileNotFoundError: a pattern matched nothing or a path does not exist (the
            message names it).
        DataError: ``input_path`` is empty.

    """
    files: list[str] = []
    for part in (p.strip() for p in (input_path or "").split(",")):
        if not part:
            continue
        if part.startswith(ODPS_SCHEME):
            raise DataError(
                f"input path '{part}': expected parquet or csv files, found a MaxCompute "
                f"table: {ODPS_ADVICE}"
            )
        if _GLOB_CHARS.search(part):
            matches = storage.glob(part)
            if not matches:
                raise DataFileNotFoundError(f"input path pattern '{part}' matched no files")
        elif storage.isdir(part):
            matches = storage.files_in(part)
            if not matches:
                raise DataFileNotFoundError(f"input directory '{part}' holds no files")
        elif storage.isfile(part):
            matches = [part]
        else:
            raise DataFileNotFoundError(f"input file '{part}' not found")
        files.extend(matches)
    if not files:
        raise DataError(f"input path is empty: {input_path!r}")
    return list(dict.fromkeys(files))


def rebatch(batches: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of record batches of any size into batches of ``batch_size`` rows.

    Args:
        batches: input batches sharing one schema.
        batch_size: rows per output batch; only the last may be shorter.

    Yields:
        ``pa.RecordBatch`` with ``batch_size`` rows (the final one possibly fewer).

    """
    pending: list[pa.RecordBatch] = []
    count = 0
    for rb in batches:
        if rb.num_rows == 0:
            continue
        pending.append(rb)
        count += rb.num_rows
        if count < batch_size:
            continue
        merged = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        start = 0
        while count - start >= batch_size:
            yield merged.slice(start, batch_size)
            start += batch_size
        rest = merged.slice(start)
        pending = [rest] if rest.num_rows else []
        count = rest.num_rows
    if count:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def shuffle_rows(
    batches: Iterable[pa.RecordBatch], buffer_batches: int, rng: np.random.Generator
) -> Iterator[pa.RecordBatch]:
    """Shuffle rows within consecutive blocks of ``buffer_batches`` batches.

    Args:
        batches: input batches (all of one size except possibly the last).
        buffer_batches: how many batches are pooled and shuffled together.
        rng: the random generator.

    Yields:
        Batches of the same sizes as the input, rows permuted within each pool.

    """
    pool: list[pa.RecordBatch] = []

    def emit() -> Iterator[pa.RecordBatch]:
        sizes = [rb.num_rows for rb in pool]
        merged = pa.concat_batches(pool) if len(pool) > 1 else pool[0]
        merged = merged.take(pa.array(rng.permutation(merged.num_rows)))
        start = 0
        for size in sizes:
            yield merged.slice(start, size)
            start += size

    for rb in batches:
        pool.append(rb)
        if len(pool) >= max(buffer_batches, 1):
            yield from emit()
            pool = []
    if pool:
        yield from emit()


def slot_rows(
    total: int, num_slots: int, batch_size: int, drop_remainder: bool = False
) -> tuple[list[int], Optional[int]]:
    """Split ``total`` rows into ``num_slots`` contiguous shares of equal batch counts.

    Distributed ranks step in lock-step (every rank trains the same number of batches), so a
    rank with one batch more than the others would have it dropped. The shares differ by at
    most one row (as TorchEasyRec's row slicing); when that would give some slots one more
    batch of a single row, that row joins the slot's last batch instead (``batch_size + 1``
    rows), so every slot yields the same number of batches and every row is read.

    Args:
        total: rows in the input.
        num_slots: consumers (ranks x DataLoader workers).
        batch_size: rows per batch.
        drop_remainder: give each slot only full batches (the rest is left out).

    Returns:
        ``(rows of each slot, batches of each slot)``; the batch count is ``None`` when the
        slots cannot get the same count (fewer rows than slots).

    """
    if drop_remainder:
        per_slot = total // (num_slots * batch_size)
        return [per_slot * batch_size] * num_slots, per_slot
    share, extra = divmod(total, num_slots)
    rows = [share + 1] * extra + [share] * (num_slots - extra)
    if share == 0:
        return rows, None if extra else 0
    if extra and share % batch_size == 0:
        return rows, share // batch_size  # the extra row joins the last batch
    return rows, -(-share // batch_size)


def _at_most(batches: Iterator[pa.RecordBatch], count: int) -> Iterator[pa.RecordBatch]:
    """Yield ``count`` batches: the input's first ``count - 1``, then all the rest as one."""
    rest: list[pa.RecordBatch] = []
    for i, rb in enumerate(batches):
        if i < count - 1:
            yield rb
        else:
            rest.append(rb)
    if rest:
        yield rest[0] if len(rest) == 1 else pa.concat_batches(rest)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def parquet_problem(path: str, error: Exception) -> str:
    """Why ``path`` cannot be read as parquet: what was expected and what was found."""
    try:
        with storage.open_file(path, "rb") as f:
            head = f.read(256)
            size = len(head)
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"
    if size == 0:
        return "expected a parquet file, found an empty file (0 bytes)"
    if not head.startswith(b"PAR1"):
        kind = "text" if _looks_like_text(head) else "data"
        hint = " (a CSV file? set data_config.dataset_type: CsvDataset)" if kind == "text" else ""
        return f"expected a parquet file, found {kind} without parquet's PAR1 header{hint}"
    return f"expected a parquet file, found a damaged one ({error})"


class BaseReader(abc.ABC):
    """Read files as record batches of exactly ``batch_size`` rows, sharded and shuffled.

    Sharding: the input (its files in this epoch's order, one after the other) is cut into
    ``num_slots`` contiguous row ranges, one per consumer ``slot`` (rank x DataLoader worker),
    as :func:`slot_rows` says: every slot reads the same number of batches and every row is
    read once per epoch. With one slot nothing is counted; with more, the rows of each file
    are counted once (parquet: from its footer; CSV: one pass over the file).

    Args:
        input_path: comma-separated files, directories and/or glob patterns.
        batch_size: rows per batch.
        selected_columns: columns to read (``None``: all). Columns a file lacks are left out
            (the ``DataParser`` reports them with the feature that needs them).
        data_config: the ``DataConfig`` message (CSV options, ``shuffle_buffer_size``, label
            and sample-weight columns); ``None`` uses the defaults.
        drop_remainder: drop each slot's last, short batch.
        shuffle: shuffle file order (seeded by ``seed + epoch``) and rows within pools of
            ``data_config.shuffle_buffer_size`` batches.
        seed: the shuffle seed.

    """

    def __init__(
        self,
        input_path: str,
        batch_size: int,
        selected_columns: Optional[list[str]] = None,
        data_config: Optional[data_pb2.DataConfig] = None,
        drop_remainder: bool = False,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise DataError(f"batch_size must be > 0, found {batch_size}")
        if data_config is None:
            data_config = data_pb2.DataConfig()
        self.input_path = input_path
        self.files = expand_input_path(input_path)
        self.batch_size = int(batch_size)
        self.selected_columns = None if selected_columns is None else list(selected_columns)
        self.data_config = data_config
        self.drop_remainder = drop_remainder
        self.shuffle = shuffle
        self.seed = int(seed)
        self._row_counts: Optional[dict[str, int]] = None

    @abc.abstractmethod
    def _iter_file(
        self, path: str, start: int = 0, stop: Optional[int] = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield the selected columns of rows ``[start, stop)`` of one file, in any sizes."""

    @abc.abstractmethod
    def _count_rows(self, path: str) -> int:
        """Return the number of rows of one file."""

    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """Return the (selected columns') schema, read from the first file."""

    @abc.abstractmethod
    def column_names(self) -> list[str]:
        """Return every column name of the first file (selected or not)."""

    def row_counts(self) -> dict[str, int]:
        """Rows of each input file (counted once, then cached)."""
        if self._row_counts is None:
            self._row_counts = {path: self._count_rows(path) for path in self.files}
        return self._row_counts

    def num_rows(self) -> int:
        """Rows of the whole input."""
        return sum(self.row_counts().values())

    def _columns_in(self, names: list[str]) -> Optional[list[str]]:
        if self.selected_columns is None:
            return None
        present = set(names)
        return [c for c in dict.fromkeys(self.selected_columns) if c in present]

    def _file_order(self, epoch: int) -> list[str]:
        if not self.shuffle:
            return list(self.files)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
        return [self.files[i] for i in order]

    def _pieces(self, files: list[str], start: int, stop: int) -> list[tuple[str, int, int]]:
        """``(file, first row, end row)`` of rows ``[start, stop)`` of ``files`` end to end."""
        counts = self.row_counts()
        pieces, offset = [], 0
        for path in files:
            rows = counts[path]
            lo, hi = max(start - offset, 0), min(stop - offset, rows)
            if lo < hi:
                pieces.append((path, lo, hi))
            offset += rows
        return pieces

    def _iter_files(
        self, pieces: list[tuple[str, int, Optional[int]]], with_origin: bool = False
    ) -> Iterator[pa.RecordBatch]:
        target: Optional[pa.Schema] = None
        target_path = ""
        index = {path: i for i, path in enumerate(self.files)}
        for path, start, stop in pieces:
            row = start
            for rb in self._iter_file(path, start, stop):
                if target is None:
                    target, target_path = rb.schema, path
                elif rb.schema != target:
                    rb = self._conform(rb, target, target_path, path)
                if with_origin:
                    n = rb.num_rows
                    rb = rb.append_column(
                        ORIGIN_FILE, pa.array(np.full(n, index[path], dtype=np.int32))
                    ).append_column(ORIGIN_ROW, pa.array(np.arange(row, row + n)))
                    row += n
                yield rb

    @staticmethod
    def _conform(rb: pa.RecordBatch, target: pa.Schema, first: str, path: str) -> pa.RecordBatch:
        """Cast a batch of ``path`` to the schema ``target`` of the file ``first``."""
        missing = [n for n in target.names if n not in rb.schema.names]
        if missing:
            raise DataError(
                f"{path}: expected the columns of {first}, found no column {missing[0]!r}"
            )
        rb = rb.select(target.names)
        for field in target:
            found = rb.schema.field(field.name).type
            if found == field.type:
                continue
            try:
                column = rb.column(field.name).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise DataError(
                    f"{path}: column {field.name!r}: expected {field.type} (its type in "
                    f"{first}), found {found}"
                ) from None
            rb = rb.set_column(rb.schema.get_field_index(field.name), field.name, column)
        return rb

    def iter_batches(
        self, slot: int = 0, num_slots: int = 1, epoch: int = 0, with_origin: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Stream this slot's share of the input as record batches.

        Args:
            slot: this consumer's index in ``[0, num_slots)``.
            num_slots: the number of consumers (world size x DataLoader workers).
            epoch: the epoch (changes the shuffle order).
            with_origin: add the :data:`ORIGIN_FILE` and :data:`ORIGIN_ROW` columns.

        Yields:
            ``pa.RecordBatch`` of ``batch_size`` rows (the last one may be shorter unless
            ``drop_remainder``, or one row longer, see :func:`slot_rows`).

        Raises:
            DataError: unreadable file or column types that change between files / blocks.

        """
        if not 0 <= slot < num_slots:
            raise DataError(f"slot {slot} out of range [0, {num_slots})")
        files = self._file_order(epoch)
        batches: Optional[int] = None
        if num_slots == 1:
            pieces: list[tuple[str, int, Optional[int]]] = [(f, 0, None) for f in files]
        else:
            rows, batches = slot_rows(
                self.num_rows(), num_slots, self.batch_size, self.drop_remainder
            )
            start = sum(rows[:slot])
            pieces = list(self._pieces(files, start, start + rows[slot]))
        stream: Iterator[pa.RecordBatch] = rebatch(
            self._iter_files(pieces, with_origin), self.batch_size
        )
        if batches:
            stream = _at_most(stream, batches)
        if self.drop_remainder:
            stream = (rb for rb in stream if rb.num_rows == self.batch_size)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, slot, 1])
            stream = shuffle_rows(stream, self.data_config.shuffle_buffer_size, rng)
        yield from stream

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(files={len(self.files)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle})"
        )


def _open_parquet(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(storage.arrow_source(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: {parquet_problem(path, err)}") from None


class ParquetReader(BaseReader):
    """Read parquet files row group by row group (see :class:`BaseReader`)."""

    def _iter_file(
        self, path: str, start: int = 0, stop: Optional[int] = None
    ) -> Iterator[pa.RecordBatch]:
        parquet = _open_parquet(path)
        metadata = parquet.metadata
        stop = metadata.num_rows if stop is None else stop
        groups, offset, first = [], 0, None
        for g in range(metadata.num_row_groups):  # only the row groups that hold [start, stop)
            rows = metadata.row_group(g).num_rows
            if offset < stop and offset + rows > start:
                groups.append(g)
                first = offset if first is None else first
            offset += rows
        if not groups:
            return
        assert first is not None  # set with the first group kept
        skip, left = start - first, stop - start
        try:
            columns = self._columns_in(parquet.schema_arrow.names)
            for rb in parquet.iter_batches(self.batch_size, groups, columns=columns):
                if skip >= rb.num_rows:
                    skip -= rb.num_rows
                    continue
                rb = rb.slice(skip, left)
                skip, left = 0, left - rb.num_rows
                yield rb
                if left <= 0:
                    return
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: {parquet_problem(path, err)}") from None

    def _count_rows(self, path: str) -> int:
        return _open_parquet(path).metadata.num_rows

    def column_names(self) -> list[str]:
        """Return every column name of the first file."""
        return list(_open_parquet(self.files[0]).schema_arrow.names)

    def schema(self) -> pa.Schema:
        """Return the selected columns' schema of the first file."""
        schema = _open_parquet(self.files[0]).schema_arrow
        columns = self._columns_in(schema.names)
        return schema if columns is None else pa.schema([schema.field(c) for c in columns])


_FIELD_TYPES = {
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "STRING": pa.string(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
}

#: CSV block size: type inference looks at the first block of the first file.
CSV_BLOCK_SIZE = 4 << 20


def _line_of(path: str, text: str) -> str:
    """``":LINE"`` of the first line of ``path`` that reads ``text`` ("" when none does)."""
    try:
        with storage.open_file(path, "r", encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if line.rstrip("\r\n") == text:
                    return f":{number}"
    except OSError:
        pass
    return ""


class CsvReader(BaseReader):
    """Read CSV files block by block (see :class:`BaseReader`).

    Options come from ``data_config``: ``with_header``, ``delimiter`` and ``input_fields``
    (column names when there is no header; column types wherever ``input_type`` is set).
    Other column types are inferred by pyarrow from the first block of the first file and
    then fixed for every file; label and sample-weight columns are read as float32, columns
    that are all empty in that block as strings (so they never fail), and only empty cells
    are nulls (``"NA"`` or ``"null"`` stay strings).

    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        delimiter = self.data_config.delimiter
        if len(delimiter) != 1:
            raise DataError(f"data_config.delimiter must be one character, found {delimiter!r}")
        self._column_names: Optional[list[str]] = None
        self._column_types: Optional[dict[str, pa.DataType]] = None

    def _read_options(self) -> pacsv.ReadOptions:
        cfg = self.data_config
        names = [f.input_name for f in cfg.input_fields]
        if cfg.with_header or not names:
            return pacsv.ReadOptions(
                block_size=CSV_BLOCK_SIZE, autogenerate_column_names=not cfg.with_header
            )
        return pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE, column_names=names)

    def _convert_options(
        self, types: dict[str, pa.DataType], include: Optional[list[str]]
    ) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(
            column_types=types,
            include_columns=include,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )

    def _resolve(self) -> tuple[list[str], dict[str, pa.DataType]]:
        """Fix column names and types once, from the first block of the first file."""
        if self._column_types is not None and self._column_names is not None:
            return self._column_names, self._column_types
        cfg = self.data_config
        types: dict[str, pa.DataType] = {}
        for name in chain(cfg.label_fields, cfg.sample_weight_fields):
            types[name] = pa.float32()
        for field in cfg.input_fields:
            if field.HasField("input_type"):
                types[field.input_name] = _FIELD_TYPES[data_pb2.FieldType.Name(field.input_type)]
        path = self.files[0]
        reader = self._open(path, types, None)
        try:
            schema = reader.schema
        finally:
            reader.close()
        self._check_unique_names(path, list(schema.names))
        for field in schema:
            if pa.types.is_null(field.type):
                types[field.name] = pa.string()
            elif field.name not in types:
                types[field.name] = field.type
        self._column_names, self._column_types = list(schema.names), types
        return self._column_names, types

    def _check_unique_names(self, path: str, names: list[str]) -> None:
        """Refuse a header (or ``input_fields``) naming one column twice."""
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name not in seen:
                seen[name] = i
                continue
            if self.data_config.with_header:
                where = f"{path}:1: column {name!r}"
                fix = "every column of the header needs its own name"
            else:
                where = f"data_config.input_fields[{i}]: column {name!r}"
                fix = "every input_fields entry needs its own input_name"
            raise DataError(
                f"{where}: expected unique column names, found {name!r} twice (columns "
                f"{seen[name] + 1} and {i + 1}); {fix}"
            )

    def _open(
        self, path: str, types: dict[str, pa.DataType], include: Optional[list[str]]
    ) -> pacsv.CSVStreamingReader:
        try:
            return pacsv.open_csv(
                storage.arrow_source(path),
                read_options=self._read_options(),
                parse_options=pacsv.ParseOptions(delimiter=self.data_config.delimiter),
                convert_options=self._convert_options(types, include),
            )
        except pa.ArrowInvalid as err:
            raise self._csv_error(path, err) from err
        except OSError as err:
            raise DataError(f"{path}: cannot read the file: {err}") from err

    def _csv_error(self, path: str, err: Exception) -> DataError:
        message = str(err).strip().replace("\n", " ")
        if not message or message.startswith("Empty CSV file"):
            header = "a header line" if self.data_config.with_header else "rows"
            return DataError(f"{path}: expected {header}, found an empty file")
        try:
            with storage.open_file(path, "rb") as f:
                is_parquet = f.read(4) == b"PAR1"
        except OSError:
            is_parquet = False
        if is_parquet:
            return DataError(
                f"{path}: expected a CSV file, found a parquet file (set "
                "data_config.dataset_type: ParquetDataset)"
            )
        message = "".join(c if c.isprintable() else "?" for c in message)[:500]
        columns = re.search(r"Expected (\d+) columns, got (\d+): (.*)", message)
        if columns:
            expected, found, text = columns.groups()
            return DataError(
                f"{path}{_line_of(path, text)}: expected {expected} columns, found {found}: "
                f"{text!r}"
            )
        match = re.search(r"CSV column #(\d+)", message)
        if match and self._column_names and int(match.group(1)) < len(self._column_names):
            message = f"column '{self._column_names[int(match.group(1))]}': {message}"
        if "conversion error" not in message:
            return DataError(f"{path}: {message}")
        return DataError(
            f"{path}: {message}. Column types are inferred from the first block of "
            "the first file; set data_config.input_fields (input_name, input_type) for columns "
            "whose type changes later."
        )

    def _stream(self, path: str, columns: Optional[list[str]]) -> Iterator[pa.RecordBatch]:
        reader = self._open(path, self._resolve()[1], columns)
        try:
            while True:
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as err:
                    raise self._csv_error(path, err) from err
                yield rb
        finally:
            reader.close()

    def _iter_file(
        self, path: str, start: int = 0, stop: Optional[int] = None
    ) -> Iterator[pa.RecordBatch]:
        offset = 0
        for rb in self._stream(path, self._columns_in(self._resolve()[0])):
            lo, hi = max(start - offset, 0), rb.num_rows if stop is None else stop - offset
            offset += rb.num_rows
            if lo < min(hi, rb.num_rows):
                yield rb.slice(lo, hi - lo)
            if stop is not None and offset >= stop:
                return

    def _count_rows(self, path: str) -> int:
        first = self._resolve()[0][:1]  # one column is enough to count rows
        return sum(rb.num_rows for rb in self._stream(path, first))

    def column_names(self) -> list[str]:
        """Return every column name (from the header or ``input_fields``)."""
        return list(self._resolve()[0])

    def schema(self) -> pa.Schema:
        """Return the selected columns' schema (names from the header or ``input_fields``)."""
        names, types = self._resolve()
        columns = self._columns_in(names) or names
        return pa.schema([pa.field(c, types[c]) for c in columns])


#: ``DataConfig.dataset_type`` enum name -> reader class.
READER_CLASSES: dict[str, type[BaseReader]] = {
    "ParquetDataset": ParquetReader,
    "CsvDataset": CsvReader,
}


def create_reader(data_config: data_pb2.DataConfig, input_path: str, **kwargs: Any) -> BaseReader:
    """Build the reader for ``data_config.dataset_type``.

    Args:
        data_config: the ``DataConfig`` message.
        input_path: comma-separated files / globs.
        **kwargs: the other :class:`BaseReader` arguments (``batch_size`` required).

    Returns:
        A :class:`ParquetReader` or :class:`CsvReader`.

    Raises:
        DataError: unsupported dataset type (``OdpsDataset``: says how to use parquet instead).

    """
    name = data_pb2.DatasetType.Name(data_config.dataset_type)
    check_not_odps(data_config, {})
    if name not in READER_CLASSES:
        raise DataError(
            f"data_config.dataset_type {name} is not supported; expected one of "
            f"{sorted(READER_CLASSES)}"
        )
    return READER_CLASSES[name](input_path, data_config=data_config, **kwargs)
