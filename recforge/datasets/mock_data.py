"""``recforge mock-data``: sample data in the exact format a config reads, before real data exists.

:func:`generate_mock_data` reads only the config's ``feature_configs``, ``data_config`` and the
label-related fields of ``model_config`` (so TorchEasyRec configs with ``OdpsDataset`` and
``odps://`` paths work too) and writes ``output_dir/part-00000.parquet, ...``: every feature's
input columns (see :mod:`recforge.datasets.mock_columns` for the formats per ``fg_mode``),
the labels (binary; classes ``0..num_class-1`` where a task has ``num_class > 1``, and domain
indices for PEPNet's ``domain_input_name``; floats for an ``l2_loss`` task), the sample
weights, and the columns jrc losses and grouped metrics group by. Labels carry a planted
signal: they depend on a few id columns, so a model can learn.

A ``negative_sampler``'s item table goes to ``output_dir/negative_sampler/items.parquet``:
one row per item (``item_id_field``, the ``attr_fields``, a popularity ``weight``); the
sample rows take their item columns from it, so item attributes agree between the two.
``negative_sampler_v2`` and ``hard_negative_sampler(_v2)`` get theirs in
``output_dir/<sampler>/``: ``items.parquet``, ``user.parquet`` (``id | weight``) and
``pos_edge.parquet`` / ``hard_neg_edge.parquet`` (``userid | itemid | weight``: the rows'
user-item pairs, and a few random items per user).

The same seed gives the same files. Files are written as ``*.tmp`` and renamed at the end; a
rerun into the same folder replaces the earlier ``part-*.parquet`` files.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recforge.config import ConfigError, load_pipeline_config
from recforge.datasets.mock_columns import (
    FG_DAG,
    FG_MODES,
    FG_NONE,
    FG_NORMAL,
    ColumnsPlan,
    IdDomain,
    MockFormat,
    plan_feature,
)
from recforge.features.utils import stable_hash
from recforge.protos import data_pb2, pipeline_pb2

if TYPE_CHECKING:
    from recforge.protos import feature_pb2

logger = logging.getLogger(__name__)

PART_NAME = "part-{:05d}.parquet"
PART_PATTERN = re.compile(r"^part-\d{5}\.parquet$")
ITEM_TABLE_PATH = os.path.join("negative_sampler", "items.parquet")
#: the samplers whose side tables mock-data writes, and their item table path field
ITEM_PATH_FIELDS = {
    "negative_sampler": "input_path",
    "negative_sampler_v2": "item_input_path",
    "hard_negative_sampler": "item_input_path",
    "hard_negative_sampler_v2": "item_input_path",
}
#: hard-negative edges per user in a mock hard-negative edge table
HARD_EDGES_PER_USER = 3
#: positive rate of binary labels (before the planted signal spreads it)
POSITIVE_RATE = 0.3
#: most id columns the labels depend on
SIGNAL_COLUMNS = 3


@dataclass
class LabelSpec:
    """What one label column holds.

    Attributes:
        name: the column.
        num_class: classes of a classification task (1: binary 0/1).
        regression: float targets (a task with an ``l2_loss``).

    """

    name: str
    num_class: int = 1
    regression: bool = False


def resolve_fg_mode(data_config: data_pb2.DataConfig) -> str:
    """The ``FgMode`` name a ``DataConfig`` asks for.

    As in TorchEasyRec, an explicitly set (deprecated) ``fg_encoded`` wins: ``true`` is
    ``FG_NONE``; ``false`` is raw input, ``FG_DAG`` with ``fg_threads > 0``, else ``FG_NORMAL``.
    Otherwise ``fg_mode`` (default ``FG_NONE``).
    """
    if data_config.HasField("fg_encoded"):
        if data_config.fg_encoded:
            return FG_NONE
        return FG_DAG if data_config.fg_threads > 0 else FG_NORMAL
    return data_pb2.FgMode.Name(data_config.fg_mode)


def _messages(message: Any) -> Iterator[tuple[int, Any]]:
    """Every set sub-message of ``message`` (depth first) with its index in a repeated field."""
    for fd, value in message.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        items = list(value) if fd.is_repeated else [value]
        for index, item in enumerate(items):
            yield index, item
            yield from _messages(item)


def _string_fields(message: Any, names: tuple[str, ...]) -> list[str]:
    """Values of the string fields called ``names`` anywhere in ``message``."""
    out = []
    for _, msg in [(0, message), *_messages(message)]:
        for name in names:
            if name in msg.DESCRIPTOR.fields_by_name and getattr(msg, name):
                out.append(getattr(msg, name))
    return list(dict.fromkeys(out))


def _apply_task(spec: LabelSpec, task: Any) -> None:
    fields = task.DESCRIPTOR.fields_by_name
    if "num_class" in fields and task.num_class > 1:
        spec.num_class = int(task.num_class)
    losses = task.losses if "losses" in fields else []
    if any(loss.WhichOneof("loss") == "l2_loss" for loss in losses):
        spec.regression = True


def label_specs(config: pipeline_pb2.EasyRecConfig) -> dict[str, LabelSpec]:
    """The label columns of a config and what each holds.

    ``data_config.label_fields`` are binary unless a task says otherwise: a task tower (any
    message with a ``label_name``, defaulting to the label at the tower's position) or, without
    towers, the model itself for the first label, with ``num_class > 1`` (classes) or an
    ``l2_loss`` (floats). ``task_space_indicator_label`` columns are binary labels too.
    """
    labels = list(config.data_config.label_fields)
    specs = {name: LabelSpec(name) for name in labels}
    model = config.model_config
    towers = [(i, m) for i, m in _messages(model) if "label_name" in m.DESCRIPTOR.fields_by_name]
    if not towers and labels:
        _apply_task(specs[labels[0]], model)
    for index, tower in towers:
        name = tower.label_name or (labels[index] if index < len(labels) else "")
        if name:
            _apply_task(specs.setdefault(name, LabelSpec(name)), tower)
    for name in _string_fields(model, ("task_space_indicator_label",)):
        specs.setdefault(name, LabelSpec(name))
    # PEPNet's domain_input_name: a label of domain indices 0..task_domain_num-1
    for _, message in _messages(model):
        fields = message.DESCRIPTOR.fields_by_name
        if "domain_input_name" in fields and message.domain_input_name:
            spec = specs.setdefault(message.domain_input_name, LabelSpec(message.domain_input_name))
            if message.task_domain_num > 1:
                spec.num_class = int(message.task_domain_num)
    return specs


def _hash_uniform(values: pa.Array, salt: int) -> np.ndarray:
    """A deterministic uniform number in ``[0, 1)`` per value (the same value, the same number)."""
    h = stable_hash(values) + np.uint64((salt * 0x9E3779B97F4A7C15) % (1 << 64))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _effects(columns: list[pa.Array], salt: int, n: int) -> np.ndarray:
    """Sum over ``columns`` of a per-value effect in ``[-2, 2)`` (0 for nulls), scaled.

    ``n`` rows; with no signal column (e.g. a config of sequences only) the effects are 0.
    """
    total = np.zeros(n)
    for k, column in enumerate(columns):
        effect = (_hash_uniform(column, salt * 31 + k) - 0.5) * 4.0
        total += np.where(column.is_valid().to_numpy(zero_copy_only=False), effect, 0.0)
    return total / max(np.sqrt(len(columns)), 1.0)


def _labels(
    spec: LabelSpec, signal: list[pa.Array], rng: np.random.Generator, salt: int, n: int
) -> pa.Array:
    if spec.regression:
        y = _effects(signal, salt, n) + rng.normal(0.0, 0.5, n)
        return pa.array(y.astype(np.float32))
    if spec.num_class > 1:
        scores = np.stack(
            [_effects(signal, salt * 97 + c, n) for c in range(spec.num_class)], axis=1
        ) + rng.gumbel(size=(n, spec.num_class))
        return pa.array(scores.argmax(axis=1).astype(np.int64))
    logit = np.log(POSITIVE_RATE / (1 - POSITIVE_RATE)) + 1.5 * _effects(signal, salt, n)
    return pa.array((rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64))


def _rng(seed: int, *keys: Union[str, int]) -> np.random.Generator:
    """A generator per (seed, name): adding a feature leaves the other columns unchanged."""
    return np.random.default_rng(
        [seed, *(zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys)]
    )


def _feature_key(feature_config: feature_pb2.FeatureConfig) -> str:
    """The feature's (or sequence's) name: its values depend on it, not on its position."""
    kind = feature_config.WhichOneof("feature")
    msg = getattr(feature_config, kind) if kind else None
    for name in ("feature_name", "sequence_name"):
        if msg is not None and name in msg.DESCRIPTOR.fields_by_name and getattr(msg, name):
            return str(getattr(msg, name))
    return ""


def _check_output_dir(output_dir: str) -> None:
    """Refuse a folder holding parquet files that mock-data did not write."""
    if not os.path.isdir(output_dir):
        if os.path.exists(output_dir):
            raise ConfigError(
                f"'{output_dir}' is a file; expected a folder to write the mock data into",
                field="--output_dir",
            )
        return
    foreign = sorted(
        name
        for name in os.listdir(output_dir)
        if name.endswith(".parquet") and not PART_PATTERN.match(name)
    )
    if foreign:
        raise ConfigError(
            f"'{output_dir}' holds other parquet files ({', '.join(foreign[:3])}); expected an "
            "empty folder or one mock-data wrote, so that its *.parquet are only mock data",
            field="--output_dir",
        )


def _write_tables(files: dict[str, pa.Table], output_dir: str) -> None:
    """Writes every table as ``path.tmp`` first, then renames them all; removes stale parts."""
    try:
        for path, table in files.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            pq.write_table(table, path + ".tmp")
    except BaseException:
        for path in files:
            if os.path.exists(path + ".tmp"):
                os.remove(path + ".tmp")
        raise
    for path in files:
        os.replace(path + ".tmp", path)
    keep = {os.path.basename(p) for p in files}
    for name in os.listdir(output_dir):
        if PART_PATTERN.match(name) and name not in keep:
            os.remove(os.path.join(output_dir, name))


def _item_table(
    config: Any,
    plans: dict[str, ColumnsPlan],
    seed: int,
    num_items: int,
) -> pa.Table:
    """The sampler's item table: distinct ids, the attribute columns, a popularity weight."""
    id_field = config.item_id_field
    plan = plans.get(id_field)
    if plan is not None and plan.domain is not None:
        ids = plan.domain.values
    else:
        ids = pa.array(np.arange(num_items, dtype=np.int64))
    columns = {id_field: ids}
    for attr in config.attr_fields:
        if attr in columns:
            continue
        if attr in plans:
            made = plans[attr].make(_rng(seed, plans[attr].feature, "items"), len(ids))
            columns[attr] = made[attr]
        else:
            domain = IdDomain(pa.array(np.arange(50, dtype=np.int64)))
            columns[attr] = domain.draw(_rng(seed, attr, "items"), len(ids))
    return pa.table(columns)


def _sampler_sizes(data_config: data_pb2.DataConfig) -> int:
    """The most negatives a batch draws (the item table needs at least that many items)."""
    kind = data_config.WhichOneof("sampler")
    if kind not in ITEM_PATH_FIELDS:
        return 0
    sampler = getattr(data_config, kind)
    return int(max(sampler.num_sample, sampler.num_eval_sample))


def _feature_columns(
    config: pipeline_pb2.EasyRecConfig,
    fmt: MockFormat,
    seed: int,
    num_rows: int,
    config_path: Optional[str],
) -> tuple[dict[str, ColumnsPlan], list[ColumnsPlan], dict[str, pa.Array]]:
    """``(column -> plan of the first feature reading it, plans in order, columns)``."""
    plans: dict[str, ColumnsPlan] = {}
    ordered: list[ColumnsPlan] = []
    for index, feature_config in enumerate(config.feature_configs):
        rng = _rng(seed, _feature_key(feature_config), "domain")
        try:
            feature_plans = plan_feature(feature_config, rng, fmt)
        except ConfigError as err:
            raise ConfigError(err.message, config_path, field=f"feature_configs[{index}]") from None
        for plan in feature_plans:
            if all(column in plans for column in plan.columns):
                continue
            ordered.append(plan)
            for column in plan.columns:
                plans.setdefault(column, plan)
    columns: dict[str, pa.Array] = {}
    for plan in ordered:
        made = plan.make(_rng(seed, plan.feature, ",".join(plan.columns)), num_rows)
        for column in plan.columns:
            columns.setdefault(column, made[column])
    return plans, ordered, columns


def _add_item_table(
    sampler: Any,
    kind: str,
    plans: dict[str, ColumnsPlan],
    columns: dict[str, pa.Array],
    seed: int,
    num_rows: int,
    num_items: int,
    config_path: Optional[str],
) -> pa.Table:
    """The negative sampler's item table; the rows' item columns are taken from it."""
    if not sampler.item_id_field:
        raise ConfigError(
            "item_id_field is empty; name the item id column",
            config_path,
            field=f"data_config.{kind}.item_id_field",
        )
    items = _item_table(sampler, plans, seed, num_items)
    rows = IdDomain(pa.array(np.arange(items.num_rows))).draw(_rng(seed, "item rows"), num_rows)
    for name in items.column_names:
        columns[name] = items.column(name).combine_chunks().take(rows)
    counts = np.bincount(rows.to_numpy(), minlength=items.num_rows)
    # TorchEasyRec's item tables call it "weight"; negative_sampler may name another column
    weight = getattr(sampler, "weight_field", "") or "weight"
    return items.append_column(weight, pa.array(counts.astype(np.float64) + 1.0))


def _edge_tables(
    sampler: Any,
    kind: str,
    items: pa.Table,
    columns: dict[str, pa.Array],
    seed: int,
    num_rows: int,
    config_path: Optional[str],
) -> dict[str, pa.Table]:
    """The user table and edge tables of an edge sampler, by their path field.

    The positive edges are the rows' (user, item) pairs; each user gets
    :data:`HARD_EDGES_PER_USER` random hard-negative items. A user id column no feature reads
    is added to the rows.
    """
    user_field = sampler.user_id_field
    if not user_field:
        raise ConfigError(
            "user_id_field is empty; name the user id column",
            config_path,
            field=f"data_config.{kind}.user_id_field",
        )
    if user_field not in columns:
        domain = IdDomain(pa.array(np.arange(max(num_rows // 8, 2), dtype=np.int64)))
        columns[user_field] = domain.draw(_rng(seed, user_field, "users"), num_rows)
    pairs = pa.table({"userid": columns[user_field], "itemid": columns[sampler.item_id_field]})
    pairs = pairs.filter(pc.is_valid(pairs.column("userid"))).group_by(["userid", "itemid"])
    pairs = pairs.aggregate([])
    users = pairs.column("userid").unique()
    tables = {
        "user_input_path": pa.table({"id": users, "weight": np.ones(len(users))}),
    }
    if kind != "hard_negative_sampler":
        tables["pos_edge_input_path"] = pairs.append_column("weight", pa.array(np.ones(len(pairs))))
    if kind.startswith("hard_"):
        rng = _rng(seed, "hard negative edges")
        per_user = min(HARD_EDGES_PER_USER, items.num_rows)
        picks = np.concatenate(
            [rng.choice(items.num_rows, per_user, replace=False) for _ in range(len(users))]
        )
        tables["hard_neg_edge_input_path"] = pa.table(
            {
                "userid": users.take(pa.array(np.repeat(np.arange(len(users)), per_user))),
                "itemid": items.column(sampler.item_id_field).take(pa.array(picks)),
                "weight": np.ones(len(picks)),
            }
        )
    return tables


def _add_targets(
    config: pipeline_pb2.EasyRecConfig,
    columns: dict[str, pa.Array],
    signal: list[pa.Array],
    seed: int,
    num_rows: int,
    all_positive: bool,
) -> None:
    """Labels, sample weights, and the session / grouping keys no feature reads."""
    for key in _string_fields(config.model_config, ("session_name", "grouping_key")):
        if key not in columns:  # ids shared by a few rows each
            domain = IdDomain(pa.array(np.arange(max(num_rows // 8, 2), dtype=np.int64)))
            columns[key] = domain.draw(_rng(seed, key), num_rows)
    for index, spec in enumerate(label_specs(config).values()):
        if all_positive and spec.num_class == 1 and not spec.regression:
            columns[spec.name] = pa.array(np.ones(num_rows, dtype=np.int64))
        else:
            rng = _rng(seed, spec.name)
            columns[spec.name] = _labels(spec, signal, rng, index + 1, num_rows)
    weights = list(config.data_config.sample_weight_fields)
    weights += _string_fields(config.model_config, ("sample_weight_name",))
    for name in dict.fromkeys(weights):
        columns[name] = pa.array(_rng(seed, name).uniform(0.5, 2.0, num_rows).astype(np.float32))


def generate_mock_data(
    config: Union[str, os.PathLike, pipeline_pb2.EasyRecConfig],
    output_dir: str,
    num_rows: int = 10000,
    num_files: int = 1,
    seed: int = 0,
    null_rate: float = 0.02,
    fg_mode: Optional[str] = None,
) -> dict[str, Any]:
    """Write sample data in the format a config reads.

    Args:
        config: a config file or a loaded ``EasyRecConfig``.
        output_dir: receives ``part-00000.parquet ...`` (and side tables in sub-folders).
        num_rows: sample rows, split evenly over ``num_files`` files.
        num_files: number of parquet files.
        seed: the random seed (same seed, same files).
        null_rate: share of null cells in feature columns (labels and weights have none).
        fg_mode: overrides the config's (``FG_NONE``, ``FG_NORMAL``, ``FG_DAG``,
            ``FG_BUCKETIZE``).

    Returns:
        ``{"output_dir", "files", "num_rows", "fg_mode", "columns", "item_table" and
        "num_items" (with a negative sampler), "edit_config_json"}``: the last holds the
        config edits (``--edit_config_json``) that point the config at the files.

    Raises:
        ConfigError: an unreadable config, a feature whose inputs cannot be generated (the
            message names it), bad arguments, or an output folder with other parquet files.

    """
    config_path: Optional[str] = None
    if not isinstance(config, pipeline_pb2.EasyRecConfig):
        config_path = os.fspath(config)
        config = load_pipeline_config(config_path)
    if num_rows < 1:
        raise ConfigError(f"expected at least 1 row, found {num_rows}", field="--num_rows")
    if not 1 <= num_files <= num_rows:
        raise ConfigError(
            f"expected 1 to num_rows ({num_rows}) files, found {num_files}", field="--num_files"
        )
    _check_output_dir(output_dir)
    data_config = config.data_config
    fg_mode = fg_mode or resolve_fg_mode(data_config)
    if fg_mode not in FG_MODES:
        raise ConfigError(
            f"expected one of {', '.join(FG_MODES)}, found {fg_mode!r}", field="fg_mode"
        )
    # the item table of a negative sampler needs at least num_sample distinct items
    cardinality = max(min(num_rows // 4, 100_000), 8, _sampler_sizes(data_config))
    fmt = MockFormat(fg_mode, data_config.fg_encoded_multival_sep, cardinality, null_rate)
    plans, ordered, columns = _feature_columns(config, fmt, seed, num_rows, config_path)

    result: dict[str, Any] = {}
    files: dict[str, pa.Table] = {}
    sampler = data_config.WhichOneof("sampler")
    side_paths: dict[str, str] = {}
    if sampler in ITEM_PATH_FIELDS:
        sampler_config = getattr(data_config, sampler)
        items = _add_item_table(
            sampler_config, sampler, plans, columns, seed, num_rows, cardinality, config_path
        )
        item_path = os.path.join(output_dir, sampler, "items.parquet")
        files[item_path] = items
        side_paths[ITEM_PATH_FIELDS[sampler]] = item_path
        result.update(item_table=item_path, num_items=items.num_rows)
        if sampler != "negative_sampler":
            tables = _edge_tables(
                sampler_config, sampler, items, columns, seed, num_rows, config_path
            )
            for field, side_table in tables.items():
                path = os.path.join(output_dir, sampler, field.replace("_input_path", ".parquet"))
                files[path] = side_table
                side_paths[field] = path
    elif sampler:
        result["note"] = f"data_config.{sampler}: its side tables are not generated"
    signal = [columns[p.columns[0]] for p in ordered if p.domain is not None][:SIGNAL_COLUMNS]
    # with a negative sampler every row is a positive interaction (the negatives get label 0)
    _add_targets(config, columns, signal, seed, num_rows, all_positive="item_table" in result)

    table = pa.table(columns)
    bounds = np.linspace(0, num_rows, num_files + 1).astype(int)
    parts = [os.path.join(output_dir, PART_NAME.format(i)) for i in range(num_files)]
    for i, path in enumerate(parts):
        files[path] = table.slice(bounds[i], bounds[i + 1] - bounds[i])
    os.makedirs(output_dir, exist_ok=True)
    _write_tables(files, output_dir)

    pattern = os.path.join(output_dir, "*.parquet")
    edits = {
        "train_input_path": pattern,
        "eval_input_path": pattern,
        "data_config.dataset_type": "ParquetDataset",
    }
    for field, path in side_paths.items():
        edits[f"data_config.{sampler}.{field}"] = path
    logger.info("wrote %d rows (%s) to %s", num_rows, fg_mode, output_dir)
    return {
        "output_dir": output_dir,
        "files": parts,
        "num_rows": num_rows,
        "fg_mode": fg_mode,
        "columns": table.column_names,
        **result,
        "edit_config_json": edits,
    }


__all__ = ["LabelSpec", "generate_mock_data", "label_specs", "resolve_fg_mode"]
