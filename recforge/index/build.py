"""``recforge build-index``: an item index beside the item tower of a match-model export.

The item tower (``<export_dir>/item``, loaded with :class:`recforge.predictor.Predictor`)
embeds every row of the item table, read in batches (parquet or csv); the embeddings go into
a faiss index (:mod:`recforge.index.faiss_backend`) written with the item ids to
``<export_dir>/item_index`` (:mod:`recforge.index.files`).
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.datasets.errors import DataError
from recforge.datasets.readers import create_reader, expand_input_path
from recforge.errors import ExportError
from recforge.index.errors import RetrievalIndexError
from recforge.index.faiss_backend import IndexParams, create_index, require_faiss
from recforge.index.files import export_checksum, write_index_dir
from recforge.predictor import Predictor, resolve_export_dir
from recforge.protos import data_pb2
from recforge.utils import storage
from recforge.utils.layout import MODEL_INFO_FILE

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4096
CSV_SUFFIXES = (".csv", ".txt", ".tsv")
TOWERS = {"user": "user_emb", "item": "item_emb"}


def tower_dir(export_dir: str, side: str) -> str:
    """``<export_dir>/<side>``, checked to be a tower export with its embedding output.

    Raises:
        ExportError: the export has no such tower (not a match model) or the tower does not
            output ``<side>_emb``.

    """
    directory = os.path.join(export_dir, side)
    if not os.path.isfile(os.path.join(directory, MODEL_INFO_FILE)):
        raise ExportError(
            f"{export_dir}: expected the export of a match model (DSSM, DSSMV2) with its"
            f" {side} tower in {side}/, found no {side}/{MODEL_INFO_FILE}"
        )
    return directory


def embedding_output(predictor: Predictor, side: str) -> str:
    """The name of a tower's embedding output (``user_emb`` / ``item_emb``), checked.

    Raises:
        ExportError: the tower does not output it.

    """
    name = TOWERS[side]
    if name not in predictor.outputs:
        raise ExportError(
            f"{predictor.export_dir}: expected the {side} tower's output '{name}', found"
            f" {predictor.outputs}; re-run recforge export"
        )
    return name


def _sampler_item_id_field(export_dir: str) -> str:
    """``item_id_field`` of the export config's sampler, or ``""``."""
    from recforge.config import load_pipeline_config
    from recforge.utils.layout import EXPORT_CONFIG_FILE

    config = load_pipeline_config(os.path.join(export_dir, EXPORT_CONFIG_FILE))
    kind = config.data_config.WhichOneof("sampler")
    if kind is None:
        return ""
    return getattr(getattr(config.data_config, kind), "item_id_field", "")


def _ids_of(column: pa.Array, id_field: str, where: str) -> pa.Array:
    """The id column as int64 or string; nulls and other types are refused."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if column.null_count:
        raise DataError(f"{where}: item id column '{id_field}' has nulls")
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
        if pc.any(pc.match_substring_regex(column, r"[\r\n]")).as_py():
            raise DataError(
                f"{where}: expected item ids without line breaks in column '{id_field}'"
                " (the id mapping holds one id a line), found one"
            )
        return column
    raise DataError(
        f"{where}: expected integer or string item ids in column '{id_field}', found {column.type}"
    )


def _check_unique(ids: pa.Array, id_field: str, where: str) -> None:
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        first = repeated[0].as_py()
        raise DataError(
            f"{where}: expected each item once in column '{id_field}', found"
            f" {len(repeated)} repeated ids (e.g. {first['values']!r} {first['counts']} times)"
        )


def build_index(
    export_dir: str,
    item_input_path: str,
    item_id_field: Optional[str] = None,
    params: Optional[IndexParams] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Embeds the item table with the export's item tower and writes the item index.

    Args:
        export_dir: the export directory of a match model (``recforge export``); a URL is
            downloaded to a local copy, and the index built there is published to
            ``<export_dir>/item_index`` (:func:`recforge.utils.storage.publish_dir`).
        item_input_path: the item table: parquet or csv files (with a header line), globs,
            comma-separated; every row is one item with the columns the item tower reads.
        item_id_field: the item id column (default: ``item_id_field`` of the sampler in the
            export's ``pipeline.config``).
        params: the index type, metric and settings (default: exact inner product).
        batch_size: item rows embedded at once.

    Returns:
        A summary: the index directory, type, metric, dim, count and settings.

    Raises:
        RetrievalIndexError: faiss is missing (checked first), or a bad setting.
        ExportError: not the export of a match model.
        DataError: an unreadable item table, a missing column, null, repeated or
            non-integer / non-string item ids.

    """
    from recforge.utils.logging_util import setup_logging

    faiss = require_faiss("build-index")
    setup_logging()
    params = params or IndexParams()
    params.check()  # type, metric, ranges: before any work
    if batch_size < 1:
        raise RetrievalIndexError(f"--batch_size: expected at least 1, found {batch_size}")
    storage.check_paths({"--export_dir": export_dir, "--item_input_path": item_input_path})
    source = export_dir
    export_dir = resolve_export_dir(storage.fetch(export_dir, "export"))
    tower_dir(export_dir, "user")  # the retriever embeds users with it
    item = Predictor(tower_dir(export_dir, "item"), batch_size=batch_size)
    output = embedding_output(item, "item")
    id_field = item_id_field or _sampler_item_id_field(export_dir)
    if not id_field:
        raise RetrievalIndexError(
            "--item_id_field: expected the item id column, found none (the export's config"
            " has no sampler naming it)"
        )

    files = expand_input_path(item_input_path)
    data_config = copy.deepcopy(item.config.data_config)
    csv = files[0].endswith(CSV_SUFFIXES)
    data_config.dataset_type = data_pb2.CsvDataset if csv else data_pb2.ParquetDataset
    # a csv item table has a header line, as the negative sampler's item table
    data_config.with_header = True
    del data_config.input_fields[:]
    data_config.ClearField("input_fields_str")
    columns = list(dict.fromkeys([id_field, *item.input_columns]))
    reader = create_reader(
        data_config, item_input_path, batch_size=batch_size, selected_columns=columns
    )
    where = f"item table '{item_input_path}'"
    available = reader.column_names()
    if id_field not in available:
        raise DataError(
            f"{files[0]}: expected the item id column '{id_field}', found columns {available}"
        )
    try:
        item.parser.check_columns(available)
    except DataError as e:
        raise DataError(f"{files[0]}: {e}") from None

    logger.info("build-index: embedding the items of %s with %s", item_input_path, item.export_dir)
    ids, parts = [], []
    for rb in reader.iter_batches():
        ids.append(_ids_of(rb.column(id_field), id_field, where))
        parts.append(np.asarray(item.predict(rb, [output])[output], dtype=np.float32))
    if not ids:
        raise DataError(f"{where}: expected items, found no rows")
    id_types = {a.type for a in ids}
    if len(id_types) > 1:
        raise DataError(
            f"{where}: expected one type of item id in column '{id_field}', found"
            f" {sorted(map(str, id_types))} in different files"
        )
    all_ids = pa.concat_arrays(ids)
    _check_unique(all_ids, id_field, where)
    embeddings = np.ascontiguousarray(np.concatenate(parts))
    count, dim = embeddings.shape
    params = params.check(count)

    logger.info(
        "build-index: %s index (%s) over %d items of dim %d",
        params.index_type,
        params.metric,
        count,
        dim,
    )
    index = create_index(faiss, params, dim)
    if params.index_type == "ivf":
        index.train(embeddings)
    index.add(embeddings)
    info = {
        **params.to_json(),
        "dim": int(dim),
        "count": int(count),
        "item_table": item_input_path,
        "item_id_field": id_field,
        "id_type": "int64" if pa.types.is_integer(all_ids.type) else "string",
        "export_checksum": export_checksum(export_dir),
        "similarity": item.model_info.get("similarity"),
        "faiss_version": faiss.__version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    ids_np = all_ids.to_numpy(zero_copy_only=False)
    directory = write_index_dir(faiss, export_dir, index, ids_np, info)
    if storage.is_remote(source):
        url = storage.join(source.rstrip("/"), os.path.basename(directory))
        storage.publish_dir(directory, url)
        directory = url
    logger.info("build-index: wrote %s", directory)
    return {"index_dir": directory, **{k: info[k] for k in ("dim", "count")}, **params.to_json()}
