"""MIND: a multi-interest user tower (B2I capsule routing) against a DSSM-style item tower."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.match_model import MatchModel, MatchTower
from recforge.modules.capsule import CapsuleLayer
from recforge.modules.embedding import EmbeddingGroup
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2, module_pb2


def label_aware_attention(
    interests: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, simi_pow: float
) -> torch.Tensor:
    """Pools a user's interests by their similarity to the target item.

    ``weights = softmax(simi_pow * <interest_k, target>)`` over the user's interests (masked
    ones get weight 0); a large ``simi_pow`` picks the interest closest to the target. As
    TorchEasyRec, the power scales the scores (the paper raises them to it).

    Args:
        interests: ``[B, K, D]``.
        target: the positive item of each user ``[B, D]``.
        mask: which interests the user has ``[B, K]`` (bool, at least one per row).
        simi_pow: the sharpness (``MIND.simi_pow``).

    Returns:
        The user embedding ``[B, D]``.

    """
    scores = torch.einsum("bkd,bd->bk", interests, target)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores * simi_pow, dim=1)
    return torch.einsum("bk,bkd->bd", weights, interests)


def _rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Applies a row-wise module to ``[B, T, D]`` (batch norm sees ``B * T`` rows)."""
    out = module(x.reshape(-1, x.shape[2]))
    return out.reshape(x.shape[0], x.shape[1], -1)


def _mlp_then_linear(in_features: int, config: module_pb2.MLP) -> tuple[nn.Module, int]:
    """The hidden layers of ``config`` but the last, then a plain linear layer of the last width.

    MIND's ``user_mlp`` and ``hist_seq_mlp`` end without activation, normalisation or
    dropout. TorchEasyRec fixes the bias (user: on, history: off) and uses only the first
    dropout ratio; here the message's ``bias`` and ``dropout_ratio`` apply (its example
    configs give the same layers).
    """
    units = list(config.hidden_units)
    if not units:
        raise ValueError("hidden_units must not be empty")
    last = nn.Linear(in_features, units[-1], bias=config.bias)
    if len(units) == 1:
        return last, units[-1]
    dropout = list(config.dropout_ratio)
    if len(dropout) > 1:
        dropout = dropout[:-1]
    hidden = MLP(
        in_features,
        units[:-1],
        dropout,
        config.activation,
        config.use_bn,
        config.bias,
        config.use_ln,
    )
    last = nn.Linear(hidden.output_dim(), units[-1], bias=config.bias)
    return nn.Sequential(hidden, last), units[-1]


class MINDUserTower(nn.Module):
    """User features and behaviour sequence -> ``K`` interest embeddings.

    ``user_mlp(user features)`` is tiled beside each interest of the capsule layer (routing
    ``hist_seq_mlp(behaviours)``), ``concat_mlp`` and the optional output projection map each
    pair to an interest embedding; masked interests stay zero vectors. With cosine similarity
    the interests are L2-normalised.

    Args:
        user_mlp: ``[B, Du] -> [B, U]``.
        hist_mlp: per behaviour ``[*, Ds] -> [*, L]`` (None: the embeddings as they are).
        capsule: the capsule layer.
        concat_mlp: per interest ``[*, U + H] -> [*, C]``.
        output: per interest ``[*, C] -> [*, D]`` (None: ``D = C``).
        normalize: L2-normalise the interests.

    """

    def __init__(
        self,
        user_mlp: nn.Module,
        hist_mlp: Optional[nn.Module],
        capsule: CapsuleLayer,
        concat_mlp: MLP,
        output: Optional[nn.Linear],
        normalize: bool,
    ) -> None:
        super().__init__()
        self.user_mlp = user_mlp
        self.hist_mlp = hist_mlp
        self.capsule = capsule
        self.concat_mlp = concat_mlp
        self.output = output
        self._normalize = normalize
        self._output_dim = output.out_features if output is not None else concat_mlp.output_dim()

    def output_dim(self) -> int:
        """Width ``D`` of an interest embedding."""
        return self._output_dim

    def forward(
        self, user: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeds users as interests.

        Args:
            user: the user group ``[B, Du]``.
            sequence: the history group's behaviours ``[B, T, Ds]``.
            lengths: behaviours per user ``[B]``.

        Returns:
            ``(interests [B, K, D], mask [B, K])``.

        """
        user = self.user_mlp(user)
        if self.hist_mlp is not None:
            sequence = _rows(self.hist_mlp, sequence)
        capsules, mask = self.capsule(sequence, lengths)
        keep = mask.unsqueeze(2).to(capsules.dtype)
        user = user.unsqueeze(1).expand(-1, capsules.shape[1], -1)
        interests = torch.cat([user, capsules], dim=2) * keep
        interests = _rows(self.concat_mlp, interests) * keep
        if self.output is not None:
            interests = self.output(interests)
        if self._normalize:
            interests = F.normalize(interests, dim=-1)
        return interests, mask


class MINDUserTowerModule(nn.Module):
    """The user tower with its own tables, for export: ``Batch`` -> interests ``[B, K, D]``.

    Masked interests are zero vectors (retrieval scores a user by its best real interest).
    """

    def __init__(
        self, embedding_group: EmbeddingGroup, user_group: str, hist_group: str, tower: nn.Module
    ) -> None:
        super().__init__()
        self.embedding_group = embedding_group
        self.tower = tower
        self._user_group = user_group
        self._hist_group = hist_group

    def forward(self, batch: Batch) -> torch.Tensor:
        """The interests ``[B, K, D]``."""
        grouped = self.embedding_group(batch.sparse_features, batch.dense_features)
        interests, _ = self.tower(
            grouped[self._user_group],
            grouped[f"{self._hist_group}.sequence"],
            grouped[f"{self._hist_group}.sequence_length"],
        )
        return interests


class MIND(MatchModel):
    """Multi-Interest Network with Dynamic routing (Li et al. 2019) as a two-tower retriever.

    ``mind { user_tower { input history_input user_mlp hist_seq_mlp capsule_config
    concat_mlp } item_tower { input mlp } simi_pow similarity temperature in_batch_negative
    output_dim }``: the user tower embeds each user as up to ``max_k`` interests
    (:class:`MINDUserTower`); in training the interests are pooled by label-aware attention
    towards the positive item (:func:`label_aware_attention`) and the pooled user embedding
    is scored against the candidates as in DSSM (see
    :class:`~recforge.models.match_model.MatchModel`). Each tower has its own tables.

    Outputs of ``predict``: ``similarity``, ``user_emb`` (the pooled ``[B, D]``),
    ``item_emb`` and ``user_interests`` ``[B, K, D]``. The exported user tower outputs the
    interests as ``user_emb`` ``[B, K, D]``; retrieval scores an item by its best interest.
    """

    if TYPE_CHECKING:  # for mypy only (TorchScript cannot resolve it)
        user_tower: MINDUserTower  # type: ignore[assignment]  # a MatchTower in MatchModel

    def shares_tables(self) -> bool:
        """Each tower has its own tables."""
        return False

    @property
    def output_names(self) -> list[str]:
        """``similarity``, ``user_emb``, ``item_emb`` and ``user_interests``."""
        return ["similarity", "user_emb", "item_emb", "user_interests"]

    def build(self) -> None:
        """Builds the towers and their embedding groups from the ``mind`` message."""
        cfg = self._model_config
        self._simi_pow = float(cfg.simi_pow)
        if not math.isfinite(self._simi_pow) or self._simi_pow <= 0:
            raise ConfigError(
                f"MIND simi_pow must be a finite number > 0, found {cfg.simi_pow}",
                field=self.config_field("simi_pow"),
            )
        self.require_fields("user_tower", "item_tower")
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        fields = {
            "user": ("user_tower.input", cfg.user_tower.input),
            "item": ("item_tower.input", cfg.item_tower.input),
            "hist": ("user_tower.history_input", cfg.user_tower.history_input),
        }
        names = {}
        for key, (field, name) in fields.items():
            if name not in groups:
                raise ConfigError(
                    f"MIND needs {self._model_type}.{field} to name a feature group; found"
                    f" '{name}' (groups: {', '.join(groups)})",
                    field=self.config_field(field),
                )
            names[key] = name
        self._group_names = {"user": names["user"], "item": names["item"]}
        self._hist_group = names["hist"]
        if groups[self._hist_group].group_type != model_pb2.SEQUENCE:
            raise ConfigError(
                f"MIND's history_input '{self._hist_group}' must be a SEQUENCE feature group",
                field=self.config_field("user_tower.history_input"),
            )
        if groups[names["user"]].group_type == model_pb2.SEQUENCE:
            raise ConfigError(
                f"MIND's user_tower.input '{names['user']}' must not be a SEQUENCE group",
                field=self.config_field("user_tower.input"),
            )
        vd = self.variational_dropout_config()
        device = self._embedding_device
        self.user_embedding_group = EmbeddingGroup(
            self._features,
            [groups[names["user"]], groups[self._hist_group]],
            device=device,
            variational_dropout=vd,
        )
        self.item_embedding_group = EmbeddingGroup(
            self._features, [groups[names["item"]]], device=device, variational_dropout=vd
        )
        if self.user_embedding_group.query_dim(self._hist_group):
            raise ConfigError(
                f"MIND's history group '{self._hist_group}' must hold sequence features only"
                " (a non-sequence feature there would be ignored)",
                field=self.config_field("user_tower.history_input"),
            )
        self.user_tower = self._build_user_tower()
        with self.config_errors("item_tower.mlp"):
            self.item_tower = MatchTower(
                self.item_embedding_group.group_total_dim(names["item"]),
                cfg.item_tower.mlp if cfg.item_tower.HasField("mlp") else None,
                cfg.output_dim,
                self._cosine,
            )
        user_dim, item_dim = self.user_tower.output_dim(), self.item_tower.output_dim()
        if user_dim != item_dim:
            raise ConfigError(
                f"MIND: the user tower outputs {user_dim} values and the item tower {item_dim}"
                " (user_tower.concat_mlp and item_tower.mlp end in different widths); make"
                " them equal or set mind.output_dim",
                field=self.config_field("output_dim"),
            )
        self._check_sampler_columns()

    def _build_user_tower(self) -> MINDUserTower:
        tower = self._model_config.user_tower
        groups = self.user_embedding_group
        for name in ("user_mlp", "capsule_config", "concat_mlp"):
            if not tower.HasField(name):
                raise ConfigError(
                    f"MIND needs {self._model_type}.user_tower.{name}, which is not set",
                    field=self.config_field(f"user_tower.{name}"),
                )
        with self.config_errors("user_tower.user_mlp"):
            user_mlp, user_dim = _mlp_then_linear(
                groups.group_total_dim(self._group_names["user"]), tower.user_mlp
            )
        hist_dim = groups.sequence_dim(self._hist_group)
        hist_mlp = None
        if tower.HasField("hist_seq_mlp") and tower.hist_seq_mlp.hidden_units:
            with self.config_errors("user_tower.hist_seq_mlp"):
                hist_mlp, hist_dim = _mlp_then_linear(hist_dim, tower.hist_seq_mlp)
        with self.config_errors("user_tower.capsule_config"):
            capsule = CapsuleLayer(
                tower.capsule_config, hist_dim, groups.sequence_length(self._hist_group)
            )
        with self.config_errors("user_tower.concat_mlp"):
            concat_mlp = MLP.from_config(user_dim + capsule.output_dim(), tower.concat_mlp)
        output_dim = self._model_config.output_dim
        if output_dim < 0:
            raise ConfigError(
                f"MIND output_dim must be >= 0, found {output_dim}",
                field=self.config_field("output_dim"),
            )
        output = nn.Linear(concat_mlp.output_dim(), output_dim, bias=False) if output_dim else None
        return MINDUserTower(user_mlp, hist_mlp, capsule, concat_mlp, output, self._cosine)

    # ---- towers ---------------------------------------------------------------------------
    def tower_groups(self, side: str) -> list[model_pb2.FeatureGroupConfig]:
        """The user tower reads its ``input`` and ``history_input`` groups."""
        names = [self._group_names[side]]
        if side == "user":
            names.append(self._hist_group)
        by_name = {g.group_name: g for g in self._base_model_config.feature_groups}
        return [by_name[n] for n in names]

    def tower_module(self, side: str) -> nn.Module:
        """A CPU copy of one tower with its own tables; the user tower returns the interests."""
        if side != "user":
            return super().tower_module(side)
        tables = EmbeddingGroup(
            self.tower_features("user"),
            self.tower_groups("user"),
            device=torch.device("cpu"),
            variational_dropout=self.variational_dropout_config(),
        )
        tables.copy_weights_from(self.user_embedding_group)
        tower = copy.deepcopy(self.user_tower).cpu()
        return MINDUserTowerModule(
            tables, self._group_names["user"], self._hist_group, tower
        ).eval()

    def num_interests(self) -> int:
        """``K``: the most interests a user has (``capsule_config.max_k``)."""
        return self.user_tower.capsule.max_k

    # ---- predict ----------------------------------------------------------------------------
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds users as interests, pools them towards each positive item, scores candidates."""
        sparse, dense = batch.sparse_features, batch.dense_features
        user_groups = self.user_embedding_group(sparse, dense)
        user = user_groups[self._group_names["user"]]
        sequence = user_groups[f"{self._hist_group}.sequence"]
        lengths = user_groups[f"{self._hist_group}.sequence_length"]
        num_neg = self.num_negatives(batch)
        if num_neg:
            num_users = user.shape[0] - num_neg
            user, sequence, lengths = user[:num_users], sequence[:num_users], lengths[:num_users]
        item_input = self.item_embedding_group(sparse, dense)[self._group_names["item"]]
        interests, mask = self.user_tower(user, sequence, lengths)
        item_emb = self.item_tower(item_input)
        # the pooled user embedding is not re-normalised for cosine similarity (as TorchEasyRec)
        user_emb = label_aware_attention(
            interests, item_emb[: interests.shape[0]], mask, self._simi_pow
        )
        logits = self.candidate_logits(user_emb, item_emb, batch)
        return {
            "similarity": logits,
            "user_emb": user_emb,
            "item_emb": item_emb,
            "user_interests": interests,
        }
