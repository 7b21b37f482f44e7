"""DCNV1: Deep & Cross Network."""

from __future__ import annotations

from typing import Any

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.require_fields("deep")
        config = self._model_config
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        dim = group.group_total_dim(self._group)
        self.cross = CrossNet.from_config(dim, config.cross)
        self.deep = MLP.from_config(dim, config.deep)
        width = self.cross.output_dim() + self.deep.output_dim()
        self.init_final_and_head(width)
        self.init_loss()
        self.init_metric()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        features = self.build_input(batch)[self._group]
        hidden = torch.cat([self.cross(features), self.deep(features)], dim=1)
        return self._output_to_prediction(self.final_and_head(hidden))
