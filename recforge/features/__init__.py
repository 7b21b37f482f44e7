"""Features: one object per feature config, parsing raw columns and declaring embedding tables.

What a feature's column holds depends on ``data_config.fg_mode`` (see
:mod:`recforge.features.fg_mode`); :func:`create_pipeline_features` passes it on.

Example:
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.FeatureConfig()
    >>> cfg.id_feature.feature_name = "item"
    >>> cfg.id_feature.expression = "item:item_id"
    >>> cfg.id_feature.num_buckets = 100
    >>> cfg.id_feature.embedding_dim = 8
    >>> [f.column for f in create_features([cfg])]  # FG_NONE: encoded column 'item'
    ['item']
    >>> [f.column for f in create_features([cfg], fg_mode=FG_DAG)]  # raw column
    ['item_id']

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recforge.features.base_feature import BaseFeature, FeatureError
from recforge.features.bool_mask_feature import BoolMaskFeature
from recforge.features.combine_feature import CombineFeature
from recforge.features.combo_feature import ComboFeature
from recforge.features.custom_feature import CustomFeature
from recforge.features.expr_feature import ExprFeature
from recforge.features.fg_mode import (
    DEFAULT_MULTIVAL_SEP,
    FG_BUCKETIZE,
    FG_DAG,
    FG_NONE,
    FG_NORMAL,
    multival_sep,
    resolve_fg_mode,
)
from recforge.features.id_feature import IdFeature
from recforge.features.kv_dot_product import KvDotProduct
from recforge.features.lookup_feature import LookupFeature
from recforge.features.match_feature import MatchFeature
from recforge.features.overlap_feature import OverlapFeature
from recforge.features.raw_feature import RawFeature
from recforge.features.sequence_derived import (
    SequenceBoolMaskFeature,
    SequenceCombineFeature,
    SequenceComboFeature,
    SequenceCustomFeature,
    SequenceExprFeature,
    SequenceKvDotProduct,
    SequenceLookupFeature,
    SequenceMatchFeature,
    SequenceOverlapFeature,
)
from recforge.features.sequence_feature import (
    SequenceIdFeature,
    SequenceRawFeature,
    sequence_element_configs,
)
from recforge.features.sequence_tokenize import SequenceTokenizeFeature
from recforge.features.tokenize_feature import TokenizeFeature

if TYPE_CHECKING:
    from recforge.protos import feature_pb2, pipeline_pb2

#: ``FeatureConfig.feature`` oneof name -> feature class (``sequence_feature`` expands into
#: several ``sequence_*_feature``).
FEATURE_CLASSES: dict[str, type[BaseFeature]] = {
    "id_feature": IdFeature,
    "raw_feature": RawFeature,
    "sequence_id_feature": SequenceIdFeature,
    "sequence_raw_feature": SequenceRawFeature,
    "combo_feature": ComboFeature,
    "lookup_feature": LookupFeature,
    "match_feature": MatchFeature,
    "expr_feature": ExprFeature,
    "overlap_feature": OverlapFeature,
    "tokenize_feature": TokenizeFeature,
    "kv_dot_product": KvDotProduct,
    "bool_mask_feature": BoolMaskFeature,
    "combine_feature": CombineFeature,
    "custom_feature": CustomFeature,
    "sequence_combo_feature": SequenceComboFeature,
    "sequence_lookup_feature": SequenceLookupFeature,
    "sequence_match_feature": SequenceMatchFeature,
    "sequence_expr_feature": SequenceExprFeature,
    "sequence_combine_feature": SequenceCombineFeature,
    "sequence_overlap_feature": SequenceOverlapFeature,
    "sequence_kv_dot_product": SequenceKvDotProduct,
    "sequence_custom_feature": SequenceCustomFeature,
    "sequence_bool_mask_feature": SequenceBoolMaskFeature,
    "sequence_tokenize_feature": SequenceTokenizeFeature,
}


def create_feature_group(
    feature_config: feature_pb2.FeatureConfig,
    fg_mode: int = FG_NONE,
    fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
) -> list[BaseFeature]:
    """Build the features of one ``FeatureConfig`` message.

    Args:
        feature_config: a ``FeatureConfig`` with its ``feature`` oneof set.
        fg_mode: ``data_config.fg_mode`` (TorchEasyRec's default ``FG_NONE``).
        fg_encoded_multival_sep: ``data_config.fg_encoded_multival_sep``.

    Returns:
        One feature (e.g. :class:`IdFeature`), or one per element of a ``sequence_feature``.

    Raises:
        FeatureError: the oneof is unset or names an unknown kind, or the config is invalid.

    """
    kind = feature_config.WhichOneof("feature")
    if kind == "sequence_feature":
        sequence = feature_config.sequence_feature
        if not sequence.sequence_name or not sequence.features:
            raise FeatureError(
                f"sequence_feature {sequence.sequence_name!r}: needs a sequence_name and at "
                "least one element in features"
            )
        return [
            FEATURE_CLASSES[k](m, fg_mode, fg_encoded_multival_sep)
            for k, m in sequence_element_configs(sequence)
        ]
    if kind not in FEATURE_CLASSES:
        raise FeatureError(
            f"feature config {str(feature_config).strip()!r}: expected one of "
            f"{sorted(FEATURE_CLASSES) + ['sequence_feature']}, found "
            f"{kind or 'no feature kind set'}"
        )
    return [FEATURE_CLASSES[kind](getattr(feature_config, kind), fg_mode, fg_encoded_multival_sep)]


def create_feature(
    feature_config: feature_pb2.FeatureConfig,
    fg_mode: int = FG_NONE,
    fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
) -> BaseFeature:
    """Build the single feature of a ``FeatureConfig`` (not a ``sequence_feature``).

    Args:
        feature_config: see :func:`create_feature_group`.
        fg_mode: ``data_config.fg_mode``.
        fg_encoded_multival_sep: ``data_config.fg_encoded_multival_sep``.

    Raises:
        FeatureError: see :func:`create_feature_group`; also a config with several features.

    """
    features = create_feature_group(feature_config, fg_mode, fg_encoded_multival_sep)
    if len(features) != 1:
        raise FeatureError(
            f"feature config defines {len(features)} features; use create_feature_group"
        )
    return features[0]


def create_features(
    feature_configs: Sequence[Any],
    fg_mode: int = FG_NONE,
    fg_encoded_multival_sep: str = DEFAULT_MULTIVAL_SEP,
) -> list[BaseFeature]:
    """Build every feature of a pipeline config, in config order.

    Args:
        feature_configs: ``FeatureConfig`` messages (e.g. ``pipeline.feature_configs``).
        fg_mode: ``data_config.fg_mode`` (TorchEasyRec's default ``FG_NONE``: the columns are
            FG output named by ``feature_name``); see :func:`create_pipeline_features`.
        fg_encoded_multival_sep: ``data_config.fg_encoded_multival_sep``.

    Returns:
        One :class:`BaseFeature` per config.

    Raises:
        FeatureError: unknown kind, invalid config or two features with the same name.

    """
    features: list[BaseFeature] = []
    seen: dict[str, int] = {}
    for index, feature_config in enumerate(feature_configs):
        for feature in create_feature_group(feature_config, fg_mode, fg_encoded_multival_sep):
            if feature.name in seen:
                raise FeatureError(
                    f"feature '{feature.name}': duplicate feature name (feature_configs "
                    f"#{seen[feature.name]} and #{index}); feature names must be unique"
                )
            seen[feature.name] = index
            features.append(feature)
    return features


def create_pipeline_features(config: pipeline_pb2.EasyRecConfig) -> list[BaseFeature]:
    """Build the features of a pipeline config with its ``data_config``'s FG settings.

    Args:
        config: an ``EasyRecConfig``; ``data_config.fg_mode`` (or the deprecated
            ``fg_encoded``, see :func:`~recforge.features.fg_mode.resolve_fg_mode`) and
            ``data_config.fg_encoded_multival_sep`` are passed to every feature.

    Returns:
        One :class:`BaseFeature` per config (see :func:`create_features`).

    """
    data_config = config.data_config
    return create_features(
        config.feature_configs,
        fg_mode=resolve_fg_mode(data_config),
        fg_encoded_multival_sep=multival_sep(data_config),
    )


__all__ = [
    "FEATURE_CLASSES",
    "FG_BUCKETIZE",
    "FG_DAG",
    "FG_NONE",
    "FG_NORMAL",
    "BaseFeature",
    "BoolMaskFeature",
    "ComboFeature",
    "CombineFeature",
    "CustomFeature",
    "ExprFeature",
    "FeatureError",
    "IdFeature",
    "KvDotProduct",
    "LookupFeature",
    "MatchFeature",
    "OverlapFeature",
    "RawFeature",
    "SequenceComboFeature",
    "SequenceCombineFeature",
    "SequenceCustomFeature",
    "SequenceBoolMaskFeature",
    "SequenceExprFeature",
    "SequenceIdFeature",
    "SequenceKvDotProduct",
    "SequenceLookupFeature",
    "SequenceMatchFeature",
    "SequenceOverlapFeature",
    "SequenceRawFeature",
    "SequenceTokenizeFeature",
    "TokenizeFeature",
    "create_feature",
    "create_feature_group",
    "create_features",
    "create_pipeline_features",
    "resolve_fg_mode",
]
