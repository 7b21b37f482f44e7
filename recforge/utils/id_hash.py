"""Which string hash bucketed a checkpoint's ``hash_bucket_size`` ids, checked on restore.

recforge hashes raw values into ``hash_bucket_size`` buckets with TorchEasyRec's FG hash
(:func:`recforge.features.hashing.std_hash`) since 2026-12-03; earlier checkpoints used pandas'
``hash_array``. A checkpoint records the hash it was trained with, so that restoring one whose
ids were bucketed otherwise is an error instead of embeddings read under the wrong ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from torch import nn

from recforge.errors import CheckpointError

#: train-state key that names the hash
ID_HASH_KEY = "id_hash"
#: the hash of this version (TorchEasyRec's ``std::hash`` of the value's string)
ID_HASH = "tzrec_std_hash"
#: what a checkpoint without the key was trained with
LEGACY_ID_HASH = "pandas_hash_array"


def hashing_features(features: Iterable[Any]) -> list[str]:
    """Names of the features that hash raw values.

    A feature hashes when it has ``hash_bucket_size`` and reads raw values (any ``fg_mode``
    but ``FG_NONE``, whose columns hold final bucket ids).
    """
    from recforge.features.fg_mode import FG_NONE

    names: list[str] = []
    for feature in features:
        config: Any = getattr(feature, "config", None)
        if feature.fg_mode != FG_NONE and getattr(config, "hash_bucket_size", 0) > 0:
            names.append(feature.name)
    return names


def hashed_features(model: nn.Module) -> list[str]:
    """Names of the features of ``model`` (or of a model inside it) that hash raw values.

    See :func:`hashing_features`.
    """
    for module in model.modules():
        if isinstance(getattr(type(module), "features", None), property):
            return hashing_features(module.features)  # type: ignore[arg-type]  # a property
    return []


def check_id_hash(train_state: dict[str, Any], model: nn.Module, where: str) -> None:
    """Refuses a checkpoint whose hashed ids were bucketed by another hash than this version's.

    Args:
        train_state: the checkpoint's train state (its ``id_hash`` entry, if any).
        model: the model about to be restored.
        where: the checkpoint path, for the message.

    Raises:
        CheckpointError: the model hashes ids and the checkpoint used another hash.

    """
    recorded: Optional[str] = train_state.get(ID_HASH_KEY, LEGACY_ID_HASH)
    if recorded == ID_HASH:
        return
    names = hashed_features(model)
    if names:
        raise CheckpointError(
            f"{where}: its hash_bucket_size ids were bucketed with {recorded}, and this recforge "
            f"buckets them with {ID_HASH} (TorchEasyRec's FG hash); restoring it would read the "
            f"embeddings of {', '.join(names)} under other ids: train the model again"
        )
