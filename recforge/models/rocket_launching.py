"""RocketLaunching: a light net trained beside a booster net and distilled from it."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.rank_model import RankModel, Task
from recforge.modules.mlp import MLP
from recforge.protos import simi_pb2

HINT_LOSS = "hint_l2_loss"


class RocketLaunching(RankModel):
    """RocketLaunching (Zhou et al. 2018) over the first feature group.

    The booster and the light net are MLPs (``booster_mlp``, ``light_mlp``), each with its
    own head, over the shared embeddings (through the optional ``share_mlp``). The light net
    reads them with the gradient stopped: only the booster trains the shared part. Both nets
    learn the label with the model's losses (``<loss>_booster``, ``<loss>_light``); the light
    net also learns the booster's logits (``hint_l2_loss``, the mean squared difference) and,
    with ``feature_based_distillation``, each of its layers whose width some booster layer
    shares (the first such) learns that layer's output (``similarity_<i>_<j>``: COSINE,
    ``-0.1`` times the mean cosine, or EUCLID, the l2 norm of the difference over the batch).

    In training ``predict`` returns both nets' outputs; in eval (and so in an export) only
    the light net runs: ``logits_light``/``probs_light``. Eval metrics are the light net's;
    train metrics are computed for both nets.
    """

    def _read_tasks(self) -> list[Task]:
        """The model's losses and metrics, once for the booster and once for the light net."""
        (task,) = super()._read_tasks()
        booster = Task(**{**vars(task), "name": "booster", "metrics": []})
        light = Task(**{**vars(task), "name": "light"})
        return [booster, light]

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        config = self._model_config
        self.require_fields("booster_mlp", "light_mlp")
        group = self.init_embedding_group()
        self._group = group.group_names()[0]
        width = group.group_total_dim(self._group)
        self.share_mlp: Optional[MLP] = None
        if config.HasField("share_mlp"):
            self.share_mlp = self.layer_from_config(MLP, width, "share_mlp")
            width = self.share_mlp.output_dim()
        self.booster_mlp = self.layer_from_config(MLP, width, "booster_mlp")
        self.booster_head = self.output_head(self.booster_mlp.output_dim())
        self.light_mlp = self.layer_from_config(MLP, width, "light_mlp")
        self.light_head = self.output_head(self.light_mlp.output_dim())
        self._similarity = config.feature_distillation_function
        if config.feature_based_distillation and self._similarity not in (
            simi_pb2.COSINE,
            simi_pb2.EUCLID,
        ):
            name = simi_pb2.Similarity.Name(self._similarity)
            raise ConfigError(
                f"feature_distillation_function must be COSINE or EUCLID, found {name}",
                field=self.config_field("feature_distillation_function"),
            )
        # light layer i learns booster layer j: the first booster layer of the same width
        self._layer_pairs: list[tuple[int, int]] = []
        if config.feature_based_distillation:
            booster_units = list(config.booster_mlp.hidden_units)
            for i, units in enumerate(config.light_mlp.hidden_units):
                if units in booster_units:
                    self._layer_pairs.append((i, booster_units.index(units)))

    @property
    def output_names(self) -> list[str]:
        """The light net's ``logits_light``, ``probs_light`` (and ``y_light``): eval's outputs."""
        return self.class_prediction_names(self._num_class, "_light")

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch with the light net (and, in training, the booster)."""
        shared = self.build_input(batch)[self._group]
        if self.share_mlp is not None:
            shared = self.share_mlp(shared)
        light_layers = self.light_mlp.hidden_layers(shared.detach())
        predictions = self.class_predictions(
            self.light_head(light_layers[-1]), self._num_class, "_light"
        )
        if self.training:
            booster_layers = self.booster_mlp.hidden_layers(shared)
            predictions.update(
                self.class_predictions(
                    self.booster_head(booster_layers[-1]), self._num_class, "_booster"
                )
            )
            for i, j in self._layer_pairs:
                predictions[f"light_{i}"] = light_layers[i]
                predictions[f"booster_{j}"] = booster_layers[j]
        return predictions

    def init_metric(self) -> None:
        """The base metrics without the booster's loss means (eval never runs the booster)."""
        super().init_metric()
        for name, task in self._loss_tasks.items():
            if task is self._tasks[0]:
                del self._metric_modules[name]

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Both nets' label losses and the distillation losses (in eval: the light net's)."""
        booster, light = self._tasks
        losses = {
            name: self.task_loss(name, predictions, batch)
            for name, task in self._loss_tasks.items()
            if self.training or task is light
        }
        if self.training:
            weight = self._task_sample_weight(light, batch)
            if weight is not None:
                weight = weight / weight.mean().clamp_min(1e-12)
            for i, j in self._layer_pairs:
                losses[f"similarity_{i}_{j}"] = self._similarity_loss(
                    predictions[f"light_{i}"], predictions[f"booster_{j}"].detach(), weight
                )
            hint = F.mse_loss(
                predictions["logits_light"],
                predictions["logits_booster"].detach(),
                reduction="none",
            )
            hint = hint.view(hint.shape[0], -1).mean(dim=1)
            losses[HINT_LOSS] = (hint if weight is None else hint * weight).mean()
        return losses

    def _similarity_loss(
        self, light: torch.Tensor, booster: torch.Tensor, weight: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Distance of a light layer ``[B, D]`` from a booster layer ``[B, D]``: a scalar."""
        if self._similarity == simi_pb2.COSINE:
            cosine = F.cosine_similarity(light, booster, dim=1, eps=1e-12)
            return -0.1 * (cosine if weight is None else cosine * weight).mean()
        squared = (light - booster).square().sum(dim=1)
        return (squared if weight is None else squared * weight).sum().sqrt()
