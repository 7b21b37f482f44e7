"""PLE: Progressive Layered Extraction (Tang et al. 2020)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.extraction_net import ExtractionNet


class PLE(MultiTaskRank):
    """Stacked extraction networks (task and shared experts with gates), then task towers."""

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        layers = list(self._model_config.extraction_networks)
        if not layers:
            raise ConfigError(
                "PLE needs extraction_networks", field=self.config_field("extraction_networks")
            )
        width = self.init_input()
        task_widths, shared_width = [width] * len(self._tasks), width
        self.extraction_nets = nn.ModuleList()
        for i, layer in enumerate(layers):
            with self.config_errors(f"extraction_networks[{i}]"):
                net = ExtractionNet(task_widths, shared_width, layer, final=i == len(layers) - 1)
            self.extraction_nets.append(net)
            task_widths = [net.output_dim()] * len(self._tasks)
            shared_width = net.output_dim()
        self.towers = self.task_heads(task_widths)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        shared = self.shared_input(batch)
        task_inputs = [shared] * len(self._tasks)
        for net in self.extraction_nets:
            task_inputs, shared = net(task_inputs, shared)
        outputs = {
            task.name: tower(x) for task, tower, x in zip(self._tasks, self.towers, task_inputs)
        }
        return self._output_to_prediction(outputs)
