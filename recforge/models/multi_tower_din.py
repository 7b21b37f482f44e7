"""MultiTowerDIN: MultiTower towers plus DIN attention over behaviour sequences."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.din import DINEncoder
from recforge.modules.embedding import EmbeddingGroupError
from recforge.modules.mlp import MLP


class MultiTowerDIN(RankModel):
    """Tower MLPs over DEEP groups and DIN encoders over SEQUENCE groups, joined by ``final``.

    ``towers { input mlp }`` as in MultiTower; ``din_towers { input attn_mlp }`` each name a
    SEQUENCE group whose query features (the candidate, e.g. ``item_id`` and ``category``)
    attend over its sequence features (e.g. ``click_seq__item_id``, ``click_seq__category``).
    DEEP groups without a tower enter the final MLP as their raw embeddings.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        group = self.init_embedding_group()
        config = self._model_config
        self.towers = nn.ModuleDict()
        for i, tower in enumerate(config.towers):
            if group.is_sequence_group(tower.input):
                raise EmbeddingGroupError(
                    f"MultiTowerDIN: towers input '{tower.input}' is a SEQUENCE group; list it"
                    " in din_towers"
                )
            with self.config_errors(f"towers[{i}].mlp"):
                self.towers[tower.input] = MLP.from_config(
                    group.group_total_dim(tower.input), tower.mlp
                )
        self.din_towers = nn.ModuleDict()
        for i, din in enumerate(config.din_towers):
            if not group.is_sequence_group(din.input):
                raise EmbeddingGroupError(
                    f"MultiTowerDIN: din_towers input '{din.input}' must be a SEQUENCE group"
                )
            with self.config_errors(f"din_towers[{i}].attn_mlp"):
                self.din_towers[din.input] = DINEncoder(
                    group.query_dim(din.input),
                    group.sequence_dim(din.input),
                    group.sequence_length(din.input),
                    din.attn_mlp,
                    name=din.input,
                )
        if not self.din_towers:
            raise ConfigError(
                "MultiTowerDIN needs at least one din_towers entry",
                field=self.config_field("din_towers"),
            )
        used = set(self.towers) | set(self.din_towers)
        self._passthrough = [
            g for g in group.group_names() if g not in used and not group.is_sequence_group(g)
        ]
        width = sum(t.output_dim() for t in self.towers.values())  # type: ignore[operator]
        width += sum(d.output_dim() for d in self.din_towers.values())  # type: ignore[operator]
        width += sum(group.group_total_dim(g) for g in self._passthrough)
        self.init_final_and_head(width)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        parts = [tower(grouped[name]) for name, tower in self.towers.items()]
        for name, din in self.din_towers.items():
            parts.append(
                din(
                    grouped[f"{name}.query"],
                    grouped[f"{name}.sequence"],
                    grouped[f"{name}.sequence_length"],
                )
            )
        parts += [grouped[name] for name in self._passthrough]
        return self._output_to_prediction(self.final_and_head(torch.cat(parts, dim=1)))
