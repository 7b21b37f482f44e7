"""WuKong: stacked factorization-machine interaction layers (Zhang et al. 2024)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.mlp import MLP
from recforge.modules.wukong import WuKongLayer


class WuKong(RankModel):
    """WuKong over the feature groups ``sparse`` and ``dense`` (optional), as DLRM reads them.

    ``sparse`` holds ``N`` embeddings of one dim ``D`` (a model with a single group uses it as
    ``sparse``); ``dense`` goes through ``dense_mlp``, whose last width must be ``D``, and
    becomes one more vector, first. The ``[B, N(+1), D]`` vectors run through the
    ``wukong_layers``, then flattened through the (required) ``final`` MLP and the head.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        config = self._model_config
        group = self.init_embedding_group()
        names = group.group_names()
        self._sparse = names[0] if len(names) == 1 else "sparse"
        self.require_groups(self._sparse)
        self._dim = self.uniform_group_dim(self._sparse)
        num_vectors = group.group_feature_count(self._sparse)
        self.dense_mlp = None
        if "dense" in names and self._sparse != "dense":
            self.dense_mlp = self.layer_from_config(
                MLP, group.group_total_dim("dense"), "dense_mlp"
            )
            if self.dense_mlp.output_dim() != self._dim:
                raise ConfigError(
                    f"WuKong's dense_mlp must end in the sparse embedding dim {self._dim},"
                    f" found hidden_units {list(config.dense_mlp.hidden_units)}",
                    field=self.config_field("dense_mlp.hidden_units"),
                )
            num_vectors += 1
        self.layers = nn.ModuleList()
        for i, layer_config in enumerate(config.wukong_layers):
            with self.config_errors(f"wukong_layers[{i}]"):
                layer = WuKongLayer.from_config(self._dim, num_vectors, layer_config)
            self.layers.append(layer)
            num_vectors = layer.output_feature_num()
        self.init_final_and_head(num_vectors * self._dim, required=True)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        sparse = grouped[self._sparse]
        vectors = sparse.view(sparse.shape[0], -1, self._dim)
        if self.dense_mlp is not None:
            dense = self.dense_mlp(grouped["dense"])
            vectors = torch.cat([dense.unsqueeze(1), vectors], dim=1)
        for layer in self.layers:
            vectors = layer(vectors)
        return self._output_to_prediction(self.final_and_head(vectors.flatten(1)))
