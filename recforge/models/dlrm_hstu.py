"""DLRM-HSTU: multi-task ranking of candidates appended to the user's history (HSTU)."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.errors import DataError
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.models.rank_model import Task
from recforge.modules.gr.contextualized_mlp import SwishLayerNorm
from recforge.modules.gr.hstu_transducer import HSTUTransducer, SequenceInput
from recforge.modules.gr.kernel import check_hstu_build
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2

#: TorchEasyRec's fixed group names (the history's is ``hstu.name`` or ``uih``)
CANDIDATE_GROUP = "candidate"
CANDIDATE_TIMESTAMP_GROUP = "candidate_timestamp"
CONTEXTUAL_GROUP = "contextual"

logger = logging.getLogger(__name__)


def _xavier_zero_bias(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FusionMTLTower(nn.Module):
    """User row x item row -> each task's logits (TorchEasyRec's ``FusionMTLTower``).

    The element-wise product of a candidate's encoded row and its item embedding goes through
    the optional shared ``mlp``, then one linear layer with ``num_class`` outputs per task.

    Args:
        in_features: width of both rows.
        mlp: the shared MLP, or None.
        tasks: ``(name, num_class)`` of each task, in order.

    """

    def __init__(self, in_features: int, mlp: Optional[Any], tasks: list[tuple[str, int]]) -> None:
        super().__init__()
        self.mlp = MLP.from_config(in_features, mlp) if mlp is not None else None
        width = self.mlp.output_dim() if self.mlp is not None else in_features
        self._names = [name for name, _ in tasks]
        self._sizes = [num_class for _, num_class in tasks]
        self.output = nn.Linear(width, sum(self._sizes))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[T, D]`` x ``[T, D]`` -> ``{task: [T, num_class]}``."""
        x = user * item
        if self.mlp is not None:
            x = self.mlp(x)
        out = self.output(x)
        result: dict[str, torch.Tensor] = {}
        start = 0
        for name, size in zip(self._names, self._sizes):
            result[name] = out[:, start : start + size]
            start += size
        return result


class DlrmHSTU(MultiTaskRank):
    """DLRM-HSTU (Zhai et al. 2024; TorchEasyRec's ``dlrm_hstu``) for multi-task ranking.

    ``dlrm_hstu { hstu { ... input_preprocessor { contextual_preprocessor { content_encoder
    content_mlp } } } fusion_mtl_tower { mlp task_configs } max_seq_len
    item_embedding_hidden_dim concat_contextual_features }``. Feature groups (TorchEasyRec's
    names): the history ``uih`` (or ``hstu.name``; JAGGED_SEQUENCE, oldest first), the
    candidates ``candidate`` (JAGGED_SEQUENCE or DEEP), with time encoding ``uih_timestamp``
    and ``candidate_timestamp``, optionally a DEEP ``contextual`` group (one prefix token per
    feature). The candidates are appended after the history and encoded by
    :class:`~recforge.modules.gr.hstu_transducer.HSTUTransducer` (a candidate never sees
    another); each candidate's item embedding goes through the item MLP (linear, swish layer
    norm, linear, layer norm) and :class:`FusionMTLTower` scores it for every task
    (``logits_<task_name>`` / ``probs_<task_name>``).

    Where we differ from TorchEasyRec: it scores several candidates per user with jagged
    labels (one label per candidate per task); here every row has exactly one candidate and
    one label per task (a plain label column), so each sample is one (user, candidate) pair
    and the history is encoded once per candidate. Not built yet: the action encoder of the
    contextual preprocessor (the candidates' action token), the interleave preprocessor,
    ``task_bitmask`` labels, a SEQUENCE ``contextual`` group,
    ``sequence_timestamp_is_ascending: false``.
    """

    # ---- tasks: fusion_mtl_tower.task_configs ---------------------------------------------
    # Read by MultiTaskRank's task reader, so a task without losses / metrics takes the
    # model's (model_config.losses / metrics), else the default loss, as every recforge
    # multi-task model does (TorchEasyRec reads only the task's own losses in its multi-task
    # models and in dlrm_hstu alike, so the same config behaves the same in both here).
    _TASKS_FIELD = "fusion_mtl_tower.task_configs"
    _TASK_NAME_FIELD = "task_name"

    def _task_configs(self) -> list:
        return list(self._model_config.fusion_mtl_tower.task_configs)

    def _read_task(self, index: int, cfg: Any) -> Task:
        task = super()._read_task(index, cfg)
        if cfg.HasField("task_bitmask"):
            raise ConfigError(
                "task_bitmask (bits of an action label) is not supported yet; give each task"
                " its own label column",
                field=f"{task.field}.task_bitmask",
            )
        return task

    # ---- layers ------------------------------------------------------------------------------
    def build(self) -> None:
        """Builds the embedding group, the transducer, the item MLP and the task tower."""
        cfg = self._model_config
        self.require_fields("hstu", "fusion_mtl_tower")
        check_hstu_build(
            self._base_model_config.kernel,
            cfg.sequence_timestamp_is_ascending,
            self.config_field("sequence_timestamp_is_ascending"),
        )
        if cfg.max_seq_len <= 0:
            raise ConfigError(
                "dlrm_hstu needs max_seq_len > 0 (the longest history plus candidates)",
                field=self.config_field("max_seq_len"),
            )
        hstu = cfg.hstu
        kind = hstu.input_preprocessor.WhichOneof("input_preprocessor")
        pre_field = self.config_field("hstu.input_preprocessor")
        if kind != "contextual_preprocessor":
            raise ConfigError(
                f"dlrm_hstu needs input_preprocessor {{ contextual_preprocessor {{ ... }} }},"
                f" found {kind or 'none'}",
                field=pre_field,
            )
        pre = hstu.input_preprocessor.contextual_preprocessor
        if pre.HasField("action_encoder") or pre.HasField("action_mlp"):
            raise ConfigError(
                "the contextual preprocessor's action_encoder / action_mlp are not supported yet",
                field=f"{pre_field}.contextual_preprocessor.action_encoder",
            )
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        prefix = hstu.name or "uih"
        jagged = model_pb2.JAGGED_SEQUENCE
        for name, kinds in ((prefix, (jagged,)), (CANDIDATE_GROUP, (jagged, model_pb2.DEEP))):
            if name not in groups or groups[name].group_type not in kinds:
                wanted = "a JAGGED_SEQUENCE" if len(kinds) == 1 else "a JAGGED_SEQUENCE or DEEP"
                raise ConfigError(
                    f"dlrm_hstu needs {wanted} feature group '{name}' (groups:"
                    f" {', '.join(groups)})",
                    field="model_config.feature_groups",
                )
        read = [prefix, CANDIDATE_GROUP]
        timestamp = f"{prefix}_timestamp"
        if hstu.positional_encoder.use_time_encoding:
            for name in (timestamp, CANDIDATE_TIMESTAMP_GROUP):
                if name not in groups:
                    raise ConfigError(
                        f"positional_encoder.use_time_encoding needs a feature group '{name}'"
                        f" with the timestamps (groups: {', '.join(groups)})",
                        field=self.config_field("hstu.positional_encoder"),
                    )
            read += [timestamp, CANDIDATE_TIMESTAMP_GROUP]
        contextual: Optional[str] = None
        if CONTEXTUAL_GROUP in groups:
            if groups[CONTEXTUAL_GROUP].group_type != model_pb2.DEEP:
                raise ConfigError(
                    f"dlrm_hstu's '{CONTEXTUAL_GROUP}' feature group must be a DEEP group (a"
                    " SEQUENCE contextual group is not supported yet)",
                    field="model_config.feature_groups",
                )
            contextual = CONTEXTUAL_GROUP
            read.append(contextual)
        for name in groups:
            if name not in read:  # e.g. a timestamp group without time encoding
                logger.warning(
                    "dlrm_hstu does not read feature group '%s' with this config (it reads %s)",
                    name,
                    ", ".join(read),
                )
        self.embedding_group = eg = self.init_embedding_group()

        def source(name: str) -> SequenceInput:
            return SequenceInput(name, eg.is_jagged_group(name))

        def width(name: str) -> int:
            return eg.sequence_dim(name) if eg.is_jagged_group(name) else eg.group_total_dim(name)

        self._candidate = source(CANDIDATE_GROUP)
        with self.config_errors("hstu"):
            self.transducer = HSTUTransducer(
                hstu,
                source(prefix),
                width(prefix),
                self._candidate,
                width(CANDIDATE_GROUP),
                cfg.max_seq_len,
                source(timestamp) if timestamp in read else None,
                source(CANDIDATE_TIMESTAMP_GROUP) if timestamp in read else None,
                contextual,
                eg.group_dims(contextual) if contextual is not None else None,
                cfg.concat_contextual_features,
            )
        dim = self.transducer.output_dim()
        hidden = cfg.item_embedding_hidden_dim
        self.item_mlp = nn.Sequential(
            nn.Linear(width(CANDIDATE_GROUP), hidden),
            SwishLayerNorm(hidden),
            nn.Linear(hidden, dim),
            nn.LayerNorm(dim),
        )
        self.item_mlp.apply(_xavier_zero_bias)
        tower = cfg.fusion_mtl_tower
        with self.config_errors("fusion_mtl_tower.mlp"):
            self.tower = FusionMTLTower(
                dim,
                tower.mlp if tower.HasField("mlp") else None,
                [(t.name, t.num_class) for t in self._tasks],
            )
        self.tower.apply(_xavier_zero_bias)

    # ---- predict ----------------------------------------------------------------------------
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Scores each row's candidate: ``logits_<task>`` / ``probs_<task>`` ``[B, ...]``."""
        grouped = self.build_input(batch)
        user, num_targets = self.transducer(grouped)
        items, _ = self._candidate.rows(grouped)
        if not is_fx_symbolic_tracing() and bool((num_targets != 1).any()):
            raise DataError(
                f"dlrm_hstu: feature group '{CANDIDATE_GROUP}' needs exactly one candidate per"
                f" row, found {num_targets.tolist()}"
            )
        return self._output_to_prediction(self.tower(user, self.item_mlp(items)))
