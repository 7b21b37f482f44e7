"""Which label columns hold one value per candidate (``dlrm_hstu``'s, ``hstu_match``'s).

Read from the pipeline config alone, so the data pipeline knows it before any model exists.
"""

from __future__ import annotations

from typing import Any

from recforge.protos import model_pb2

#: dlrm_hstu's candidate feature group (TorchEasyRec's fixed name)
CANDIDATE_GROUP = "candidate"
#: dlrm_hstu's prediction holding each row's number of candidates (TorchEasyRec's repeat
#: key); the ``predict`` command turns the per-candidate outputs into one list per row
NUM_CANDIDATES = "num_candidates"

#: the models whose labels hold one value per candidate
JAGGED_LABEL_MODELS = ("dlrm_hstu", "ultra_hstu")


def _sequence_delims(feature_configs: Any) -> dict[str, str]:
    """Each sequence feature's name -> its ``sequence_delim``."""
    delims: dict[str, str] = {}
    for fc in feature_configs:
        kind = fc.WhichOneof("feature")
        if kind == "sequence_feature":
            seq = fc.sequence_feature
            for sub in seq.features:
                inner = getattr(sub, str(sub.WhichOneof("feature")), None)
                if inner is not None and inner.HasField("feature_name"):
                    delims[f"{seq.sequence_name}__{inner.feature_name}"] = seq.sequence_delim
        elif kind is not None and kind.startswith("sequence_"):
            inner = getattr(fc, kind)
            delims[inner.feature_name] = inner.sequence_delim
    return delims


def jagged_label_columns(config: Any) -> dict[str, str]:
    """The label columns of a pipeline config that hold one value per candidate.

    A ``dlrm_hstu`` (or ``ultra_hstu``) model with a JAGGED_SEQUENCE ``candidate`` group, or an
    ``hstu_match`` model with a JAGGED_SEQUENCE ``item_tower.input`` (several positives per
    row), reads every label field as a list per row, one value per candidate (TorchEasyRec's
    jagged labels), split at the candidate sequence's ``sequence_delim`` when it is a string;
    with a DEEP candidate group (one candidate per row) labels stay plain numbers.

    Args:
        config: the ``EasyRecConfig``.

    Returns:
        ``{label column: delimiter}``.

    """
    model_config = config.model_config
    kind = model_config.WhichOneof("model")
    if kind in JAGGED_LABEL_MODELS:
        candidates = CANDIDATE_GROUP
    elif kind == "hstu_match":  # its labels are per positive; the softmax loss ignores them
        candidates = model_config.hstu_match.item_tower.input
    else:
        return {}
    group = next((g for g in model_config.feature_groups if g.group_name == candidates), None)
    if group is None or group.group_type != model_pb2.JAGGED_SEQUENCE or not group.feature_names:
        return {}
    delim = _sequence_delims(config.feature_configs).get(group.feature_names[0], ";")
    return {label: delim for label in config.data_config.label_fields}
