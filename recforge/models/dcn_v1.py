"""DCNV1: Deep & Cross Network."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.cross import CrossNet
from recforge.modules.mlp import MLP


class DCNV1(RankModel):
    """Deep & Cross Network (Wang et al. 2017) over the first feature group.

    The cross network and the ``deep`` MLP read the group side by side; their concatenation
    ``[B, D + deep]`` feeds the ``final`` MLP (optional) and the head.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        self.require_fields("deep")
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        dim = group.group_total_dim(self._group)
        self.cross = self.layer_from_config(CrossNet, dim, "cross")
        self.deep = self.layer_from_config(MLP, dim, "deep")
        width = self.cross.output_dim() + self.deep.output_dim()
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        features = self.build_input(batch)[self._group]
        hidden = torch.cat([self.cross(features), self.deep(features)], dim=1)
        return self._output_to_prediction(self.final_and_head(hidden))
