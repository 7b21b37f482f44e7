"""ULTRA-HSTU: DLRM-HSTU with a Mixture of Transducers (one HSTU per history channel)."""

from __future__ import annotations

import torch
from torch import nn

from recforge.config import ConfigError
from recforge.models.dlrm_hstu import (
    CANDIDATE_GROUP,
    CANDIDATE_TIMESTAMP_GROUP,
    DlrmHSTU,
)
from recforge.modules.gr.from_config import RANKING_PREPROCESSORS
from recforge.modules.gr.hstu_transducer import HSTUTransducer
from recforge.protos import model_pb2, module_pb2


class TransducerStack(nn.Module):
    """Several transducers over one batch; each candidate's rows concatenated ``[T, sum D]``.

    Args:
        transducers: one per channel; all read the same candidates.

    """

    def __init__(self, transducers: list[HSTUTransducer]) -> None:
        super().__init__()
        self.transducers = nn.ModuleList(transducers)
        self._output_dim = sum(t.output_dim() for t in transducers)

    def output_dim(self) -> int:
        """The sum of the channels' widths."""
        return self._output_dim

    def forward(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate's rows of every channel ``[T, sum D]`` and the candidates per user."""
        outs: list[torch.Tensor] = []
        num_targets = torch.empty(0)
        for transducer in self.transducers:
            out, num_targets = transducer(grouped)
            outs.append(out)
        return torch.cat(outs, dim=-1), num_targets


class UltraHSTU(DlrmHSTU):
    """ULTRA-HSTU (Ding et al. 2026; TorchEasyRec's ``ultra_hstu``) for multi-task ranking.

    ``ultra_hstu { hstu { name ... } hstu { name ... } fusion_mtl_tower max_seq_len ... }``:
    the fields of ``dlrm_hstu`` with ``hstu`` repeated. Each ``hstu`` is a channel (Mixture
    of Transducers): its own transducer reads the history group ``<name>`` (``uih`` for an
    unnamed one) and, with time encoding, ``<name>_timestamp``; the candidates
    (``candidate``, ``candidate_timestamp``) and the ``contextual`` group are shared. The
    channels' candidate rows are concatenated, so the item MLP and the
    :class:`~recforge.models.dlrm_hstu.FusionMTLTower` are as wide as the sum of the
    channels' ``stu.embedding_dim``. With several channels each needs a unique non-empty
    ``name``; one unnamed channel is exactly ``dlrm_hstu`` (same layers, same parameter
    names). The long-sequence settings of ULTRA-HSTU are the STU stack's: semi-local
    attention (``stu.sla_k1`` / ``sla_k2``), mid-stack truncation
    (``attn_truncation_split_layer`` / ``attn_truncation_tail_len``) and selective
    rematerialization (``stu.recompute_*``).

    A channel with an action encoder reads its own ``<name>_action`` (and, with watch-time
    thresholds, ``<name>_watchtime``) group, as TorchEasyRec's channels do.
    """

    def build(self) -> None:
        """Builds the embedding group, one transducer per channel, the item MLP and the tower."""
        cfg = self._model_config
        self.require_fields("fusion_mtl_tower")
        channels = list(cfg.hstu)
        if not channels:
            raise ConfigError(
                "ultra_hstu needs at least one hstu { ... } channel",
                field=self.config_field("hstu"),
            )
        names = [c.name for c in channels]
        if len(channels) > 1:
            for i, name in enumerate(names):
                if not name or name in names[:i]:
                    raise ConfigError(
                        "with several hstu channels each needs a unique non-empty name (its"
                        f" history group), found names {names}",
                        field=self.config_field(f"hstu[{i}].name"),
                    )
        self._check_common(allow_descending=False)
        kernel = self._base_model_config.kernel
        groups = {g.group_name: g for g in self._base_model_config.feature_groups}
        self._check_candidate_group(groups)
        read = [CANDIDATE_GROUP]
        for i, hstu in enumerate(channels):
            read += self._check_channel(i, hstu, groups, kernel)
        contextual = self._contextual_group(groups, read)
        self.embedding_group = eg = self.init_embedding_group()
        self._candidate = self._source(eg, CANDIDATE_GROUP)
        transducers: list[HSTUTransducer] = []
        for i, hstu in enumerate(channels):
            self._check_contextual_seq_len(eg, hstu, contextual, self.config_field(f"hstu[{i}]"))
            with self.config_errors(f"hstu[{i}]"):
                transducers.append(self._transducer(eg, hstu, read, contextual))
        # one channel: the transducer itself, so that its parameters are named as dlrm_hstu's;
        # several: a stack with the same call signature (predict is DlrmHSTU's)
        if len(transducers) == 1:
            self.transducer = transducers[0]
        else:
            self.transducer = TransducerStack(transducers)  # type: ignore[assignment]
        self._build_head(self._width(eg, CANDIDATE_GROUP), sum(t.output_dim() for t in transducers))

    def _check_channel(
        self, index: int, hstu: module_pb2.HSTU, groups: dict, kernel: int
    ) -> list[str]:
        """Checks channel ``index``'s settings and groups; returns the groups it reads."""
        field = self.config_field(f"hstu[{index}]")
        kind = hstu.input_preprocessor.WhichOneof("input_preprocessor")
        if kind not in RANKING_PREPROCESSORS:
            raise ConfigError(
                "ultra_hstu needs input_preprocessor { contextual_preprocessor { ... } } or"
                f" {{ contextual_interleave_preprocessor {{ ... }} }}, found {kind or 'none'}",
                field=f"{field}.input_preprocessor",
            )
        split, tail = hstu.attn_truncation_split_layer, hstu.attn_truncation_tail_len
        if (split > 0) != (tail > 0):
            given, missing = (
                ("attn_truncation_split_layer", "attn_truncation_tail_len")
                if split > 0
                else ("attn_truncation_tail_len", "attn_truncation_split_layer")
            )
            raise ConfigError(
                f"{given} turns truncation on only with {missing} > 0 too, found {missing}: 0",
                field=f"{field}.{given}",
            )
        if split >= hstu.attn_num_layers > 0 and tail > 0:
            raise ConfigError(
                f"attn_truncation_split_layer must be below attn_num_layers"
                f" ({hstu.attn_num_layers}), found {split}",
                field=f"{field}.attn_truncation_split_layer",
            )
        stu = hstu.stu
        if (stu.sla_k1 > 0 or stu.sla_k2 > 0) and kernel == model_pb2.TRITON:
            # TorchEasyRec's Triton kernel has no mask for it and refuses the pair
            raise ConfigError(
                "semi-local attention (sla_k1 / sla_k2) needs kernel: PYTORCH or CUTLASS",
                field=f"{field}.stu.sla_k1",
            )
        if kernel == model_pb2.CUTLASS and stu.attention_dim != stu.hidden_dim:
            raise ConfigError(
                "kernel: CUTLASS needs stu.attention_dim == stu.hidden_dim, found"
                f" {stu.attention_dim} and {stu.hidden_dim}",
                field=f"{field}.stu.attention_dim",
            )
        prefix = hstu.name or "uih"
        if prefix not in groups or groups[prefix].group_type != model_pb2.JAGGED_SEQUENCE:
            raise ConfigError(
                f"channel {index} needs a JAGGED_SEQUENCE feature group '{prefix}' (its"
                f" history; groups: {', '.join(groups)})",
                field=f"{field}.name",
            )
        read = [prefix]
        if hstu.positional_encoder.use_time_encoding:
            for name in (f"{prefix}_timestamp", CANDIDATE_TIMESTAMP_GROUP):
                if name not in groups:
                    raise ConfigError(
                        f"positional_encoder.use_time_encoding needs a feature group '{name}'"
                        f" with the timestamps (groups: {', '.join(groups)})",
                        field=f"{field}.positional_encoder",
                    )
                read.append(name)
        read += self._postprocessor_groups(hstu, groups, field)
        return read + self._action_groups(hstu, groups, f"{field}.input_preprocessor")
