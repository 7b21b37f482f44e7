"""MultiTower: one MLP tower per feature group, concatenated into a final MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.models.rank_model import RankModel
from recforge.modules.mlp import MLP
from recforge.protos import data_pb2, model_pb2


class MultiTower(RankModel):
    """Per-group tower MLPs (``towers { input mlp }``) whose outputs feed a ``final`` MLP.

    A group without a tower enters the final MLP as its raw embedding concatenation.
    """

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
        group = self.init_embedding_group()
        self.towers = nn.ModuleDict()
        for i, tower in enumerate(self._model_config.towers):
            with self.config_errors(f"towers[{i}].mlp"):
                self.towers[tower.input] = MLP.from_config(
                    group.group_total_dim(tower.input), tower.mlp
                )
        self._passthrough = [g for g in group.group_names() if g not in self.towers]
        width = sum(t.output_dim() for t in self.towers.values())
        width += sum(group.group_total_dim(g) for g in self._passthrough)
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        parts = [tower(grouped[name]) for name, tower in self.towers.items()]
        parts += [grouped[name] for name in self._passthrough]
        return self._output_to_prediction(self.final_and_head(torch.cat(parts, dim=1)))
