"""``MatchModel``: shared behaviour of two-tower retrieval models (DSSM, DSSMV2, DAT, MIND)."""

from __future__ import annotations

import copy
import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.datasets.sampler import (
    HARD_NEG_INDICES_KEY,
    ITEM_INDEX_KEY,
    LOG_Q_KEY,
    NUM_NEGATIVES_KEY,
)
from recforge.features import BaseFeature
from recforge.metrics import RecMetric
from recforge.metrics.train_metric import decay_train_metrics
from recforge.models.model import BaseModel, SamplerConfig
from recforge.modules.embedding import EmbeddingGroup
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2, simi_pb2

if TYPE_CHECKING:
    from recforge.protos import module_pb2

TOWER_SIDES = ("user", "item")


class MatchTower(nn.Module):
    """One tower: ``[B, D_in] -> MLP -> optional Linear(output_dim) -> optional L2 norm``.

    Args:
        in_features: width of the tower's feature group.
        mlp: the tower's ``MLP`` message (None or unset: no MLP).
        output_dim: width of a final linear projection (0: none).
        l2_normalize: L2-normalise the output.

    """

    def __init__(
        self, in_features: int, mlp: Optional[module_pb2.MLP], output_dim: int, l2_normalize: bool
    ) -> None:
        super().__init__()
        width = in_features
        self.mlp = None
        if mlp is not None and mlp.hidden_units:
            self.mlp = MLP.from_config(width, mlp)
            width = self.mlp.output_dim()
        self.output = nn.Linear(width, output_dim) if output_dim else None
        self._output_dim = output_dim or width
        self._l2_normalize = l2_normalize

    def output_dim(self) -> int:
        """Width of the tower's embedding."""
        return self._output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds a feature group: ``[B, D_in] -> [B, output_dim]``."""
        if self.mlp is not None:
            x = self.mlp(x)
        if self.output is not None:
            x = self.output(x)
        if self._l2_normalize:
            x = F.normalize(x, dim=-1)
        return x


class TowerModule(nn.Module):
    """A tower with its own embedding tables: ``Batch`` of the tower's features -> embeddings.

    Built by :meth:`MatchModel.tower_module` for export and full-corpus retrieval.

    Args:
        embedding_group: the tower's embedding group (its feature group only).
        group_name: the tower's feature group.
        tower: the tower.
        normalize: L2-normalise the output (cosine similarity).

    """

    def __init__(
        self, embedding_group: EmbeddingGroup, group_name: str, tower: MatchTower, normalize: bool
    ) -> None:
        super().__init__()
        self.embedding_group = embedding_group
        self.tower = tower
        self._group_name = group_name
        self._normalize = normalize

    def forward(self, batch: Batch) -> torch.Tensor:
        """Embeds the batch: ``[B, output_dim]``."""
        grouped = self.embedding_group(batch.sparse_features, batch.dense_features)
        emb = self.tower(grouped[self._group_name])
        if self._normalize:
            emb = F.normalize(emb, dim=-1)
        return emb


class CandidateRecall(Metric):
    """Share of users whose positive item is among the top ``k`` of their candidates.

    ``update(logits [B, C], target [B])``: ``target`` is the positive's column.
    """

    full_state_update = False
    if TYPE_CHECKING:  # metric states typed for mypy only (TorchScript cannot resolve them)
        hits: torch.Tensor
        total: torch.Tensor

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = int(top_k)
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds a batch."""
        k = min(self.top_k, preds.shape[1])
        top = preds.topk(k, dim=1).indices
        self.hits += (top == target.long().unsqueeze(1)).any(dim=1).float().sum()
        self.total += float(target.numel())

    def compute(self) -> torch.Tensor:
        """Recall@k over the users added so far."""
        return self.hits / self.total.clamp(min=1.0)


class MatchModel(BaseModel):
    """A user tower and an item tower scored by their similarity.

    Subclasses say whether the towers share tables (:meth:`shares_tables`) and inherit the
    rest. The candidates of each of
    the ``B`` users of a batch are its positive item (the item on its row), the ``N`` negatives
    that ``data_config.negative_sampler`` appended (``Batch.extras``) and, with
    ``in_batch_negative``, the other users' positives; with a hard-negative sampler, also the
    user's own hard negatives (up to ``S`` each, appended as the last ``S`` columns, masked
    where the user has fewer). The loss is softmax cross entropy over the candidates; the
    metric ``recall_at_k { top_k }`` is recall@k over them.

    Outputs of ``predict``: ``similarity`` (logits ``[B, C]``: ``C = B + N (+ S)`` with
    in-batch negatives, the positive first among ``1 + N (+ S)`` otherwise), ``user_emb``
    ``[B, D]`` and ``item_emb`` ``[B + N + H, D]`` (``H`` hard negatives in all).
    """

    def __init__(
        self,
        model_config: model_pb2.ModelConfig,
        features: Sequence[BaseFeature],
        labels: Sequence[str],
        sample_weights: Sequence[str] = (),
        *,
        embedding_device: Optional[torch.device] = None,
        negative_sampler: Optional[SamplerConfig] = None,
    ) -> None:
        super().__init__(
            model_config,
            features,
            labels,
            sample_weights,
            embedding_device=embedding_device,
            negative_sampler=negative_sampler,
        )
        cfg = self._model_config
        self._cosine = cfg.similarity == simi_pb2.COSINE
        if cfg.temperature <= 0:
            raise ConfigError(
                f"{self._model_type}.temperature must be > 0 (found {cfg.temperature})",
                field=self.config_field("temperature"),
            )
        self._temperature = float(cfg.temperature)
        self._in_batch_negative = bool(cfg.in_batch_negative)
        # MIND has no log_q_correction field
        self._log_q = bool(getattr(cfg, "log_q_correction", False))
        self._label_smoothing = 0.0
        for i, loss in enumerate(model_config.losses):
            kind = loss.WhichOneof("loss")
            if kind != "softmax_cross_entropy":
                raise ConfigError(
                    f"{type(self).__name__} trains with softmax_cross_entropy over the candidates;"
                    f" model_config.losses has '{kind}'",
                    field=f"model_config.losses[{i}]",
                )
            self._label_smoothing = float(loss.softmax_cross_entropy.label_smoothing)
        self._shared_tables = False
        self._group_names: dict[str, str] = {}

    def build(self) -> None:
        """Builds the embedding group(s) and the two towers (:meth:`init_towers`)."""
        self.init_towers(share_tables=self.shares_tables())

    @abstractmethod
    def shares_tables(self) -> bool:
        """Whether both towers look up one embedding collection (shared ``embedding_name``s)."""

    def init_towers(self, share_tables: bool) -> None:
        """Builds the embedding group(s) and both towers from the config.

        Args:
            share_tables: one embedding collection for both towers (user and item features
                with the same ``embedding_name`` share a table); otherwise one per tower.

        Raises:
            ValueError: a tower or its input is missing, the towers' output dims differ, or
                an item feature reads a column the negative sampler does not provide.

        """
        cfg = self._model_config
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        for side in TOWER_SIDES:
            field = f"{side}_tower"
            if not cfg.HasField(field) or not getattr(cfg, field).input:
                raise ConfigError(
                    f"{type(self).__name__} needs {self._model_type}.{field}.input",
                    field=self.config_field(f"{field}.input"),
                )
            name = getattr(cfg, field).input
            if name not in groups:
                raise ConfigError(
                    f"{self._model_type}.{field}.input '{name}' is not a feature group"
                    f" (groups: {', '.join(groups)})",
                    field=self.config_field(f"{field}.input"),
                )
            self._group_names[side] = name
        self._shared_tables = share_tables
        user_group, item_group = (groups[self._group_names[s]] for s in TOWER_SIDES)
        device = self._embedding_device
        vd = self.variational_dropout_config()
        l2 = self.embedding_l2_regularization()
        if share_tables:
            self.embedding_group = EmbeddingGroup(
                self._features,
                [user_group, item_group],
                device=device,
                variational_dropout=vd,
                embedding_l2=l2,
            )
            user_eg = item_eg = self.embedding_group
        else:
            self.user_embedding_group = EmbeddingGroup(
                self._features, [user_group], device=device, variational_dropout=vd, embedding_l2=l2
            )
            self.item_embedding_group = EmbeddingGroup(
                self._features, [item_group], device=device, variational_dropout=vd, embedding_l2=l2
            )
            user_eg, item_eg = self.user_embedding_group, self.item_embedding_group
        with self.config_errors("user_tower.mlp"):
            self.user_tower = MatchTower(
                user_eg.group_total_dim(user_group.group_name),
                cfg.user_tower.mlp if cfg.user_tower.HasField("mlp") else None,
                cfg.output_dim,
                cfg.l2_normalize,
            )
        with self.config_errors("item_tower.mlp"):
            self.item_tower = MatchTower(
                item_eg.group_total_dim(item_group.group_name),
                cfg.item_tower.mlp if cfg.item_tower.HasField("mlp") else None,
                cfg.output_dim,
                cfg.l2_normalize,
            )
        user_dim, item_dim = self.user_tower.output_dim(), self.item_tower.output_dim()
        if user_dim != item_dim:
            raise ConfigError(
                f"{type(self).__name__}: the user tower outputs {user_dim} values and the item"
                f" tower {item_dim} ({self._model_type}.user_tower.mlp and item_tower.mlp end"
                f" in different widths); make them equal or set {self._model_type}.output_dim",
                field=self.config_field("output_dim"),
            )
        self._check_sampler_columns()

    def _check_sampler_columns(self) -> None:
        config = self._negative_sampler
        if config is None:
            if self._log_q:
                raise ConfigError(
                    f"{self._model_type}.log_q_correction needs data_config.negative_sampler"
                    " (its item table gives the item popularity)",
                    field=self.config_field("log_q_correction"),
                )
            return
        provided = {config.item_id_field, *config.attr_fields}
        # the data_config field of the sampler: NegativeSamplerV2 -> negative_sampler_v2
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", config.DESCRIPTOR.name).lower()
        for feature in self.tower_features("item"):
            for column in feature.inputs:
                if column not in provided:
                    raise ConfigError(
                        f"item feature '{feature.name}' reads column '{column}', which"
                        f" data_config.{kind}.attr_fields does not list (sampled"
                        " negatives would have no value for it)",
                        field=f"data_config.{kind}.attr_fields",
                    )

    # ---- towers -----------------------------------------------------------------------
    def group_name(self, side: str) -> str:
        """The feature group of the ``user`` or ``item`` tower."""
        return self._group_names[side]

    def tower_groups(self, side: str) -> list[model_pb2.FeatureGroupConfig]:
        """The feature groups the ``user`` or ``item`` tower reads (its ``input`` group)."""
        return [
            g
            for g in self._base_model_config.feature_groups
            if g.group_name == self._group_names[side]
        ]

    def tower_features(self, side: str) -> list[BaseFeature]:
        """The features of the ``user`` or ``item`` tower, in config order."""
        names: set[str] = set()
        for group in self.tower_groups(side):
            names.update(group.feature_names)
            for sequence_group in group.sequence_groups:
                names.update(sequence_group.feature_names)
        return [f for f in self._features if f.name in names]

    def embedding_dim(self) -> int:
        """Width of the user and item embeddings."""
        return self.user_tower.output_dim()

    @property
    def output_names(self) -> list[str]:
        """``similarity``, ``user_emb`` and ``item_emb``."""
        return ["similarity", "user_emb", "item_emb"]

    @property
    def cosine(self) -> bool:
        """Whether the similarity is cosine (embeddings are L2-normalised before the product)."""
        return self._cosine

    def tower_module(self, side: str) -> nn.Module:
        """A CPU copy of one tower with only its own embedding tables (for export / serving).

        The embeddings of the copy equal the model's (cosine similarity: L2-normalised).
        """
        if self._shared_tables:
            source = self.embedding_group
        else:
            source = getattr(self, f"{side}_embedding_group")
        group = next(
            g
            for g in self._base_model_config.feature_groups
            if g.group_name == self._group_names[side]
        )
        tables = EmbeddingGroup(
            self.tower_features(side),
            [group],
            device=torch.device("cpu"),
            variational_dropout=self.variational_dropout_config(),
        )
        tables.copy_weights_from(source)
        tower = copy.deepcopy(getattr(self, f"{side}_tower")).cpu()
        return TowerModule(tables, group.group_name, tower, self._cosine).eval()

    # ---- predict / loss / metrics -------------------------------------------------------
    def _tower_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = batch.sparse_features, batch.dense_features
        if self._shared_tables:
            grouped = self.embedding_group(sparse, dense)
            return grouped[self._group_names["user"]], grouped[self._group_names["item"]]
        user = self.user_embedding_group(sparse, dense)[self._group_names["user"]]
        item = self.item_embedding_group(sparse, dense)[self._group_names["item"]]
        return user, item

    @staticmethod
    def num_negatives(batch: Batch) -> int:
        """Rows the negative sampler appended to the batch (0: none)."""
        value = batch.extras.get(NUM_NEGATIVES_KEY)
        return int(value[0]) if value is not None else 0

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds users and items and scores every user against its candidates."""
        user_input, item_input = self._tower_inputs(batch)
        num_neg = self.num_negatives(batch)
        if num_neg:
            user_input = user_input[: user_input.shape[0] - num_neg]
        user_emb = self.user_tower(user_input)
        item_emb = self.item_tower(item_input)
        user, item = user_emb, item_emb
        if self._cosine:
            user, item = F.normalize(user, dim=-1), F.normalize(item, dim=-1)
        logits = self.candidate_logits(user, item, batch)
        return {"similarity": logits, "user_emb": user_emb, "item_emb": item_emb}

    def candidate_logits(
        self, user: torch.Tensor, item: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """Scores each user against its candidates (see the class docstring).

        Args:
            user: user embeddings ``[B, D]`` (normalised already for cosine similarity).
            item: item embeddings ``[B + N + H, D]``: the positives, the shared negatives,
                then the hard negatives.
            batch: the batch (its extras say which rows are which).

        Returns:
            The logits ``[B, C]``, divided by the temperature.

        """
        num_neg = self.num_negatives(batch)
        hard = batch.extras.get(HARD_NEG_INDICES_KEY)
        num_hard = int(hard.shape[0]) if hard is not None else 0
        shared = item[: item.shape[0] - num_hard]
        num_shared = num_neg - num_hard
        if self._in_batch_negative:
            logits = torch.matmul(user, shared.t())
        elif num_shared:
            num_pos = shared.shape[0] - num_shared
            positive = (user * shared[:num_pos]).sum(dim=1, keepdim=True)
            logits = torch.cat([positive, torch.matmul(user, shared[num_pos:].t())], dim=1)
        else:
            logits = (user * shared).sum(dim=1, keepdim=True)
        logits = logits / self._temperature
        logits = self._correct(logits, batch, shared.shape[0])
        if hard is not None:
            hard_logits = self._hard_negative_logits(user, item[shared.shape[0] :], hard, batch)
            logits = torch.cat([logits, hard_logits], dim=1)
        return logits

    def _hard_negative_logits(
        self, user: torch.Tensor, hard_item: torch.Tensor, hard: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """Each user's scores of its own hard negatives ``[B, S]`` (masked where it has none).

        TorchEasyRec scores hard negatives per user only without ``in_batch_negative`` (with
        it they join the shared columns); here they are per user in both modes, so that one
        user's hard negatives never count as another's.

        Args:
            user: user embeddings ``[B, D]``.
            hard_item: hard-negative item embeddings ``[H, D]``.
            hard: ``(batch row, slot)`` of each hard negative ``[H, 2]``.
            batch: the batch (its item rows mask a hard negative equal to the positive).

        """
        num_users = user.shape[0]
        width = int(hard[:, 1].max()) + 1 if hard.shape[0] else 0
        rows, slots = hard[:, 0], hard[:, 1]
        scores = (user.index_select(0, rows) * hard_item).sum(dim=1) / self._temperature
        index = batch.extras.get(ITEM_INDEX_KEY)
        if index is not None:
            # an item the user interacted with is no negative of that user
            hard_rows = index[index.shape[0] - hard.shape[0] :]
            same = (hard_rows == index[rows]) & (hard_rows >= 0)
            scores = scores.masked_fill(same, torch.finfo(scores.dtype).min)
        logits = torch.full(
            (num_users, width),
            torch.finfo(scores.dtype).min,
            dtype=scores.dtype,
            device=user.device,
        )
        return logits.index_put((rows, slots), scores)

    def _correct(self, logits: torch.Tensor, batch: Batch, num_items: int) -> torch.Tensor:
        """Log-Q correction and masking of in-batch duplicates of a user's positive.

        Args:
            logits: scores over the shared candidates ``[B, C]``.
            batch: the batch.
            num_items: item rows the shared candidates come from (positives and shared
                negatives; hard negatives follow them).

        """
        log_q = batch.extras.get(LOG_Q_KEY)
        if self._log_q and log_q is not None:
            log_q = log_q[:num_items]
            if self._in_batch_negative:
                logits = logits - log_q.unsqueeze(0)
            else:
                num_pos = logits.shape[0]
                correction = torch.cat([torch.zeros_like(log_q[:1]), log_q[num_pos:]])
                logits = logits - correction.unsqueeze(0)
        index = batch.extras.get(ITEM_INDEX_KEY)
        if self._in_batch_negative and index is not None:
            index = index[:num_items]
            num_pos = logits.shape[0]
            positives = index[:num_pos]
            same = (positives.unsqueeze(1) == index.unsqueeze(0)) & (positives.unsqueeze(1) >= 0)
            same[:, :num_pos].fill_diagonal_(False)
            logits = logits.masked_fill(same, torch.finfo(logits.dtype).min)
        return logits

    def _target(self, logits: torch.Tensor) -> torch.Tensor:
        if self._in_batch_negative:
            return torch.arange(logits.shape[0], device=logits.device)
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)

    def init_loss(self) -> None:
        """Softmax cross entropy over the candidates (the only loss of a match model)."""

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """``softmax_cross_entropy`` of each user's positive among its candidates."""
        logits = predictions["similarity"].float()
        target = self._target(logits)
        if not self._label_smoothing:
            return {"softmax_cross_entropy": F.cross_entropy(logits, target)}
        # smoothing spreads over the real candidates only: a masked column (an in-batch
        # duplicate, a missing hard negative) would otherwise add -log(0) to the loss
        log_probs = F.log_softmax(logits, dim=1)
        valid = logits > torch.finfo(logits.dtype).min / 2
        nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
        smooth = -(log_probs * valid).sum(dim=1) / valid.sum(dim=1)
        loss = (1 - self._label_smoothing) * nll + self._label_smoothing * smooth
        return {"softmax_cross_entropy": loss.mean()}

    def init_metric(self) -> None:
        """Recall@k over the candidates per ``recall_at_k``, and the mean loss."""
        mc = self._base_model_config
        for name, configs, target in (
            ("metrics", mc.metrics, self._metric_modules),
            ("train_metrics", mc.train_metrics, self._train_metric_modules),
        ):
            for i, config in enumerate(configs):
                kind = config.WhichOneof("metric")
                if kind != "recall_at_k":
                    raise ConfigError(
                        f"{type(self).__name__} supports the metric recall_at_k; found '{kind}'",
                        field=f"model_config.{name}[{i}]",
                    )
                k = config.recall_at_k.top_k
                target[f"recall@{k}"] = RecMetric(CandidateRecall(k), "similarity")
        self._train_metric_modules.update(
            decay_train_metrics(dict(self._train_metric_modules.items()), list(mc.train_metrics))  # type: ignore[arg-type]
        )
        self._metric_modules["softmax_cross_entropy"] = RecMetric(
            MeanMetric(), prediction_key="softmax_cross_entropy"
        )

    def metric_label(
        self, name: str, predictions: dict[str, torch.Tensor], batch: Batch
    ) -> torch.Tensor:
        """The column of each user's positive among its candidates ``[B]``."""
        return self._target(predictions["similarity"])
