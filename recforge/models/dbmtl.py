"""DBMTL: Deep Bayesian Multi-Target Learning."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.masknet import MaskNetModule
from recforge.modules.mlp import MLP


class DBMTL(MultiTaskRank):
    """A shared bottom (``mask_net``, ``bottom_mlp``, MMoE: each optional), then Bayesian towers.

    The bottom runs in that order: a MaskNet module over the embeddings, an MLP, then MMoE
    experts giving each task its own input.

    Each tower applies its ``mlp``; a tower with ``relation_mlp`` then reads its own hidden
    output together with those of its ``relation_tower_names`` (towers defined before it),
    modelling ``p(task | related tasks)``; a linear layer gives the task's logits.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        cfg = self._model_config
        width = self.init_input()
        self.mask_net = None
        if cfg.HasField("mask_net"):
            self.mask_net = self.layer_from_config(MaskNetModule, width, "mask_net")
            width = self.mask_net.output_dim()
        width = self.build_bottom(width)
        self.task_mlps = nn.ModuleDict()
        self.relation_mlps = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        self._relations: dict[str, list[str]] = {}
        hidden: dict[str, int] = {}
        for i, (task, tower) in enumerate(zip(self._tasks, cfg.task_towers)):
            dim = width
            if tower.mlp.hidden_units:
                self.task_mlps[task.name] = MLP.from_config(width, tower.mlp)
                dim = self.task_mlps[task.name].output_dim()  # type: ignore[operator]
            relations = list(tower.relation_tower_names)
            fld = f"model_config.dbmtl.task_towers[{i}]"
            unknown = [r for r in relations if r not in hidden]
            if unknown:
                raise ConfigError(
                    f"task '{task.name}': relation_tower_names {unknown} must name towers defined"
                    f" before it ({', '.join(hidden) or 'none'})",
                    field=f"{fld}.relation_tower_names",
                )
            if relations and not tower.relation_mlp.hidden_units:
                raise ConfigError(
                    f"task '{task.name}' names relation towers but has no relation_mlp",
                    field=f"{fld}.relation_mlp",
                )
            if tower.relation_mlp.hidden_units:
                in_dim = dim + sum(hidden[r] for r in relations)
                self.relation_mlps[task.name] = MLP.from_config(in_dim, tower.relation_mlp)
                dim = self.relation_mlps[task.name].output_dim()  # type: ignore[operator]
                self._relations[task.name] = relations
            hidden[task.name] = dim
            self.outputs[task.name] = nn.Linear(dim, task.num_class)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        x = self.shared_input(batch)
        if self.mask_net is not None:
            x = self.mask_net(x)
        task_inputs = self.bottom_task_inputs(x)
        hidden: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        for task, h in zip(self._tasks, task_inputs):
            if task.name in self.task_mlps:
                h = self.task_mlps[task.name](h)
            if task.name in self.relation_mlps:
                parts = [h] + [hidden[r] for r in self._relations[task.name]]
                h = self.relation_mlps[task.name](torch.cat(parts, dim=1))
            hidden[task.name] = h
            outputs[task.name] = self.outputs[task.name](h)
        return self._output_to_prediction(outputs)
