"""WuKong: stacked factorization-machine interaction layers (Zhang et al. 2024)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
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
        num_vectors = self.init_sparse_dense_groups()
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
        vectors, _ = self.sparse_dense_vectors(grouped)
        for layer in self.layers:
            vectors = layer(vectors)
        return self._output_to_prediction(self.final_and_head(vectors.flatten(1)))
