"""MMoE: Multi-gate Mixture-of-Experts (Ma et al. 2018)."""

from __future__ import annotations

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.mmoe import MMoE as MMoEModule


class MMoE(MultiTaskRank):
    """Shared experts over all feature groups, a softmax gate per task, then task towers."""

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        cfg = self._model_config
        if not cfg.expert_mlp.hidden_units:
            raise ConfigError(
                "MMoE needs expert_mlp { hidden_units }", field=self.config_field("expert_mlp")
            )
        width = self.init_input()
        with self.config_errors("expert_mlp"):
            self.mmoe = MMoEModule(
                width,
                cfg.expert_mlp,
                cfg.num_expert,
                len(self._tasks),
                cfg.gate_mlp if cfg.HasField("gate_mlp") else None,
            )
        self.towers = self.task_heads([self.mmoe.output_dim()] * len(self._tasks))

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        assert self.mmoe is not None  # built by build()
        task_inputs = self.mmoe(self.shared_input(batch))
        outputs = {
            task.name: tower(x) for task, tower, x in zip(self._tasks, self.towers, task_inputs)
        }
        return self._output_to_prediction(outputs)
