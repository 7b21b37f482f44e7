"""Streaming readers: CSV and parquet files -> ``pyarrow.RecordBatch`` of exactly ``batch_size``.

Readers never hold a whole file in memory (CSV is parsed block by block, parquet row group by
row group), shard their input between ``num_slots`` consumers (distributed ranks x DataLoader
workers) and can shuffle files and rows per epoch.
"""

from __future__ import annotations

import abc
import glob
import os
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


def check_not_odps(data_config: Any, paths: dict[str, str]) -> None:
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
            matches = sorted(p for p in glob.glob(part) if os.path.isfile(p))
            if not matches:
                raise DataFileNotFoundError(f"input path pattern '{part}' matched no files")
        elif os.path.isdir(part):
            matches = sorted(
                os.path.join(part, name)
                for name in os.listdir(part)
                if not name.startswith((".", "_")) and os.path.isfile(os.path.join(part, name))
            )
            if not matches:
                raise DataFileNotFoundError(f"input directory '{part}' holds no files")
        elif os.path.isfile(part):
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


class BaseReader(abc.ABC):
    """Read files as record batches of exactly ``batch_size`` rows, sharded and shuffled.

    Sharding: the consumer ``slot`` of ``num_slots`` (rank x DataLoader worker) reads file
    ``i`` when ``i % num_slots == slot`` if there are at least ``num_slots`` files; otherwise
    every slot reads all files and keeps batch ``b`` when ``b % num_slots == slot``. Either
    way the slots see disjoint rows whose union is the whole input.

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
        data_config: Any = None,
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

    @abc.abstractmethod
    def _iter_file(self, path: str) -> Iterator[pa.RecordBatch]:
        """Yield the selected columns of one file as record batches of any size."""

    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """Return the (selected columns') schema, read from the first file."""

    @abc.abstractmethod
    def column_names(self) -> list[str]:
        """Return every column name of the first file (selected or not)."""

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

    def _iter_files(self, files: list[str]) -> Iterator[pa.RecordBatch]:
        target: Optional[pa.Schema] = None
        for path in files:
            for rb in self._iter_file(path):
                if target is None:
                    target = rb.schema
                elif rb.schema != target:
                    rb = self._conform(rb, target, path)
                yield rb

    @staticmethod
    def _conform(rb: pa.RecordBatch, target: pa.Schema, path: str) -> pa.RecordBatch:
        missing = [n for n in target.names if n not in rb.schema.names]
        if missing:
            raise DataError(f"file '{path}' lacks columns {missing} that earlier files have")
        rb = rb.select(target.names)
        try:
            return rb.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            raise DataError(
                f"file '{path}': column types {rb.schema} do not match earlier files' "
                f"{target}: {err}"
            ) from None

    def iter_batches(
        self, slot: int = 0, num_slots: int = 1, epoch: int = 0
    ) -> Iterator[pa.RecordBatch]:
        """Stream this slot's share of the input as record batches.

        Args:
            slot: this consumer's index in ``[0, num_slots)``.
            num_slots: the number of consumers (world size x DataLoader workers).
            epoch: the epoch (changes the shuffle order).

        Yields:
            ``pa.RecordBatch`` of ``batch_size`` rows (the last one may be shorter unless
            ``drop_remainder``).

        Raises:
            DataError: unreadable file or column types that change between files / blocks.

        """
        if not 0 <= slot < num_slots:
            raise DataError(f"slot {slot} out of range [0, {num_slots})")
        files = self._file_order(epoch)
        by_file = len(files) >= num_slots
        stream: Iterable[pa.RecordBatch] = rebatch(
            self._iter_files(files[slot::num_slots] if by_file else files), self.batch_size
        )
        if not by_file and num_slots > 1:
            stream = (rb for i, rb in enumerate(stream) if i % num_slots == slot)
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


class ParquetReader(BaseReader):
    """Read parquet files row group by row group (see :class:`BaseReader`)."""

    def _iter_file(self, path: str) -> Iterator[pa.RecordBatch]:
        try:
            parquet = pq.ParquetFile(path)
            columns = self._columns_in(parquet.schema_arrow.names)
            yield from parquet.iter_batches(batch_size=self.batch_size, columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"cannot read parquet file '{path}': {err}") from err

    def column_names(self) -> list[str]:
        """Return every column name of the first file."""
        return list(pq.read_schema(self.files[0]).names)

    def schema(self) -> pa.Schema:
        """Return the selected columns' schema of the first file."""
        schema = pq.read_schema(self.files[0])
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
        for field in schema:
            if pa.types.is_null(field.type):
                types[field.name] = pa.string()
            elif field.name not in types:
                types[field.name] = field.type
        self._column_names, self._column_types = list(schema.names), types
        return self._column_names, types

    def _open(
        self, path: str, types: dict[str, pa.DataType], include: Optional[list[str]]
    ) -> pacsv.CSVStreamingReader:
        try:
            return pacsv.open_csv(
                path,
                read_options=self._read_options(),
                parse_options=pacsv.ParseOptions(delimiter=self.data_config.delimiter),
                convert_options=self._convert_options(types, include),
            )
        except pa.ArrowInvalid as err:
            raise self._csv_error(path, err) from err
        except OSError as err:
            raise DataError(f"cannot read csv file '{path}': {err}") from err

    def _csv_error(self, path: str, err: Exception) -> DataError:
        message = str(err)
        match = re.search(r"CSV column #(\d+)", message)
        if match and self._column_names and int(match.group(1)) < len(self._column_names):
            message += f" (column '{self._column_names[int(match.group(1))]}')"
        return DataError(
            f"csv file '{path}': {message}. Column types are inferred from the first block of "
            "the first file; set data_config.input_fields (input_name, input_type) for columns "
            "whose type changes later."
        )

    def _iter_file(self, path: str) -> Iterator[pa.RecordBatch]:
        names, types = self._resolve()
        reader = self._open(path, types, self._columns_in(names))
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


def create_reader(data_config: Any, input_path: str, **kwargs: Any) -> BaseReader:
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
