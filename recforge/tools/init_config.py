"""``recforge init --data PATH``: a starter DeepFM config from a table's schema and statistics.

It reads the first rows of the data (parquet or CSV with a header) and makes every column but
the label a feature:

* strings, lists and integer columns with few distinct values (or named ``*id``): an
  ``id_feature`` whose ``hash_bucket_size`` is about twice the distinct count seen (strings
  holding ``|`` or ``;`` in most rows are multi-value: ``separator``, mean pooling);
* other numbers: a ``raw_feature`` bucketized at the deciles seen (``boundaries``), or left
  raw when the column has too few distinct values to cut;
* ``id_columns`` / ``raw_columns`` name patterns decide for many columns at once (wide data,
  e.g. ``C*`` and ``I*`` of Criteo's layout);
* other types (timestamps, binary, nested structs), and columns that look like other labels
  (``label*``), are left out, and listed.

The model is a DeepFM (wide, FM and deep groups) with binary cross-entropy and AUC; the
config is a starting point to edit, not a tuned model.
"""

from __future__ import annotations

import fnmatch
import math
import os
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.datasets.readers import create_reader, expand_input_path
from recforge.errors import DataError
from recforge.protos import data_pb2, model_pb2, pipeline_pb2
from recforge.utils import storage

#: label column names tried when ``--label`` is not given, in order
LABEL_NAMES = ("label", "click", "clk", "is_click", "target", "y")
#: integer columns with at most this many distinct values are ids
MAX_INT_CATEGORIES = 1000
EMBEDDING_DIM = 16
NUM_QUANTILES = 10
#: separators of multi-value string columns, tried in order
SEPARATORS = ("|", ";")


def bucket_size(distinct: int) -> int:
    """About twice ``distinct``, at least 10, rounded up to two significant digits.

    >>> bucket_size(1234), bucket_size(3), bucket_size(50)
    (2500, 10, 100)
    """
    n = max(10, 2 * distinct)
    scale = 10 ** max(len(str(n)) - 2, 0)
    return math.ceil(n / scale) * scale


def _boundaries(column: pa.ChunkedArray) -> list[float]:
    values = pc.drop_null(column.cast(pa.float64()))
    values = pc.filter(values, pc.is_finite(values))
    if len(values) == 0:
        return []
    qs = [i / NUM_QUANTILES for i in range(1, NUM_QUANTILES)]
    cuts = sorted({round(float(q), 6) for q in pc.quantile(values, q=qs).to_pylist()})
    return cuts if len(cuts) >= 2 else []


def _is_id(name: str, column: pa.ChunkedArray, distinct: int) -> bool:
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_dictionary(kind) or pa.types.is_boolean(kind):
        return True
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return True
    if pa.types.is_integer(kind):
        return distinct <= MAX_INT_CATEGORIES or name.lower().endswith("id")
    return False


def _separator(column: pa.ChunkedArray) -> str:
    """The separator of a multi-value string column ("a|b|c"): ``|`` or ``;`` in most rows."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return ""
    values = pc.drop_null(column)
    for sep in SEPARATORS:
        hits = pc.sum(pc.match_substring(values, sep)).as_py() or 0
        if len(values) and hits >= len(values) / 2:
            return sep
    return ""


def _distinct(column: pa.ChunkedArray, separator: str = "") -> int:
    if separator:
        column = pc.split_pattern(column, separator)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return int(pc.count_distinct(column).as_py())


def _read_sample(path: str, sample_rows: int) -> tuple[pa.Table, data_pb2.DataConfig]:
    files = expand_input_path(path)
    data_config = data_pb2.DataConfig()
    if files[0].lower().endswith((".csv", ".txt", ".csv.gz")):
        data_config.dataset_type = data_pb2.CsvDataset
        data_config.with_header = True
    else:
        data_config.dataset_type = data_pb2.ParquetDataset
    reader = create_reader(data_config, path, batch_size=sample_rows)
    batch = next(iter(reader.iter_batches()), None)
    if batch is None or batch.num_rows == 0:
        raise DataError(f"{path}: expected rows to take statistics from, found none")
    return pa.Table.from_batches([batch]), data_config


def _label_column(table: pa.Table, label: Optional[str], path: str) -> str:
    if label:
        if label not in table.column_names:
            raise DataError(
                f"{path}: expected the label column '{label}', found columns {table.column_names}"
            )
        return label
    for name in LABEL_NAMES:
        if name in table.column_names:
            return name
    raise DataError(
        f"{path}: expected a label column named one of {list(LABEL_NAMES)} or given with"
        f" --label, found columns {table.column_names}"
    )


def _matches(name: str, patterns: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p.strip()) for p in patterns.split(",") if p.strip())


def starter_config(
    data_path: str,
    label: Optional[str] = None,
    sample_rows: int = 100_000,
    id_columns: str = "",
    raw_columns: str = "",
) -> tuple[pipeline_pb2.EasyRecConfig, dict[str, Any]]:
    """Builds a DeepFM config over the columns of ``data_path``.

    Args:
        data_path: parquet or CSV files (comma-separated, globs, a directory).
        label: the label column (default: the first of :data:`LABEL_NAMES` present).
        sample_rows: rows read for the statistics.
        id_columns: comma-separated name patterns (``C*,*_id``) of columns to make id
            features whatever their statistics (wide data: many columns of one kind).
        raw_columns: the same for raw features (numbers only); id patterns win.

    Returns:
        The config and a summary: ``{"rows_sampled", "label", "id_features",
        "raw_features", "skipped"}``.

    Raises:
        DataError: no data, no label column, or no column usable as a feature.

    """
    table, data_config = _read_sample(data_path, sample_rows)
    label = _label_column(table, label, data_path)
    config = pipeline_pb2.EasyRecConfig()
    config.train_input_path = data_path
    config.eval_input_path = data_path
    config.model_dir = "experiments/starter"
    data_config.label_fields.append(label)
    data_config.batch_size = 1024
    data_config.shuffle = True
    data_config.num_workers = 0
    data_config.fg_mode = data_pb2.FG_DAG  # the columns hold raw values: hash and bucketize
    config.data_config.CopyFrom(data_config)
    tc = config.train_config
    tc.sparse_optimizer.adagrad_optimizer.lr = 0.05
    tc.sparse_optimizer.constant_learning_rate.SetInParent()
    tc.dense_optimizer.adam_optimizer.lr = 0.001
    tc.dense_optimizer.constant_learning_rate.SetInParent()
    tc.num_epochs = 1
    summary: dict[str, Any] = {
        "rows_sampled": table.num_rows,
        "label": label,
        "id_features": [],
        "raw_features": [],
        "skipped": [],
    }
    embedded: list[str] = []  # features with an embedding: wide, fm and deep groups
    plain: list[str] = []  # raw values: deep group only
    for name in table.column_names:
        if name == label:
            continue
        if name.lower() in LABEL_NAMES or name.lower().startswith("label"):
            summary["skipped"].append(f"{name} (another label?)")
            continue
        column = table.column(name)
        kind = column.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        forced_id = _matches(name, id_columns)
        forced_raw = numeric and not forced_id and _matches(name, raw_columns)
        if not (numeric or forced_id or _is_id(name, column, 0)):
            summary["skipped"].append(f"{name} ({kind})")
            continue
        separator = _separator(column)
        distinct = _distinct(column, separator)
        fc = config.feature_configs.add()
        if forced_id or (not forced_raw and _is_id(name, column, distinct)):
            feature = fc.id_feature
            feature.feature_name = name
            feature.hash_bucket_size = bucket_size(distinct)
            feature.embedding_dim = EMBEDDING_DIM
            if separator:
                feature.separator = separator
            if separator or pa.types.is_list(kind) or pa.types.is_large_list(kind):
                feature.pooling = "mean"
            summary["id_features"].append(name)
            embedded.append(name)
            continue
        feature = fc.raw_feature
        feature.feature_name = name
        cuts = _boundaries(column)
        summary["raw_features"].append(name)
        if cuts:
            feature.boundaries.extend(cuts)
            feature.embedding_dim = EMBEDDING_DIM
            embedded.append(name)
        else:
            plain.append(name)
    if not embedded:
        raise DataError(
            f"{data_path}: expected id or numeric columns besides the label '{label}', found"
            f" {summary['skipped'] or 'none'}"
        )
    mc = config.model_config
    for group, names, kind in (
        ("wide", embedded, "WIDE"),
        ("fm", embedded, "DEEP"),
        ("deep", embedded + plain, "DEEP"),
    ):
        fg = mc.feature_groups.add(group_name=group, feature_names=names)
        fg.group_type = model_pb2.FeatureGroupType.Value(kind)
    mc.deepfm.deep.hidden_units.extend([128, 64])
    mc.deepfm.final.hidden_units.append(32)
    mc.metrics.add().auc.SetInParent()
    mc.losses.add().binary_cross_entropy.SetInParent()
    return config, summary


def write_starter_config(
    data_path: str,
    output_path: str,
    label: Optional[str] = None,
    sample_rows: int = 100_000,
    force: bool = False,
    id_columns: str = "",
    raw_columns: str = "",
) -> dict[str, Any]:
    """Writes :func:`starter_config` of ``data_path`` to ``output_path`` (atomically).

    Raises:
        ConfigError: ``output_path`` exists and ``force`` is not set.

    """
    # a URL output is written through a local file (recforge.cli.PathFlag): ask the store
    if storage.exists(storage.urls_in(output_path)) and not force:
        raise ConfigError(
            f"{output_path}: expected a new file, found an existing one (pass --force to"
            " replace it)"
        )
    config, summary = starter_config(data_path, label, sample_rows, id_columns, raw_columns)
    header = (
        f"# Starter config written by `recforge init --data {data_path}` from"
        f" {summary['rows_sampled']} rows.\n"
        "# Check the bucket sizes and boundaries, set eval_input_path to held-out data, then"
        f" run `recforge validate --config {output_path}`.\n"
    )
    tmp = output_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(header + text_format.MessageToString(config))
    os.replace(tmp, output_path)
    return {"config": output_path, **summary}
