"""DLRM: bottom MLP for dense features, pairwise dot interaction, top MLP."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel
from recforge.modules.interaction import DotInteraction


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
        num_vectors = self.init_sparse_dense_groups()
        self._with_sparse = config.arch_with_sparse
        self.interaction = DotInteraction(num_vectors)
        width = self.interaction.output_dim()
        width += self._dim if self.dense_mlp is not None else 0
        assert self.embedding_group is not None  # built by init_sparse_dense_groups
        width += self.embedding_group.group_total_dim(self._sparse) if self._with_sparse else 0
        self.init_final_and_head(width, required=True)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits``/``probs`` ``[B]``."""
        grouped = self.build_input(batch)
        vectors, dense = self.sparse_dense_vectors(grouped)
        parts = [self.interaction(vectors)]
        if dense is not None:
            parts.append(dense)
        if self._with_sparse:
            parts.append(grouped[self._sparse])
        return self._output_to_prediction(self.final_and_head(torch.cat(parts, dim=1)))
