"""The batch prediction pipeline: ``recforge predict --scripted_model_path DIR ...``.

Streams parquet or CSV input (files, globs, comma-separated lists) through the feature
parsing of the export's ``pipeline.config`` in DataLoader workers, scores it with the
exported TorchScript model in the main process and writes parquet: the reserved columns
first, then the chosen outputs.

Output: a path ending in ``.parquet`` receives one file; any other path is a directory that
receives ``part-<slot>.parquet``, one per reading slot (DataLoader worker), each holding the
rows of the input files (or batches) that slot read. Files are written as ``*.tmp`` and
renamed when every row is scored; a rerun replaces the earlier parts (stale ``part-*`` files
of a run with more workers are removed). Every input row appears exactly once.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import get_worker_info

from recforge.datasets.dataset import RecDataset, create_dataloader
from recforge.datasets.errors import DataError
from recforge.datasets.readers import expand_input_path
from recforge.errors import PredictError
from recforge.predictor import Predictor, output_to_arrow
from recforge.protos import data_pb2
from recforge.utils.logging_util import setup_logging

logger = logging.getLogger(__name__)

PART_PATTERN = re.compile(r"^part-\d+\.parquet$")
_EXTENSION_TYPES = {
    ".parquet": "ParquetDataset",
    ".pq": "ParquetDataset",
    ".csv": "CsvDataset",
    ".tsv": "CsvDataset",
    ".txt": "CsvDataset",
}
LOG_EVERY_SECONDS = 10.0


class PredictDataset(RecDataset):
    """A predict-mode :class:`RecDataset` yielding ``(slot, parsed tensors, reserves)``.

    The flat tensor dict is what the exported model takes; ``slot`` names the reading slot
    (rank x worker) so that each slot's rows go to its own output file.
    """

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor], Optional[pa.RecordBatch]]]:
        """Yield this worker's batches, parsed."""
        info = get_worker_info()
        slot, num_slots = (info.id, info.num_workers) if info is not None else (0, 1)
        for rb in self.reader.iter_batches(slot, num_slots, 0):
            yield slot, self.parser.parse(rb), self.parser.select_reserves(rb)


def data_config_for(data_config: Any, input_path: str) -> Any:
    """The export's ``data_config`` with ``dataset_type`` set by the input files' extension.

    CSV input of a model trained on CSV keeps the training options (``with_header``,
    ``delimiter``, ``input_fields``); CSV input of a model trained on parquet needs a header.
    """
    config = data_pb2.DataConfig()
    config.CopyFrom(data_config)
    extension = os.path.splitext(expand_input_path(input_path)[0])[1].lower()
    if extension in _EXTENSION_TYPES:
        dataset_type = data_pb2.DatasetType.Value(_EXTENSION_TYPES[extension])
        if dataset_type == data_pb2.CsvDataset and config.dataset_type != data_pb2.CsvDataset:
            # trained on parquet: no CSV options to inherit, so expect a header line
            config.with_header = True
        config.dataset_type = dataset_type
    return config


def _split(columns: Optional[Sequence[str] | str]) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        columns = columns.split(",")
    return [c.strip() for c in columns if c.strip()]


class _PartWriter:
    """Parquet writers keyed by slot (directory output) or one writer (file output)."""

    def __init__(self, output_path: str) -> None:
        self.single = output_path.endswith(".parquet")
        self.output_path = output_path
        directory = os.path.dirname(output_path) if self.single else output_path
        os.makedirs(directory or ".", exist_ok=True)
        self._writers: dict[int, tuple[str, pq.ParquetWriter]] = {}

    def final_path(self, slot: int) -> str:
        if self.single:
            return self.output_path
        return os.path.join(self.output_path, f"part-{slot:05d}.parquet")

    def write(self, slot: int, rb: pa.RecordBatch) -> None:
        key = 0 if self.single else slot
        if key not in self._writers:
            tmp = self.final_path(key) + ".tmp"
            self._writers[key] = (tmp, pq.ParquetWriter(tmp, rb.schema))
        tmp, writer = self._writers[key]
        if rb.schema != writer.schema:
            try:
                rb = rb.cast(writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise DataError(
                    f"reserved columns {rb.schema} do not match earlier batches'"
                    f" {writer.schema} in {self.final_path(key)}: {e}"
                ) from None
        writer.write_batch(rb)

    def commit(self) -> list[str]:
        """Closes every writer, renames the ``.tmp`` files, removes stale parts."""
        written = []
        for key, (tmp, writer) in sorted(self._writers.items()):
            writer.close()
            final = self.final_path(key)
            os.replace(tmp, final)
            written.append(final)
        if not self.single:
            keep = {os.path.basename(p) for p in written}
            for name in os.listdir(self.output_path):
                if PART_PATTERN.match(name) and name not in keep:
                    os.remove(os.path.join(self.output_path, name))
        self._writers = {}
        return written

    def abort(self) -> None:
        """Closes and deletes the ``.tmp`` files (earlier outputs stay as they were)."""
        for tmp, writer in self._writers.values():
            try:
                writer.close()
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        self._writers = {}


def _output_batch(
    reserves: Optional[pa.RecordBatch],
    outputs: dict[str, torch.Tensor],
    names: list[str],
) -> pa.RecordBatch:
    arrays, fields = [], []
    if reserves is not None:
        arrays += list(reserves.columns)
        fields += list(reserves.schema.names)
    for name in names:
        arrays.append(output_to_arrow(outputs[name]))
        fields.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=fields)


def predict(
    scripted_model_path: str,
    predict_input_path: str,
    predict_output_path: str,
    reserved_columns: Optional[Sequence[str] | str] = None,
    output_columns: Optional[Sequence[str] | str] = None,
    num_workers: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> dict[str, Any]:
    """Scores every row of the input with an exported model and writes parquet.

    Args:
        scripted_model_path: the export directory (or its ``scripted_model.pt``).
        predict_input_path: parquet / CSV files, globs or comma-separated lists; the format
            follows the file extension (else the export's ``data_config.dataset_type``).
        predict_output_path: a ``.parquet`` file, or a directory for ``part-*.parquet``.
        reserved_columns: input columns copied to the output first (e.g. ``"id,label"``).
        output_columns: model outputs to write (default: all).
        num_workers: DataLoader workers parsing the input (default: ``data_config``'s).
        batch_size: rows per batch (default: ``eval_batch_size`` or ``batch_size``).

    Returns:
        ``{"rows", "seconds", "rows_per_second", "files"}``.

    Raises:
        ExportError: the export directory is missing or incomplete.
        PredictError: unknown output column, or an output named like a reserved column.
        DataError, FeatureError: missing input columns or unparsable values.

    """
    setup_logging()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PredictError(
            "recforge predict runs in one process (it would write every row once per process);"
            " run it without torchrun and use --num_workers to parse input in parallel"
        )
    torch.set_flush_denormal(True)  # as in training and evaluation (see utils/pipeline.py)
    predictor = Predictor(scripted_model_path)
    names = predictor.check_outputs(_split(output_columns))
    reserved = _split(reserved_columns)
    clash = sorted(set(reserved) & set(names))
    if clash:
        raise PredictError(
            f"reserved column(s) {clash} have the names of model outputs; choose other"
            " --output_columns or rename the columns"
        )
    if len(set(reserved)) != len(reserved):
        raise PredictError(f"--reserved_columns lists a column twice: {reserved}")
    data_config = data_config_for(predictor.config.data_config, predict_input_path)
    dataset = PredictDataset(
        data_config,
        predictor.features,
        predict_input_path,
        mode="predict",
        reserved_columns=reserved,
        batch_size=batch_size,
    )
    if num_workers is None:
        num_workers = int(data_config.num_workers)
    logger.info(
        "predicting %s with %s (%d worker(s), batch size %d) -> %s",
        predict_input_path,
        predictor.model_info.get("model_class"),
        num_workers,
        dataset.batch_size,
        predict_output_path,
    )
    logger.info("the export was made from checkpoint %s", predictor.model_info.get("checkpoint"))
    writer = _PartWriter(predict_output_path)
    rows, start = 0, time.perf_counter()
    last_log, last_rows = start, 0
    try:
        for slot, parsed, reserves in create_dataloader(dataset, num_workers):
            outputs = predictor.score(parsed)
            writer.write(slot, _output_batch(reserves, outputs, names))
            rows += len(outputs[names[0]])
            now = time.perf_counter()
            if now - last_log >= LOG_EVERY_SECONDS:
                logger.info(
                    "predicted %d rows | %.0f rows/s", rows, (rows - last_rows) / (now - last_log)
                )
                last_log, last_rows = now, rows
        files = writer.commit()
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - start
    rate = rows / max(seconds, 1e-9)
    if rows == 0:
        logger.warning("the input %s holds no rows: nothing written", predict_input_path)
    logger.info(
        "predicted %d rows in %.1fs (%.0f rows/s) into %d file(s) under %s",
        rows,
        seconds,
        rate,
        len(files),
        predict_output_path,
    )
    return {"rows": rows, "seconds": seconds, "rows_per_second": rate, "files": files}
