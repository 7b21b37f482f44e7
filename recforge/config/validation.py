"""Validating a loaded pipeline config beyond what the schema alone can catch."""

from __future__ import annotations

from typing import Optional

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from recforge.config._positions import SourceIndex, read_source_index
from recforge.config._schema import choices, is_map, named_features
from recforge.config._util import PathLike, did_you_mean, listing
from recforge.config.errors import ConfigError
from recforge.config.support import check_support
from recforge.config.value_checks import check_values
from recforge.features.sequence_feature import SEQUENCE_NAME_SEPARATOR, sequence_element_configs
from recforge.protos import data_pb2, loss_pb2, metric_pb2, pipeline_pb2


class _Problems:
    """Collects validation problems, placing each at its line in the config file."""

    def __init__(self, path: Optional[PathLike], index: SourceIndex) -> None:
        self.path = path
        self.index = index
        self.errors: list[ConfigError] = []

    def add(self, fld: str, message: str) -> None:
        """Record a problem at field path ``fld``."""
        self.errors.append(self.index.error(message, self.path, fld, None))

    def raise_if_any(self) -> None:
        """Raise the problems found, if any, as one ConfigError."""
        if self.errors:
            raise ConfigError.collect(self.errors)


def validate_config(config: pipeline_pb2.EasyRecConfig, path: Optional[PathLike] = None) -> None:
    """Check a loaded config for mistakes the schema alone cannot catch.

    Every problem is collected; one is raised as is, several are raised together (each line
    naming its field path, and, when ``path`` is a text/JSON/YAML config file, its line).

    Checks: one model is set; every feature has a name (unique) and what it needs to build its
    embedding; feature groups name defined features, have unique names and are not empty;
    every tower ``input`` (any string field named ``input`` inside the model) names a feature
    group; ``data_config`` has label fields and a positive batch size; ``train_config`` has a
    sparse and a dense optimizer; every loss and metric is set, and losses suit ``num_class``;
    the value checks of :func:`recforge.config.value_checks.check_values` (learning rates,
    epochs, MLP layers, metrics per ``num_class``, vocabularies, initialisers, table memory).

    Args:
        config: the config to check.
        path: the file it was loaded from (for messages and line numbers).

    Raises:
        ConfigError: the problems found.

    """
    problems = _Problems(path, read_source_index(path, config.DESCRIPTOR))
    _check_features(config, problems)
    _check_model(config, problems)
    _check_data(config, problems)
    _check_train(config, problems)
    check_values(config, problems.add)
    for fld, message in check_support(config):
        problems.add(fld, message)
    problems.raise_if_any()


def _check_features(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """Check every feature config and that feature names are unique."""
    seen: dict[str, int] = {}
    tables: dict[str, tuple[str, int]] = {}
    for i, fc in enumerate(config.feature_configs):
        prefix = f"feature_configs[{i}]"
        kind = fc.WhichOneof("feature")
        if kind is None:
            options = choices(fc.DESCRIPTOR.oneofs_by_name["feature"])
            problems.add(prefix, f"no feature kind is set; set one of: {options}")
            continue
        if kind == "sequence_feature":
            _check_sequence_feature(fc.sequence_feature, f"{prefix}.{kind}", problems)
            for j, (element_kind, element) in enumerate(
                sequence_element_configs(fc.sequence_feature)
            ):
                eprefix = f"{prefix}.{kind}.features[{j}].{element_kind.removeprefix('sequence_')}"
                _check_named_feature(element_kind, element, eprefix, seen, i, problems, False)
                _check_shared_table(element, eprefix, tables, problems)
            continue
        feature = getattr(fc, kind)
        fprefix = f"{prefix}.{kind}"
        _check_named_feature(kind, feature, fprefix, seen, i, problems)
        _check_shared_table(feature, fprefix, tables, problems)


def _check_named_feature(
    kind: str,
    feature: Message,
    prefix: str,
    seen: dict[str, int],
    index: int,
    problems: _Problems,
    check_sequence_length: bool = True,
) -> None:
    """Check a feature's name is set and unique, then the checks of its kind.

    ``check_sequence_length`` is off for the elements of a ``sequence_feature``, whose length
    is the sequence's.
    """
    name = feature.feature_name
    if not name or name.endswith(SEQUENCE_NAME_SEPARATOR):
        problems.add(f"{prefix}.feature_name", "feature_name is missing")
    elif name in seen:
        problems.add(
            f"{prefix}.feature_name",
            f"feature {name!r} is defined twice (also feature_configs[{seen[name]}])",
        )
    else:
        seen[name] = index
    if kind in _FEATURE_CHECKS:
        _FEATURE_CHECKS[kind](feature, prefix, problems)
    if kind.startswith("sequence_") and check_sequence_length:
        _check_sequence_length(feature.sequence_length, f"{prefix}.sequence_length", problems)


def _check_sequence_feature(sequence: Message, prefix: str, problems: _Problems) -> None:
    """Check a ``sequence_feature``'s own fields (its elements are checked as features)."""
    if not sequence.sequence_name:
        problems.add(f"{prefix}.sequence_name", "sequence_name is missing")
    if not sequence.features:
        problems.add(
            f"{prefix}.features",
            f"sequence_feature {sequence.sequence_name!r} has no features (add id_feature or "
            "raw_feature elements)",
        )
    _check_sequence_length(sequence.sequence_length, f"{prefix}.sequence_length", problems)


def _check_sequence_length(length: int, field_path: str, problems: _Problems) -> None:
    if length <= 0:
        problems.add(
            field_path,
            f"a sequence feature needs sequence_length > 0 (the longest sequence kept; longer "
            f"ones are cut), found {length}",
        )


def _check_id_feature(feature: Message, prefix: str, problems: _Problems) -> None:
    """Check that an id feature has an embedding_dim and exactly one way to map values to ids."""
    name = feature.feature_name or "?"
    if feature.embedding_dim <= 0:
        problems.add(
            f"{prefix}.embedding_dim",
            f"id_feature {name!r} needs embedding_dim > 0 (found {feature.embedding_dim})",
        )
    sources = [
        s
        for s, is_set in (
            ("num_buckets", feature.HasField("num_buckets")),
            ("hash_bucket_size", feature.HasField("hash_bucket_size")),
            ("vocab_list", len(feature.vocab_list) > 0),
            ("vocab_dict", len(feature.vocab_dict) > 0),
            ("vocab_file", bool(feature.vocab_file)),
            # TorchEasyRec lets zch silently win over the others; recforge refuses the mix,
            # as it refuses any two of these
            ("zch", _has_zch(feature)),
        )
        if is_set
    ]
    if _has_zch(feature):
        _check_zch(feature.zch, f"{prefix}.zch", problems)
    if not sources:
        problems.add(
            prefix,
            f"id_feature {name!r} needs one of num_buckets, hash_bucket_size, vocab_list, "
            "vocab_dict, vocab_file or zch (how many ids its embedding table holds)",
        )
    elif len(sources) > 1:
        problems.add(
            f"{prefix}.{sources[1]}",
            f"id_feature {name!r} sets both {sources[0]} and {sources[1]}; set only one",
        )
    for field_name in ("num_buckets", "hash_bucket_size"):
        if feature.HasField(field_name) and getattr(feature, field_name) == 0:
            problems.add(f"{prefix}.{field_name}", f"{field_name} must be > 0 (found 0)")


def _has_zch(feature: Message) -> bool:
    return "zch" in feature.DESCRIPTOR.fields_by_name and feature.HasField("zch")


def _check_zch(zch: Message, prefix: str, problems: _Problems) -> None:
    """Check that a ``zch`` message can build its remapper (see :mod:`recforge.modules.zch`)."""
    from recforge.modules.zch import parse_threshold_filter

    if zch.zch_size < 2:
        problems.add(
            f"{prefix}.zch_size",
            "zch_size must be >= 2 (the last row is for ids without a row of their own);"
            f" found {zch.zch_size}",
        )
    if zch.eviction_interval < 1:
        problems.add(
            f"{prefix}.eviction_interval",
            f"eviction_interval must be >= 1 step; found {zch.eviction_interval}",
        )
    if zch.WhichOneof("eviction_policy") is None:
        problems.add(prefix, "zch needs an eviction policy: lfu {}, lru {} or distance_lfu {}")
    if zch.HasField("threshold_filtering_func"):
        try:
            parse_threshold_filter(zch.threshold_filtering_func)
        except ValueError as e:
            problems.add(
                f"{prefix}.threshold_filtering_func",
                "expected a lambda over the id counts using numbers, torch reductions and the"
                f" built-in *_threshold_filter functions; found {zch.threshold_filtering_func!r}"
                f" ({e})",
            )


def _check_raw_feature(feature: Message, prefix: str, problems: _Problems) -> None:
    """Check that a bucketized raw feature has an embedding_dim and increasing boundaries."""
    name = feature.feature_name or "?"
    boundaries = list(feature.boundaries)
    if not boundaries:
        return
    if feature.embedding_dim <= 0:
        problems.add(
            f"{prefix}.embedding_dim",
            f"raw_feature {name!r} has boundaries, so it is bucketized into an embedding and "
            f"needs embedding_dim > 0 (found {feature.embedding_dim})",
        )
    for j in range(1, len(boundaries)):
        if boundaries[j] <= boundaries[j - 1]:
            problems.add(
                f"{prefix}.boundaries[{j}]",
                f"boundaries must be strictly increasing; found {boundaries[j - 1]:g} "
                f"then {boundaries[j]:g}",
            )
            break


_FEATURE_CHECKS = {
    "id_feature": _check_id_feature,
    "raw_feature": _check_raw_feature,
    "sequence_id_feature": _check_id_feature,
    "sequence_raw_feature": _check_raw_feature,
}


def _check_shared_table(
    feature: Message, prefix: str, tables: dict[str, tuple[str, int]], problems: _Problems
) -> None:
    """Features sharing an ``embedding_name`` must agree on ``embedding_dim``."""
    desc = feature.DESCRIPTOR
    if "embedding_name" not in desc.fields_by_name or not feature.embedding_name:
        return
    table = feature.embedding_name
    dim = feature.embedding_dim if "embedding_dim" in desc.fields_by_name else 0
    if table not in tables:
        tables[table] = (feature.feature_name, dim)
    elif tables[table][1] != dim:
        other, other_dim = tables[table]
        problems.add(
            f"{prefix}.embedding_dim",
            f"features sharing embedding_name {table!r} need the same embedding_dim: "
            f"{other!r} has {other_dim}, {feature.feature_name!r} has {dim}",
        )


def _check_model(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """Check model_config: one model, feature groups, tower inputs, losses, metrics."""
    mc = config.model_config
    models = mc.DESCRIPTOR.oneofs_by_name["model"]
    if not config.HasField("model_config"):
        problems.add(
            "model_config", f"model_config is missing; it must set one model ({choices(models)})"
        )
        return
    model = mc.WhichOneof("model")
    if model is None:
        problems.add(
            "model_config", f"no model is set in model_config; set one of: {choices(models, 100)}"
        )
    features = [f.feature_name for f in named_features(config)]
    groups = _check_feature_groups(mc, features, problems)
    if model is not None:
        _check_group_refs(getattr(mc, model), f"model_config.{model}", groups, problems)
    _check_losses(mc, problems)
    _check_metrics(mc, problems)


def _check_feature_groups(mc: Message, features: list[str], problems: _Problems) -> list[str]:
    """Check feature groups against the defined ``features``; returns the group names."""
    names: list[str] = []
    for i, group in enumerate(mc.feature_groups):
        prefix = f"model_config.feature_groups[{i}]"
        if not group.group_name:
            problems.add(f"{prefix}.group_name", "group_name is missing")
        elif group.group_name in names:
            problems.add(
                f"{prefix}.group_name", f"feature group {group.group_name!r} is defined twice"
            )
        names.append(group.group_name)
        if not group.feature_names and not group.sequence_groups:
            problems.add(prefix, f"feature group {group.group_name!r} has no feature_names")
        _check_group_features(group, prefix, features, problems)
        _check_nested_sequences(group, prefix, features, problems)
    return [n for n in names if n]


def _check_nested_sequences(
    group: Message, prefix: str, features: list[str], problems: _Problems
) -> None:
    """A group's ``sequence_groups`` name defined features and fit its ``sequence_encoders``."""
    from recforge.modules.sequence_encoders import resolve_nested_sequences

    for k, sequence_group in enumerate(group.sequence_groups):
        _check_group_features(sequence_group, f"{prefix}.sequence_groups[{k}]", features, problems)
    for fld, message in resolve_nested_sequences(group)[1]:
        problems.add(f"{prefix}.{fld}", message)


def _check_group_features(
    group: Message, prefix: str, features: list[str], problems: _Problems
) -> None:
    """Every feature a group lists must be defined, and listed once."""
    defined, listed = set(features), set()
    for j, name in enumerate(group.feature_names):
        fld = f"{prefix}.feature_names[{j}]"
        if name not in defined:
            problems.add(
                fld,
                f"feature {name!r} is not defined{did_you_mean(name, features)} "
                f"(defined: {listing(features) or 'none'})",
            )
        elif name in listed:
            problems.add(fld, f"feature {name!r} is listed twice in group {group.group_name!r}")
        listed.add(name)


def _check_group_refs(
    message: Message, prefix: str, groups: list[str], problems: _Problems
) -> None:
    """Check every string field named ``input`` (tower inputs) under a model message."""
    input_fd = message.DESCRIPTOR.fields_by_name.get("input")
    if input_fd is not None and input_fd.type == FieldDescriptor.TYPE_STRING:
        _check_input(message, prefix, groups, problems)
    for fd, value in message.ListFields():
        if fd.message_type is None or is_map(fd):
            continue
        if fd.is_repeated:
            for i, item in enumerate(value):
                _check_group_refs(item, f"{prefix}.{fd.name}[{i}]", groups, problems)
        else:
            _check_group_refs(value, f"{prefix}.{fd.name}", groups, problems)


def _check_input(message: Message, prefix: str, groups: list[str], problems: _Problems) -> None:
    """Check that a tower's ``input`` names a feature group."""
    kind = message.DESCRIPTOR.name
    known = listing(groups) or "none"
    if not message.HasField("input"):
        problems.add(f"{prefix}.input", f"{kind} has no input; set a feature group ({known})")
        return
    name = message.input
    if name not in groups:
        problems.add(
            f"{prefix}.input",
            f"{kind} input {name!r} is not a feature group{did_you_mean(name, groups)} "
            f"(groups: {known})",
        )


def _num_class_applies(mc: Message) -> bool:
    """Whether the model's ``num_class`` is what its losses score.

    Not for match models (a softmax over each user's candidates, whatever ``num_class`` says)
    nor for models with ``task_towers`` (each tower has its own ``num_class``; model building
    checks the towers' losses with the same rules).
    """
    model = mc.WhichOneof("model")
    if model is None:
        return True
    message = getattr(mc, model)
    is_match = message.DESCRIPTOR.file.name.endswith("match_model.proto")
    return not is_match and "task_towers" not in message.DESCRIPTOR.fields_by_name


def _check_losses(mc: Message, problems: _Problems) -> None:
    """Every loss is set and suits ``num_class`` (the rule on the loss's class)."""
    from recforge.loss import num_class_problem  # torch: imported only when validating

    n = mc.num_class
    if n < 1:
        problems.add("model_config.num_class", f"num_class must be >= 1 (found {n})")
        return
    options = choices(loss_pb2.LossConfig.DESCRIPTOR.oneofs_by_name["loss"])
    check_num_class = _num_class_applies(mc)
    for i, loss in enumerate(mc.losses):
        fld = f"model_config.losses[{i}]"
        kind = loss.WhichOneof("loss")
        if kind is None:
            problems.add(fld, f"no loss is set; set one of: {options}")
            continue
        problem = num_class_problem(loss, n) if check_num_class else None
        if problem is not None:
            problems.add(f"{fld}.{kind}", problem)


def _check_metrics(mc: Message, problems: _Problems) -> None:
    """Every metric and train metric is set."""
    options = choices(metric_pb2.MetricConfig.DESCRIPTOR.oneofs_by_name["metric"])
    for i, metric in enumerate(mc.metrics):
        if metric.WhichOneof("metric") is None:
            problems.add(f"model_config.metrics[{i}]", f"no metric is set; set one of: {options}")
    train_options = choices(metric_pb2.TrainMetricConfig.DESCRIPTOR.oneofs_by_name["metric"])
    for i, train_metric in enumerate(mc.train_metrics):
        if train_metric.WhichOneof("metric") is None:
            problems.add(
                f"model_config.train_metrics[{i}]", f"no metric is set; set one of: {train_options}"
            )
        if not 0 <= train_metric.decay_rate < 1:
            problems.add(
                f"model_config.train_metrics[{i}].decay_rate",
                f"decay_rate must be in [0, 1); found {train_metric.decay_rate}",
            )


def _check_data(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """data_config exists, names labels, and has positive batch sizes."""
    if not config.HasField("data_config"):
        problems.add("data_config", "data_config is missing (it names the label_fields)")
        return
    dc = config.data_config
    if not dc.label_fields:
        problems.add("data_config.label_fields", "label_fields is empty; name the label column(s)")
    if dc.batch_size <= 0:
        problems.add("data_config.batch_size", f"batch_size must be > 0 (found {dc.batch_size})")
    if dc.HasField("eval_batch_size") and dc.eval_batch_size <= 0:
        problems.add("data_config.eval_batch_size", "eval_batch_size must be > 0 when set")
    if dc.dataset_type == data_pb2.CsvDataset and not dc.with_header and not dc.input_fields:
        problems.add(
            "data_config.with_header",
            "CsvDataset without a header needs input_fields (the column names); "
            "or set with_header: true",
        )


_CLIPPING_TYPES = ("norm", "value", "none")


def _check_train(config: pipeline_pb2.EasyRecConfig, problems: _Problems) -> None:
    """train_config, when present, sets a sparse and a dense optimizer."""
    if not config.HasField("train_config"):
        return
    tc = config.train_config
    for name in ("sparse_optimizer", "dense_optimizer"):
        fld = f"train_config.{name}"
        sub = getattr(tc, name)
        options = choices(sub.DESCRIPTOR.oneofs_by_name["optimizer"])
        if not tc.HasField(name):
            problems.add(fld, f"{name} is missing; set one of: {options}")
        elif sub.WhichOneof("optimizer") is None:
            problems.add(fld, f"{name} sets no optimizer; set one of: {options}")
    if tc.HasField("grad_clipping") and tc.grad_clipping.clipping_type not in _CLIPPING_TYPES:
        found = tc.grad_clipping.clipping_type
        problems.add(
            "train_config.grad_clipping.clipping_type",
            f"clipping_type must be one of {', '.join(_CLIPPING_TYPES)} (found {found!r})"
            f"{did_you_mean(found, _CLIPPING_TYPES)}",
        )


def locate_config_error(error: ConfigError, path: Optional[PathLike]) -> ConfigError:
    """Place a ConfigError raised while building from a config at its line in ``path``.

    Errors raised after validation (by a model or a module, which know the field path but
    not the file) come without a file; this adds ``path`` and the field's line and column.

    Args:
        error: the error.
        path: the config file the pipeline was built from.

    Returns:
        ``error`` itself when it already names a file, names no field (a flag, a run
        directory) or there is no ``path``; else a copy that names the file and line.

    """
    flag = not error.field or error.field.startswith("-")  # e.g. --num_rows: not in the file
    if error.path is not None or path is None or flag or len(error.errors) > 1:
        return error
    index = read_source_index(path, pipeline_pb2.EasyRecConfig.DESCRIPTOR)
    return index.error(error.message, path, error.field, None)
