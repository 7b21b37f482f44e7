"""MaskNet: instance-guided mask blocks over the feature embeddings."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.masknet import MaskNetModule


class MaskNet(RankModel):
    """MaskNet (Wang et al. 2021) over the first feature group: ``mask_net_module`` -> head."""

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
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
