"""HSTU match: an HSTU user tower over the jagged history against an item tower."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.datasets.sampler import (
    CAND_POS_LENGTHS_KEY,
    HARD_NEG_INDICES_KEY,
    ITEM_INDEX_KEY,
    LOG_Q_KEY,
    NUM_NEGATIVES_KEY,
)
from recforge.errors import DataError
from recforge.models.match_model import MatchModel, MatchTower
from recforge.modules.embedding import EmbeddingGroup, suffixed_table_name
from recforge.modules.gr.groups import contextual_group
from recforge.modules.gr.hstu_encoder import HSTUUserEncoder
from recforge.modules.gr.jagged import last_rows, offsets_of, row_index
from recforge.modules.gr.kernel import check_hstu_build
from recforge.protos import model_pb2

#: TorchEasyRec's fixed group names (the history's prefix is ``hstu.name`` or ``uih``)
QUERY_TIME_GROUP = "query_time"
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
    embedding group: a candidate group, JAGGED_SEQUENCE or DEEP, shares the history's tables
    by ``embedding_name`` (a DEEP group pools its ids from them). Candidates, loss and recall
    are :class:`~recforge.models.match_model.MatchModel`'s.

    Candidates: a DEEP ``item_tower.input`` is one positive item per row. A JAGGED_SEQUENCE
    one (e.g. ``cand_seq__video_id``) holds any number of positives per row, as in
    TorchEasyRec: the user embedding is repeated once per positive (``Q`` queries), each query
    is scored against its positive and the negatives, the loss is softmax cross entropy per
    positive averaged over the ``Q`` positives, a row without positives contributes nothing
    and ``recall_at_k`` counts each positive (``similarity`` is ``[Q, C]``). A negative
    sampler whose ``item_id_field`` is the candidate sequence's column splits its cells as
    the feature does, avoids every positive and reports each row's positive count. With
    ``autoregressive_loss`` a training row needs exactly one candidate (DataError otherwise).

    Where we differ from TorchEasyRec: it refuses ``in_batch_negative``; here the other rows'
    positives are a query's negatives too, with the other positives of its own row masked
    (and, given a sampler's item index, in-batch duplicates of its positive). Its sampler
    appends the negatives to the last row's candidate list; here they are rows of their own
    (one item each), so the DSSM-style extras (log-Q, item index, hard negatives) keep one
    entry per item row.
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
        contextual = contextual_group(groups, "hstu_match")
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
        timestamp_post = hstu.output_postprocessor.WhichOneof("output_postprocessor") == (
            "timestamp_layernorm_postprocessor"
        )
        if hstu.positional_encoder.use_time_encoding or timestamp_post:
            # TorchEasyRec always reads the group; here only the settings that use it need it
            needed_by = (
                "positional_encoder"
                if hstu.positional_encoder.use_time_encoding
                else "output_postprocessor"
            )
            if timestamp not in groups:
                raise ConfigError(
                    f"{needed_by} needs a JAGGED_SEQUENCE group '{timestamp}' with the"
                    f" history's timestamps (groups: {', '.join(groups)})",
                    field=self.config_field(f"user_tower.hstu.{needed_by}"),
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
        # the tables the groups look up: their embedding_name_suffix gives them copies
        hist_table = suffixed_table_name(
            by_name[uih.feature_names[0]].embedding_name, uih.embedding_name_suffix
        )
        item_table = suffixed_table_name(
            by_name[item.feature_names[0]].embedding_name, item.embedding_name_suffix
        )
        if hist_table != item_table:
            # next items (history rows) and negatives (candidate rows) from two tables would
            # let the loss tell them apart by table without learning anything
            raise ConfigError(
                "autoregressive_loss scores history events against the candidates, so both"
                " must be rows of one table: item_tower.input's feature needs the history's"
                f" table (embedding_name and embedding_name_suffix) '{hist_table}'; found"
                f" '{item_table}'",
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
        counts = self._positive_counts(grouped, batch, num_neg)
        if (
            counts is None
            and not is_fx_symbolic_tracing()
            and item_emb.shape[0] != batch.batch_size
        ):
            raise DataError(
                f"hstu_match: item_tower.input '{self._group_names['item']}' gave"
                f" {item_emb.shape[0]} items for {batch.batch_size} rows; each row needs"
                " exactly one candidate item"
            )
        if events is not None and counts is not None:
            self._check_one_positive_each(counts)
        user, item = user_emb, item_emb
        if self._cosine:
            user, item = F.normalize(user, dim=-1), F.normalize(item, dim=-1)
        if counts is None:
            logits = self.candidate_logits(user, item, batch)
        else:
            logits = self._multi_positive_logits(user, item, counts, batch)
        out = {"similarity": logits, "user_emb": user_emb, "item_emb": item_emb}
        if events is not None:
            out[AUTOREGRESSIVE_KEY] = self._autoregressive_logits(
                *events, user_grouped, item_emb, batch, user_emb.shape[0]
            )
        return out

    # ---- several positives per row ------------------------------------------------------------
    def _positive_counts(
        self, grouped: dict[str, torch.Tensor], batch: Batch, num_neg: int
    ) -> Optional[torch.Tensor]:
        """Each user row's positive count ``[B]`` for a JAGGED_SEQUENCE candidate group.

        The first ``B`` rows of the candidate group hold the users' positives (any number,
        0 included); the ``N`` rows the sampler appended hold one negative item each.

        Returns:
            None for a DEEP candidate group (one item per row) and while tracing.

        Raises:
            DataError: a sampled row does not hold exactly one item, or the sampler's
                ``CAND_POS_LENGTHS_KEY`` disagrees with the parsed candidates.

        """
        item = self._group_names["item"]
        key = f"{item}.sequence_length"
        if is_fx_symbolic_tracing() or key not in grouped:
            return None
        lengths = grouped[key].to(torch.int64)
        num_users = lengths.shape[0] - num_neg
        sampled = lengths[num_users:]
        if bool((sampled != 1).any()):
            row = num_users + int(torch.nonzero(sampled != 1)[0, 0])
            raise DataError(
                f"hstu_match: sampled negative row {row} of item_tower.input '{item}' holds"
                f" {int(lengths[row])} items; each sampled row needs exactly one (check the"
                " item table's id column)"
            )
        counts = lengths[:num_users]
        reported = batch.extras.get(CAND_POS_LENGTHS_KEY)
        if reported is not None and not torch.equal(reported.to(counts), counts):
            raise DataError(
                f"hstu_match: the negative sampler counted {reported.tolist()} positives per"
                f" row but item_tower.input '{item}' holds {counts.tolist()}"
            )
        return counts

    def _check_one_positive_each(self, counts: torch.Tensor) -> None:
        """``autoregressive_loss`` pairs each row's last event with one candidate."""
        bad = torch.nonzero(counts != 1)
        if bad.shape[0]:
            row = int(bad[0, 0])
            raise DataError(
                f"{self.config_field('autoregressive_loss')}: training row {row} of"
                f" item_tower.input '{self._group_names['item']}' holds {int(counts[row])}"
                " candidate items; autoregressive_loss needs exactly one per row (several"
                " positives per row train without it)"
            )

    def _multi_positive_logits(
        self, user: torch.Tensor, item: torch.Tensor, counts: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """Scores each positive with its row's user against the negatives ``[Q, C]``.

        As TorchEasyRec's ``hstu_match``, the user embedding is repeated once per positive of
        its row (``Q`` queries in all) and each query is a one-positive row of
        :meth:`MatchModel.candidate_logits`; a row's hard negatives serve each of its queries.
        With ``in_batch_negative`` (which TorchEasyRec refuses) the other queries' positives
        are negatives too, except the other positives of the query's own row (masked).

        Args:
            user: user embeddings ``[B, D]`` (normalised already for cosine similarity).
            item: item embeddings ``[Q + N + H, D]``: the positives row by row, the shared
                negatives, then the hard negatives.
            counts: positives per user row ``[B]`` (0 included: such a row has no query).
            batch: the batch.

        Returns:
            The logits ``[Q, C]``, divided by the temperature; with one positive per row
            they equal :meth:`MatchModel.candidate_logits`'.

        """
        query = torch.repeat_interleave(user, counts, dim=0)
        num_pos = query.shape[0]
        item, query_batch = self._query_view(item, counts, batch, num_pos)
        logits = self.candidate_logits(query, item, query_batch)
        if self._in_batch_negative:
            owner = torch.repeat_interleave(
                torch.arange(counts.shape[0], device=counts.device), counts
            )
            same_row = owner.unsqueeze(1) == owner.unsqueeze(0)
            same_row.fill_diagonal_(False)
            in_batch = logits[:, :num_pos].masked_fill(same_row, torch.finfo(logits.dtype).min)
            logits = torch.cat([in_batch, logits[:, num_pos:]], dim=1)
        return logits

    def _query_view(
        self, item: torch.Tensor, counts: torch.Tensor, batch: Batch, num_pos: int
    ) -> tuple[torch.Tensor, Batch]:
        """The item rows and the batch extras with each row's hard negatives per query.

        A hard negative ``(row r, slot s)`` becomes ``(query q, slot s)`` for each query ``q``
        of row ``r`` (its item row, item index and log-Q repeated); a row without positives
        loses its hard negatives.
        """
        hard = batch.extras.get(HARD_NEG_INDICES_KEY)
        if hard is None:
            return item, batch
        num_hard = hard.shape[0]
        first_hard = item.shape[0] - num_hard
        per_hard = counts[hard[:, 0]]
        pick = torch.repeat_interleave(torch.arange(num_hard, device=hard.device), per_hard)
        starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(pick.shape[0], device=hard.device) - torch.repeat_interleave(
            torch.cumsum(per_hard, 0) - per_hard, per_hard
        )
        pairs = torch.stack([starts[hard[pick, 0]] + within, hard[pick, 1]], dim=1)
        extras = dict(batch.extras)
        extras[HARD_NEG_INDICES_KEY] = pairs
        extras[NUM_NEGATIVES_KEY] = torch.tensor([first_hard - num_pos + pick.shape[0]])
        for key in (ITEM_INDEX_KEY, LOG_Q_KEY):
            value = extras.get(key)
            if value is not None:
                extras[key] = torch.cat([value[:first_hard], value[first_hard + pick]])
        item = torch.cat([item[:first_hard], item[first_hard + pick]])
        return item, dataclasses.replace(batch, extras=extras)

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
            similarity = predictions["similarity"]
            if similarity.shape[0] == 0:  # no row of the batch has a positive
                return {"softmax_cross_entropy": similarity.float().sum() * 0.0}
            return super().loss(predictions, batch)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return {"softmax_cross_entropy": F.cross_entropy(logits.float(), target)}
