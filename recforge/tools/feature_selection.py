"""``recforge feature-selection``: rank each feature group's features by variational dropout.

A model trained with ``model_config.variational_dropout`` learns a dropout rate per feature
of each feature group (:class:`recforge.modules.variational_dropout.FeatureDropout`); a
feature the model needs keeps a low rate. This command reads those rates from a checkpoint
and writes, in ``--output_dir`` (TorchEasyRec's layout, ``tzrec.tools.feature_selection``):

- ``feature_dropout_ratio_<group>.csv`` per group: columns ``feature_name,mean_drop_p``,
  most useful feature (lowest rate) first;
- the pipeline config (same file name) keeping the ``--topk`` most useful features of each
  ranked group, and only the feature configs that some feature group still reads; with
  ``--clear_variational_dropout``, without ``variational_dropout``.

Groups without rates (SEQUENCE groups, groups of one feature) are kept as they are; unlike
TorchEasyRec, which keeps only ranked and sequence features, their features stay in the
pruned config, so that it still builds the same groups.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from typing import Any, Optional

from recforge.config import ConfigError, save_pipeline_config
from recforge.errors import CheckpointError
from recforge.protos import pipeline_pb2
from recforge.utils import storage

logger = logging.getLogger(__name__)

#: how a checkpoint names a group's rates: TrainWrapper's ``model.`` + the module path
_RATES_MARK = ".variational_dropouts."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the subcommand's flags (TorchEasyRec's names) to ``parser``."""
    parser.add_argument(
        "--config",
        "--pipeline_config_path",
        dest="config",
        required=True,
        help="the pipeline config the model was trained with",
    )
    parser.add_argument("--model_dir", default=None, help="overrides model_dir of the config")
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint to read (default: the latest in model_dir)"
    )
    parser.add_argument(
        "--output_dir", required=True, help="where the ranking files and the pruned config go"
    )
    parser.add_argument(
        "--topk",
        type=int,
        default=100,
        help="features of each ranked group to keep in the pruned config",
    )
    parser.add_argument(
        "--clear_variational_dropout",
        action="store_true",
        help="drop model_config.variational_dropout from the pruned config",
    )
    parser.add_argument(
        "--edit_config_json",
        default=None,
        help='config overrides, e.g. \'{"model_dir": "other"}\'',
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="python module to import first (user models/features); repeatable",
    )


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the subcommand (see the module docstring).

    Returns:
        A summary: the checkpoint, each group's ranking ``{feature: rate}`` (most useful
        first), the files written.

    Raises:
        ConfigError: no ``variational_dropout`` in the config, no group it applies to, a bad
            ``--topk``, or an ``--output_dir`` that would overwrite the config.
        CheckpointError: no checkpoint, or one without the rates.

    """
    from recforge.utils.pipeline import prepare_config

    if args.topk < 1:
        raise ConfigError(f"--topk: expected a number >= 1, found {args.topk}")
    config = prepare_config(args.config, _edits(args.edit_config_json), args.plugin, args.model_dir)
    pruned_path = os.path.join(args.output_dir, os.path.basename(args.config))
    # a remote --output_dir is written through a local directory (recforge.cli.PathFlag):
    # compare the URL the pruned config will be published to
    target = storage.urls_in(pruned_path)
    if (
        target == args.config
        if storage.is_remote(target)
        else os.path.abspath(pruned_path) == os.path.abspath(args.config)
    ):
        raise ConfigError(
            f"--output_dir {args.output_dir}: would overwrite the input config {args.config};"
            " expected another directory"
        )
    checkpoint = _checkpoint(config, args.checkpoint)
    rankings = read_dropout_rates(config, checkpoint)
    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for group, ranking in rankings.items():
        path = os.path.join(args.output_dir, f"feature_dropout_ratio_{group}.csv")
        _write_csv(path, ranking)
        written.append(path)
    pruned = prune_config(config, rankings, args.topk, args.clear_variational_dropout)
    _save_atomically(pruned, pruned_path)
    written.append(pruned_path)
    logger.info("feature selection: wrote %s", ", ".join(written))
    return {"checkpoint": checkpoint, "rankings": rankings, "files": written}


def _edits(text: Optional[str]) -> dict[str, str]:
    if not text:
        return {}
    try:
        edits = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--edit_config_json: expected JSON, found {text!r} ({e})") from None
    if not isinstance(edits, dict):
        raise ConfigError(
            f'--edit_config_json: expected a JSON object like {{"model_dir": "x"}}, found {text!r}'
        )
    return {k: str(v) for k, v in edits.items()}


def _checkpoint(config: pipeline_pb2.EasyRecConfig, checkpoint: Optional[str]) -> str:
    from recforge.utils import checkpoint as ckpt_util

    if checkpoint:
        return storage.fetch(checkpoint, "checkpoint")
    latest = ckpt_util.latest_checkpoint(config.model_dir)
    if latest is None:
        raise CheckpointError(f"no checkpoint found in model_dir '{config.model_dir}'")
    return latest


def read_dropout_rates(
    config: pipeline_pb2.EasyRecConfig, checkpoint: str
) -> dict[str, dict[str, float]]:
    """Each feature group's learned dropout rates, lowest (most useful feature) first.

    Only the rates are read from the checkpoint; the embedding tables are never allocated.

    Returns:
        ``{group_name: {feature_name: rate}}``, groups in model order.

    """
    import torch

    from recforge.features import create_features
    from recforge.models.factory import build_model
    from recforge.models.model import TrainWrapper
    from recforge.modules.variational_dropout import FeatureDropout
    from recforge.utils.checkpoint_format import CheckpointFiles

    if not config.model_config.HasField("variational_dropout"):
        raise ConfigError(
            "feature selection reads the rates that variational dropout learns; the model"
            " was configured without it",
            field="model_config.variational_dropout",
        )
    features = create_features(config.feature_configs)
    model = build_model(config, features, embedding_device=torch.device("meta"))
    wrapper = TrainWrapper(model)
    state = {k: v for k, v in wrapper.state_dict().items() if _RATES_MARK in k}
    if not state:
        raise ConfigError(
            "variational dropout applies to DEEP / WIDE feature groups of two or more"
            " features; the model has none",
            field="model_config.feature_groups",
        )
    if not os.path.isdir(checkpoint):
        raise CheckpointError(f"checkpoint '{checkpoint}': not a directory")
    files = CheckpointFiles(checkpoint)
    saved = files.metadata().state_dict_metadata
    missing = [k for k in state if f"model.{k}" not in saved and k not in saved]
    if missing:
        raise CheckpointError(
            f"checkpoint '{checkpoint}' holds no dropout rates for {missing[0]}: expected a"
            " checkpoint of a run with model_config.variational_dropout"
        )
    files.load({"model": state})
    wrapper.load_state_dict(state, strict=False)
    rankings: dict[str, dict[str, float]] = {}
    for name, module in model.named_modules():
        if isinstance(module, FeatureDropout):
            group = name.rsplit(".", 1)[-1]
            rates = module.dropout_rates().tolist()
            ranked = sorted(zip(module.feature_names, rates), key=lambda item: item[1])
            rankings[group] = dict(ranked)
    return rankings


def prune_config(
    config: pipeline_pb2.EasyRecConfig,
    rankings: dict[str, dict[str, float]],
    topk: int,
    clear_variational_dropout: bool = False,
) -> pipeline_pb2.EasyRecConfig:
    """A copy of ``config`` keeping the ``topk`` lowest-rate features of each ranked group.

    Feature configs that no feature group reads any more are dropped (``sequence_feature``
    blocks are always kept, as in TorchEasyRec).
    """
    pruned = pipeline_pb2.EasyRecConfig()
    pruned.CopyFrom(config)
    for group in pruned.model_config.feature_groups:
        ranking = rankings.get(group.group_name)
        if ranking is None:
            continue
        keep = set(list(ranking)[:topk])
        names = [name for name in group.feature_names if name in keep]
        del group.feature_names[:]
        group.feature_names.extend(names)
    used = set()
    for group in pruned.model_config.feature_groups:
        used.update(group.feature_names)
        for sequence_group in group.sequence_groups:
            used.update(sequence_group.feature_names)
    kept = []
    for feature in pruned.feature_configs:
        kind = feature.WhichOneof("feature")
        if kind == "sequence_feature" or getattr(feature, kind).feature_name in used:
            kept.append(feature)
    del pruned.feature_configs[:]
    pruned.feature_configs.extend(kept)
    if clear_variational_dropout:
        pruned.model_config.ClearField("variational_dropout")
    return pruned


def _write_csv(path: str, ranking: dict[str, float]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["feature_name", "mean_drop_p"])
        for name, rate in ranking.items():
            writer.writerow([name, rate])
    os.replace(tmp, path)


def _save_atomically(config: pipeline_pb2.EasyRecConfig, path: str) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{name}")  # same extension: same format
    save_pipeline_config(config, tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    # TorchEasyRec's spelling: python -m recforge.tools.feature_selection --pipeline_config_path ...
    import sys

    from recforge import cli

    sys.exit(cli.main(["feature-selection", *sys.argv[1:]]))
