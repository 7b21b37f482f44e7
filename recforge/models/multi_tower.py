"""MultiTower: one MLP tower per feature group, concatenated into a final MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.mlp import MLP


class MultiTower(RankModel):
    """Per-group tower MLPs (``towers { input mlp }``) whose outputs feed a ``final`` MLP.

    A group without a tower enters the final MLP as its raw embedding concatenation.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        group = self.init_embedding_group()
        self.towers = nn.ModuleDict()
        for tower in self._model_config.towers:
            self.towers[tower.input] = MLP.from_config(
                group.group_total_dim(tower.input), tower.mlp
            )
        self._passthrough = [g for g in group.group_names() if g not in self.towers]
        width = sum(t.output_dim() for t in self.towers.values())
        width += sum(group.group_total_dim(g) for g in self._passthrough)
        self.final = (
            MLP.from_config(width, self._model_config.final)
            if self._model_config.final.hidden_units
            else nn.Identity()
        )
        self.head = self.output_head(
            self.final.output_dim() if isinstance(self.final, MLP) else width
        )
        self.init_loss()
        self.init_metric()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        parts = [tower(grouped[name]) for name, tower in self.towers.items()]
        parts += [grouped[name] for name in self._passthrough]
        return self._output_to_prediction(self.head(self.final(torch.cat(parts, dim=1))))
