"""Value checks of a pipeline config: ranges and combinations its schema cannot express.

Each check reports ``(field path, message)`` through an ``add`` callback, so that
:func:`recforge.config.validation.validate_config` places every problem at its line.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from typing import Optional

from google.protobuf.message import Message

from recforge.config._schema import is_map
from recforge.config.export_precision import precision_problem
from recforge.protos import model_pb2, module_pb2, pipeline_pb2

#: reports one problem: ``add(field_path, message)``
Add = Callable[[str, str], None]

_MLP = module_pb2.MLP.DESCRIPTOR.full_name


def check_values(config: pipeline_pb2.EasyRecConfig, add: Add) -> None:
    """Run every value check on ``config``.

    Checks: optimizer learning rates are finite and > 0; ``num_epochs: 0`` comes with
    ``num_steps``; every set ``MLP`` has layers of width > 0, dropout ratios in [0, 1) and a
    known activation; metrics suit the ``num_class`` of their model or task tower, and every
    loss and metric can be built from its settings; ``vocab_list`` has no
    duplicates; ``sequence_delim`` is not empty; ``init_fn`` runs; the embedding tables fit
    in this machine's memory; ``embedding_l2_regularization`` is finite and >= 0; an HSTU
    model's ``kernel`` is one recforge knows; ``export_config``'s ``mlp_dtype`` and
    ``mixed_precision`` are known dtypes that agree.

    Args:
        config: the loaded config.
        add: called with ``(field path, message)`` for each problem.

    """
    if config.HasField("train_config"):
        _check_learning_rates(config.train_config, add)
        _check_epochs(config.train_config, add)
    if config.HasField("model_config"):
        for fld, mlp in _messages_of_type(config.model_config, "model_config", _MLP):
            _check_mlp(mlp, fld, add)
        _check_losses_and_metrics(config.model_config, add)
        _check_embedding_l2(config.model_config, add)
        _check_kernel(config.model_config, add)
    if config.HasField("export_config"):
        _check_export_precision(config.export_config, add)
    _check_feature_values(config, add)
    _check_table_memory(config, add)


# ---------------------------------------------------------------------- train_config
def _optimizers(tc: Message) -> Iterator[tuple[str, Message]]:
    """``(field path, optimizer message)`` of the sparse, dense and part optimizers."""
    for name in ("sparse_optimizer", "dense_optimizer"):
        holder = getattr(tc, name)
        kind = holder.WhichOneof("optimizer") if tc.HasField(name) else None
        if kind:
            yield f"train_config.{name}.{kind}", getattr(holder, kind)
    for i, part in enumerate(tc.dense_optimizer.part_optimizers):
        kind = part.WhichOneof("optimizer")
        if kind:
            yield f"train_config.dense_optimizer.part_optimizers[{i}].{kind}", getattr(part, kind)


def _check_learning_rates(tc: Message, add: Add) -> None:
    for fld, optimizer in _optimizers(tc):
        if "lr" not in optimizer.DESCRIPTOR.fields_by_name:
            continue
        lr = optimizer.lr
        if math.isnan(lr) or math.isinf(lr) or lr <= 0:
            hint = " (an lr of 0 trains nothing; trainable: false freezes a feature's table)"
            add(
                f"{fld}.lr",
                f"lr must be a finite number > 0, found {lr:g}{hint if lr == 0 else ''}",
            )


def _check_epochs(tc: Message, add: Add) -> None:
    if tc.HasField("num_epochs") and tc.num_epochs == 0 and not tc.num_steps:
        add(
            "train_config.num_epochs",
            "num_epochs: 0 without num_steps would train forever; set num_epochs >= 1, or "
            "num_steps to stop after that many steps",
        )


# ---------------------------------------------------------------------- model_config
def _messages_of_type(
    message: Message, prefix: str, full_name: str
) -> Iterator[tuple[str, Message]]:
    """Every set sub-message of type ``full_name`` under ``message``, with its field path."""
    for fd, value in message.ListFields():
        if fd.message_type is None or is_map(fd):
            continue
        items = list(enumerate(value)) if fd.is_repeated else [(None, value)]
        for i, item in items:
            fld = f"{prefix}.{fd.name}" + ("" if i is None else f"[{i}]")
            if fd.message_type.full_name == full_name:
                yield fld, item
            else:
                yield from _messages_of_type(item, fld, full_name)


def _check_mlp(mlp: Message, fld: str, add: Add) -> None:
    from recforge.modules.mlp import create_activation

    _try(lambda: create_activation(mlp.activation), f"{fld}.activation", add)
    units = list(mlp.hidden_units)
    if not units:
        add(
            f"{fld}.hidden_units",
            "an MLP needs at least one layer: set hidden_units (e.g. [64, 32]), or remove the "
            "block where it is optional",
        )
    for j, width in enumerate(units):
        if width == 0:
            add(f"{fld}.hidden_units[{j}]", f"layer widths must be > 0, found 0 in {units}")
            break
    ratios = list(mlp.dropout_ratio)
    if ratios and len(ratios) not in (1, len(units)):
        add(
            f"{fld}.dropout_ratio",
            f"expected one dropout_ratio, or one per layer ({len(units)}), found {len(ratios)}",
        )
    for j, ratio in enumerate(ratios):
        if not 0 <= ratio < 1:  # NaN fails too
            add(
                f"{fld}.dropout_ratio[{j}]",
                f"dropout_ratio must be in [0, 1) (the share of units dropped), found {ratio:g}",
            )


def _check_losses_and_metrics(mc: Message, add: Add) -> None:
    """Losses and metrics of the model and of each task tower can be built.

    Metrics must suit the ``num_class`` of their model or tower; each loss and metric is
    built once here, so that a value its module refuses (``label_smoothing: 1.5``) is
    reported at its field.
    """
    from recforge.loss import create_loss
    from recforge.metrics import create_metric, num_class_problem

    model = mc.WhichOneof("model")
    if model is None:
        return
    sub = getattr(mc, model)
    is_match = sub.DESCRIPTOR.file.name.endswith("match_model.proto")
    holders: list[tuple[str, Message, int]] = [("model_config", mc, mc.num_class)]
    for fd, value in sub.ListFields():
        if (
            fd.is_repeated
            and fd.message_type is not None
            and "num_class" in fd.message_type.fields_by_name
        ):
            for i, tower in enumerate(value):
                holders.append((f"model_config.{model}.{fd.name}[{i}]", tower, tower.num_class))
    for prefix, holder, num_class in holders:
        fields = holder.DESCRIPTOR.fields_by_name
        for i, entry in enumerate(getattr(holder, "losses", []) if "losses" in fields else []):
            kind = entry.WhichOneof("loss")
            if kind is not None:
                _try(functools.partial(create_loss, entry), f"{prefix}.losses[{i}].{kind}", add)
        if is_match:
            continue  # match models score each user's candidates, whatever num_class says
        for list_name in ("metrics", "train_metrics"):
            if list_name not in fields:
                continue
            for i, entry in enumerate(getattr(holder, list_name)):
                kind = entry.WhichOneof("metric")
                if kind is None:
                    continue
                fld = f"{prefix}.{list_name}[{i}].{kind}"
                problem = num_class_problem(entry, num_class)
                if problem:
                    add(fld, problem)
                elif list_name == "metrics":
                    _try(functools.partial(create_metric, entry, num_class), fld, add)


def _check_embedding_l2(mc: Message, add: Add) -> None:
    weight = mc.embedding_l2_regularization
    if not math.isfinite(weight) or weight < 0:
        add(
            "model_config.embedding_l2_regularization",
            f"embedding_l2_regularization must be a finite number >= 0, found {weight:g}",
        )


def _check_kernel(mc: Message, add: Add) -> None:
    from recforge.modules.gr.kernel import HSTU_MODELS, kernel_problem

    if mc.WhichOneof("model") in HSTU_MODELS and (problem := kernel_problem(mc.kernel)):
        add("model_config.kernel", problem)


def _check_export_precision(ec: Message, add: Add) -> None:
    if problem := precision_problem(ec):
        add(*problem)


def _try(build: Callable[[], object], fld: str, add: Add) -> None:
    """Build a module from its config once; a ``ValueError`` it raises is a problem at ``fld``."""
    try:
        build()
    except ValueError as e:
        add(fld, str(e))


# ---------------------------------------------------------------------- features
def _feature_messages(config: pipeline_pb2.EasyRecConfig) -> Iterator[tuple[str, Message]]:
    """``(field path, message)`` of every feature kind and of every sequence element."""
    for i, fc in enumerate(config.feature_configs):
        kind = fc.WhichOneof("feature")
        if kind is None:
            continue
        feature = getattr(fc, kind)
        yield f"feature_configs[{i}].{kind}", feature
        if kind == "sequence_feature":
            for j, element in enumerate(feature.features):
                element_kind = element.WhichOneof("feature")
                if element_kind:
                    fld = f"feature_configs[{i}].{kind}.features[{j}].{element_kind}"
                    yield fld, getattr(element, element_kind)


def _check_feature_values(config: pipeline_pb2.EasyRecConfig, add: Add) -> None:
    for fld, feature in _feature_messages(config):
        fields = feature.DESCRIPTOR.fields_by_name
        if "vocab_list" in fields:
            first: dict[str, int] = {}
            for j, value in enumerate(feature.vocab_list):
                if value in first:
                    add(
                        f"{fld}.vocab_list[{j}]",
                        f"vocab_list must not repeat a value: {value!r} is entry {first[value]} "
                        f"and entry {j}",
                    )
                    break
                first[value] = j
        if "sequence_delim" in fields and feature.HasField("sequence_delim"):
            if not feature.sequence_delim:
                add(
                    f"{fld}.sequence_delim",
                    "sequence_delim must not be empty (it splits a cell into the sequence's "
                    'elements; the default is ";")',
                )
        if "init_fn" in fields and feature.HasField("init_fn") and feature.init_fn:
            problem = _init_fn_problem(feature.init_fn)
            if problem:
                add(f"{fld}.init_fn", problem)


def _init_fn_problem(spec: str) -> Optional[str]:
    """Why the initialiser ``spec`` cannot initialise a table (None when it can)."""
    from recforge.features.base_feature import FeatureError, parse_init_fn

    try:
        parse_init_fn(spec)
    except FeatureError as e:
        return str(e).split(": ", 1)[-1]
    return None


# ---------------------------------------------------------------------- memory
_BYTES = {"FP16": 2, "BF16": 2}


def _table_rows(feature: Message) -> int:
    """Rows of the feature's table when set by a size field (the only way to ask for many)."""
    for name in ("hash_bucket_size", "num_buckets"):
        if name in feature.DESCRIPTOR.fields_by_name and feature.HasField(name):
            return int(getattr(feature, name))
    if _has_zch(feature):
        return int(feature.zch.zch_size)
    return 0


def _has_zch(feature: Message) -> bool:
    return "zch" in feature.DESCRIPTOR.fields_by_name and feature.HasField("zch")


def machine_memory() -> int:
    """Bytes of memory the embedding tables of this job may use, at most.

    The physical memory of this host (plus its GPUs' when CUDA is available) times the
    number of hosts of a torchrun job (``WORLD_SIZE / LOCAL_WORLD_SIZE``).
    """
    try:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
    import torch

    if torch.cuda.is_available():
        host += sum(
            torch.cuda.get_device_properties(i).total_memory
            for i in range(torch.cuda.device_count())
        )
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) or 1
    return host * max(world // local, 1)


def _size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num_bytes < 1024 or unit == "PiB":
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} PiB"


def _group_suffixes(config: pipeline_pb2.EasyRecConfig) -> dict[str, set[str]]:
    """Feature (as groups name it) -> ``embedding_name_suffix`` of each non-WIDE group reading it.

    Each suffix is a table of its own (``<embedding_name>_<suffix>``); a nested sequence group
    without a suffix takes its feature group's.
    """
    out: dict[str, set[str]] = {}
    for group in config.model_config.feature_groups:
        if group.group_type != model_pb2.WIDE:
            for name in group.feature_names:
                out.setdefault(name, set()).add(group.embedding_name_suffix)
        for seq_group in group.sequence_groups:
            suffix = seq_group.embedding_name_suffix or group.embedding_name_suffix
            for name in seq_group.feature_names:
                out.setdefault(name, set()).add(suffix)
    return out


def _check_table_memory(config: pipeline_pb2.EasyRecConfig, add: Add) -> None:
    """The embedding tables (weights alone) must fit in the machine's memory."""
    from recforge.features.sequence_feature import SEQUENCE_NAME_SEPARATOR

    suffixes = _group_suffixes(config)
    tables: dict[str, tuple[int, str, str]] = {}  # table -> (bytes, field, description)
    for fld, feature in _feature_messages(config):
        rows = _table_rows(feature)
        dim = getattr(feature, "embedding_dim", 0)
        if not rows or not dim:
            continue
        width = _BYTES.get(getattr(feature, "data_type", "FP32").upper(), 4)
        name = getattr(feature, "embedding_name", "") or f"{feature.feature_name}_emb"
        hashed = "hash_bucket_size" in feature.DESCRIPTOR.fields_by_name and feature.HasField(
            "hash_bucket_size"
        )
        size_field = "hash_bucket_size" if hashed else "num_buckets"
        if not hashed and _has_zch(feature):
            size_field = "zch.zch_size"
        what = f"{rows} rows x {dim} dims x {width} bytes"
        grouped = feature.feature_name
        if ".features[" in fld:  # a sequence element: groups name it <sequence>__<feature>
            index = int(fld.split("[", 1)[1].split("]", 1)[0])
            sequence = config.feature_configs[index].sequence_feature.sequence_name
            grouped = f"{sequence}{SEQUENCE_NAME_SEPARATOR}{feature.feature_name}"
        for suffix in sorted(suffixes.get(grouped, {""})):
            table = f"{name}_{suffix}" if suffix else name
            tables.setdefault(table, (rows * dim * width, f"{fld}.{size_field}", what))
    if not tables:
        return
    limit = machine_memory()
    total = sum(size for size, _, _ in tables.values())
    if not limit or total <= limit:
        return
    size, fld, what = max(tables.values())
    table = next(name for name, value in tables.items() if value[1] == fld)
    others = f"; all tables together need {_size(total)}" if size <= limit else ""
    add(
        fld,
        f"embedding table '{table}' needs {_size(size)} ({what}){others}, more than the "
        f"{_size(limit)} of memory this machine has; lower {fld.rsplit('.', 1)[-1]}",
    )
