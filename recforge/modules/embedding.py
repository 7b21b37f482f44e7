"""EmbeddingGroup: feature groups -> one torchrec EmbeddingBagCollection -> a tensor per group."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import Optional, Union, cast

import torch
from torch import nn
from torch.nn import functional as F
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    PoolingType,
)
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from recforge.errors import RecforgeError
from recforge.features import BaseFeature
from recforge.modules.dense_embedding import build_dense_embedding
from recforge.modules.regroup import regroup_by_slices
from recforge.modules.sequence_encoders import (
    NestedSequences,
    create_sequence_encoder,
    resolve_nested_sequences,
)
from recforge.modules.variational_dropout import FeatureDropout
from recforge.modules.zch import ZchRemapper, remap_kjt
from recforge.protos import model_pb2, module_pb2

# torch.fx keeps wrapped functions as leaf calls only where they are looked up: in this module
torch.fx.wrap("regroup_by_slices")
torch.fx.wrap("remap_kjt")

logger = logging.getLogger(__name__)

WIDE_TABLE_SUFFIX = "_wide"
#: the key of a dense feature's mlp / autodis embedding among the group inputs
DENSE_EMBEDDING_SUFFIX = "@dense_emb"
TableConfig = Union[EmbeddingBagConfig, EmbeddingConfig]


class EmbeddingGroupError(RecforgeError):
    """A feature group cannot be built from the features it names."""


class EmbeddingGroup(nn.Module):
    """Looks up every sparse feature once and concatenates features per group.

    Sparse features of DEEP groups share one table per ``embedding_name``; WIDE groups use a
    separate table per feature of width ``wide_embedding_dim`` (named ``<table>_wide``). Dense
    (raw) features enter DEEP groups as they are.

    A group's ``embedding_name_suffix`` (as in TorchEasyRec) gives its features tables of their
    own, ``<table>_<suffix>`` (WIDE: ``<table>_wide_<suffix>``): groups with the same suffix
    share them, groups with different suffixes do not. A DEEP group's suffix also applies to
    its ``sequence_groups`` unless one sets its own. One table name reached from groups with
    different suffixes is refused (:func:`suffixed_table_name`, :class:`_TableNames`).

    A SEQUENCE group holds sequence features (the behaviour sequence, e.g. clicked item ids
    and their categories) and optionally non-sequence "query" features (the candidate, e.g.
    its item id and category). Its features are looked up unpooled in torchrec
    ``EmbeddingCollection`` tables (one collection per embedding dim, tables shared by
    ``embedding_name`` within the SEQUENCE groups, so a query feature and a sequence element
    naming the same table share it); query features are sum-pooled per row and sequences are
    padded with zeros to their ``sequence_length``. A sequence whose elements hold several
    ids (a ``sequence_tokenize_feature``) is pooled per element first (:func:`pool_elements`);
    in a DEEP group it is pooled over all the ids of the row, both as in TorchEasyRec.

    A DEEP group may also hold ``sequence_groups`` (laid out like SEQUENCE groups, sharing
    their tables) and ``sequence_encoders`` (:mod:`recforge.modules.sequence_encoders`): its
    output is its plain features followed by each encoder's output, so any model reading the
    group gets the encoded sequences with it (as in TorchEasyRec).

    A table named by both a DEEP-group id feature and a sequence-group feature (or one feature
    listed in both) exists once, in the sequence collection: the DEEP-group feature is looked
    up there and pooled per row with its own pooling (sum / mean, zeros for an empty row), as
    its embedding bag would. Where we differ from TorchEasyRec: its code builds two tables of
    that name (one pooled, one not), although its docs promise one shared table; we share it,
    as the docs say. A weighted id feature cannot share a table with a sequence group.

    With ``variational_dropout`` (``model_config.variational_dropout``), every DEEP / WIDE
    group of two or more features drops its features with learned rates
    (:class:`~recforge.modules.variational_dropout.FeatureDropout`, in
    ``variational_dropouts[group_name]``) before its sequence encoders' outputs are appended;
    :meth:`variational_dropout_losses` gives their regularisation terms. As in TorchEasyRec,
    SEQUENCE groups and groups of one feature have none.

    Features with ``zch`` (zero-collision hashing) carry raw 63-bit ids; before any lookup,
    the :class:`~recforge.modules.zch.ZchRemapper` of their table (in ``zch[table_name]``,
    one per table, shared by the features naming it) maps them to rows, counting them and
    admitting / evicting ids while training (see :mod:`recforge.modules.zch`).

    With ``embedding_l2 > 0`` (``model_config.embedding_l2_regularization``, a recforge
    extension), each training forward records ``embedding_l2`` times :func:`used_rows_l2` of
    its lookups (the squared norm of every embedding row the batch uses, each once, however
    many samples and groups use it); :meth:`embedding_regularization_loss` hands it over.
    Being a term on the looked-up embeddings, it works with sharded tables and fused
    optimizers alike.

    Args:
        features: all features of the model.
        feature_groups: the ``feature_groups`` of the model config.
        wide_embedding_dim: embedding width of WIDE groups.
        wide_init_fn: optional init function for WIDE tables.
        device: where the tables are created (``meta`` defers allocation to sharding).
        variational_dropout: the model's ``variational_dropout`` settings (None: none).
        embedding_l2: weight of the L2 penalty on the looked-up pooled embeddings (0: none).

    Shapes:
        ``forward(sparse_features, dense_features)`` returns ``{group_name: [B, group_dim]}``
        for DEEP / WIDE groups (``group_dim``: the features' widths, then the encoders')
        and, for a SEQUENCE group ``g``: ``"g.query"`` ``[B, Dq]``
        (concatenated query features; ``[B, 0]`` without any), ``"g.sequence"``
        ``[B, T, Ds]`` (concatenated sequence features, ``T`` the longest
        ``sequence_length``) and ``"g.sequence_length"`` ``[B]`` (int, elements per row).
        A JAGGED_SEQUENCE group (TorchEasyRec's, read by the HSTU models) has the same keys but
        is never padded: ``"g.sequence"`` is ``[L, Ds]``, every row's elements one after the
        other (``L = sum(g.sequence_length)``); a raw sequence feature in it (a timestamp,
        an action) gives one column of its numbers.

    """

    def __init__(
        self,
        features: Sequence[BaseFeature],
        feature_groups: Sequence[model_pb2.FeatureGroupConfig],
        wide_embedding_dim: int = 4,
        wide_init_fn: Optional[object] = None,
        device: Optional[torch.device] = None,
        variational_dropout: Optional[module_pb2.VariationalDropout] = None,
        embedding_l2: float = 0.0,
    ) -> None:
        super().__init__()
        if not math.isfinite(embedding_l2) or embedding_l2 < 0:
            raise EmbeddingGroupError(
                f"embedding_l2_regularization must be a finite number >= 0, found {embedding_l2:g}"
            )
        self._embedding_l2 = float(embedding_l2)
        # the penalty of the last training forward, until embedding_regularization_loss takes it
        self._embedding_penalty: Optional[torch.Tensor] = None
        self.variational_dropouts = nn.ModuleDict()
        by_name = {f.name: f for f in features}
        names = _TableNames(by_name)
        tables: dict[str, EmbeddingBagConfig] = {}
        weighted_tables: dict[str, EmbeddingBagConfig] = {}
        group_keys: dict[str, list[str]] = {}
        group_dims: dict[str, list[int]] = {}
        self._sequence_groups: dict[str, _SequenceGroup] = {}
        sequence_tables: dict[str, EmbeddingConfig] = {}
        # DEEP group -> its sequence groups, and the sequence group each encoder reads
        self._nested_groups: dict[str, list[_SequenceGroup]] = {}
        self._encoder_inputs: dict[str, list[int]] = {}
        self.sequence_encoders = nn.ModuleDict()
        #: feature name -> the mlp / autodis embedding of a dense feature (one per feature)
        self.dense_embeddings = nn.ModuleDict()
        self._dense_embedding_dims: list[int] = []
        for group in feature_groups:
            nested, problems = resolve_nested_sequences(group)
            if problems:
                where, message = problems[0]
                raise EmbeddingGroupError(f"feature group '{group.group_name}' {where}: {message}")
            if group.group_type in (model_pb2.SEQUENCE, model_pb2.JAGGED_SEQUENCE):
                jagged = group.group_type == model_pb2.JAGGED_SEQUENCE
                self._sequence_groups[group.group_name] = _build_sequence_group(
                    f"{'JAGGED_' if jagged else ''}SEQUENCE feature group '{group.group_name}'",
                    group.feature_names,
                    names.for_group(f"'{group.group_name}'", group.embedding_name_suffix),
                    sequence_tables,
                    jagged,
                )
                continue
            if nested.groups:
                self._add_nested(group, nested, names, sequence_tables)
            is_wide = group.group_type == model_pb2.WIDE
            keys, dims = [], []
            for name in group.feature_names:
                feature = by_name.get(name)
                if feature is None:
                    raise EmbeddingGroupError(
                        f"feature group '{group.group_name}' names undefined feature '{name}'"
                    )
                if feature.stub_type:
                    raise EmbeddingGroupError(
                        f"feature group '{group.group_name}' names feature '{name}', which has"
                        " stub_type: true (an input of other features only, no model input)"
                    )
                if not feature.is_sparse:
                    if feature.is_sequence:
                        raise EmbeddingGroupError(
                            f"feature '{name}' is a dense sequence and cannot be pooled in group"
                            f" '{group.group_name}'; list it in a sequence group (with a"
                            " sequence encoder) or give it boundaries"
                        )
                    if is_wide:
                        raise EmbeddingGroupError(
                            f"feature '{name}' is a dense raw feature and cannot be in WIDE group"
                            f" '{group.group_name}'; give it boundaries to bucketize it"
                        )
                    if feature.dense_embedding is not None:
                        if name not in self.dense_embeddings:
                            self.dense_embeddings[name] = build_dense_embedding(
                                feature.dense_embedding
                            )
                            self._dense_embedding_dims.append(feature.output_dim)
                        keys.append(name + DENSE_EMBEDDING_SUFFIX)
                    else:
                        keys.append(name)
                    dims.append(feature.output_dim)
                    continue
                table = copy.deepcopy(feature.emb_bag_config)
                assert table is not None  # a sparse feature
                table.name = names.name(
                    feature, f"'{group.group_name}'", group.embedding_name_suffix, is_wide
                )
                if is_wide:
                    table.embedding_dim = wide_embedding_dim
                    if wide_init_fn is not None:
                        table.init_fn = wide_init_fn
                # weighted features pool in their own weighted collection (as TorchEasyRec)
                own, other = (
                    (weighted_tables, tables) if feature.is_weighted else (tables, weighted_tables)
                )
                if table.name in other:
                    raise EmbeddingGroupError(
                        f"feature '{name}' shares table '{table.name}' with a feature that is"
                        f" {'not ' if feature.is_weighted else ''}weighted; weighted and"
                        " unweighted id features cannot share a table"
                    )
                _share_table(own, table, name)
                keys.append((name, table.name))
                dims.append(table.embedding_dim)
            if not keys and not nested.groups:
                raise EmbeddingGroupError(f"feature group '{group.group_name}' has no features")
            if keys:
                group_keys[group.group_name] = keys
            if variational_dropout is not None and len(keys) > 1:
                self.variational_dropouts[group.group_name] = FeatureDropout(
                    list(group.feature_names),
                    dims,
                    variational_dropout.regularization_lambda,
                )
            if group.group_name in self.sequence_encoders:
                dims += [e.output_dim() for e in self.sequence_encoders[group.group_name]]  # type: ignore[attr-defined]
            group_dims[group.group_name] = dims
        #: (feature, table, pooling) of the DEEP-group features whose table a sequence group
        #: also reads: looked up in the sequence collection, pooled per row (see the docstring)
        self._ec_pooled = _move_shared_tables(tables, weighted_tables, sequence_tables, by_name)
        if self._ec_pooled:
            logger.info(
                "tables shared by pooled and sequence features (one table each, in the"
                " sequence collection): %s",
                ", ".join(dict.fromkeys(table for _, table, _ in self._ec_pooled)),
            )
        ec_pooled_keys = {(name, table) for name, table, _ in self._ec_pooled}
        #: composed table name -> the ``embedding_name`` of its features (no wide / suffix)
        self.table_bases: dict[str, str] = dict(names.bases)
        # torchrec names an unpooled output "<feature>@<table>" too when the feature feeds
        # several tables (suffixed copies of one table; they all have the feature's dim, so
        # they are in one sequence collection)
        sequence_tables_of: dict[str, int] = {}
        for seq_table in sequence_tables.values():
            for name in seq_table.feature_names:
                sequence_tables_of[name] = sequence_tables_of.get(name, 0) + 1

        def ec_key(feature_name: str, table_name: str) -> str:
            if sequence_tables_of[feature_name] > 1:
                return f"{feature_name}@{table_name}"
            return feature_name

        #: (the sequence collection's output key, pooling) of each ``_ec_pooled`` feature
        self._ec_pooled_inputs = [
            (ec_key(name, table), pooling) for name, table, pooling in self._ec_pooled
        ]
        # torchrec names a pooled output "<feature>@<table>" when the feature feeds several tables
        tables_of_feature: dict[str, int] = {}
        for table in [*tables.values(), *weighted_tables.values()]:
            for name in table.feature_names:
                tables_of_feature[name] = tables_of_feature.get(name, 0) + 1
        for group_name, keys in group_keys.items():
            resolved = []
            for key in keys:
                if isinstance(key, tuple):
                    name, table_name = key
                    if key in ec_pooled_keys or tables_of_feature[name] > 1:
                        key = f"{name}@{table_name}"
                    else:
                        key = name
                resolved.append(key)
            group_keys[group_name] = resolved
        self._group_keys = group_keys
        self._group_dims = group_dims
        self._pooled_group_names = list(group_keys)
        self._group_names = [g.group_name for g in feature_groups]
        self._key_lists: list[list[str]] = [group_keys[g] for g in self._pooled_group_names]
        self._has_sparse = bool(tables) or bool(weighted_tables)
        self._ec_pooled_keys = [f"{name}@{table}" for name, table, _ in self._ec_pooled]
        self._ec_pooled_dims = [
            sequence_tables[table].embedding_dim for _, table, _ in self._ec_pooled
        ]
        layouts = list(self._sequence_groups.values())
        layouts += [layout for group in self._nested_groups.values() for layout in group]
        for layout in layouts:
            layout.key_sparse_by(ec_key)
        self._sequence_dense_keys = list(
            dict.fromkeys(key for layout in layouts for key in layout.dense_keys)
        )
        #: (feature, its element lengths key, pooling) of the sequences whose elements hold
        #: several ids, pooled per element before any sequence group reads them
        self._element_pooled: list[tuple[str, str, str]] = list(
            dict.fromkeys(entry for layout in layouts for entry in layout.element_pooled)
        )
        # decided here, not from the batch, so that forward traces (torch.fx) and scripts
        self._has_dense = any(
            not by_name[name].is_sparse for group in feature_groups for name in group.feature_names
        )
        self.ebc = (
            EmbeddingBagCollection(tables=list(tables.values()), device=device) if tables else None
        )
        #: the tables of weighted id features: pooled with the KJT's id weights
        self.weighted_ebc = (
            EmbeddingBagCollection(
                tables=list(weighted_tables.values()), is_weighted=True, device=device
            )
            if weighted_tables
            else None
        )
        by_dim: dict[int, list[EmbeddingConfig]] = {}
        for table in sequence_tables.values():
            by_dim.setdefault(table.embedding_dim, []).append(table)
        # torchrec wants one embedding dim per EmbeddingCollection
        self.sequence_ecs = nn.ModuleDict(
            {
                f"dim_{dim}": EmbeddingCollection(tables=dim_tables, device=device)
                for dim, dim_tables in sorted(by_dim.items())
            }
        )
        used = [*tables.values(), *weighted_tables.values(), *sequence_tables.values()]
        self.zch, self._zch_tables = _build_zch(
            by_name, [n for t in used for n in t.feature_names], device
        )

    def _add_nested(
        self,
        group: model_pb2.FeatureGroupConfig,
        nested: NestedSequences,
        names: _TableNames,
        tables: dict[str, EmbeddingConfig],
    ) -> None:
        """Builds the sequence groups and encoders of a DEEP group (see the class docstring)."""
        group_name = group.group_name
        # nested.groups follow group.sequence_groups one to one (a config without problems)
        layouts = [
            _build_sequence_group(
                f"sequence group '{name}' of feature group '{group_name}'",
                feature_names,
                names.for_group(
                    f"'{group_name}.{name}'",
                    seq_group.embedding_name_suffix or group.embedding_name_suffix,
                ),
                tables,
            )
            for (name, feature_names), seq_group in zip(nested.groups, group.sequence_groups)
        ]
        index = {name: i for i, (name, _) in enumerate(nested.groups)}
        encoders, inputs = nn.ModuleList(), []
        for k, config in enumerate(nested.encoders):
            kind = config.WhichOneof("seq_module")
            source = getattr(config, kind).input
            layout = layouts[index[source]]
            try:
                encoder = create_sequence_encoder(
                    config,
                    sum(layout.query_dims),
                    sum(layout.sequence_dims),
                    layout.max_length,
                )
            except ValueError as err:
                raise EmbeddingGroupError(
                    f"feature group '{group_name}' sequence_encoders[{k}].{kind}: {err}"
                ) from None
            encoders.append(encoder)
            inputs.append(index[source])
        self._nested_groups[group_name] = layouts
        self._encoder_inputs[group_name] = inputs
        self.sequence_encoders[group_name] = encoders

    def copy_weights_from(self, source: EmbeddingGroup) -> None:
        """Copies tables, zch remappers and sequence encoders from a larger group.

        ``self`` holds a subset of ``source``'s groups (e.g. one tower of a match model); its
        weights become copies of ``source``'s, on ``self``'s device.
        """
        # by table name: a table shared by pooled and sequence features is in ``source``'s
        # sequence collection, but in ``self``'s pooled one when ``self`` keeps no sequence group
        trained = source._table_weights()
        with torch.no_grad():
            for name, weight in self._table_weights().items():
                weight.copy_(trained[name].detach())
        for name, encoders in self.sequence_encoders.items():
            encoders.load_state_dict(source.sequence_encoders[name].state_dict())
        for name, dropout in self.variational_dropouts.items():
            dropout.load_state_dict(source.variational_dropouts[name].state_dict())
        for name, embedding in self.dense_embeddings.items():
            embedding.load_state_dict(source.dense_embeddings[name].state_dict())
        for name, remapper in self.zch.items():
            remapper.load_state_dict(source.zch[name].state_dict())

    def _table_weights(self) -> dict[str, torch.Tensor]:
        """Every embedding table's weight ``[rows, dim]`` by table name (names are unique)."""
        weights: dict[str, torch.Tensor] = {}
        for collection in (self.ebc, self.weighted_ebc):
            if collection is not None:
                for name, bag in collection.embedding_bags.items():
                    weights[name] = bag.weight
        for ec in self.sequence_ecs.values():
            for name, table in ec.embeddings.items():  # type: ignore[operator, union-attr]
                weights[name] = table.weight
        return weights

    def variational_dropout_losses(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Each group's variational-dropout regularisation term, ``<group>_feature_p_loss``.

        The name is TorchEasyRec's; the value is
        :meth:`~recforge.modules.variational_dropout.FeatureDropout.penalty` for a batch of
        ``batch_size`` samples.
        """
        return {
            f"{name}_feature_p_loss": dropout.penalty(batch_size)  # type: ignore[operator]
            for name, dropout in self.variational_dropouts.items()
        }

    def embedding_regularization_loss(self) -> Optional[torch.Tensor]:
        """The L2 penalty of the last training forward (a scalar), once; None without one."""
        penalty, self._embedding_penalty = self._embedding_penalty, None
        return penalty

    def group_names(self) -> list[str]:
        """Names of the groups, in config order."""
        return list(self._group_names)

    def is_sequence_group(self, group_name: str) -> bool:
        """Whether a group is a SEQUENCE or JAGGED_SEQUENCE group (see the class docstring)."""
        self._check_group(group_name)
        return group_name in self._sequence_groups

    def is_jagged_group(self, group_name: str) -> bool:
        """Whether a group is a JAGGED_SEQUENCE group (``"g.sequence"`` is ``[L, Ds]``)."""
        self._check_group(group_name)
        return group_name in self._sequence_groups and self._sequence_groups[group_name].jagged

    def query_dim(self, group_name: str) -> int:
        """Width ``Dq`` of a SEQUENCE group's ``"g.query"`` tensor (0 without query features)."""
        return sum(self._sequence_group(group_name).query_dims)

    def sequence_dim(self, group_name: str) -> int:
        """Width ``Ds`` of a SEQUENCE group's ``"g.sequence"`` tensor."""
        return sum(self._sequence_group(group_name).sequence_dims)

    def sequence_length(self, group_name: str) -> int:
        """Length ``T`` of a SEQUENCE group's padded ``"g.sequence"`` tensor."""
        return self._sequence_group(group_name).max_length

    def _sequence_group(self, group_name: str) -> _SequenceGroup:
        self._check_group(group_name)
        if group_name not in self._sequence_groups:
            raise EmbeddingGroupError(f"feature group '{group_name}' is not a SEQUENCE group")
        return self._sequence_groups[group_name]

    def group_dims(self, group_name: str) -> list[int]:
        """Width of each feature of a DEEP / WIDE group, in group order."""
        self._check_group(group_name)
        if group_name in self._sequence_groups:
            raise EmbeddingGroupError(
                f"feature group '{group_name}' is a SEQUENCE group: its outputs are a query"
                " [B, Dq] and a sequence [B, T, Ds]; use a model that reads sequences (e.g."
                " multi_tower_din's din_towers) or make it a DEEP group to pool the sequence"
            )
        return list(self._group_dims[group_name])

    def group_total_dim(self, group_name: str) -> int:
        """Width of a group's output tensor."""
        return sum(self.group_dims(group_name))

    def group_feature_count(self, group_name: str) -> int:
        """Number of features in a group."""
        return len(self.group_dims(group_name))

    def _check_group(self, group_name: str) -> None:
        if group_name not in self._group_names:
            raise EmbeddingGroupError(
                f"unknown feature group '{group_name}' (groups: {', '.join(self._group_names)})"
            )

    def forward(
        self, sparse_features: KeyedJaggedTensor, dense_features: KeyedTensor
    ) -> dict[str, torch.Tensor]:
        """Embeds and groups the features.

        Args:
            sparse_features: every sparse feature (extra keys are ignored).
            dense_features: every dense feature ``[B, sum(dims)]``.

        Returns:
            ``{group_name: [B, group_total_dim]}``.

        """
        out: dict[str, torch.Tensor] = {}
        dense: dict[str, torch.Tensor] = {}
        if len(self._zch_tables) > 0:
            sparse_features = self._remap_zch(sparse_features)
        if self._sequence_dense_keys:
            # one [B, width] tensor per dense feature that a sequence group reads
            slices = regroup_by_slices([dense_features], [[k] for k in self._sequence_dense_keys])
            for i, key in enumerate(self._sequence_dense_keys):
                dense[key] = slices[i]
        jagged: dict[str, JaggedTensor] = {}
        if self._sequence_groups or self._nested_groups:
            for ec in self.sequence_ecs.values():
                jagged.update(ec(sparse_features))
        if self._key_lists:
            keyed: list[KeyedTensor] = []
            penalties: list[torch.Tensor] = []
            regularize = self.training and self._embedding_l2 > 0
            for collection in (self.ebc, self.weighted_ebc):
                if collection is not None:
                    pooled = collection(sparse_features)
                    if regularize:
                        penalties.append(used_rows_l2(pooled, sparse_features))
                    keyed.append(pooled)
            if len(self._ec_pooled) > 0:
                pooled = KeyedTensor(
                    keys=self._ec_pooled_keys,
                    length_per_key=self._ec_pooled_dims,
                    values=torch.cat(
                        [
                            _pool_rows(jagged[key], pooling)
                            for key, pooling in self._ec_pooled_inputs
                        ],
                        dim=1,
                    ),
                    key_dim=1,
                )
                if regularize:
                    penalties.append(used_rows_l2(pooled, sparse_features))
                keyed.append(pooled)
            if len(penalties) > 0:
                self._embedding_penalty = self._embedding_l2 * torch.stack(penalties).sum()
            if self._has_dense:
                keyed.append(dense_features)
            if len(self.dense_embeddings) > 0:
                keyed.append(self._embed_dense(dense_features))
            grouped = regroup_by_slices(keyed, self._key_lists)
            for i, name in enumerate(self._pooled_group_names):
                out[name] = grouped[i]
                if name in self.variational_dropouts:
                    out[name] = self.variational_dropouts[name](out[name])
        if self._sequence_groups or self._nested_groups:
            if len(self._element_pooled) > 0:
                by_key = sparse_features.to_dict()
                for name, key, pooling in self._element_pooled:
                    jagged[name] = pool_elements(jagged[name], by_key[key], pooling)
            for name, group in self._sequence_groups.items():
                out.update(group.embed(name, jagged, dense))
            for name, layouts in self._nested_groups.items():
                embedded = [layout.embed("", jagged, dense) for layout in layouts]
                parts = [out[name]] if name in out else []
                encoders = self.sequence_encoders[name]
                for encoder, source in zip(encoders, self._encoder_inputs[name]):  # type: ignore[call-overload]
                    inputs = embedded[source]
                    parts.append(
                        encoder(inputs[".query"], inputs[".sequence"], inputs[".sequence_length"])
                    )
                out[name] = torch.cat(parts, dim=1)
        return out

    def _remap_zch(self, sparse_features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The features with the raw ids of zch features replaced by their table rows."""
        remappers = [cast(ZchRemapper, self.zch[table]) for table, _ in self._zch_tables]
        if self.training:
            by_key = sparse_features.to_dict()
            for remapper, (_, names) in zip(remappers, self._zch_tables):
                ids = [by_key[name].values() for name in names]
                remapper.profile(torch.cat(ids) if len(ids) > 1 else ids[0])
        return remap_kjt(
            sparse_features,
            [names for _, names in self._zch_tables],
            [r.mc._mch_sorted_raw_ids for r in remappers],
            [r.mc._mch_remapped_ids_mapping for r in remappers],
        )

    def _embed_dense(self, dense_features: KeyedTensor) -> KeyedTensor:
        """The mlp / autodis embeddings of dense features, keyed ``<name>@dense_emb``."""
        names = list(self.dense_embeddings.keys())
        slices = regroup_by_slices([dense_features], [[name] for name in names])
        embedded = [self.dense_embeddings[name](slices[i]) for i, name in enumerate(names)]
        return KeyedTensor(
            keys=[name + DENSE_EMBEDDING_SUFFIX for name in names],
            length_per_key=self._dense_embedding_dims,
            values=torch.cat(embedded, dim=1),
            key_dim=1,
        )


def used_rows_l2(pooled: KeyedTensor, ids: KeyedJaggedTensor) -> torch.Tensor:
    """``sum_f sum_{v used by f in the batch} ||w_{f,v}||^2`` from pooled lookups: a scalar.

    Each sample's pooled embedding ``e_{b,f}`` is weighted by the mean over its ids of
    ``1 / (occurrences of the id in f's values of the batch)``, so a row used by one id per
    sample counts once however many samples use it: FuxiCTR's ``embedding_regularizer``
    restricted to the rows a batch touches. A sample with several ids (a pooled bag) counts
    its pooled vector with the mean of its ids' weights.

    Args:
        pooled: the EBC's output, ``[B, sum(dims)]``, keys ``feature`` or ``feature@table``.
        ids: the sparse features it was looked up from.

    """
    values = pooled.values()
    total = values.new_zeros(())
    start = 0
    for key, dim in zip(pooled.keys(), pooled.length_per_key()):
        jagged = ids[key.split("@", 1)[0]]
        rows = jagged.values()
        lengths = jagged.lengths()
        emb = values[:, start : start + dim]
        start += dim
        if rows.numel() == 0:
            continue
        _, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
        share = 1.0 / counts[inverse].to(values.dtype)
        weight = torch.segment_reduce(share, "mean", lengths=lengths, unsafe=True, initial=0.0)
        total = total + (weight * emb.pow(2).sum(dim=1)).sum()
    return total


class _SequenceGroup:
    """The layout of one sequence group: query and sequence features, dims and length.

    ``dense_lengths`` holds the dense features (query: 0; dense sequence: its own
    ``sequence_length``, the layout of :class:`~recforge.features.SequenceRawFeature`).
    """

    def __init__(
        self,
        query_keys: list[str],
        query_dims: list[int],
        sequence_keys: list[str],
        sequence_dims: list[int],
        max_length: int,
        dense_lengths: dict[str, int],
        jagged: bool = False,
        element_pooled: Optional[list[tuple[str, str, str]]] = None,
        table_of: Optional[dict[str, str]] = None,
    ) -> None:
        #: sparse feature -> the table it is looked up in
        self.table_of = table_of or {}
        self.jagged = jagged
        self.element_pooled = element_pooled or []
        self.dense_lengths = dense_lengths
        self.dense_keys = list(dense_lengths)
        self.query_keys = query_keys
        self.query_dims = query_dims
        self.sequence_keys = sequence_keys
        self.sequence_dims = sequence_dims
        self.max_length = max_length

    def key_sparse_by(self, ec_key: Callable[[str, str], str]) -> None:
        """Keys the sparse features by their sequence collection's output key.

        Args:
            ec_key: ``(feature, table) -> key`` (``feature``, or ``feature@table`` when the
                feature feeds several tables).

        """

        def key(name: str) -> str:
            return ec_key(name, self.table_of[name]) if name in self.table_of else name

        self.query_keys = [key(k) for k in self.query_keys]
        self.sequence_keys = [key(k) for k in self.sequence_keys]
        self.element_pooled = [(key(k), lk, p) for k, lk, p in self.element_pooled]

    def embed(
        self, name: str, jagged: dict[str, JaggedTensor], dense: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``{"name.query": [B, Dq], "name.sequence": [B, T, Ds], "name.sequence_length": [B]}``.

        Args:
            name: prefix of the output keys.
            jagged: unpooled embeddings of the sparse features.
            dense: ``[B, width]`` of the dense features.

        """
        first = self.sequence_keys[0]
        if first in self.dense_lengths:
            lengths = dense[first][:, 0].to(torch.int32)
        else:
            lengths = jagged[first].lengths()
        parts = []
        for key in self.sequence_keys:
            if key in self.dense_lengths:
                if self.jagged:
                    parts.append(_jagged_dense_sequence(dense[key], lengths))
                else:
                    parts.append(
                        _dense_sequence(dense[key], self.dense_lengths[key], self.max_length)
                    )
            elif self.jagged:
                parts.append(jagged[key].values())
            else:
                parts.append(jagged[key].to_padded_dense(self.max_length))
        sequence = torch.cat(parts, dim=1 if self.jagged else 2)
        if self.query_keys:
            query = torch.cat(
                [
                    dense[k] if k in self.dense_lengths else _sum_pool(jagged[k])
                    for k in self.query_keys
                ],
                dim=1,
            )
        else:
            query = sequence.new_zeros((lengths.numel(), 0))
        return {
            f"{name}.query": query,
            f"{name}.sequence": sequence,
            f"{name}.sequence_length": torch.clamp(lengths, max=self.max_length),
        }


def pool_elements(tokens: JaggedTensor, elements: JaggedTensor, pooling: str) -> JaggedTensor:
    """Pools the ids' embeddings of each sequence element into one vector per element.

    Args:
        tokens: the unpooled embeddings, ``values [N, D]``, ``lengths [B]`` (ids per row).
        elements: ``values [E]`` ids per element, ``lengths [B]`` elements per row.
        pooling: ``"sum"`` or ``"mean"`` (an element without ids gives zeros, as
            TorchEasyRec's segment pooling does after replacing NaN).

    Returns:
        ``values [E, D]``, ``lengths [B]``: a sequence of one vector per element.

    """
    pooled = torch.segment_reduce(
        tokens.values(), pooling, lengths=elements.values(), unsafe=True, initial=0.0
    )
    return JaggedTensor(values=pooled, lengths=elements.lengths())


def _dense_sequence(packed: torch.Tensor, length: int, max_length: int) -> torch.Tensor:
    """``[B, 1 + length]`` (length, numbers) -> the numbers ``[B, max_length, 1]``."""
    numbers = packed[:, 1:]
    if length < max_length:
        numbers = F.pad(numbers, (0, max_length - length))
    elif length > max_length:
        numbers = numbers[:, :max_length]
    return numbers.unsqueeze(2)


def _jagged_dense_sequence(packed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + length]`` (length, numbers) -> the first ``lengths[b]`` numbers ``[L, 1]``."""
    numbers = packed[:, 1:]
    keep = torch.arange(numbers.shape[1], device=numbers.device).view(1, -1) < lengths.view(-1, 1)
    return numbers[keep].unsqueeze(1)


def _sum_pool(embeddings: JaggedTensor) -> torch.Tensor:
    """Sum of each row's embeddings ``[B, D]`` (zeros for an empty row)."""
    return _pool_rows(embeddings, "sum")


def _pool_rows(embeddings: JaggedTensor, pooling: str) -> torch.Tensor:
    """Each row's embeddings pooled to ``[B, D]``, as an embedding bag pools them.

    Args:
        embeddings: ``values [N, D]``, ``lengths [B]``.
        pooling: ``"sum"`` or ``"mean"``; an empty row gives zeros either way.

    """
    return torch.segment_reduce(
        embeddings.values(), pooling, lengths=embeddings.lengths(), unsafe=True, initial=0.0
    )


def _build_zch(
    by_name: dict[str, BaseFeature], used: list[str], device: Optional[torch.device]
) -> tuple[nn.ModuleDict, list[tuple[str, list[str]]]]:
    """The zch remappers of the tables that ``used`` features look up, one per table.

    Args:
        by_name: every feature by name.
        used: the features the tables of the groups read (repeats allowed).
        device: where the tables live (the remappers live there too, or on the CPU when the
            tables are still on the ``meta`` device: they are never sharded).

    Returns:
        ``(remappers by table name, [(table name, its features in order)])``.

    Raises:
        EmbeddingGroupError: a table is read by zch and other features, or by features with
            different zch settings.

    """
    # keyed by embedding_name, not by composed table: the ids are remapped once in the batch,
    # before any lookup, so the suffixed copies of a table (embedding_name_suffix) share one
    # remapper (TorchEasyRec keeps one per copy, admitting and evicting the same ids in each)
    names: dict[str, list[str]] = {}
    for name in dict.fromkeys(used):
        names.setdefault(by_name[name].embedding_name, []).append(name)
    remappers = nn.ModuleDict()
    tables: list[tuple[str, list[str]]] = []
    here = device if device is not None and device.type != "meta" else torch.device("cpu")
    for table, features in names.items():
        configs = [by_name[f].zch_config for f in features]
        if all(c is None for c in configs):
            continue
        first = configs[0]
        if any(c is None or c != first for c in configs):
            raise EmbeddingGroupError(
                f"features {features} share table '{table}' but not the same zch settings;"
                " features sharing a table must all have the same zch message, or none"
            )
        assert first is not None
        remappers[table] = ZchRemapper(first, here)
        tables.append((table, features))
    return remappers, tables


def table_bases(module: nn.Module) -> dict[str, str]:
    """Every table of the :class:`EmbeddingGroup` s in ``module`` -> its ``embedding_name``.

    Settings of a feature's table (``trainable``, ``embedding_constraints``) apply to its
    WIDE and suffixed copies too (``<name>_wide``, ``<name>_<suffix>``).
    """
    bases: dict[str, str] = {}
    for child in module.modules():
        if isinstance(child, EmbeddingGroup):
            bases.update(child.table_bases)
    return bases


def suffixed_table_name(embedding_name: str, suffix: str = "", wide: bool = False) -> str:
    """The table a group's feature is looked up in, as TorchEasyRec composes it.

    Args:
        embedding_name: the feature's ``embedding_name`` (or ``<feature>_emb``).
        suffix: the group's ``embedding_name_suffix`` ("" or unset: none).
        wide: a WIDE group's table (``<name>_wide``, then the suffix).

    """
    name = embedding_name + (WIDE_TABLE_SUFFIX if wide else "")
    return f"{name}_{suffix}" if suffix else name


class _TableNames:
    """Composes the groups' table names and refuses one reached with different suffixes.

    Attributes:
        by_name: every feature by name.
        bases: composed table name -> its features' ``embedding_name``.

    """

    def __init__(self, by_name: dict[str, BaseFeature]) -> None:
        self.by_name = by_name
        self.bases: dict[str, str] = {}
        # composed table name -> (suffix, group, feature) of its first use
        self._first: dict[str, tuple[str, str, str]] = {}

    def for_group(self, group: str, suffix: str) -> _GroupTableNames:
        """The names of one group's tables (``group`` as error messages quote it)."""
        return _GroupTableNames(self, group, suffix)

    def name(self, feature: BaseFeature, group: str, suffix: str, wide: bool = False) -> str:
        """The table of ``feature`` in ``group``.

        Raises:
            EmbeddingGroupError: the name was reached before from a group with another
                suffix (TorchEasyRec refuses this too: the tables would merge silently).

        """
        table = suffixed_table_name(feature.embedding_name, suffix, wide)
        first = self._first.setdefault(table, (suffix, group, feature.name))
        if first[0] != suffix:

            def quoted(s: str) -> str:
                return f"suffix '{s}'" if s else "no suffix"

            raise EmbeddingGroupError(
                f"embedding table '{table}' is reached from feature group {first[1]} (feature"
                f" '{first[2]}', {quoted(first[0])}) and from feature group {group} (feature"
                f" '{feature.name}', {quoted(suffix)}): groups with different"
                " embedding_name_suffix values would share it; change a suffix or an"
                " embedding_name"
            )
        self.bases[table] = feature.embedding_name
        return table


class _GroupTableNames:
    """:class:`_TableNames` bound to one (sequence) group and its suffix."""

    def __init__(self, names: _TableNames, group: str, suffix: str) -> None:
        self.by_name = names.by_name
        self._names = names
        self._group = group
        self._suffix = suffix

    def name(self, feature: BaseFeature) -> str:
        """The table of ``feature`` in this group (see :meth:`_TableNames.name`)."""
        return self._names.name(feature, self._group, self._suffix)


def _share_table(tables: dict[str, TableConfig], table: TableConfig, feature_name: str) -> None:
    """Adds ``table`` to ``tables``, or ``feature_name`` to the table of the same name.

    Raises:
        EmbeddingGroupError: a table of that name exists with another embedding dim.

    """
    existing = tables.get(table.name)
    if existing is None:
        table.feature_names = [feature_name]
        tables[table.name] = table
    elif existing.embedding_dim != table.embedding_dim:
        raise EmbeddingGroupError(
            f"features sharing table '{table.name}' have different embedding dims"
            f" ({existing.embedding_dim} and {table.embedding_dim})"
        )
    elif feature_name not in existing.feature_names:
        existing.feature_names.append(feature_name)


def _move_shared_tables(
    tables: dict[str, EmbeddingBagConfig],
    weighted_tables: dict[str, EmbeddingBagConfig],
    sequence_tables: dict[str, EmbeddingConfig],
    by_name: dict[str, BaseFeature],
) -> list[tuple[str, str, str]]:
    """Moves the pooled tables that sequence groups also read into the sequence tables.

    Such a table then exists once, unpooled; its pooled features are looked up there and
    pooled per row in :meth:`EmbeddingGroup.forward`.

    Args:
        tables: the pooled (EBC) tables by name; shared ones are removed.
        weighted_tables: the weighted pooled tables by name (never shared).
        sequence_tables: the unpooled (EC) tables by name; gain the moved tables' features.
        by_name: every feature by name.

    Returns:
        ``[(feature, table, pooling)]`` of the moved pooled features, pooling ``"sum"`` or
        ``"mean"`` (each feature's own, as its ``EmbeddingBagConfig`` says).

    Raises:
        EmbeddingGroupError: a weighted feature's table is read by a sequence group, or a
            pooled and a sequence feature sharing a table differ in dim or rows.

    """
    for name, bag in weighted_tables.items():
        if name in sequence_tables:
            raise EmbeddingGroupError(
                f"weighted id feature '{bag.feature_names[0]}' shares table '{name}' with"
                f" feature '{sequence_tables[name].feature_names[0]}' of a sequence group;"
                " sequence groups look ids up without weights, so the two cannot share a table:"
                " give one of them another embedding_name"
            )
    moved: list[tuple[str, str, str]] = []
    for name in [n for n in tables if n in sequence_tables]:
        bag = tables.pop(name)
        target = sequence_tables[name]
        for feature_name in bag.feature_names:
            config = by_name[feature_name].emb_config
            assert config is not None  # a sparse feature
            if (config.embedding_dim, config.num_embeddings) != (
                target.embedding_dim,
                target.num_embeddings,
            ):
                raise EmbeddingGroupError(
                    f"feature '{feature_name}' (DEEP group) and feature"
                    f" '{target.feature_names[0]}' (sequence group) share table '{name}' but"
                    f" not its shape: {config.num_embeddings} x {config.embedding_dim} and"
                    f" {target.num_embeddings} x {target.embedding_dim} (rows x dim); give them"
                    " the same embedding_dim and number of ids, or different embedding_names"
                )
            config.name = name
            _share_table(sequence_tables, config, feature_name)
            pooling = by_name[feature_name].emb_bag_config.pooling  # type: ignore[union-attr]
            moved.append((feature_name, name, "mean" if pooling == PoolingType.MEAN else "sum"))
    return moved


def _build_sequence_group(
    where: str,
    feature_names: Sequence[str],
    names: _GroupTableNames,
    tables: dict[str, EmbeddingConfig],
    jagged: bool = False,
) -> _SequenceGroup:
    """Checks a sequence group and adds its tables to ``tables`` (shared by name).

    Args:
        where: the group, as error messages name it.
        feature_names: its query and sequence features.
        names: the group's table names (and every feature by name).
        tables: the sequence tables so far, by name.
        jagged: a JAGGED_SEQUENCE group (outputs not padded).

    """
    by_name = names.by_name
    table_of: dict[str, str] = {}
    query_keys, query_dims, sequence_keys, sequence_dims, lengths = [], [], [], [], []
    element_pooled: list[tuple[str, str, str]] = []
    dense_lengths: dict[str, int] = {}
    for name in feature_names:
        feature = by_name.get(name)
        if feature is None:
            raise EmbeddingGroupError(f"{where} names undefined feature '{name}'")
        if feature.stub_type:
            raise EmbeddingGroupError(
                f"{where} names feature '{name}', which has stub_type: true (an input of other"
                " features only, no model input)"
            )
        if feature.dense_embedding is not None:
            raise EmbeddingGroupError(
                f"{where}: feature '{name}' has a dense embedding (mlp / autodis), which only"
                " DEEP groups apply; list it in a DEEP group"
            )
        if feature.is_weighted:
            raise EmbeddingGroupError(
                f"{where}: weighted id feature '{name}' pools its ids by weight and can only"
                " be in a DEEP or WIDE group"
            )
        if feature.is_sparse:
            table = feature.emb_config
            assert table is not None  # a sparse feature
            table.name = names.name(feature)
            table_of[name] = table.name
            _share_table(tables, table, name)
            if feature.element_lengths_key is not None:
                element_pooled.append((name, feature.element_lengths_key, feature.pooling))
        else:
            dense_lengths[name] = feature.sequence_length if feature.is_sequence else 0  # type: ignore[attr-defined]
        if feature.is_sequence:
            sequence_keys.append(name)
            sequence_dims.append(feature.output_dim)
            lengths.append(feature.sequence_length)  # type: ignore[attr-defined]
        else:
            query_keys.append(name)
            query_dims.append(feature.output_dim)
    if not sequence_keys:
        raise EmbeddingGroupError(
            f"{where} has no sequence feature (sequence_id_feature, sequence_raw_feature or "
            "a sequence_feature element)"
        )
    return _SequenceGroup(
        query_keys,
        query_dims,
        sequence_keys,
        sequence_dims,
        max(lengths),
        dense_lengths,
        jagged,
        element_pooled,
        table_of,
    )
