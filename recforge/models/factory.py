"""``build_model``: the model a pipeline config names, built over its features.

It lives with the models (not in :mod:`recforge.utils.pipeline`) so that ``utils`` never
imports ``models``; the pipelines call it after :func:`recforge.utils.pipeline.build_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from recforge.config import which_msg
from recforge.features import BaseFeature
from recforge.models.model import BaseModel
from recforge.protos import pipeline_pb2


def build_model(
    config: pipeline_pb2.EasyRecConfig,
    features: Sequence[BaseFeature],
    embedding_device: Optional[torch.device] = None,
) -> BaseModel:
    """Builds the model named by ``model_config``'s ``model`` oneof (e.g. deepfm -> DeepFM).

    ``custom_model { class_name: "X" }`` builds the plugin-registered class ``X``.

    Args:
        config: the pipeline config (its ``model_config`` and ``data_config``).
        features: the config's features (:func:`recforge.utils.pipeline.build_features`).
        embedding_device: where the embedding tables are allocated (``meta`` before sharding,
            ``cpu`` for a plain model); None: the model's default.

    Raises:
        RegistryError: no model class has that name (the message lists the known ones).

    """
    class_name = which_msg(config.model_config, "model")
    if class_name == "CustomModel":
        class_name = config.model_config.custom_model.class_name
    model_class = BaseModel.create_class(class_name)
    data_config = config.data_config
    # every sampler message names the item id and attribute columns the same way
    kind = data_config.WhichOneof("sampler")
    return model_class(
        config.model_config,
        features,
        list(data_config.label_fields),
        list(data_config.sample_weight_fields),
        embedding_device=embedding_device,
        negative_sampler=getattr(data_config, kind) if kind else None,
    )
