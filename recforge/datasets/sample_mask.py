"""Feature masking in training: ``use_mask`` features and ``data_config.sample_mask_prob``.

As in TorchEasyRec: in each training batch every row is masked with probability
``sample_mask_prob`` (negative rows appended by a negative sampler: with
``negative_sample_mask_prob``), and in a masked row every feature with ``use_mask: true``
reads a null from its first input column, i.e. parses as a missing value (an empty id bag or
the feature's default value). All masked features are masked in the same rows. Evaluation and
prediction never mask. The masks are drawn from a generator seeded by ``(data_config.seed,
rank, worker, epoch)``, so a resumed run masks the same rows (TorchEasyRec draws from the
unseeded global generator).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.config import ConfigError
from recforge.features.base_feature import BaseFeature

if TYPE_CHECKING:
    from recforge.protos import data_pb2

logger = logging.getLogger(__name__)


def uses_mask(feature: BaseFeature) -> bool:
    """Whether a feature's config sets ``use_mask: true``."""
    config = feature.config
    return "use_mask" in config.DESCRIPTOR.fields_by_name and bool(config.use_mask)


class SampleMask:
    """Draws the masked rows of training batches.

    Args:
        data_config: the ``DataConfig`` (``sample_mask_prob``, ``negative_sample_mask_prob``).
        features: the features; those with ``use_mask`` are masked.

    Raises:
        ConfigError: a probability outside ``[0, 1]``.

    """

    def __init__(self, data_config: data_pb2.DataConfig, features: Sequence[BaseFeature]) -> None:
        for name in ("sample_mask_prob", "negative_sample_mask_prob"):
            value = getattr(data_config, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{name} must be in [0, 1]; found {value}", field=f"data_config.{name}"
                )
        self.prob = float(data_config.sample_mask_prob)
        self.negative_prob = float(data_config.negative_sample_mask_prob)
        self.features = [f.name for f in features if uses_mask(f)]
        probs_set = self.prob > 0 or self.negative_prob > 0
        if probs_set and not self.features:
            logger.warning(
                "data_config.sample_mask_prob / negative_sample_mask_prob are set but no"
                " feature sets use_mask: true, so nothing is masked"
            )
        elif self.features and not probs_set:
            logger.warning(
                "features %s set use_mask but data_config.sample_mask_prob and"
                " negative_sample_mask_prob are 0, so nothing is masked",
                self.features,
            )

    @property
    def enabled(self) -> bool:
        """Whether any row of any feature can be masked."""
        return bool(self.features) and (self.prob > 0 or self.negative_prob > 0)

    def draw(self, rng: np.random.Generator, num_rows: int, num_negatives: int = 0) -> np.ndarray:
        """The masked rows of a batch: bool ``[num_rows]``.

        Args:
            rng: the generator.
            num_rows: rows in the batch, including the negatives.
            num_negatives: the last rows, appended by a negative sampler.

        """
        positives = num_rows - num_negatives
        return np.concatenate(
            [rng.random(positives) < self.prob, rng.random(num_negatives) < self.negative_prob]
        )


def mask_inputs(
    columns: dict[str, Any], feature: BaseFeature, masked_rows: Optional[np.ndarray]
) -> dict[str, Any]:
    """``columns`` with the feature's first input null in the masked rows (a copy if changed).

    Map-typed columns are left alone, as in TorchEasyRec.
    """
    if masked_rows is None or not masked_rows.any() or not feature.inputs:
        return columns
    name = feature.inputs[0]
    column = columns[name]
    if pa.types.is_map(column.type):
        return columns
    masked = dict(columns)
    masked[name] = pc.if_else(pa.array(masked_rows), pa.scalar(None, type=column.type), column)
    return masked
