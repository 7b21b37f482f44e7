"""PLE: Progressive Layered Extraction (Tang et al. 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.extraction_net import ExtractionNet


class PLE(MultiTaskRank):
    """Stacked extraction networks (task and shared experts with gates), then task towers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        layers = list(self._model_config.extraction_networks)
        if not layers:
            raise ConfigError("PLE needs extraction_networks", field="model_config.ple")
        width = self.init_input()
        task_widths, shared_width = [width] * len(self._tasks), width
        self.extraction_nets = nn.ModuleList()
        for i, layer in enumerate(layers):
            net = ExtractionNet(task_widths, shared_width, layer, final=i == len(layers) - 1)
            self.extraction_nets.append(net)
            task_widths = [net.output_dim()] * len(self._tasks)
            shared_width = net.output_dim()
        self.towers = self.task_heads(task_widths)
        self.init_loss()
        self.init_metric()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        shared = self.shared_input(batch)
        task_inputs = [shared] * len(self._tasks)
        for net in self.extraction_nets:
            task_inputs, shared = net(task_inputs, shared)
        outputs = {
            task.name: tower(x) for task, tower, x in zip(self._tasks, self.towers, task_inputs)
        }
        return self._multi_task_output_to_prediction(outputs)
