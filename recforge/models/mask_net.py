"""MaskNet: instance-guided mask blocks over the feature embeddings."""

from __future__ import annotations

from typing import Any

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.masknet import MaskNetModule


class MaskNet(RankModel):
    """MaskNet (Wang et al. 2021) over the first feature group: ``mask_net_module`` -> head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.require_fields("mask_net_module")
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        self.mask_net = MaskNetModule.from_config(
            group.group_total_dim(self._group), self._model_config.mask_net_module
        )
        self.head = self.output_head(self.mask_net.output_dim())
        self.init_loss()
        self.init_metric()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        features = self.build_input(batch)[self._group]
        return self._output_to_prediction(self.head(self.mask_net(features)))
