"""DAT: the Dual Augmented Two-tower model (Yu et al. 2021)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.models.match_model import TOWER_SIDES, MatchModel, MatchTower
from recforge.modules.embedding import EmbeddingGroup
from recforge.protos import model_pb2


class DATTowerModule(nn.Module):
    """A DAT tower with its own tables, for export: ``Batch`` -> embeddings ``[B, D]``.

    Args:
        embedding_group: the tower's tables (its input and augment groups).
        group_name: the tower's ``input`` group.
        augment_name: the tower's ``augment_input`` group.
        tower: the tower (its MLP reads ``[input, augment]``).
        normalize: L2-normalise the output (cosine similarity).

    """

    def __init__(
        self,
        embedding_group: EmbeddingGroup,
        group_name: str,
        augment_name: str,
        tower: MatchTower,
        normalize: bool,
    ) -> None:
        super().__init__()
        self.embedding_group = embedding_group
        self.tower = tower
        self._group_name = group_name
        self._augment_name = augment_name
        self._normalize = normalize

    def forward(self, batch: Batch) -> torch.Tensor:
        """Embeds the batch: ``[B, D]``."""
        grouped = self.embedding_group(batch.sparse_features, batch.dense_features)
        emb = self.tower(torch.cat([grouped[self._group_name], grouped[self._augment_name]], dim=1))
        if self._normalize:
            emb = F.normalize(emb, dim=-1)
        return emb


class DAT(MatchModel):
    """Dual Augmented Two-tower model as a retriever (DSSM with augmented vectors).

    ``dat { user_tower { input augment_input mlp } item_tower { ... } output_dim similarity
    temperature in_batch_negative amm_u_weight amm_i_weight }``: each tower reads its
    ``input`` group beside its ``augment_input`` group (the augmented vector, e.g. the id
    embedding) through its MLP and the ``output_dim`` projection. The Adaptive-Mimic
    Mechanism pulls each user's augmented vector (L2-normalised) towards the embedding of
    its positive item and each positive item's augmented vector towards its user's
    embedding, the tower outputs held fixed (no gradient): ``amm_loss_u`` /
    ``amm_loss_i``, weighted by ``amm_u_weight`` / ``amm_i_weight``, beside the softmax
    cross entropy of :class:`~recforge.models.match_model.MatchModel`. The augment groups
    must therefore be ``output_dim`` wide. TorchEasyRec's DAT has no category alignment
    loss, and neither does this one.

    Outputs of ``predict``: ``similarity``, ``user_emb``, ``item_emb``; in training also
    ``user_augment`` ``[B, D]`` and ``item_augment`` ``[B + N, D]``. Each tower has its own
    tables; the exported towers read the input and augment groups.
    """

    def shares_tables(self) -> bool:
        """Each tower has its own tables."""
        return False

    def build(self) -> None:
        """Builds both towers and their embedding groups from the ``dat`` message."""
        cfg = self._model_config
        self.require_fields("user_tower", "item_tower")
        if cfg.output_dim <= 0:
            raise ConfigError(
                f"DAT needs output_dim > 0 (the width of the augment groups), found"
                f" {cfg.output_dim}",
                field=self.config_field("output_dim"),
            )
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        self._augment_names: dict[str, str] = {}
        for side in TOWER_SIDES:
            tower = getattr(cfg, f"{side}_tower")
            for field, name in (("input", tower.input), ("augment_input", tower.augment_input)):
                if name not in groups or groups[name].group_type == model_pb2.SEQUENCE:
                    raise ConfigError(
                        f"DAT needs {self._model_type}.{side}_tower.{field} to name a"
                        f" non-sequence feature group; found '{name}' (groups:"
                        f" {', '.join(groups)})",
                        field=self.config_field(f"{side}_tower.{field}"),
                    )
            self._group_names[side] = tower.input
            self._augment_names[side] = tower.augment_input
        vd = self.variational_dropout_config()
        l2 = self.embedding_l2_regularization()
        for side in TOWER_SIDES:
            tables = EmbeddingGroup(
                self._features,
                self.tower_groups(side),
                device=self._embedding_device,
                variational_dropout=vd,
                embedding_l2=l2,
            )
            setattr(self, f"{side}_embedding_group", tables)
            augment_dim = tables.group_total_dim(self._augment_names[side])
            if augment_dim != cfg.output_dim:
                raise ConfigError(
                    f"DAT's {side}_tower.augment_input '{self._augment_names[side]}' is"
                    f" {augment_dim} wide; the adaptive-mimic loss compares it with the"
                    f" {cfg.output_dim}-wide tower output (output_dim), so they must be equal",
                    field=self.config_field(f"{side}_tower.augment_input"),
                )
            tower_config = getattr(cfg, f"{side}_tower")
            with self.config_errors(f"{side}_tower.mlp"):
                tower = MatchTower(
                    tables.group_total_dim(self._group_names[side]) + augment_dim,
                    tower_config.mlp if tower_config.HasField("mlp") else None,
                    cfg.output_dim,
                    False,
                )
            setattr(self, f"{side}_tower", tower)
        self._amm_weights = {"user": float(cfg.amm_u_weight), "item": float(cfg.amm_i_weight)}
        self._check_sampler_columns()

    # ---- towers -----------------------------------------------------------------------------
    def tower_groups(self, side: str) -> list[model_pb2.FeatureGroupConfig]:
        """A tower reads its ``input`` and ``augment_input`` groups."""
        by_name = {g.group_name: g for g in self._base_model_config.feature_groups}
        names = dict.fromkeys([self._group_names[side], self._augment_names[side]])
        return [by_name[n] for n in names]

    def tower_module(self, side: str) -> DATTowerModule:
        """A CPU copy of one tower with only its own tables (for export / serving)."""
        tables = EmbeddingGroup(
            self.tower_features(side),
            self.tower_groups(side),
            device=torch.device("cpu"),
            variational_dropout=self.variational_dropout_config(),
        )
        tables.copy_weights_from(getattr(self, f"{side}_embedding_group"))
        tower = copy.deepcopy(getattr(self, f"{side}_tower")).cpu()
        return DATTowerModule(
            tables, self._group_names[side], self._augment_names[side], tower, self._cosine
        ).eval()

    # ---- predict / loss ---------------------------------------------------------------------
    def _tower_input(self, side: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        tables = getattr(self, f"{side}_embedding_group")
        grouped = tables(batch.sparse_features, batch.dense_features)
        augment = grouped[self._augment_names[side]]
        return torch.cat([grouped[self._group_names[side]], augment], dim=1), augment

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Embeds users and items with their augmented vectors and scores the candidates."""
        user_input, user_augment = self._tower_input("user", batch)
        item_input, item_augment = self._tower_input("item", batch)
        num_neg = self.num_negatives(batch)
        if num_neg:
            num_users = user_input.shape[0] - num_neg
            user_input, user_augment = user_input[:num_users], user_augment[:num_users]
        user_emb = self.user_tower(user_input)
        item_emb = self.item_tower(item_input)
        user, item = user_emb, item_emb
        if self._cosine:
            user, item = F.normalize(user, dim=-1), F.normalize(item, dim=-1)
        predictions = {
            "similarity": self.candidate_logits(user, item, batch),
            "user_emb": user_emb,
            "item_emb": item_emb,
        }
        if self.training:
            predictions["user_augment"] = user_augment
            predictions["item_augment"] = item_augment
            # the mimic targets: the embeddings the similarity compares, without gradient
            predictions["user_target"] = user.detach()
            predictions["item_target"] = item.detach()
        return predictions

    def loss(self, predictions: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Softmax cross entropy, plus the adaptive-mimic losses in training.

        ``amm_loss_u = amm_u_weight * sum_b ||normalize(user_augment_b) - item_b||^2`` over
        the ``B`` users and their positive items (``amm_loss_i`` likewise). As TorchEasyRec,
        the squared distances are summed over the batch, not averaged.
        """
        losses = super().loss(predictions, batch)
        if "user_augment" not in predictions:
            return losses
        num_users = predictions["similarity"].shape[0]
        pairs = {
            "u": (predictions["user_augment"], predictions["item_target"][:num_users], "user"),
            "i": (predictions["item_augment"][:num_users], predictions["user_target"], "item"),
        }
        for key, (augment, target, side) in pairs.items():
            distance = (F.normalize(augment.float(), dim=1) - target.float()).square().sum()
            losses[f"amm_loss_{key}"] = self._amm_weights[side] * distance
        return losses

    @property
    def output_names(self) -> list[str]:
        """``similarity``, ``user_emb`` and ``item_emb`` (the training-only outputs aside)."""
        return ["similarity", "user_emb", "item_emb"]
