"""DLRM: bottom MLP for dense features, pairwise dot interaction, top MLP."""

from __future__ import annotations

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.interaction import DotInteraction
from recforge.modules.mlp import MLP


class DLRM(RankModel):
    """DLRM (Naumov et al. 2019) over the feature groups ``sparse`` and ``dense`` (optional).

    ``sparse`` holds embeddings of one dim ``D`` (a model with a single group uses it as
    ``sparse``); ``dense`` (raw features) goes through ``dense_mlp``, whose last width must be
    ``D``. The dot products of every pair of the ``N`` (+1) vectors, the dense vector and, with
    ``arch_with_sparse``, the sparse embeddings feed the ``final`` MLP and the head.
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
            dense_dim = group.group_total_dim("dense")
            self.dense_mlp = self.layer_from_config(MLP, dense_dim, "dense_mlp")
            if self.dense_mlp.output_dim() != self._dim:
                raise ConfigError(
                    f"DLRM's dense_mlp must end in the sparse embedding dim {self._dim},"
                    f" found hidden_units {list(config.dense_mlp.hidden_units)}",
                    field=self.config_field("dense_mlp.hidden_units"),
                )
            num_vectors += 1
        self._with_sparse = config.arch_with_sparse
        self.interaction = DotInteraction(num_vectors)
        width = self.interaction.output_dim()
        width += self._dim if self.dense_mlp is not None else 0
        width += group.group_total_dim(self._sparse) if self._with_sparse else 0
        self.init_final_and_head(width, required=True)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        sparse = grouped[self._sparse]
        vectors = sparse.view(sparse.shape[0], -1, self._dim)
        dense = None
        if self.dense_mlp is not None:
            dense = self.dense_mlp(grouped["dense"])
            vectors = torch.cat([dense.unsqueeze(1), vectors], dim=1)
        parts = [self.interaction(vectors)]
        if dense is not None:
            parts.append(dense)
        if self._with_sparse:
            parts.append(sparse)
        return self._output_to_prediction(self.final_and_head(torch.cat(parts, dim=1)))
