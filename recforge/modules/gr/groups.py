"""The feature-group names every HSTU model reads by convention (TorchEasyRec's fixed names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from recforge.config import ConfigError
from recforge.protos import model_pb2

#: the user's contextual features (one prefix token per feature)
CONTEXTUAL_GROUP = "contextual"


def contextual_group(groups: Mapping[str, Any], model_type: str) -> Optional[str]:
    """The DEEP ``contextual`` group's name if ``groups`` has one, else None.

    Args:
        groups: the model's feature groups (``FeatureGroupConfig``) by name.
        model_type: the model's config name (``dlrm_hstu``, ...), for the error.

    Raises:
        ConfigError: the ``contextual`` group is not a DEEP group.

    """
    if CONTEXTUAL_GROUP not in groups:
        return None
    if groups[CONTEXTUAL_GROUP].group_type != model_pb2.DEEP:
        raise ConfigError(
            f"{model_type}'s '{CONTEXTUAL_GROUP}' feature group must be a DEEP group"
            " (a SEQUENCE contextual group is not supported yet)",
            field="model_config.feature_groups",
        )
    return CONTEXTUAL_GROUP
