"""Plumbing shared by the train / evaluate / export / predict pipelines."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Optional

import torch

from recforge.config import (
    ConfigError,
    edit_config,
    load_pipeline_config,
    validate_config,
)
from recforge.datasets.dataset import RecDataset
from recforge.datasets.jagged_labels import jagged_label_columns
from recforge.datasets.readers import check_not_odps
from recforge.errors import RecforgeError
from recforge.features import BaseFeature, FeatureError, create_pipeline_features
from recforge.loss import binary_label_columns
from recforge.metrics import grouping_keys
from recforge.protos import pipeline_pb2, train_pb2
from recforge.utils import dist as dist_util
from recforge.utils import layout, storage
from recforge.utils.registry import import_modules, load_entry_point_plugins


def prepare_config(
    config_path: str,
    edits: Optional[dict[str, str]] = None,
    plugins: Sequence[str] = (),
    model_dir: Optional[str] = None,
) -> pipeline_pb2.EasyRecConfig:
    """Loads, edits and validates a pipeline config; imports the plugins it and the CLI name.

    Args:
        config_path: the config file (text proto, JSON or YAML).
        edits: ``{"dotted.field": "value"}`` overrides.
        plugins: extra modules to import (user models, features).
        model_dir: overrides ``model_dir``.

    """
    storage.check_url(config_path, "--config")
    config = load_pipeline_config(storage.fetch(config_path, "config"))
    if edits:
        edit_config(config, edits)
    if model_dir:
        config.model_dir = model_dir
    for name in ("train_input_path", "eval_input_path", "model_dir"):
        for part in getattr(config, name).split(","):
            storage.check_url(part.strip(), name)
    load_entry_point_plugins()
    import_modules(list(config.plugins) + list(plugins))
    validate_config(config, config_path)
    if storage.is_remote(config.model_dir):
        # the run works in a local copy that is uploaded as it goes (see utils/storage.py)
        config.model_dir = storage.stage_model_dir(
            config.model_dir, layout.CHECKPOINT_PREFIX, layout.TRAIN_STATE_FILE
        )
    config.model_dir = storage.local_path(config.model_dir)
    if (
        config.model_dir
        and os.path.exists(config.model_dir)
        and not os.path.isdir(config.model_dir)
    ):
        raise ConfigError(
            f"expected a directory (or a path to create one), found a file: {config.model_dir}",
            field="model_dir",
        )
    return config


def setup_process() -> torch.device:
    """Initialises torch.distributed and process-wide numerics; returns this rank's device."""
    # Embedding optimizer state decays into denormal floats after a few epochs, and CPU
    # arithmetic on denormals is ~40x slower: measured 48k -> 1.2k samples/s in the third
    # epoch of the demo. Flushing them to zero costs no accuracy here.
    torch.set_flush_denormal(True)
    return dist_util.init_process_group()


def set_tf32(config: train_pb2.TrainConfig) -> None:
    """Applies TorchEasyRec's TF32 switches (``cudnn_allow_tf32``, ``cuda_matmul_allow_tf32``).

    They change CUDA matmul/convolution numerics only; on a CPU they have no effect.
    """
    torch.backends.cudnn.allow_tf32 = config.cudnn_allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = config.cuda_matmul_allow_tf32


def build_features(config: pipeline_pb2.EasyRecConfig) -> list[BaseFeature]:
    """The features of a config, in config order, reading data as ``data_config.fg_mode`` says.

    Raises:
        ConfigError: a feature config its kind refuses, at the feature's field path.

    """
    try:
        return create_pipeline_features(config)
    except FeatureError as e:
        raise _at_feature_config(config, e) from None


_FEATURE_MESSAGE = re.compile(r"feature '([^']*)'(?: \(column '[^']*'\))?: (\w+)(.*)", re.S)


def _at_feature_config(config: pipeline_pb2.EasyRecConfig, error: FeatureError) -> RecforgeError:
    """A FeatureError ("feature 'x': ...") as a ConfigError at the feature's config."""
    match = _FEATURE_MESSAGE.match(str(error))
    if not match:
        return error
    name, first_word, _ = match.groups()
    for i, fc in enumerate(config.feature_configs):
        kind = fc.WhichOneof("feature")
        feature = getattr(fc, kind) if kind else None
        names = {getattr(feature, n, "") for n in ("feature_name", "sequence_name")}
        if feature is not None and name in names:
            fld = f"feature_configs[{i}].{kind}"
            if first_word in feature.DESCRIPTOR.fields_by_name:  # "pooling must be ..."
                fld += f".{first_word}"
            return ConfigError(str(error), field=fld)
    return error


def build_dataset(
    config: pipeline_pb2.EasyRecConfig, features: Sequence[BaseFeature], mode: str
) -> RecDataset:
    """The ``train`` or ``eval`` data set of a config.

    It reads the columns its metrics group by, and checks that the labels of binary losses
    are 0 or 1.

    Raises:
        DataError: the config reads MaxCompute tables (``OdpsDataset``, ``odps://`` paths).

    """
    field = "train_input_path" if mode == "train" else "eval_input_path"
    input_path = getattr(config, field)
    paths = {field: input_path}
    kind = config.data_config.WhichOneof("sampler")
    if kind is not None:  # the sampler's side tables
        sampler = getattr(config.data_config, kind)
        for descriptor, value in sampler.ListFields():
            if descriptor.name.endswith("input_path"):
                paths[f"data_config.{kind}.{descriptor.name}"] = value
    check_not_odps(config.data_config, paths)
    return RecDataset(
        config.data_config,
        features,
        input_path,
        mode=mode,
        extra_id_columns=grouping_keys(config.model_config),
        binary_labels=binary_label_columns(
            config.model_config, list(config.data_config.label_fields)
        ),
        jagged_labels=jagged_label_columns(config),
    )


def model_dir_path(config: pipeline_pb2.EasyRecConfig, *parts: str) -> str:
    """A path inside ``model_dir``; creates ``model_dir``."""
    os.makedirs(config.model_dir, exist_ok=True)
    return os.path.join(config.model_dir, *parts)
