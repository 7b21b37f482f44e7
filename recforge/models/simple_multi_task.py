"""SimpleMultiTask: shared embeddings, one MLP tower per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.protos import data_pb2, model_pb2


class SimpleMultiTask(MultiTaskRank):
    """Each task's tower (``task_towers { mlp }``) reads all feature groups concatenated."""

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
        width = self.init_input()
        self.towers = self.task_heads([width] * len(self._tasks))

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        x = self.shared_input(batch)
        outputs = {task.name: tower(x) for task, tower in zip(self._tasks, self.towers)}
        return self._output_to_prediction(outputs)
