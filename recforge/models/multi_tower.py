"""MultiTower: one MLP tower per feature group, concatenated into a final MLP."""

from __future__ import annotations

import torch
from torch import nn

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.mlp import MLP


class MultiTower(RankModel):
    """Per-group tower MLPs (``towers { input mlp }``) whose outputs feed a ``final`` MLP.

    A group without a tower enters the final MLP as its raw embedding concatenation.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        group = self.init_embedding_group()
        self.towers = nn.ModuleDict()
        for i, tower in enumerate(self._model_config.towers):
            with self.config_errors(f"towers[{i}].mlp"):
                self.towers[tower.input] = MLP.from_config(
                    group.group_total_dim(tower.input), tower.mlp
                )
        self._passthrough = [g for g in group.group_names() if g not in self.towers]
        width = sum(t.output_dim() for t in self.towers.values())  # type: ignore[operator]
        width += sum(group.group_total_dim(g) for g in self._passthrough)
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        parts = [tower(grouped[name]) for name, tower in self.towers.items()]
        parts += [grouped[name] for name in self._passthrough]
        return self._output_to_prediction(self.final_and_head(torch.cat(parts, dim=1)))
