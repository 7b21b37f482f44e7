"""Early stopping (``train_config.early_stopping``, a recforge extension).

After each evaluation the trainer hands the metrics to :class:`EarlyStopping`; once the watched
metric has gone ``patience`` evaluations in a row without improving on its best value (by more
than ``min_delta``), training stops. ``model_dir/early_stopping.json`` records every evaluation
and the best step and checkpoint; a resumed run (``--continue_train``) replays the evaluations
up to its checkpoint, so it stops where an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from recforge.config import ConfigError
from recforge.protos import train_pb2

FIELD = "train_config.early_stopping"


@dataclass
class EarlyStopping:
    """The state of early stopping over the evaluations of one run.

    Attributes:
        metric: the eval metric watched.
        patience: evaluations in a row without improvement that stop training.
        bigger_is_better: the direction of improvement.
        min_delta: how much a value must beat the best by to count.
        history: ``(global_step, value, checkpoint)`` of every evaluation so far.
        best: index into ``history`` of the best evaluation, or None before the first.

    """

    metric: str
    patience: int
    bigger_is_better: bool = True
    min_delta: float = 0.0
    history: list[tuple[int, float, str]] = field(default_factory=list)
    best: Optional[int] = None

    @classmethod
    def from_config(cls, config: train_pb2.EarlyStopping) -> EarlyStopping:
        """Builds it from ``train_config.early_stopping``.

        Raises:
            ConfigError: ``patience`` is 0, ``metric`` empty or ``min_delta`` negative.

        """
        if config.patience < 1:
            raise ConfigError(
                f"expected a patience of at least 1 evaluation, found {config.patience}",
                field=f"{FIELD}.patience",
            )
        if not config.metric:
            raise ConfigError("expected an eval metric name, found none", field=f"{FIELD}.metric")
        if config.min_delta < 0:
            raise ConfigError(
                f"expected min_delta >= 0, found {config.min_delta}", field=f"{FIELD}.min_delta"
            )
        return cls(config.metric, config.patience, config.bigger_is_better, config.min_delta)

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        best = self.history[self.best][1]
        gain = value - best if self.bigger_is_better else best - value
        return gain > self.min_delta

    def update(self, step: int, metrics: dict[str, float], checkpoint: str = "") -> None:
        """Records the evaluation of ``step`` (a repeated step is recorded once).

        Args:
            step: the global step evaluated.
            metrics: the eval metrics.
            checkpoint: the checkpoint saved at ``step``, if any.

        Raises:
            ConfigError: ``metrics`` has no value for the watched metric.

        """
        if self.history and self.history[-1][0] == step:
            return
        if self.metric not in metrics:
            raise ConfigError(
                f"expected one of the eval metrics {sorted(metrics)}, found '{self.metric}'",
                field=f"{FIELD}.metric",
            )
        value = float(metrics[self.metric])
        self.history.append((step, value, checkpoint))
        if self._improves(value):
            self.best = len(self.history) - 1

    @property
    def evaluations_without_improvement(self) -> int:
        """Evaluations since the best one."""
        return 0 if self.best is None else len(self.history) - 1 - self.best

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no improvement."""
        return self.evaluations_without_improvement >= self.patience

    def as_dict(self) -> dict:
        """The record written to ``early_stopping.json``."""
        best = self.history[self.best] if self.best is not None else None
        return {
            "metric": self.metric,
            "bigger_is_better": self.bigger_is_better,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "stopped": self.should_stop,
            "best_step": best[0] if best else None,
            "best_value": best[1] if best else None,
            "best_checkpoint": best[2] if best else None,
            "evaluations": [
                {"global_step": s, "value": v, "checkpoint": c} for s, v, c in self.history
            ],
        }

    def write(self, path: str) -> None:
        """Writes :meth:`as_dict` to ``path`` atomically."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.as_dict(), f, indent=1)
        os.replace(tmp, path)

    def replay(self, path: str, up_to_step: int) -> None:
        """Replays the evaluations recorded in ``path`` up to ``up_to_step`` (resuming).

        A missing file, or one about another metric, leaves the state empty.
        """
        if not os.path.exists(path):
            return
        with open(path) as f:
            record = json.load(f)
        if record.get("metric") != self.metric:
            return
        for entry in record.get("evaluations", []):
            if int(entry["global_step"]) <= up_to_step:
                self.update(
                    int(entry["global_step"]),
                    {self.metric: float(entry["value"])},
                    entry.get("checkpoint", ""),
                )
