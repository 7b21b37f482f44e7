"""DLRM-HSTU: multi-task ranking of candidates appended to the user's history (HSTU)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.datasets.jagged_labels import CANDIDATE_GROUP, NUM_CANDIDATES
from recforge.errors import DataError
from recforge.models.model import errors_at
from recforge.models.multi_task_rank import MultiTaskRank
from recforge.models.rank_model import Task
from recforge.modules.embedding import EmbeddingGroup
from recforge.modules.gr.contextualized_mlp import SwishLayerNorm
from recforge.modules.gr.from_config import (
    RANKING_PREPROCESSORS,
    ContextualPreprocessor,
    check_contextual_seq_len,
    contextual_preprocessor,
)
from recforge.modules.gr.groups import CONTEXTUAL_GROUP, contextual_group
from recforge.modules.gr.hstu_transducer import HSTUTransducer, SequenceInput
from recforge.modules.gr.kernel import check_hstu_build
from recforge.modules.gr.targets import reversed_rows
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2, module_pb2

# traced export graphs call it as one opaque (scripted) function: it depends on the data
torch.fx.wrap("reversed_rows")

#: TorchEasyRec's fixed group names (the history's is ``hstu.name`` or ``uih``)
CANDIDATE_TIMESTAMP_GROUP = "candidate_timestamp"

logger = logging.getLogger(__name__)


def _action_label(label: str, bitmask: int) -> str:
    """The name of the label a ``task_bitmask`` task derives from the action label."""
    return f"{label}&{bitmask}"


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

    Several candidates per row, as TorchEasyRec: with a JAGGED_SEQUENCE ``candidate`` group
    each row (one user) holds a list of candidates, all scored in one pass over the history,
    and every label field holds one value per candidate (a list column, or a string split at
    the candidate sequence's ``sequence_delim``; a plain number for one candidate). Losses
    and metrics run over all candidates of the batch. ``predict`` returns each task's scores
    ``[T]`` (the candidates of all rows, row after row) and ``num_candidates`` ``[B]``; the
    ``predict`` command writes one list per row (a score per candidate). A task with
    ``task_bitmask`` reads its ``label_name`` as an action label (an integer of bits per
    candidate) and learns whether any of its bits is set, as TorchEasyRec does. With
    ``sequence_timestamp_is_ascending: false`` (newest first) each user's history and
    candidates are reversed before encoding and the scores returned in the input's order.
    With ``contextual_preprocessor { action_encoder action_mlp }`` each history event's
    actions (the JAGGED_SEQUENCE group ``uih_action``, a bitmask per event, and with
    ``watchtime_to_action_thresholds`` the group ``uih_watchtime``) are encoded and added to
    its row; the candidates get one learned action row (see the transducer). With
    ``contextual_interleave_preprocessor`` (``enable_interleaving``, default true) each
    history event is two tokens instead, its content and then its actions.
    Not built yet: a SEQUENCE ``contextual`` group.
    """

    # ---- tasks: fusion_mtl_tower.task_configs ---------------------------------------------
    # Read by MultiTaskRank's task reader, so a task without losses / metrics takes the
    # model's (model_config.losses / metrics), else the default loss, as every recforge
    # multi-task model does (TorchEasyRec reads only the task's own losses in its multi-task
    # models and in dlrm_hstu alike, so the same config behaves the same in both here).
    _TASKS_FIELD = "fusion_mtl_tower.task_configs"
    _TASK_NAME_FIELD = "task_name"
    #: newest-first input, and the jagged groups reversed for it (set by ``build``)
    _descending = False
    _sequences: tuple[SequenceInput, ...] = ()

    def _task_configs(self) -> list:
        return list(self._model_config.fusion_mtl_tower.task_configs)

    def _read_task(self, index: int, cfg: Any) -> Task:
        task = super()._read_task(index, cfg)
        if cfg.HasField("task_bitmask"):
            if cfg.task_bitmask == 0:
                raise ConfigError(
                    "task_bitmask must have at least one bit set, found 0",
                    field=f"{task.field}.task_bitmask",
                )
            task.label = _action_label(cfg.label_name, cfg.task_bitmask)
        return task

    def _with_action_labels(self, batch: Batch) -> Batch:
        """``batch`` plus each ``task_bitmask`` task's derived label.

        The derived label is 1 where the action label (an integer of bits) has one of the
        task's bits set, else 0 (TorchEasyRec's reading of ``task_bitmask``).
        """
        labels = dict(batch.labels)
        lengths = dict(batch.label_lengths)
        for cfg in self._task_configs():
            if cfg.HasField("task_bitmask"):
                key = _action_label(cfg.label_name, cfg.task_bitmask)
                action = batch.labels[cfg.label_name].to(torch.int64)
                labels[key] = ((action & cfg.task_bitmask) != 0).to(torch.float32)
                if cfg.label_name in batch.label_lengths:
                    lengths[key] = batch.label_lengths[cfg.label_name]
        return dataclasses.replace(batch, labels=labels, label_lengths=lengths)

    # ---- layers ------------------------------------------------------------------------------
    def build(self) -> None:
        """Builds the embedding group, the transducer, the item MLP and the task tower."""
        cfg = self._model_config
        self.require_fields("hstu", "fusion_mtl_tower")
        self._check_common(allow_descending=True)
        hstu = cfg.hstu
        kind = hstu.input_preprocessor.WhichOneof("input_preprocessor")
        pre_field = self.config_field("hstu.input_preprocessor")
        if kind not in RANKING_PREPROCESSORS:
            raise ConfigError(
                f"dlrm_hstu needs input_preprocessor {{ contextual_preprocessor {{ ... }} }} or"
                f" {{ contextual_interleave_preprocessor {{ ... }} }}, found {kind or 'none'}",
                field=pre_field,
            )
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        prefix = hstu.name or "uih"
        if prefix not in groups or groups[prefix].group_type != model_pb2.JAGGED_SEQUENCE:
            raise ConfigError(
                f"dlrm_hstu needs a JAGGED_SEQUENCE feature group '{prefix}' (groups:"
                f" {', '.join(groups)})",
                field="model_config.feature_groups",
            )
        self._check_candidate_group(groups)
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
        actions = self._action_groups(hstu, groups, pre_field)
        read += actions + self._postprocessor_groups(hstu, groups, self.config_field("hstu"))
        contextual = self._contextual_group(groups, read)
        self.embedding_group = eg = self.init_embedding_group()
        self._candidate = self._source(eg, CANDIDATE_GROUP)
        # newest first: these groups are put oldest first before the transducer
        self._descending = not cfg.sequence_timestamp_is_ascending
        self._sequences = tuple(
            self._source(eg, name)
            for name in (prefix, CANDIDATE_GROUP, timestamp, CANDIDATE_TIMESTAMP_GROUP, *actions)
            if name in read and eg.is_jagged_group(name)
        )
        self._check_contextual_seq_len(eg, hstu, contextual, self.config_field("hstu"))
        with self.config_errors("hstu"):
            self.transducer = self._transducer(eg, hstu, read, contextual)
        self._build_head(self._width(eg, CANDIDATE_GROUP), self.transducer.output_dim())

    # ---- pieces of build shared with UltraHSTU ------------------------------------------------
    def _check_common(self, allow_descending: bool) -> None:
        """The kernel, history order and ``max_seq_len`` checks of every HSTU ranking model."""
        cfg = self._model_config
        check_hstu_build(
            self._base_model_config.kernel,
            cfg.sequence_timestamp_is_ascending,
            self.config_field("sequence_timestamp_is_ascending"),
            allow_descending=allow_descending,
        )
        if cfg.max_seq_len <= 0:
            raise ConfigError(
                f"{self._model_type} needs max_seq_len > 0 (the longest history plus candidates)",
                field=self.config_field("max_seq_len"),
            )

    def _check_candidate_group(self, groups: dict[str, Any]) -> None:
        """Raises ConfigError unless ``candidate`` is a JAGGED_SEQUENCE or DEEP group."""
        kinds = (model_pb2.JAGGED_SEQUENCE, model_pb2.DEEP)
        if CANDIDATE_GROUP not in groups or groups[CANDIDATE_GROUP].group_type not in kinds:
            raise ConfigError(
                f"{self._model_type} needs a JAGGED_SEQUENCE or DEEP feature group"
                f" '{CANDIDATE_GROUP}' (groups: {', '.join(groups)})",
                field="model_config.feature_groups",
            )

    @staticmethod
    def _source(eg: EmbeddingGroup, name: str) -> SequenceInput:
        """Where group ``name``'s rows are in ``eg``'s outputs."""
        return SequenceInput(name, eg.is_jagged_group(name))

    @staticmethod
    def _width(eg: EmbeddingGroup, name: str) -> int:
        """The width of one of group ``name``'s rows (a jagged group's element, a DEEP row)."""
        return eg.sequence_dim(name) if eg.is_jagged_group(name) else eg.group_total_dim(name)

    def _action_groups(
        self, hstu: module_pb2.HSTU, groups: dict[str, Any], pre_field: str
    ) -> list[str]:
        """The action groups ``hstu``'s action encoder reads (none without one).

        Checks the preprocessor's encoders and MLPs on the way (ConfigError at the field).

        ``<prefix>_action`` (each event's bitmask) and, with watch-time thresholds or when
        the group exists, ``<prefix>_watchtime``: JAGGED_SEQUENCE groups, TorchEasyRec's
        names.

        Args:
            hstu: the channel's ``HSTU`` message (its (interleave) contextual preprocessor).
            groups: the feature groups by name.
            pre_field: the path of its ``input_preprocessor``, for errors.

        """
        pre, interleave = contextual_preprocessor(hstu)
        field = f"{pre_field}.{hstu.input_preprocessor.WhichOneof('input_preprocessor')}"
        self._check_parameterized_mlps(pre, groups, field)
        if interleave and not pre.HasField("action_encoder"):
            raise ConfigError(
                "enable_interleaving (default true) needs an action_encoder { ... } and an"
                " action_mlp (each history event's second token), or enable_interleaving: false",
                field=f"{field}.action_encoder",
            )
        if not pre.HasField("action_encoder"):
            if pre.HasField("action_mlp"):
                # TorchEasyRec builds nothing from it then; an MLP that never runs is a mistake
                raise ConfigError(
                    "action_mlp needs an action_encoder { simple_action_encoder { ... } }",
                    field=f"{field}.action_mlp",
                )
            return []
        prefix = hstu.name or "uih"
        names = [f"{prefix}_action"]
        watchtime = f"{prefix}_watchtime"
        # without thresholds TorchEasyRec embeds the group and never reads it: taken along
        # here too, so that its documented config (which has the group) warns of nothing
        if (
            watchtime in groups
            or pre.action_encoder.simple_action_encoder.watchtime_to_action_thresholds
        ):
            names.append(watchtime)
        for name in names:
            if name not in groups or groups[name].group_type != model_pb2.JAGGED_SEQUENCE:
                raise ConfigError(
                    f"the action encoder needs a JAGGED_SEQUENCE feature group '{name}' with"
                    f" the history's {name.rsplit('_', 1)[1]} values (groups:"
                    f" {', '.join(groups)})",
                    field=f"{field}.action_encoder",
                )
        if not pre.HasField("action_mlp"):
            raise ConfigError(
                "action_encoder needs action_mlp { simple_mlp { hidden_dim } } (the MLP to the"
                " sequence width)",
                field=f"{field}.action_mlp",
            )
        return names

    @staticmethod
    def _check_parameterized_mlps(
        pre: ContextualPreprocessor, groups: dict[str, Any], field: str
    ) -> None:
        """Raises ConfigError for a ``parameterized_mlp`` the model cannot build.

        It reads the DEEP ``contextual`` group (TorchEasyRec's contextual features) and
        needs ``hidden_dim > 0``.
        """
        for name in ("content_mlp", "action_mlp"):
            mlp = getattr(pre, name)
            if not mlp.HasField("parameterized_mlp"):
                continue
            at = f"{field}.{name}.parameterized_mlp"
            if CONTEXTUAL_GROUP not in groups:
                raise ConfigError(
                    f"parameterized_mlp makes its weights from the contextual features: it"
                    f" needs a DEEP feature group '{CONTEXTUAL_GROUP}' (groups:"
                    f" {', '.join(groups)})",
                    field=at,
                )
            if mlp.parameterized_mlp.hidden_dim <= 0:
                raise ConfigError(
                    f"hidden_dim must be > 0, found {mlp.parameterized_mlp.hidden_dim}",
                    field=f"{at}.hidden_dim",
                )

    def _check_contextual_seq_len(
        self, eg: EmbeddingGroup, hstu: module_pb2.HSTU, contextual: Optional[str], field: str
    ) -> None:
        """Raises ConfigError at ``<field>.stu.contextual_seq_len`` unless valid.

        Valid: unset, or the number of contextual tokens (see
        ``from_config.check_contextual_seq_len``).
        """
        tokens = 0
        if contextual is not None:
            concat = self._model_config.concat_contextual_features
            tokens = 1 if concat else len(eg.group_dims(contextual))
        with errors_at(f"{field}.stu.contextual_seq_len"):
            check_contextual_seq_len(hstu.stu, tokens)

    def _postprocessor_groups(
        self, hstu: module_pb2.HSTU, groups: dict[str, Any], field: str
    ) -> list[str]:
        """The groups ``hstu``'s output postprocessor reads (``field``: the ``hstu`` path).

        The timestamp layer-norm postprocessor reads the candidates' timestamps (the group
        ``candidate_timestamp``, as in TorchEasyRec); the others read nothing.
        """
        post = hstu.output_postprocessor.WhichOneof("output_postprocessor")
        if post != "timestamp_layernorm_postprocessor":
            return []
        at = f"{field}.output_postprocessor.timestamp_layernorm_postprocessor"
        periods = hstu.output_postprocessor.timestamp_layernorm_postprocessor
        units, per = periods.time_duration_period_units, periods.time_duration_units_per_period
        if len(units) != len(per):
            raise ConfigError(
                f"time_duration_units_per_period needs one value per time_duration_period_units"
                f" value, found {len(per)} for {len(units)}",
                field=f"{at}.time_duration_units_per_period",
            )
        for name, values in (
            ("time_duration_period_units", units),
            ("time_duration_units_per_period", per),
        ):
            if any(v == 0 for v in values):
                raise ConfigError(f"{name} must be > 0, found {list(values)}", field=f"{at}.{name}")
        if CANDIDATE_TIMESTAMP_GROUP not in groups:
            raise ConfigError(
                f"timestamp_layernorm_postprocessor needs a feature group"
                f" '{CANDIDATE_TIMESTAMP_GROUP}' with the candidates' timestamps (groups:"
                f" {', '.join(groups)})",
                field=f"{field}.output_postprocessor",
            )
        return [CANDIDATE_TIMESTAMP_GROUP]

    def _transducer(
        self,
        eg: EmbeddingGroup,
        hstu: module_pb2.HSTU,
        read: list[str],
        contextual: Optional[str],
    ) -> HSTUTransducer:
        """Channel ``hstu``'s transducer over ``self._candidate`` and the groups of ``read``.

        Args:
            eg: the built embedding group.
            hstu: the channel's ``HSTU`` message.
            read: the groups the model reads (its history's, timestamps, actions, ...).
            contextual: the contextual group, or None.

        """
        cfg = self._model_config
        prefix = hstu.name or "uih"
        timed = hstu.positional_encoder.use_time_encoding
        post = hstu.output_postprocessor.WhichOneof("output_postprocessor")
        candidate_times = timed or post == "timestamp_layernorm_postprocessor"

        def optional(name: str, wanted: bool = True) -> Optional[SequenceInput]:
            return self._source(eg, name) if wanted and name in read else None

        return HSTUTransducer(
            hstu,
            self._source(eg, prefix),
            self._width(eg, prefix),
            self._candidate,
            self._width(eg, CANDIDATE_GROUP),
            cfg.max_seq_len,
            optional(f"{prefix}_timestamp", timed),
            optional(CANDIDATE_TIMESTAMP_GROUP, candidate_times),
            contextual,
            eg.group_dims(contextual) if contextual is not None else None,
            cfg.concat_contextual_features,
            optional(f"{prefix}_action"),
            optional(f"{prefix}_watchtime"),
        )

    def _contextual_group(self, groups: dict[str, Any], read: list[str]) -> Optional[str]:
        """The DEEP ``contextual`` group if there is one (added to ``read``).

        Then warns about every group in ``groups`` that ``read`` leaves out.
        """
        contextual = contextual_group(groups, self._model_type)
        if contextual is not None:
            read.append(contextual)
        for name in groups:
            if name not in read:  # e.g. a timestamp group without time encoding
                logger.warning(
                    "%s does not read feature group '%s' with this config (it reads %s)",
                    self._model_type,
                    name,
                    ", ".join(dict.fromkeys(read)),
                )
        return contextual

    def _build_head(self, candidate_width: int, dim: int) -> None:
        """The item MLP (``candidate_width`` -> ``dim``) and the task tower over ``dim``."""
        cfg = self._model_config
        hidden = cfg.item_embedding_hidden_dim
        self.item_mlp = nn.Sequential(
            nn.Linear(candidate_width, hidden),
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
        """Scores every candidate of every row.

        Returns:
            ``logits_<task>`` / ``probs_<task>`` ``[T, ...]``: one entry per candidate, the
            rows' candidates one after the other in row order (``T = B`` with one candidate
            per row); with a JAGGED_SEQUENCE candidate group also ``num_candidates``
            ``[B]`` (int64), each row's count, as TorchEasyRec returns it next to the scores.

        """
        grouped = self.build_input(batch)
        if self._descending:
            grouped = self._oldest_first(grouped)
        user, num_targets = self.transducer(grouped)
        items, offsets = self._candidate.rows(grouped)
        outputs = self.tower(user, self.item_mlp(items))
        if self._descending and self._candidate.jagged:  # back to the input's order
            order = reversed_rows(offsets, items.shape[0])
            outputs = {name: value.index_select(0, order) for name, value in outputs.items()}
        predictions = self._output_to_prediction(outputs)
        if self._candidate.jagged:
            predictions[NUM_CANDIDATES] = num_targets
        return predictions

    def _oldest_first(self, grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``grouped`` with the history's and the candidates' rows of each user reversed.

        TorchEasyRec likewise flips every sequence of a newest-first batch and flips the
        scores back.
        """
        grouped = dict(grouped)
        for seq in self._sequences:
            values, offsets = seq.rows(grouped)
            grouped[f"{seq.key}.sequence"] = values.index_select(
                0, reversed_rows(offsets, values.shape[0])
            )
        return grouped

    # ---- labels: one per candidate ---------------------------------------------------------
    def _check_labels(self, predictions: dict[str, torch.Tensor], batch: Batch) -> None:
        """Raises DataError unless every task label has one value per candidate."""
        if is_fx_symbolic_tracing():
            return
        counts = predictions.get(NUM_CANDIDATES)
        for task in self._tasks:
            label = batch.labels[task.label]
            column = task.label.split("&", 1)[0]  # a task_bitmask task's action label
            scores = predictions[task.key("logits")]
            lengths = batch.label_lengths.get(task.label)
            if counts is not None and lengths is not None and lengths.shape == counts.shape:
                bad = torch.nonzero(lengths.to(counts.dtype) != counts).reshape(-1)
                if bad.numel() > 0:
                    row = int(bad[0])
                    raise DataError(
                        f"label column '{column}': row {row} has {int(lengths[row])}"
                        f" values for {int(counts[row])} candidates (feature group"
                        f" '{CANDIDATE_GROUP}'); dlrm_hstu needs one label per candidate"
                    )
            if label.shape[0] != scores.shape[0]:
                raise DataError(
                    f"label column '{column}': {label.shape[0]} values for"
                    f" {scores.shape[0]} candidates in a batch; dlrm_hstu needs one label per"
                    " candidate (a list per row, or a number with one candidate per row)"
                )

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Each task's losses over all candidates (after checking one label per candidate)."""
        batch = self._with_action_labels(batch)
        self._check_labels(predictions, batch)
        return super().loss(predictions, batch)

    def metric_label(
        self, name: str, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        """The per-candidate label of the task metric ``name`` belongs to ``[T]``."""
        batch = self._with_action_labels(batch)
        self._check_labels(predictions, batch)
        return super().metric_label(name, predictions, batch)
