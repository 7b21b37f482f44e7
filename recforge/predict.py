"""The batch prediction pipeline: ``recforge predict --scripted_model_path DIR ...``.

Streams parquet or CSV input (files, globs, comma-separated lists) through the feature
parsing of the export's ``pipeline.config`` in DataLoader workers, scores it with the
exported TorchScript model in the main process and writes parquet: the reserved columns
first, then the chosen outputs.

Output: a path ending in ``.parquet`` receives one file; any other path is a directory that
receives ``part-<slot>.parquet``, one per reading slot (DataLoader worker), each holding the
rows of the input files (or batches) that slot read. Files are written as ``*.tmp`` and
renamed when every row is scored; a rerun replaces the earlier parts (stale ``part-*`` files
of a run with more workers, and ``*.tmp`` files of a killed run, are removed). Every input
row appears exactly once; an input without rows gives one empty file with the output columns.

The input is never written: an output path equal to an input path, inside an input
directory, matched by an input pattern or holding an input file is refused. A full disk
stops the run with a one-line :class:`PredictError`, leaving earlier outputs as they were.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
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

from recforge.datasets.dataset import RecDataset, create_dataloader, split_origin
from recforge.datasets.errors import DataError
from recforge.datasets.jagged_labels import NUM_CANDIDATES
from recforge.datasets.readers import expand_input_path
from recforge.errors import PredictError, RecforgeError
from recforge.predictor import Predictor, output_arrow_type, output_to_arrow
from recforge.protos import data_pb2
from recforge.utils import storage
from recforge.utils.disk import disk_full_message, is_disk_full
from recforge.utils.logging_util import setup_logging

logger = logging.getLogger(__name__)

PART_PATTERN = re.compile(r"^part-\d+\.parquet$")
TMP_PART_PATTERN = re.compile(r"^part-\d+\.parquet\.tmp$")
_GLOB_CHARS = re.compile(r"[*?\[]")
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

    def __iter__(  # type: ignore[override]  # batches with their slot and raw rows
        self,
    ) -> Iterator[tuple[int, dict[str, torch.Tensor], Optional[pa.RecordBatch]]]:
        """Yield this worker's batches, parsed."""
        info = get_worker_info()
        slot, num_slots = (info.id, info.num_workers) if info is not None else (0, 1)
        for rb in self.reader.iter_batches(slot, num_slots, 0, with_origin=True):
            rb, origin = split_origin(rb)
            try:
                parsed = self.parser.parse(rb)
            except RecforgeError as err:  # name the input file and row
                raise self.locate(err, origin) from None
            yield slot, parsed, self.parser.select_reserves(rb)


def data_config_for(data_config: data_pb2.DataConfig, input_path: str) -> data_pb2.DataConfig:
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


def _inside(path: str, directory: str) -> bool:
    return path != directory and os.path.commonpath([path, directory]) == directory


def _pattern_matches(pattern: str, path: str) -> bool:
    """Whether ``glob.glob(pattern)`` would list ``path`` (both absolute)."""
    pattern_parts, path_parts = pattern.split(os.sep), path.split(os.sep)
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(name, part) for name, part in zip(path_parts, pattern_parts)
    )


def check_output_apart(input_path: str, output_path: str) -> None:
    """Refuses an output path that would write over, into or among the input.

    Args:
        input_path: files, directories and glob patterns, comma-separated.
        output_path: a ``.parquet`` file or a directory (see the module docstring).

    Raises:
        PredictError: the output is an input path, lies inside an input directory, would be
            matched by an input pattern, or is a directory holding an input file (the
            message names both paths).

    """
    single = output_path.endswith(".parquet")
    output = os.path.realpath(output_path)
    # what the output makes appear: the file, or part files in the directory
    shown = os.path.abspath(output_path)
    written = [shown] if single else [os.path.join(shown, "part-00000.parquet")]
    targets = (output, output + ".tmp") if single else (output,)

    def refuse(relation: str, part: str) -> PredictError:
        return PredictError(
            f"--predict_output_path '{output_path}': expected a path apart from the input,"
            f" found {relation} --predict_input_path '{part}'; predict never writes into its"
            " input"
        )

    if storage.is_remote(output_path):
        output = output_path.rstrip("/")
        for part in (p.strip().rstrip("/") for p in input_path.split(",")):
            if not _GLOB_CHARS.search(part) and (
                part == output or part.startswith(output + "/") or output.startswith(part + "/")
            ):
                raise PredictError(
                    f"--predict_output_path '{output_path}': expected a path apart from the"
                    f" input, found it overlaps --predict_input_path '{part}'; predict never"
                    " writes into its input"
                )
        return
    for part in (p.strip() for p in input_path.split(",")):
        if not part or "://" in part:
            continue
        if _GLOB_CHARS.search(part):
            if any(_pattern_matches(os.path.abspath(part), w) for w in written):
                raise refuse("output file(s) that would be read as input by", part)
            files = [p for p in glob.glob(part) if os.path.isfile(p)]
        elif os.path.isdir(part):
            directory = os.path.realpath(part)
            if output == directory:
                raise refuse("the input directory", part)
            if _inside(output, directory):
                raise refuse("a path inside the input directory", part)
            files = [os.path.join(part, name) for name in os.listdir(part)]
        else:
            files = [part]
        for file in files:
            resolved = os.path.realpath(file)
            if resolved in targets:
                raise refuse(f"the input file '{file}' of", part)
            if _inside(resolved, output):
                raise refuse(f"a directory holding the input file '{file}' of", part)


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """Turns a full disk while writing ``path`` into a one-line :class:`PredictError`."""
    try:
        yield
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise PredictError(
            f"{disk_full_message(path, e)} while writing predictions; free space or choose"
            " another --predict_output_path (outputs of earlier runs there are kept)"
        ) from None


class _PartWriter:
    """Parquet writers keyed by slot (directory output) or one writer (file output).

    Creating it removes ``*.tmp`` files a killed run left behind.
    """

    def __init__(self, output_path: str) -> None:
        self.single = output_path.endswith(".parquet")
        self.output_path = output_path
        directory = os.path.dirname(output_path) if self.single else output_path
        with _writing(output_path):
            os.makedirs(directory or ".", exist_ok=True)
        self._writers: dict[int, tuple[str, pq.ParquetWriter]] = {}
        if self.single:
            stale = [output_path + ".tmp"]
        else:
            stale = [
                os.path.join(output_path, name)
                for name in os.listdir(output_path)
                if TMP_PART_PATTERN.match(name)
            ]
        for path in stale:
            if os.path.isfile(path):
                os.remove(path)

    def final_path(self, slot: int) -> str:
        if self.single:
            return self.output_path
        return os.path.join(self.output_path, f"part-{slot:05d}.parquet")

    def _open(self, key: int, schema: pa.Schema) -> pq.ParquetWriter:
        tmp = self.final_path(key) + ".tmp"
        try:
            with _writing(self.final_path(key)):
                writer = pq.ParquetWriter(tmp, schema)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self._writers[key] = (tmp, writer)
        return writer

    def write(self, slot: int, rb: pa.RecordBatch) -> None:
        key = 0 if self.single else slot
        if key not in self._writers:
            self._open(key, rb.schema)
        tmp, writer = self._writers[key]
        if rb.schema != writer.schema:
            try:
                rb = rb.cast(writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise DataError(
                    f"reserved columns {rb.schema} do not match earlier batches'"
                    f" {writer.schema} in {self.final_path(key)}: {e}"
                ) from None
        with _writing(self.final_path(key)):
            writer.write_batch(rb)

    def commit(self, empty_schema: Optional[pa.Schema] = None) -> list[str]:
        """Closes every writer, renames the ``.tmp`` files, removes stale parts.

        Every file is complete on disk before the first rename, so a failure (a full disk)
        leaves the earlier outputs untouched.

        Args:
            empty_schema: the columns of the one empty file written when no row came
                (required then).

        """
        if not self._writers:
            if empty_schema is None:
                raise ValueError("no rows were written and no empty_schema was given")
            self._open(0, empty_schema)
        for key, (_, writer) in self._writers.items():
            with _writing(self.final_path(key)):
                writer.close()
        written = []
        for key, (tmp, _) in sorted(self._writers.items()):
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
            # the error being handled matters, not a second one from closing (a full disk)
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()
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
    # several candidates per row (dlrm_hstu): the outputs over all candidates become one
    # list per row
    counts = outputs.get(NUM_CANDIDATES)
    for name in names:
        values = outputs[name]
        if counts is not None and name != NUM_CANDIDATES:
            ends = counts.detach().cpu().to(torch.int32).cumsum(0, dtype=torch.int32)
            offsets = pa.array(torch.cat([ends.new_zeros(1), ends]).numpy())
            arrays.append(pa.ListArray.from_arrays(offsets, output_to_arrow(values)))
        else:
            arrays.append(output_to_arrow(values))
        fields.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=fields)


def _empty_schema(
    dataset: PredictDataset, predictor: Predictor, reserved: list[str], names: list[str]
) -> pa.Schema:
    """The output columns without any row: reserved ones as read, outputs per model_info."""
    read = dataset.reader.schema()
    fields = [read.field(name) for name in reserved]
    outputs = {o["name"]: o for o in predictor.model_info["outputs"]}
    fields += [pa.field(name, output_arrow_type(outputs[name])) for name in names]
    return pa.schema(fields)


def predict(
    scripted_model_path: str,
    predict_input_path: str,
    predict_output_path: str,
    reserved_columns: Optional[Sequence[str] | str] = None,
    output_columns: Optional[Sequence[str] | str] = None,
    num_workers: Optional[int] = None,
    batch_size: Optional[int] = None,
    raw_input: bool = False,
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
        raw_input: read raw columns although the model was trained on FG output (see
            :class:`~recforge.predictor.Predictor`).

    Returns:
        ``{"rows", "seconds", "rows_per_second", "files"}``.

    Raises:
        ExportError: the export directory is missing or incomplete.
        PredictError: unknown output column, an output named like a reserved column, a
            negative ``num_workers``, an output path overlapping the input (see
            :func:`check_output_apart`), or a full disk.
        DataError, FeatureError: missing input columns or unparsable values.

    """
    storage.check_url(scripted_model_path, "--scripted_model_path")
    storage.check_url(predict_output_path, "--predict_output_path")
    for part in predict_input_path.split(","):
        storage.check_url(part.strip(), "--predict_input_path")
    if storage.is_remote(predict_output_path):
        check_output_apart(predict_input_path, predict_output_path)
        return _predict_remote(
            scripted_model_path,
            predict_input_path,
            predict_output_path,
            reserved_columns=reserved_columns,
            output_columns=output_columns,
            num_workers=num_workers,
            batch_size=batch_size,
            raw_input=raw_input,
        )
    scripted_model_path = _fetch_export(scripted_model_path)
    setup_logging()
    if num_workers is not None and int(num_workers) < 0:
        raise PredictError(
            f"--num_workers: expected 0 (parse in the main process) or more worker processes,"
            f" found {num_workers}"
        )
    if batch_size is not None and int(batch_size) < 1:
        raise PredictError(f"--batch_size: expected 1 or more rows, found {batch_size}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PredictError(
            "recforge predict runs in one process (it would write every row once per process);"
            " run it without torchrun and use --num_workers to parse input in parallel"
        )
    check_output_apart(predict_input_path, predict_output_path)
    torch.set_flush_denormal(True)  # as in training and evaluation (see utils/pipeline.py)
    predictor = Predictor(scripted_model_path, raw_input=raw_input)
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
        empty = _empty_schema(dataset, predictor, reserved, names) if rows == 0 else None
        files = writer.commit(empty)
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - start
    rate = rows / max(seconds, 1e-9)
    if rows == 0:
        logger.warning(
            "the input %s holds no rows: wrote %s without rows", predict_input_path, files[0]
        )
    logger.info(
        "predicted %d rows in %.1fs (%.0f rows/s) into %d file(s) under %s",
        rows,
        seconds,
        rate,
        len(files),
        predict_output_path,
    )
    return {"rows": rows, "seconds": seconds, "rows_per_second": rate, "files": files}


def _fetch_export(scripted_model_path: str) -> str:
    """A local copy of a remote export directory (or of the directory of its model file)."""
    if not storage.is_remote(scripted_model_path):
        return scripted_model_path
    if scripted_model_path.endswith(".pt"):
        directory, name = scripted_model_path.rsplit("/", 1)
        return os.path.join(storage.fetch(directory, "export"), name)
    return storage.fetch(scripted_model_path, "export")


def _predict_remote(
    scripted_model_path: str, predict_input_path: str, predict_output_path: str, **kwargs: Any
) -> dict[str, Any]:
    """:func:`predict` to a URL: writes locally, then uploads each file (tmp name, then move).

    A directory output gets its ``part-*.parquet`` files, and loses part files of an earlier
    run that this run did not write, as a local directory does.
    """
    import shutil

    work = storage.local_temp_dir("predict")
    try:
        local = os.path.join(work, predict_output_path.rstrip("/").rsplit("/", 1)[-1])
        result = predict(scripted_model_path, predict_input_path, local, **kwargs)
        if predict_output_path.endswith(".parquet"):
            storage.publish_file(local, predict_output_path)
            files = [predict_output_path]
        else:
            files = []
            for path in result["files"]:
                url = storage.join(predict_output_path, os.path.basename(path))
                storage.publish_file(path, url)
                files.append(url)
            for name in storage.listdir(predict_output_path):
                url = storage.join(predict_output_path, name)
                if PART_PATTERN.match(name) and url not in files:
                    storage.remove(url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("uploaded the predictions to %s", predict_output_path)
    return {**result, "files": files}


if __name__ == "__main__":
    # ``python -m recforge.predict``: batch prediction with TorchEasyRec's flags, from a scripted
    # model (``--scripted_model_path``) or a checkpoint (``--pipeline_config_path
    # [--checkpoint_path]``); see :mod:`recforge.tzrec_commands`. Kept under the guard so that
    # importing this module (as ``recforge predict`` does) never reaches the command layer
    # above the CLI, which imports this module: an entry point only, like a ``__main__.py``.
    import sys

    from recforge.tzrec_commands import main

    sys.exit(main("predict"))
