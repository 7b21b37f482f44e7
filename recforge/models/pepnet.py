"""PEPNet: embedding (EPNet) and parameter (PPNet) personalisation gates (Chang et al. 2023)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.errors import DataError
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.modules.personalized_net import EPNet, PPNet


class PEPNet(MultiTaskRank):
    """Task towers over the ``all`` group, gated by the optional ``domain`` and ``uia`` groups.

    With a ``domain`` group, EPNet scales the ``all`` embeddings by a gate of the domain
    features; with a ``uia`` group, PPNet gives each task its own MLP whose layers are gated
    by the user/item/author features (without one, every tower reads the embeddings).

    With ``domain_input_name`` (a label column of domain indices ``0..task_domain_num-1``)
    each task has one tower per domain; the outputs are ``logits_<task>_<d>`` /
    ``probs_<task>_<d>`` for every domain ``d``, and losses and metrics read each sample's
    own domain's output.
    """

    def build(self) -> None:
        """Builds the layers (see :meth:`BaseModel.build`)."""
        config = self._model_config
        group = self.init_embedding_group()
        self.require_groups("all")
        names = group.group_names()
        main_dim = group.group_total_dim("all")
        width = main_dim
        self.epnet: Optional[EPNet] = None
        if "domain" in names:
            hidden = config.epnet_hidden_unit if config.HasField("epnet_hidden_unit") else width
            with self.config_errors("epnet_hidden_unit"):
                self.epnet = EPNet(
                    main_dim, group.group_total_dim("domain"), hidden, config.epnet_gamma
                )
        self.ppnet: Optional[PPNet] = None
        if "uia" in names:
            with self.config_errors("ppnet_hidden_units"):
                self.ppnet = PPNet(
                    main_dim,
                    group.group_total_dim("uia"),
                    len(self._tasks),
                    list(config.ppnet_hidden_units),
                    config.ppnet_activation,
                    list(config.ppnet_dropout_ratio),
                    config.ppnet_gamma,
                )
            width = self.ppnet.output_dim()
        self._domain_label = config.domain_input_name or None
        self._num_domains = config.task_domain_num if self._domain_label else 1
        if self._domain_label is not None:
            if self._domain_label not in self._labels:
                raise ConfigError(
                    f"PEPNet reads the domain of each sample from label {self._domain_label!r},"
                    f" which is not in data_config.label_fields ({', '.join(self._labels)})",
                    field=self.config_field("domain_input_name"),
                )
            if self._num_domains < 1:
                raise ConfigError(
                    f"task_domain_num must be >= 1, found {self._num_domains}",
                    field=self.config_field("task_domain_num"),
                )
        # towers[task * num_domains + domain]: task_heads builds one head per task
        per_domain = [self.task_heads([width] * len(self._tasks)) for _ in range(self._num_domains)]
        self.towers = nn.ModuleList(
            heads[t] for t in range(len(self._tasks)) for heads in per_domain
        )

    def _suffixes(self, suffix: str) -> list[str]:
        """A task's output suffixes: one per domain with ``domain_input_name``."""
        if self._domain_label is None:
            return [suffix]
        return [f"{suffix}_{d}" for d in range(self._num_domains)]

    @property
    def output_names(self) -> list[str]:
        """``logits``/``probs``(/``y``) of each task (and domain)."""
        return [
            name
            for task in self._tasks
            for suffix in self._suffixes(task.suffix)
            for name in self.class_prediction_names(task.num_class, suffix)
        ]

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores the batch: ``logits_<task>[_<domain>]`` / ``probs_<task>[_<domain>]``."""
        grouped = self.build_input(batch)
        main = grouped["all"]
        if self.epnet is not None:
            main = self.epnet(main, grouped["domain"])
        if self.ppnet is not None:
            task_inputs = self.ppnet(main, grouped["uia"])
        else:
            task_inputs = [main] * len(self._tasks)
        predictions: dict[str, torch.Tensor] = {}
        for t, task in enumerate(self._tasks):
            for d, suffix in enumerate(self._suffixes(task.suffix)):
                tower = self.towers[t * self._num_domains + d]
                predictions.update(
                    self.class_predictions(tower(task_inputs[t]), task.num_class, suffix)
                )
        return predictions

    def _own_domain(
        self, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """Each task's predictions of each sample's own domain, named without the domain."""
        if self._domain_label is None:
            return predictions
        domain = batch.labels[self._domain_label].long()
        bad = (domain < 0) | (domain >= self._num_domains)
        if bool(bad.any()):
            raise DataError(
                f"label {self._domain_label!r} (PEPNet's domain_input_name) must hold domain"
                f" indices 0..{self._num_domains - 1} (task_domain_num), found"
                f" {int(domain[bad][0])}"
            )
        selected = {}
        for task in self._tasks:
            for name in self.class_prediction_names(task.num_class, task.suffix):
                stacked = torch.stack(
                    [predictions[f"{name}_{d}"] for d in range(self._num_domains)], dim=1
                )  # [B, num_domains] or [B, num_domains, C]
                index = domain.view(-1, 1, *([1] * (stacked.dim() - 2)))
                index = index.expand(-1, 1, *stacked.shape[2:])
                selected[name] = stacked.gather(1, index).squeeze(1)
        return selected

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Each task's losses on its own-domain predictions (see :class:`MultiTaskRank`)."""
        return super().loss(self._own_domain(predictions, batch), batch)

    def update_metric(
        self,
        predictions: dict[str, torch.Tensor],
        batch: Batch,
        losses: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Adds a batch's own-domain predictions to the eval metrics."""
        super().update_metric(self._own_domain(predictions, batch), batch, losses)

    def update_train_metric(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Adds a batch's own-domain predictions to the train metrics."""
        super().update_train_metric(self._own_domain(predictions, batch), batch)
