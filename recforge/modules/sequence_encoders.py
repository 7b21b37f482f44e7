"""Sequence encoders: turn a behaviour sequence (and its query) into one vector per sample.

A DEEP feature group may hold ``sequence_groups`` (each: query features, e.g. the candidate's
``item_id``, plus sequence features, e.g. ``click_seq__item_id``) and ``sequence_encoders``
(each reads one sequence group); the group's output is its plain features followed by every
encoder's output, as in TorchEasyRec. Every encoder has the same call,
``forward(query [B, Dq], sequence [B, T, Ds], lengths [B]) -> [B, output_dim()]``, and knows
its ``output_dim()`` when built. Padded positions (``t >= lengths[b]``) never change an output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from recforge.modules.din import DINEncoder
from recforge.modules.masked_attention import (
    check_query,
    clip_sequence,
    effective_length,
    masked_attention_pool,
    pad_query,
    sequence_mask,
)
from recforge.modules.mlp import MLP
from recforge.protos import model_pb2, module_pb2, seq_encoder_pb2

POOLING_TYPES = ("mean", "sum")


class SimpleAttention(nn.Module):
    """Dot-product attention of the query over the sequence, softmax-pooled.

    ``w = softmax_t(<s_t, q>)`` over the valid positions; output ``sum_t w_t s_t``. A query
    narrower than the elements is zero-padded (TorchEasyRec needs equal widths).

    Shapes:
        ``forward(query [B, Dq], sequence [B, T, Ds], lengths [B]) -> [B, Ds]``.

    """

    def __init__(
        self,
        query_dim: int,
        sequence_dim: int,
        max_length: int,
        name: str = "?",
        max_seq_length: int = 0,
    ) -> None:
        super().__init__()
        check_query(query_dim, sequence_dim, "simple_attention", name)
        self._query_pad = sequence_dim - query_dim
        self._dim = sequence_dim
        self._length = effective_length(max_length, max_seq_length)

    def output_dim(self) -> int:
        """Width of the output (``Ds``)."""
        return self._dim

    def forward(
        self, query: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Attention pooling ``[B, T, Ds] -> [B, Ds]``."""
        sequence, lengths = clip_sequence(sequence, lengths, self._length)
        query = pad_query(query, self._query_pad)
        scores = torch.bmm(sequence, query.unsqueeze(2)).squeeze(2)  # [B, T]
        return masked_attention_pool(scores, sequence, lengths)


class PoolingEncoder(nn.Module):
    """Sum or mean of the valid sequence elements (an empty sequence pools to zeros).

    Shapes:
        ``forward(query, sequence [B, T, Ds], lengths [B]) -> [B, Ds]`` (query unused).

    """

    def __init__(
        self,
        sequence_dim: int,
        max_length: int,
        pooling_type: str = "mean",
        max_seq_length: int = 0,
    ) -> None:
        super().__init__()
        if pooling_type not in POOLING_TYPES:
            raise ValueError(f"pooling_type must be 'mean' or 'sum', found {pooling_type!r}")
        self._mean = pooling_type == "mean"
        self._dim = sequence_dim
        self._length = effective_length(max_length, max_seq_length)

    def output_dim(self) -> int:
        """Width of the output (``Ds``)."""
        return self._dim

    def forward(
        self, query: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Pools ``[B, T, Ds] -> [B, Ds]``."""
        sequence, lengths = clip_sequence(sequence, lengths, self._length)
        mask = sequence_mask(lengths, self._length).to(sequence.dtype)
        pooled = torch.bmm(mask.unsqueeze(1), sequence).squeeze(1)
        if self._mean:
            pooled = pooled / torch.clamp(lengths, min=1).unsqueeze(1).to(pooled.dtype)
        return pooled


class SelfAttentionEncoder(nn.Module):
    """Multi-head self attention over the sequence, mean-pooled over the valid positions.

    The elements are projected to queries, keys and values of width ``multihead_attn_dim``
    and fed to ``nn.MultiheadAttention``; each valid position attends to the valid positions
    only, and the outputs of the valid positions are averaged.

    Shapes:
        ``forward(query, sequence [B, T, Ds], lengths [B]) -> [B, multihead_attn_dim]``.

    """

    def __init__(
        self,
        sequence_dim: int,
        max_length: int,
        multihead_attn_dim: int = 512,
        num_heads: int = 8,
        dropout: float = 0.0,
        max_seq_length: int = 0,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or multihead_attn_dim <= 0 or multihead_attn_dim % num_heads:
            raise ValueError(
                f"multihead_attn_dim ({multihead_attn_dim}) must be a positive multiple of"
                f" num_heads ({num_heads})"
            )
        self._dim = multihead_attn_dim
        self._heads = num_heads
        self._length = effective_length(max_length, max_seq_length)
        self.query = nn.Linear(sequence_dim, multihead_attn_dim)
        self.key = nn.Linear(sequence_dim, multihead_attn_dim)
        self.value = nn.Linear(sequence_dim, multihead_attn_dim)
        self.attention = nn.MultiheadAttention(
            multihead_attn_dim, num_heads, dropout=dropout, batch_first=True
        )

    def output_dim(self) -> int:
        """Width of the output (``multihead_attn_dim``)."""
        return self._dim

    def forward(
        self, query: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Self-attends and pools ``[B, T, Ds] -> [B, multihead_attn_dim]``."""
        sequence, lengths = clip_sequence(sequence, lengths, self._length)
        valid = sequence_mask(lengths, self._length)  # [B, T]
        # a padded position attends to everything (its output is dropped below): a row with
        # every key masked would give NaN
        allowed = (valid.unsqueeze(2) & valid.unsqueeze(1)) | ~valid.unsqueeze(2)
        attn_mask = (~allowed).repeat_interleave(self._heads, dim=0)  # [B * H, T, T]
        out, _ = self.attention(
            self.query(sequence),
            self.key(sequence),
            self.value(sequence),
            attn_mask=attn_mask,
            need_weights=False,
        )
        out = out * valid.unsqueeze(2).to(out.dtype)
        return out.sum(dim=1) / torch.clamp(lengths, min=1).unsqueeze(1).to(out.dtype)


class MultiWindowDINEncoder(nn.Module):
    """DIN-style scores pooled over consecutive time windows, plus the query.

    Each element gets ``prelu(linear(attn_mlp([s_t, q * s_t, q])))``; the scored elements
    ``score_t * s_t`` are summed within consecutive windows of ``windows_len`` positions (the
    first window holds positions ``[0, windows_len[0])``, ...) and divided by the number of
    valid positions in the window (at least 1). Positions past ``sum(windows_len)`` are not
    read. The output is the ``L`` window vectors followed by the (zero-padded) query.

    Shapes:
        ``forward(query [B, Dq], sequence [B, T, Ds], lengths [B]) -> [B, (L + 1) * Ds]``.

    """

    if TYPE_CHECKING:  # buffers typed for mypy only (TorchScript cannot resolve them)
        window_of: torch.Tensor
        starts: torch.Tensor
        sizes: torch.Tensor

    def __init__(
        self,
        query_dim: int,
        sequence_dim: int,
        max_length: int,
        windows_len: list[int],
        attn_mlp: module_pb2.MLP,
        name: str = "?",
    ) -> None:
        super().__init__()
        check_query(query_dim, sequence_dim, "multi_window_din_encoder", name)
        if not windows_len or min(windows_len) <= 0:
            raise ValueError(f"windows_len must list positive window lengths, found {windows_len}")
        self._query_pad = sequence_dim - query_dim
        self._dim = sequence_dim
        self._windows = len(windows_len)
        self._length = max_length
        starts = [sum(windows_len[:i]) for i in range(len(windows_len))]
        window_of = torch.zeros(len(windows_len), max_length)
        for w, (start, size) in enumerate(zip(starts, windows_len)):
            window_of[w, start : min(start + size, max_length)] = 1.0
        self.register_buffer("window_of", window_of, persistent=False)  # [L, T]
        self.register_buffer("starts", torch.tensor(starts), persistent=False)
        self.register_buffer("sizes", torch.tensor(windows_len), persistent=False)
        self.attn_mlp = MLP.from_config(3 * sequence_dim, attn_mlp)
        self.score = nn.Linear(self.attn_mlp.output_dim(), 1)
        self.activation = nn.PReLU()

    def output_dim(self) -> int:
        """Width of the output (``(len(windows_len) + 1) * Ds``)."""
        return (self._windows + 1) * self._dim

    def forward(
        self, query: torch.Tensor, sequence: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Window-pools ``[B, T, Ds]`` -> ``[B, (L + 1) * Ds]``."""
        lengths = torch.clamp(lengths, max=self._length)
        query = pad_query(query, self._query_pad)
        expanded = query.unsqueeze(1).expand_as(sequence)
        features = torch.cat([sequence, expanded * sequence, expanded], dim=2)
        hidden = self.attn_mlp(features.reshape(-1, 3 * self._dim))
        scores = self.activation(self.score(hidden)).reshape(-1, self._length, 1)
        mask = sequence_mask(lengths, self._length).to(sequence.dtype).unsqueeze(2)
        weighted = scores * mask * sequence  # [B, T, Ds]
        windows = torch.matmul(self.window_of.to(weighted.dtype), weighted)  # [B, L, Ds]
        counts = torch.minimum(lengths.unsqueeze(1) - self.starts.unsqueeze(0), self.sizes)
        windows = windows / torch.clamp(counts, min=1).unsqueeze(2).to(windows.dtype)
        return torch.cat([windows, query.unsqueeze(1)], dim=1).reshape(-1, self.output_dim())


def create_sequence_encoder(
    config: seq_encoder_pb2.SeqEncoderConfig,
    query_dim: int,
    sequence_dim: int,
    max_length: int,
) -> nn.Module:
    """Builds the encoder a ``SeqEncoderConfig`` names, over one sequence group.

    Args:
        config: the encoder config (its ``input`` already resolved).
        query_dim: ``Dq`` of the sequence group (0 without query features).
        sequence_dim: ``Ds`` of the sequence group.
        max_length: ``T`` of the sequence group (its longest ``sequence_length``).

    Raises:
        ValueError: the config does not fit the group (see each encoder).

    """
    kind = config.WhichOneof("seq_module")
    c: Any = getattr(config, kind)
    if kind == "din_encoder":
        return DINEncoder(
            query_dim, sequence_dim, max_length, c.attn_mlp, c.input, c.max_seq_length
        )
    if kind == "simple_attention":
        return SimpleAttention(query_dim, sequence_dim, max_length, c.input, c.max_seq_length)
    if kind == "pooling_encoder":
        return PoolingEncoder(sequence_dim, max_length, c.pooling_type, c.max_seq_length)
    if kind == "self_attention_encoder":
        return SelfAttentionEncoder(
            sequence_dim,
            max_length,
            c.multihead_attn_dim,
            c.num_heads,
            c.dropout,
            c.max_seq_length,
        )
    return MultiWindowDINEncoder(
        query_dim, sequence_dim, max_length, list(c.windows_len), c.attn_mlp, c.input
    )


@dataclass
class NestedSequences:
    """The ``sequence_groups`` and ``sequence_encoders`` of one feature group, resolved.

    Attributes:
        groups: ``(name, feature_names)`` of each sequence group (a lone unnamed one takes the
            feature group's name).
        encoders: each encoder config, a copy whose ``input`` names its sequence group.

    """

    groups: list[tuple[str, list[str]]] = field(default_factory=list)
    encoders: list[seq_encoder_pb2.SeqEncoderConfig] = field(default_factory=list)


def resolve_nested_sequences(
    group: model_pb2.FeatureGroupConfig,
) -> tuple[NestedSequences, list[tuple[str, str]]]:
    """Resolves a feature group's sequence groups and encoders, as TorchEasyRec does.

    Rules: only DEEP groups hold them; sequence groups and encoders come together; with
    several sequence groups each needs a ``group_name`` and each encoder an ``input``; every
    ``input`` names one of the group's sequence groups and every sequence group is read by an
    encoder.

    Returns:
        the resolved groups and encoders, and ``(field path below the feature group,
        message)`` for each problem (empty when the group is fine).

    """
    problems: list[tuple[str, str]] = []
    resolved = NestedSequences()
    seq_groups, encoders = list(group.sequence_groups), list(group.sequence_encoders)
    if not seq_groups and not encoders:
        return resolved, problems
    where = f"feature group '{group.group_name}'"
    if group.group_type != model_pb2.DEEP:
        problems.append(
            ("group_type", f"{where} has sequence_groups / sequence_encoders: it must be DEEP")
        )
        return resolved, problems
    if not encoders:
        problems.append(("sequence_encoders", f"{where} has sequence_groups but no encoder"))
    if not seq_groups:
        problems.append(("sequence_groups", f"{where} has sequence_encoders but no group"))
    if problems:
        return resolved, problems
    for k, sg in enumerate(seq_groups):
        name = sg.group_name
        if not name:
            if len(seq_groups) > 1:
                problems.append(
                    (
                        f"sequence_groups[{k}].group_name",
                        f"{where} has several sequence_groups: each needs a group_name",
                    )
                )
                continue
            name = group.group_name
        if name in {n for n, _ in resolved.groups}:
            problems.append(
                (f"sequence_groups[{k}].group_name", f"sequence group '{name}' is defined twice")
            )
            continue
        if not sg.feature_names:
            problems.append((f"sequence_groups[{k}]", f"sequence group '{name}' has no features"))
        resolved.groups.append((name, list(sg.feature_names)))
    names = [n for n, _ in resolved.groups]
    read: set[str] = set()
    for k, encoder in enumerate(encoders):
        kind = encoder.WhichOneof("seq_module")
        fld = f"sequence_encoders[{k}]"
        if kind is None:
            problems.append((fld, "set one encoder (din_encoder, simple_attention, ...)"))
            continue
        copy = seq_encoder_pb2.SeqEncoderConfig()
        copy.CopyFrom(encoder)
        c = getattr(copy, kind)
        if not c.input:
            if len(names) != 1:
                problems.append(
                    (
                        f"{fld}.{kind}.input",
                        f"{where} has several sequence_groups: name the one to read"
                        f" ({', '.join(names)})",
                    )
                )
                continue
            c.input = names[0]
        if c.input not in names:
            problems.append(
                (
                    f"{fld}.{kind}.input",
                    f"'{c.input}' is not a sequence group of {where} ({', '.join(names)})",
                )
            )
            continue
        problems.extend((f"{fld}.{kind}.{f}", m) for f, m in _encoder_value_problems(kind, c))
        read.add(c.input)
        resolved.encoders.append(copy)
    for k, (name, _) in enumerate(resolved.groups):
        if name not in read and not any(p[0].startswith("sequence_encoders") for p in problems):
            problems.append((f"sequence_groups[{k}]", f"no sequence encoder reads group '{name}'"))
    return resolved, problems


def _encoder_value_problems(kind: str, c: Any) -> list[tuple[str, str]]:
    """Values an encoder config cannot take (checked before any layer is built)."""
    problems = []
    if kind in ("din_encoder", "multi_window_din_encoder") and not c.attn_mlp.hidden_units:
        problems.append(("attn_mlp.hidden_units", "the attention MLP needs hidden_units"))
    if kind == "pooling_encoder" and c.pooling_type not in POOLING_TYPES:
        problems.append(("pooling_type", f"expected 'mean' or 'sum', found {c.pooling_type!r}"))
    if kind == "self_attention_encoder" and (
        c.num_heads <= 0 or c.multihead_attn_dim <= 0 or c.multihead_attn_dim % c.num_heads
    ):
        problems.append(
            (
                "multihead_attn_dim",
                f"must be a positive multiple of num_heads ({c.num_heads}),"
                f" found {c.multihead_attn_dim}",
            )
        )
    if kind == "multi_window_din_encoder" and (not c.windows_len or min(c.windows_len) <= 0):
        problems.append(("windows_len", f"expected positive lengths, found {list(c.windows_len)}"))
    if getattr(c, "max_seq_length", 0) < 0:
        problems.append(("max_seq_length", f"must be >= 0, found {c.max_seq_length}"))
    return problems
