"""Rewriting parquet predictions as CSV (``python -m recforge.predict --writer_type CsvWriter``).

The layout follows the parquet output of ``recforge predict``: a path ending in ``.csv`` is
one file; any other path is a directory of ``part-<worker>.csv`` files, one per parquet part.
CSV files have a header line, comma-separated values and quoted strings (pyarrow's CSV
writer, as TorchEasyRec's ``CsvWriter``).
"""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recforge.errors import PredictError

_PARQUET_PART = re.compile(r"^(part-\d+)\.parquet$")
_CSV_PART = re.compile(r"^part-\d+\.csv$")


def _check_flat(schema: pa.Schema, path: str) -> None:
    for column in schema:
        if pa.types.is_nested(column.type):
            raise PredictError(
                f"CsvWriter cannot write column '{column.name}' ({column.type}) of {path}: a CSV"
                " value holds one scalar; use --writer_type ParquetWriter or choose scalar"
                " --output_columns / --reserved_columns"
            )


def _pairs(source: str, output: str) -> list[tuple[str, str]]:
    """``(parquet file, csv file)`` pairs: one file, or the parts of a directory."""
    if not os.path.isdir(source):
        return [(source, output)] if os.path.isfile(source) else []
    pairs = []
    for name in sorted(os.listdir(source)):
        match = _PARQUET_PART.match(name)
        if match:
            pairs.append((os.path.join(source, name), os.path.join(output, f"{match[1]}.csv")))
    return pairs


def parquet_to_csv(source: str, output: str) -> list[str]:
    """Rewrites parquet predictions as CSV, streaming one record batch at a time.

    Every file is written as ``*.tmp`` and renamed once all are complete; in directory mode
    ``part-*.csv`` files of an earlier run that this one did not write are removed.

    Args:
        source: a parquet file, or a directory of ``part-*.parquet`` files.
        output: the CSV file (``source`` a file), or the directory to write the parts into.

    Returns:
        The CSV files written (none when ``source`` holds no predictions).

    Raises:
        PredictError: a column holds lists (a model output of shape ``[B, K]``, a list
            reserved column), which CSV cannot hold.

    """
    pairs = _pairs(source, output)
    for parquet_file, _ in pairs:
        _check_flat(pq.read_schema(parquet_file), parquet_file)
    single = not os.path.isdir(source)
    os.makedirs((os.path.dirname(output) if single else output) or ".", exist_ok=True)
    written: list[str] = []
    try:
        for parquet_file, csv_file in pairs:
            reader = pq.ParquetFile(parquet_file)
            with pacsv.CSVWriter(csv_file + ".tmp", reader.schema_arrow) as writer:
                for batch in reader.iter_batches():
                    writer.write_batch(batch)
            written.append(csv_file)
    except BaseException:
        for _, csv_file in pairs:
            if os.path.exists(csv_file + ".tmp"):
                os.remove(csv_file + ".tmp")
        raise
    for csv_file in written:
        os.replace(csv_file + ".tmp", csv_file)
    if not single:
        keep = {os.path.basename(f) for f in written}
        for name in os.listdir(output):
            if _CSV_PART.match(name) and name not in keep:
                os.remove(os.path.join(output, name))
    return written
