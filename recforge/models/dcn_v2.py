"""DCNV2: Deep & Cross Network V2 with a low-rank (mixture) cross network."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.cross import CrossNetV2
from recforge.modules.mlp import MLP


class DCNV2(RankModel):
    """DCN-V2 (Wang et al. 2021) over the first feature group.

    ``backbone`` (optional MLP) feeds the cross network. With ``deep``, the deep MLP reads the
    group beside it (parallel structure) and both outputs are concatenated; without it, the
    ``final`` MLP runs on the cross output (stacked structure). ``final`` is optional in the
    parallel structure.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        config = self._model_config
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        dim = group.group_total_dim(self._group)
        self.backbone = None
        if config.HasField("backbone"):
            self.backbone = self.layer_from_config(MLP, dim, "backbone")
        cross_dim = self.backbone.output_dim() if self.backbone is not None else dim
        self.cross = self.layer_from_config(CrossNetV2, cross_dim, "cross")
        width = self.cross.output_dim()
        self.deep = None
        if config.HasField("deep"):
            self.deep = self.layer_from_config(MLP, dim, "deep")
            width += self.deep.output_dim()
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        features = self.build_input(batch)[self._group]
        cross_input = self.backbone(features) if self.backbone is not None else features
        hidden = self.cross(cross_input)
        if self.deep is not None:
            hidden = torch.cat([hidden, self.deep(features)], dim=1)
        return self._output_to_prediction(self.final_and_head(hidden))
