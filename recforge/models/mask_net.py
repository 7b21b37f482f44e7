"""MaskNet: instance-guided mask blocks over the feature embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.models.rank_model import RankModel
from recforge.modules.masknet import MaskNetModule
from recforge.protos import data_pb2, model_pb2


class MaskNet(RankModel):
    """MaskNet (Wang et al. 2021) over the first feature group: ``mask_net_module`` -> head."""

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] = (),
        *,
        embedding_device: Optional[torch.device] = None,
        negative_sampler: Optional[data_pb2.NegativeSampler] = None,
    ) -> None:
        super().__init__(
            model_config,
            features,
            labels,
            sample_weights,
            embedding_device=embedding_device,
            negative_sampler=negative_sampler,
        )
        self.require_fields("mask_net_module")
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        self.mask_net = self.layer_from_config(
            MaskNetModule, group.group_total_dim(self._group), "mask_net_module"
        )
        self.head = self.output_head(self.mask_net.output_dim())

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        features = self.build_input(batch)[self._group]
        return self._output_to_prediction(self.head(self.mask_net(features)))
