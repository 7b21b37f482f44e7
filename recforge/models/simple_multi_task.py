"""SimpleMultiTask: shared embeddings, one MLP tower per task."""

from __future__ import annotations

import torch

from recforge.datasets.batch import Batch
from recforge.models.multi_task_rank import MultiTaskRank


class SimpleMultiTask(MultiTaskRank):
    """Each task's tower (``task_towers { mlp }``) reads all feature groups concatenated."""

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        width = self.init_input()
        self.towers = self.task_heads([width] * len(self._tasks))

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        x = self.shared_input(batch)
        outputs = {task.name: tower(x) for task, tower in zip(self._tasks, self.towers)}
        return self._output_to_prediction(outputs)
