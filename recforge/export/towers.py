"""Tower export of match models: ``<export_dir>/user`` and ``<export_dir>/item``.

Each tower is its own export directory (the same files as the full export), usable by
``recforge predict`` and :func:`recforge.load_predictor`: ``user_emb`` / ``item_emb``
``[B, D]`` from the tower's features only (MIND's user tower: its interests ``[B, K, D]``,
with ``num_interests`` K in ``model_info.json``).
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

import torch

from recforge.export.files import write_export_files, write_feature_files
from recforge.export.model_info import describe_model
from recforge.export.scripting import random_inputs, script_tower
from recforge.features.sequence_feature import SEQUENCE_NAME_SEPARATOR
from recforge.models.match_model import TOWER_SIDES, MatchModel

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2


def tower_config(
    config: pipeline_pb2.EasyRecConfig, model: MatchModel, side: str
) -> pipeline_pb2.EasyRecConfig:
    """The pipeline config of a tower export: only the tower's features, no sampler."""
    tower = copy.deepcopy(config)
    names = {f.name for f in model.tower_features(side)}
    kept = []
    for f in config.feature_configs:
        kind = f.WhichOneof("feature")
        if kind != "sequence_feature":
            if getattr(f, kind).feature_name in names:
                kept.append(f)
            continue
        # a sequence_feature keeps the elements the tower reads ("<sequence>__<element>")
        sequence = copy.deepcopy(f)
        prefix = sequence.sequence_feature.sequence_name + SEQUENCE_NAME_SEPARATOR
        elements = [
            e
            for e in sequence.sequence_feature.features
            if prefix + getattr(e, e.WhichOneof("feature")).feature_name in names
        ]
        if elements:
            del sequence.sequence_feature.features[:]
            sequence.sequence_feature.features.extend(elements)
            kept.append(sequence)
    del tower.feature_configs[:]
    tower.feature_configs.extend(kept)
    tower.data_config.ClearField("sampler")  # the oneof: whichever sampler is set
    return tower


def export_towers(
    config: pipeline_pb2.EasyRecConfig, model: MatchModel, export_dir: str, info: dict
) -> dict[str, str]:
    """Writes ``export_dir/user`` and ``export_dir/item``, each a TorchScript export directory.

    Args:
        config: the pipeline config.
        model: the restored CPU model.
        export_dir: the (temporary) export directory to write into.
        info: ``model_info.json`` fields shared with the full export (checkpoint, versions).

    Returns:
        ``{side: directory}``.

    """
    from google.protobuf import text_format

    written = {}
    for side in TOWER_SIDES:
        scripted, wrapper = script_tower(model, side)
        directory = os.path.join(export_dir, side)
        os.makedirs(directory)
        features = model.tower_features(side)
        with torch.no_grad():
            outputs = wrapper(random_inputs(features, 3))
        tower_info = {
            **info,
            "model_class": f"{type(model).__name__}.{side}_tower",
            "similarity": "cosine" if model.cosine else "inner_product",
            "embedding_dim": model.embedding_dim(),
            **describe_model(features, outputs, 3),
        }
        if side == "user" and hasattr(model, "num_interests"):  # MIND
            tower_info["num_interests"] = model.num_interests()  # type: ignore[operator]
        exported = write_feature_files(directory, tower_config(config, model, side))
        config_text = text_format.MessageToString(exported)
        write_export_files(directory, scripted, config_text, tower_info)
        written[side] = directory
    return written
