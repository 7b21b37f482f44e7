"""HSTU match: an HSTU user tower over the jagged history against an item tower."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.errors import DataError
from recforge.models.match_model import MatchModel, MatchTower
from recforge.modules.embedding import EmbeddingGroup
from recforge.modules.gr.hstu_encoder import HSTUUserEncoder
from recforge.modules.gr.jagged import last_rows, offsets_of, row_index
from recforge.modules.gr.kernel import check_hstu_build
from recforge.protos import model_pb2

#: TorchEasyRec's fixed group names (the history's prefix is ``hstu.name`` or ``uih``)
QUERY_TIME_GROUP = "query_time"
CONTEXTUAL_GROUP = "contextual"
#: the training-only output of ``autoregressive_loss``: every history event's logits
AUTOREGRESSIVE_KEY = "autoregressive_logits"

logger = logging.getLogger(__name__)


class HSTUUserTower(nn.Module):
    """Grouped features -> user embedding ``[B, D]``: the HSTU encoder, then ``output_dim``."""

    def __init__(self, encoder: HSTUUserEncoder, output_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.output_dim()
        self.output = nn.Linear(width, output_dim) if output_dim > 0 else None
        self._output_dim = output_dim if output_dim > 0 else width

    def output_dim(self) -> int:
        """Width of the user embedding."""
        return self._output_dim

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, D]``."""
        x = self.encoder(grouped)
        return self.output(x) if self.output is not None else x

    def all_rows(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's embedding ``[L', D]`` and the offsets ``[B + 1]`` (see ``encode``)."""
        x, offsets = self.encoder.encode(grouped)
        return (self.output(x) if self.output is not None else x), offsets


class HSTUItemTower(nn.Module):
    """Grouped features -> item embedding ``[B, D]`` (a DEEP group, or one jagged row per item)."""

    def __init__(self, key: str, tower: MatchTower) -> None:
        super().__init__()
        self._key = key
        self.tower = tower

    def output_dim(self) -> int:
        """Width of the item embedding."""
        return self.tower.output_dim()

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, D]``."""
        return self.tower(grouped[self._key])


class GroupedTowerModule(nn.Module):
    """One tower with its own tables, for export: ``Batch`` -> embeddings ``[B, D]``."""

    def __init__(self, embedding_group: EmbeddingGroup, tower: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.embedding_group = embedding_group
        self.tower = tower
        self._normalize = normalize

    def forward(self, batch: Batch) -> torch.Tensor:
        """``[B, D]`` (L2-normalised for cosine similarity)."""
        emb = self.tower(self.embedding_group(batch.sparse_features, batch.dense_features))
        return F.normalize(emb, dim=-1) if self._normalize else emb


class HSTUMatch(MatchModel):
    """HSTU retrieval (Zhai et al. 2024, TorchEasyRec's ``hstu_match``) as a two-tower model.

    ``hstu_match { user_tower { input hstu max_seq_len } item_tower { input mlp } output_dim
    similarity temperature in_batch_negative }``. The user tower reads the JAGGED_SEQUENCE
    group ``user_tower.input`` (the history, oldest first), the JAGGED_SEQUENCE groups
    ``<prefix>_action`` / ``<prefix>_watchtime`` for an action encoder, ``<prefix>_timestamp``
    for time encoding (``prefix`` is ``hstu.name`` or ``uih``), an optional DEEP group
    ``contextual`` (user features, one token each) and an optional DEEP group ``query_time``
    (:class:`~recforge.modules.gr.hstu_encoder.HSTUUserEncoder`); its output is the last
    event's row. The item tower is an MLP over ``item_tower.input``. Both towers look up one
    embedding group: a JAGGED_SEQUENCE candidate group shares the history's tables by
    ``embedding_name``; a DEEP one pools its ids in tables of its own. Candidates, loss and
    recall are :class:`~recforge.models.match_model.MatchModel`'s.

    Where we differ from TorchEasyRec: its candidates are a JAGGED_SEQUENCE group with several
    positives per user, scored by a sampler that reports each row's positive count, and it
    refuses ``in_batch_negative``; here each row has one positive item (a DEEP group, or a
    JAGGED_SEQUENCE group with one element per row), so in-batch and sampled negatives work as
    in DSSM.
    """

    if TYPE_CHECKING:  # for mypy only
        user_tower: HSTUUserTower  # type: ignore[assignment]
        item_tower: HSTUItemTower  # type: ignore[assignment]

    def shares_tables(self) -> bool:
        """The history and the candidates share tables (one collection)."""
        return True

    def build(self) -> None:
        """Builds the embedding group and both towers from the ``hstu_match`` message."""
        cfg = self._model_config
        self.require_fields("user_tower", "item_tower")
        check_hstu_build(
            self._base_model_config.kernel,
            cfg.sequence_timestamp_is_ascending,
            self.config_field("sequence_timestamp_is_ascending"),
        )
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        uih = self._group("user_tower.input", cfg.user_tower.input, groups)
        item = self._group("item_tower.input", cfg.item_tower.input, groups)
        if groups[uih].group_type != model_pb2.JAGGED_SEQUENCE:
            raise ConfigError(
                f"hstu_match's user_tower.input '{uih}' must be a JAGGED_SEQUENCE group",
                field=self.config_field("user_tower.input"),
            )
        if groups[item].group_type == model_pb2.SEQUENCE:
            raise ConfigError(
                f"hstu_match's item_tower.input '{item}' must be a DEEP or JAGGED_SEQUENCE group",
                field=self.config_field("item_tower.input"),
            )
        contextual: Optional[str] = None
        if CONTEXTUAL_GROUP in groups:
            if groups[CONTEXTUAL_GROUP].group_type != model_pb2.DEEP:
                raise ConfigError(
                    f"hstu_match's '{CONTEXTUAL_GROUP}' feature group must be a DEEP group (a"
                    " SEQUENCE contextual group is not supported yet)",
                    field="model_config.feature_groups",
                )
            contextual = CONTEXTUAL_GROUP
        hstu = cfg.user_tower.hstu
        if cfg.user_tower.max_seq_len <= 0:
            raise ConfigError(
                "hstu_match needs user_tower.max_seq_len > 0 (the longest history)",
                field=self.config_field("user_tower.max_seq_len"),
            )
        kind = hstu.input_preprocessor.WhichOneof("input_preprocessor")
        if kind not in (None, "uih_preprocessor"):
            raise ConfigError(
                f"hstu_match's user tower reads the history alone: use input_preprocessor"
                f" {{ uih_preprocessor {{ ... }} }}, found {kind}",
                field=self.config_field("user_tower.hstu.input_preprocessor"),
            )
        user_groups = [groups[uih]]
        prefix = hstu.name or "uih"
        pre = hstu.input_preprocessor.uih_preprocessor
        if pre.HasField("action_encoder"):
            needed = [f"{prefix}_action"]
            if pre.action_encoder.simple_action_encoder.watchtime_to_action_thresholds:
                needed.append(f"{prefix}_watchtime")
            for name in needed:
                if name not in groups:
                    raise ConfigError(
                        f"the action encoder needs a JAGGED_SEQUENCE group '{name}' with the"
                        f" history's {name.rsplit('_', 1)[1]} values (groups: {', '.join(groups)})",
                        field=self.config_field(
                            "user_tower.hstu.input_preprocessor.uih_preprocessor.action_encoder"
                        ),
                    )
                user_groups.append(groups[name])
        timestamp = f"{prefix}_timestamp"
        if hstu.positional_encoder.use_time_encoding:
            if timestamp not in groups:
                raise ConfigError(
                    f"positional_encoder.use_time_encoding needs a JAGGED_SEQUENCE group"
                    f" '{timestamp}' with the history's timestamps (groups: {', '.join(groups)})",
                    field=self.config_field("user_tower.hstu.positional_encoder"),
                )
            user_groups.append(groups[timestamp])
        if contextual is not None:
            user_groups.append(groups[contextual])
        query_time: Optional[str] = None
        if QUERY_TIME_GROUP in groups and hstu.positional_encoder.use_time_encoding:
            query_time = QUERY_TIME_GROUP
            user_groups.append(groups[QUERY_TIME_GROUP])
        self._user_groups = user_groups
        read = {g.group_name for g in user_groups} | {item}
        for name in groups:
            if name not in read:  # e.g. a watch-time group without watchtime thresholds
                logger.warning(
                    "hstu_match does not read feature group '%s' with this config (it reads %s)",
                    name,
                    ", ".join(sorted(read)),
                )
        self._group_names = {"user": uih, "item": item}
        self._shared_tables = True
        self.embedding_group = EmbeddingGroup(
            self._features,
            [*user_groups, groups[item]],
            device=self._embedding_device,
            variational_dropout=self.variational_dropout_config(),
            embedding_l2=self.embedding_l2_regularization(),
        )
        eg = self.embedding_group
        with self.config_errors("user_tower.hstu"):
            encoder = HSTUUserEncoder(
                eg.sequence_dim(uih),
                hstu,
                cfg.user_tower.max_seq_len,
                uih,
                timestamp,
                query_time,
                f"{prefix}_action",
                f"{prefix}_watchtime",
                contextual,
                eg.group_dims(contextual) if contextual is not None else None,
            )
        self.user_tower = HSTUUserTower(encoder, cfg.output_dim)
        jagged_item = eg.is_jagged_group(item)
        item_dim = eg.sequence_dim(item) if jagged_item else eg.group_total_dim(item)
        with self.config_errors("item_tower.mlp"):
            tower = MatchTower(
                item_dim,
                cfg.item_tower.mlp if cfg.item_tower.HasField("mlp") else None,
                cfg.output_dim,
                False,
            )
        self.item_tower = HSTUItemTower(f"{item}.sequence" if jagged_item else item, tower)
        user_dim, item_dim = self.user_tower.output_dim(), self.item_tower.output_dim()
        if user_dim != item_dim:
            raise ConfigError(
                f"hstu_match: the user tower outputs {user_dim} values and the item tower"
                f" {item_dim}; make stu.embedding_dim and item_tower.mlp end equal or set"
                " hstu_match.output_dim",
                field=self.config_field("output_dim"),
            )
        self._check_sampler_columns()
        self._autoregressive = bool(cfg.autoregressive_loss)
        if self._autoregressive:
            self._check_autoregressive(groups[uih], groups[item])

    def _check_autoregressive(
        self, uih: model_pb2.FeatureGroupConfig, item: model_pb2.FeatureGroupConfig
    ) -> None:
        """The item tower must read a history event as it reads a candidate (one shared id)."""
        eg = self.embedding_group
        item_key = item.group_name
        width = (
            eg.sequence_dim(item_key)
            if eg.is_jagged_group(item_key)
            else eg.group_total_dim(item_key)
        )
        if len(uih.feature_names) != 1 or len(item.feature_names) != 1:
            raise ConfigError(
                "autoregressive_loss scores history events as items: the history group and"
                f" item_tower.input need one (id) feature each; found {list(uih.feature_names)}"
                f" and {list(item.feature_names)}",
                field=self.config_field("autoregressive_loss"),
            )
        if width != eg.sequence_dim(uih.group_name):
            raise ConfigError(
                f"autoregressive_loss: the history's rows are {eg.sequence_dim(uih.group_name)}"
                f" wide and item_tower.input's {width}; they must be one embedding (give both"
                " features one embedding_name)",
                field=self.config_field("autoregressive_loss"),
            )
        by_name = {f.name: f for f in self._features}
        hist_table = by_name[uih.feature_names[0]].embedding_name
        item_table = by_name[item.feature_names[0]].embedding_name
        if not eg.is_jagged_group(item_key) or hist_table != item_table:
            # a DEEP group's ids are pooled in tables of their own even under the history's
            # embedding_name: the next items (history rows) and the negatives (candidate rows)
            # would then come from two tables, which the loss tells apart without learning
            raise ConfigError(
                "autoregressive_loss scores history events against the candidates, so both"
                " must be rows of one table: item_tower.input must be a JAGGED_SEQUENCE group"
                " (one element per row) whose feature has the history's embedding_name"
                f" '{hist_table}'; found a"
                f" {'JAGGED_SEQUENCE' if eg.is_jagged_group(item_key) else 'DEEP'} group with"
                f" embedding_name '{item_table}'",
                field=self.config_field("autoregressive_loss"),
            )
        self._id_keys = (uih.feature_names[0], item.feature_names[0])

    def _group(self, field: str, name: str, groups: dict) -> str:
        if name not in groups:
            raise ConfigError(
                f"hstu_match needs {field} to name a feature group; found '{name}'"
                f" (groups: {', '.join(groups)})",
                field=self.config_field(field),
            )
        return name

    # ---- towers ---------------------------------------------------------------------------
    def tower_groups(self, side: str) -> list[model_pb2.FeatureGroupConfig]:
        """The user tower reads the history (and timestamp, query time) groups."""
        if side == "user":
            return list(self._user_groups)
        return super().tower_groups(side)

    def tower_module(self, side: str) -> nn.Module:
        """A CPU copy of one tower with only its own tables (for export / serving)."""
        tables = EmbeddingGroup(
            self.tower_features(side),
            self.tower_groups(side),
            device=torch.device("cpu"),
            variational_dropout=self.variational_dropout_config(),
        )
        tables.copy_weights_from(self.embedding_group)
        tower = copy.deepcopy(getattr(self, f"{side}_tower")).cpu()
        return GroupedTowerModule(tables, tower, self._cosine).eval()

    # ---- predict ----------------------------------------------------------------------------
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds histories and items and scores every user against its candidates."""
        grouped = self.embedding_group(batch.sparse_features, batch.dense_features)
        num_neg = self.num_negatives(batch)
        user_grouped = grouped
        if num_neg:
            user_grouped = self._user_rows(grouped, batch.batch_size - num_neg)
        events: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        if self._autoregressive and self.training:
            events = self.user_tower.all_rows(user_grouped)
            user_emb = last_rows(*events)
        else:
            user_emb = self.user_tower(user_grouped)
        item_emb = self.item_tower(grouped)
        if not is_fx_symbolic_tracing() and item_emb.shape[0] != batch.batch_size:
            raise DataError(
                f"hstu_match: item_tower.input '{self._group_names['item']}' gave"
                f" {item_emb.shape[0]} items for {batch.batch_size} rows; each row needs"
                " exactly one candidate item"
            )
        user, item = user_emb, item_emb
        if self._cosine:
            user, item = F.normalize(user, dim=-1), F.normalize(item, dim=-1)
        logits = self.candidate_logits(user, item, batch)
        out = {"similarity": logits, "user_emb": user_emb, "item_emb": item_emb}
        if events is not None:
            out[AUTOREGRESSIVE_KEY] = self._autoregressive_logits(
                *events, user_grouped, item_emb, batch, user_emb.shape[0]
            )
        return out

    def _user_rows(
        self, grouped: dict[str, torch.Tensor], num_users: int
    ) -> dict[str, torch.Tensor]:
        """The user tower's groups cut to the first ``num_users`` rows (the users).

        The negative sampler's rows come after the users and have no history; the user tower
        would still pad and attend over each of them (with many negatives, most of a step).
        """
        out = dict(grouped)
        for group in self._user_groups:
            name = group.group_name
            if self.embedding_group.is_jagged_group(name):
                lengths = grouped[f"{name}.sequence_length"][:num_users]
                out[f"{name}.sequence_length"] = lengths
                out[f"{name}.sequence"] = grouped[f"{name}.sequence"][: int(lengths.sum())]
            else:
                out[name] = grouped[name][:num_users]
        return out

    def _autoregressive_logits(
        self,
        rows: torch.Tensor,
        offsets: torch.Tensor,
        grouped: dict[str, torch.Tensor],
        item_emb: torch.Tensor,
        batch: Batch,
        num_users: int,
    ) -> torch.Tensor:
        """Each history event's logits ``[E, 1 + M]``: its next item first, then the negatives.

        Args:
            rows: the user tower's rows of every token ``[L', D]`` (contextual tokens first
                in each sequence).
            offsets: their offsets ``[B + 1]`` (``[B + N + 1]`` if the sampler's rows are in).
            grouped: the embedding group's outputs (the user groups cut to the users' rows).
            item_emb: the item tower's rows ``[B + N (+ H), D]``.
            batch: the batch (the ids of the history and the candidates).
            num_users: ``B``, the rows that are users (not sampled negatives).

        Returns:
            The logits divided by the temperature; ``M`` negatives are the sampled ones (and,
            with ``in_batch_negative``, the batch's candidates); a negative equal to an event's
            next item is masked.

        """
        uih = self._group_names["user"]
        values = grouped[f"{uih}.sequence"]
        lengths = grouped[f"{uih}.sequence_length"].to(torch.int64)
        hist_seq, hist_pos = row_index(offsets_of(lengths), values.shape[0])
        _, tok_pos = row_index(offsets, rows.shape[0])
        context = self.user_tower.encoder.contextual_len()
        events = rows[tok_pos >= context]  # the rows of the history's events, in order
        hist_key, item_key = self._id_keys
        hist_ids = batch.sparse_features[hist_key].values()[: values.shape[0]]  # the users'
        item_ids = batch.sparse_features[item_key].values()
        if hist_ids.shape[0] != values.shape[0] or item_ids.shape[0] != batch.batch_size:
            raise DataError(
                f"autoregressive_loss: '{hist_key}' has {hist_ids.shape[0]} ids for"
                f" {values.shape[0]} history rows and '{item_key}' {item_ids.shape[0]} for"
                f" {batch.batch_size} rows; each needs one id per row"
            )
        user_rows = hist_seq < num_users
        events, hist_seq, hist_pos = events[user_rows], hist_seq[user_rows], hist_pos[user_rows]
        index = torch.nonzero(user_rows).squeeze(1)
        last = hist_pos == lengths[hist_seq] - 1
        following = (index + 1).clamp(max=max(values.shape[0] - 1, 0))
        history_items = self.item_tower.tower(values)
        candidates = item_emb[: batch.batch_size]
        target = torch.where(
            last.unsqueeze(1), candidates[hist_seq], history_items[following]
        )  # [E, D]
        target_ids = torch.where(last, item_ids[hist_seq], hist_ids[following])
        first = 0 if self._in_batch_negative else num_users
        negatives, negative_ids = candidates[first:], item_ids[first : batch.batch_size]
        if self._cosine:
            events = F.normalize(events, dim=-1)
            target = F.normalize(target, dim=-1)
            negatives = F.normalize(negatives, dim=-1)
        positive = (events * target).sum(dim=1, keepdim=True)
        scores = torch.matmul(events, negatives.t())
        same = target_ids.unsqueeze(1) == negative_ids.unsqueeze(0)
        scores = scores.masked_fill(same, torch.finfo(scores.dtype).min)
        return torch.cat([positive, scores], dim=1) / self._temperature

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """With ``autoregressive_loss`` in training: softmax cross entropy of every event."""
        logits = predictions.get(AUTOREGRESSIVE_KEY)
        if logits is None:
            return super().loss(predictions, batch)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return {"softmax_cross_entropy": F.cross_entropy(logits.float(), target)}
