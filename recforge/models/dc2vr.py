"""DC2VR: multi-task ranking with intervention towers (de-confounded conversion rate)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.model import errors_at
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.intervention import Intervention
from recforge.modules.mlp import MLP


class DC2VR(MultiTaskRank):
    """A shared bottom (``bottom_mlp``, MMoE: each optional), then intervention task towers.

    Each tower applies its ``mlp``; a tower with ``low_rank_dim`` and
    ``intervention_tower_names`` (towers defined before it) then passes its hidden vector
    through an :class:`~recforge.modules.intervention.Intervention` whose source is those
    towers' (intervened) hidden vectors, concatenated; a linear layer gives the task's logits.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        cfg = self._model_config
        width = self.build_bottom(self.init_input())
        self.task_mlps = nn.ModuleDict()
        self.interventions = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        self._sources: dict[str, list[str]] = {}
        hidden: dict[str, int] = {}
        for task, tower in zip(self._tasks, cfg.task_towers):
            dim = width
            if tower.mlp.hidden_units:
                with errors_at(f"{task.field}.mlp", task.error_prefix()):
                    self.task_mlps[task.name] = MLP.from_config(width, tower.mlp)
                dim = self.task_mlps[task.name].output_dim()  # type: ignore[operator]
            sources = list(tower.intervention_tower_names)
            has_rank = tower.HasField("low_rank_dim")
            self._check_sources(task.name, task.field, sources, has_rank, hidden)
            if sources:
                if not 0.0 <= tower.dropout_ratio < 1.0:
                    raise ConfigError(
                        f"task '{task.name}': dropout_ratio must be in [0, 1), found"
                        f" {tower.dropout_ratio:g}",
                        field=f"{task.field}.dropout_ratio",
                    )
                with errors_at(f"{task.field}.low_rank_dim", task.error_prefix()):
                    self.interventions[task.name] = Intervention(
                        dim,
                        sum(hidden[s] for s in sources),
                        tower.low_rank_dim,
                        tower.dropout_ratio,
                    )
                self._sources[task.name] = sources
            hidden[task.name] = dim
            self.outputs[task.name] = nn.Linear(dim, task.num_class)

    @staticmethod
    def _check_sources(
        task: str, field: str, sources: list[str], has_rank: bool, defined: dict[str, int]
    ) -> None:
        """Raises ``ConfigError`` unless a tower's intervention settings are complete."""
        unknown = [s for s in sources if s not in defined]
        if unknown:
            raise ConfigError(
                f"task '{task}': intervention_tower_names {unknown} must name towers defined"
                f" before it ({', '.join(defined) or 'none'})",
                field=f"{field}.intervention_tower_names",
            )
        if sources and not has_rank:
            raise ConfigError(
                f"task '{task}' names intervention towers but sets no low_rank_dim",
                field=f"{field}.low_rank_dim",
            )
        # TorchEasyRec fails on this when building the layer; say what is missing instead
        if has_rank and not sources:
            raise ConfigError(
                f"task '{task}' sets low_rank_dim but names no intervention_tower_names",
                field=f"{field}.intervention_tower_names",
            )

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>``/``probs_<task>`` per task."""
        task_inputs = self.bottom_task_inputs(self.shared_input(batch))
        hidden: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        for task, h in zip(self._tasks, task_inputs):
            if task.name in self.task_mlps:
                h = self.task_mlps[task.name](h)
            if task.name in self.interventions:
                source = torch.cat([hidden[s] for s in self._sources[task.name]], dim=1)
                h = self.interventions[task.name](h, source)
            hidden[task.name] = h
            outputs[task.name] = self.outputs[task.name](h)
        return self._output_to_prediction(outputs)
