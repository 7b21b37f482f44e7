"""MMoE: Multi-gate Mixture-of-Experts (Ma et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.features import BaseFeature
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.mmoe import MMoE as MMoEModule
from recforge.protos import data_pb2, model_pb2


class MMoE(MultiTaskRank):
    """Shared experts over all feature groups, a softmax gate per task, then task towers."""

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
        task_inputs = self.mmoe(self.shared_input(batch))
        outputs = {
            task.name: tower(x) for task, tower, x in zip(self._tasks, self.towers, task_inputs)
        }
        return self._output_to_prediction(outputs)
