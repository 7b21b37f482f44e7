"""The HSTU transducer of ``dlrm_hstu``: history + candidates in, one row per candidate out.

The pipeline is TorchEasyRec's ``HSTUTransducer`` with the contextual preprocessor: the
content encoder (:class:`~recforge.modules.gr.content_encoder.ContentEncoder`) brings history
and candidate rows to one width, the candidates are appended after each user's history, the
content MLP maps every row to ``stu.embedding_dim``; with an action encoder each history
event's actions (a bitmask, plus bits set by watch-time thresholds) are encoded, every
candidate gets the encoder's one learned candidate row (its actions are what is predicted), and
the action MLP's output is added to the content row (TorchEasyRec's contextual preprocessor);
with the interleave preprocessor (``enable_interleaving``) each history event becomes two
tokens, its content row then its action row, and the candidates keep their content row alone
(see ``HSTUTransducer``); contextual features (a DEEP group of
``c`` features of one width, or one token of all of them with ``concat_contextual_features``)
become prefix tokens. Then the positional encoder (candidates share the position after the
last event; time gaps are measured to the last candidate's timestamp), input dropout, the STU
layers with target-aware attention (a candidate sees the prefix, the history and itself,
never another candidate), the output postprocessor on the candidates' rows (the timestamp
layer-norm one reads the candidates' timestamps).

Inputs are the EmbeddingGroup's outputs: ``"<uih>.sequence"`` ``[L, Du]`` with
``"<uih>.sequence_length"`` ``[B]``; the candidates as a JAGGED_SEQUENCE group
(``"<cand>.sequence"`` ``[T, Dc]`` with ``"<cand>.sequence_length"``) or a DEEP group
(``[B, Dc]``, one candidate per user); with time encoding ``"<prefix>_timestamp.sequence"``
``[L, 1]`` and the candidate timestamps (``"candidate_timestamp.sequence"`` ``[T, 1]`` or a
DEEP ``candidate_timestamp`` group ``[B, 1]``); the contextual group ``[B, c * d]``; with an
action encoder ``"<prefix>_action.sequence"`` ``[L, 1]`` (and ``"<prefix>_watchtime.sequence"``
``[L, 1]`` with watch-time thresholds).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.errors import DataError
from recforge.modules.gr.action_encoder import SimpleActionEncoder
from recforge.modules.gr.content_encoder import ContentEncoder
from recforge.modules.gr.contextual import ContextualTokens
from recforge.modules.gr.contextualized_mlp import (
    ContextualizedMLP,
    contextualized_mlp,
    run_contextualized_mlp,
)
from recforge.modules.gr.from_config import (
    ContextualPreprocessor,
    contextual_preprocessor,
    output_postprocessor,
    positional_encoder,
    stu_stack,
    timestamp_postprocessor,
)
from recforge.modules.gr.jagged import offsets_of, prepend_rows
from recforge.modules.gr.targets import append_rows, interleave_rows, last_rows_index, take_rows
from recforge.protos import module_pb2

# traced export graphs call them as opaque (scripted) functions: they depend on the data
torch.fx.wrap("append_rows")
torch.fx.wrap("interleave_rows")
torch.fx.wrap("take_rows")
torch.fx.wrap("last_rows_index")
torch.fx.wrap("prepend_rows")


class SequenceInput:
    """Where a jagged or dense group's rows are in the grouped features.

    Args:
        key: the group name.
        jagged: a JAGGED_SEQUENCE group (``<key>.sequence`` + ``<key>.sequence_length``);
            else a DEEP group ``[B, D]`` (one row per user).

    """

    def __init__(self, key: str, jagged: bool) -> None:
        self.key = key
        self.jagged = jagged

    def values(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """The rows ``[T, D]``."""
        return grouped[f"{self.key}.sequence"] if self.jagged else grouped[self.key]

    def rows(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``[T, D]`` and their offsets ``[B + 1]``."""
        if self.jagged:
            values = grouped[f"{self.key}.sequence"]
            lengths = grouped[f"{self.key}.sequence_length"].to(torch.int64)
            return values, offsets_of(lengths)
        values = grouped[self.key]
        ones = torch.ones_like(values[:, 0]).to(torch.int64)
        return values, offsets_of(ones)


class HSTUTransducer(nn.Module):
    """History + candidates -> each candidate's encoded row ``[T, D]`` (see the module doc).

    Interleaving: TorchEasyRec, while training, also gives each candidate a second token (its
    learned action row) and drops those tokens from the output; at inference it leaves them
    out. A candidate's token attends to the history and to itself only, so the extra tokens
    never change a candidate's output: recforge leaves them out in training too (the same
    outputs, fewer tokens), and its action encoder has no candidate row then.

    Args:
        hstu: the ``HSTU`` message (its (interleave) contextual preprocessor's groups checked
            by the caller).
        uih: the history group (JAGGED_SEQUENCE).
        uih_dim: width of its rows.
        candidate: the candidate group.
        cand_dim: width of its rows.
        max_seq_len: the attention's fixed divisor (TorchEasyRec's ``scaling_seqlen``).
        timestamp: the history timestamp group (read only with time encoding).
        candidate_timestamp: the candidate timestamp group (read only with time encoding or
            the timestamp layer-norm postprocessor).
        contextual_key: the contextual group, or None.
        contextual_dims: the widths of its features.
        concat_contextual: one prefix token of all contextual features (else one each, all
            of one width).
        action: the history's action group (read only with an action encoder).
        watchtime: the history's watch-time group (read only with watch-time thresholds).

    Raises:
        ValueError: a setting the transducer cannot build (named in the message).

    """

    def __init__(
        self,
        hstu: module_pb2.HSTU,
        uih: SequenceInput,
        uih_dim: int,
        candidate: SequenceInput,
        cand_dim: int,
        max_seq_len: int,
        timestamp: Optional[SequenceInput] = None,
        candidate_timestamp: Optional[SequenceInput] = None,
        contextual_key: Optional[str] = None,
        contextual_dims: Optional[list[int]] = None,
        concat_contextual: bool = False,
        action: Optional[SequenceInput] = None,
        watchtime: Optional[SequenceInput] = None,
    ) -> None:
        super().__init__()
        stu = hstu.stu
        dim = stu.embedding_dim
        self._uih = uih
        self._candidate = candidate
        self._timestamp = timestamp
        self._candidate_timestamp = candidate_timestamp
        self._max_seq_len = max_seq_len
        self._input_dropout = hstu.input_dropout_ratio
        pre, self._interleave = contextual_preprocessor(hstu)
        self.content_encoder = ContentEncoder(pre.content_encoder, uih_dim, cand_dim)
        self._contextual_key = contextual_key
        dims = list(contextual_dims or []) if contextual_key is not None else []
        self.content_mlp = contextualized_mlp(
            pre.content_mlp, self.content_encoder.output_dim, dim, sum(dims), "content_mlp"
        )
        self._action = action
        self._watchtime = watchtime
        self.action_encoder: Optional[SimpleActionEncoder] = None
        self.action_mlp: Optional[ContextualizedMLP] = None
        if self._interleave and not pre.HasField("action_encoder"):
            raise ValueError("enable_interleaving needs an action_encoder (each event's 2nd token)")
        if pre.HasField("action_encoder"):
            self.action_encoder, self.action_mlp = _action_layers(
                pre, dim, not self._interleave, sum(dims)
            )
            if action is None or (self.action_encoder.need_watchtime and watchtime is None):
                raise ValueError("the action encoder needs the action (and watch-time) groups")
        self.contextual: Optional[ContextualTokens] = None
        if dims:
            self.contextual = ContextualTokens(
                dims, dim, concat_contextual, " (or set concat_contextual_features)"
            )
        self._contextual_len = self.contextual.num_tokens if self.contextual is not None else 0
        # the simple content MLP ends in a LayerNorm: unit-scale rows; the parameterized one
        # does not, and its rows are scaled as TorchEasyRec scales every row
        self.positional_encoder = positional_encoder(
            hstu, self._contextual_len, unit_scale_input=pre.content_mlp.HasField("simple_mlp")
        )
        self._use_time = (
            hstu.positional_encoder.use_time_encoding if self.positional_encoder else False
        )
        if self._use_time and (timestamp is None or candidate_timestamp is None):
            raise ValueError("use_time_encoding needs the history and candidate timestamps")
        self.stu = stu_stack(hstu, max_seq_len, self._contextual_len)
        self._l2norm, self.layer_norm = output_postprocessor(hstu)
        self.timestamp_norm = timestamp_postprocessor(hstu)
        if self.timestamp_norm is not None and candidate_timestamp is None:
            raise ValueError("timestamp_layernorm_postprocessor needs the candidate timestamps")
        self._output_dim = dim

    def output_dim(self) -> int:
        """Width of a candidate's encoded row."""
        return self._output_dim

    def forward(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate's encoded row ``[T, D]`` and the candidates per user ``[B]``."""
        uih, uih_offsets = self._uih.rows(grouped)
        cand, cand_offsets = self._candidate.rows(grouped)
        num_targets = cand_offsets[1:] - cand_offsets[:-1]
        uih, cand = self.content_encoder(uih, cand)
        x, seq_offsets, _ = append_rows(uih, uih_offsets, cand, cand_offsets)
        context: Optional[torch.Tensor] = None
        if self._contextual_key is not None:
            context = grouped[self._contextual_key]
        x = run_contextualized_mlp(self.content_mlp, x, seq_offsets, context)
        offsets = seq_offsets
        if self.action_encoder is not None and self.action_mlp is not None:
            history_actions = self._history_actions(grouped, uih_offsets)
            if self._interleave:  # after each event's content row, its action row
                history_actions = run_contextualized_mlp(
                    self.action_mlp, history_actions, uih_offsets, context
                )
                x, offsets = interleave_rows(x, seq_offsets, history_actions, uih_offsets)
            else:
                actions, _, _ = append_rows(
                    history_actions,
                    uih_offsets,
                    self.action_encoder.candidate_rows(cand),
                    cand_offsets,
                )
                x = x + run_contextualized_mlp(self.action_mlp, actions, seq_offsets, context)
        timestamps: Optional[torch.Tensor] = None
        if self._use_time and self._timestamp is not None and self._candidate_timestamp is not None:
            ts = self._timestamp.values(grouped).reshape(-1, 1)
            cand_ts = self._candidate_timestamp.values(grouped).reshape(-1, 1)
            if not is_fx_symbolic_tracing() and (
                ts.shape[0] != uih.shape[0] or cand_ts.shape[0] != cand.shape[0]
            ):
                raise DataError(
                    f"feature groups '{self._timestamp.key}' / '{self._candidate_timestamp.key}'"
                    f" have {ts.shape[0]} / {cand_ts.shape[0]} timestamps for"
                    f" {uih.shape[0]} events / {cand.shape[0]} candidates; each needs one"
                )
            timestamps, _, _ = append_rows(ts, uih_offsets, cand_ts, cand_offsets)
            if self._interleave:  # an event's action token has the event's time
                timestamps, _ = interleave_rows(timestamps, seq_offsets, ts, uih_offsets)
            timestamps = timestamps.reshape(-1)
        if self.contextual is not None:
            tokens = self.contextual(grouped[str(self._contextual_key)])  # [B, c, D]
            lengths = offsets[1:] - offsets[:-1]
            x = prepend_rows(x, offsets, tokens)
            if timestamps is not None:  # contextual tokens have time 0
                zeros = torch.zeros_like(tokens[:, :, 0]).to(timestamps.dtype)
                timestamps = prepend_rows(timestamps, offsets, zeros)
            offsets = offsets_of(lengths + self._contextual_len)
        if self.positional_encoder is not None:
            x = self.positional_encoder(x, offsets, timestamps, num_targets, None)
        x = F.dropout(x, p=self._input_dropout, training=self.training)
        x, offsets = self.stu.run(x, offsets, self._max_seq_len, num_targets)
        out = take_rows(x, last_rows_index(offsets, cand_offsets))
        if self._l2norm:
            out = out / torch.linalg.norm(out, ord=2, dim=-1, keepdim=True).clamp(min=1e-6)
        elif self.layer_norm is not None:
            out = self.layer_norm(out)
        elif self.timestamp_norm is not None and self._candidate_timestamp is not None:
            cand_ts = self._candidate_timestamp.values(grouped).reshape(-1)
            if not is_fx_symbolic_tracing() and cand_ts.shape[0] != out.shape[0]:
                raise DataError(
                    f"feature group '{self._candidate_timestamp.key}' has {cand_ts.shape[0]}"
                    f" timestamps for {out.shape[0]} candidates; it needs one per candidate"
                )
            out = self.timestamp_norm(out, cand_ts)
        return out, num_targets

    def _history_actions(
        self, grouped: dict[str, torch.Tensor], uih_offsets: torch.Tensor
    ) -> torch.Tensor:
        """The action encodings of every history event ``[U, A]``."""
        assert self.action_encoder is not None and self._action is not None
        actions = self._action.values(grouped).reshape(-1)
        watchtimes: Optional[torch.Tensor] = None
        if self.action_encoder.need_watchtime and self._watchtime is not None:
            watchtimes = self._watchtime.values(grouped).reshape(-1)
        if not is_fx_symbolic_tracing():
            events = uih_offsets[-1]
            for seq, values in ((self._action, actions), (self._watchtime, watchtimes)):
                if seq is not None and values is not None and values.shape[0] != events:
                    raise DataError(
                        f"feature group '{seq.key}' has {values.shape[0]} values for the"
                        f" {int(events)} events of '{self._uih.key}'; it needs one per event"
                    )
        return self.action_encoder(actions, watchtimes)


def _action_layers(
    pre: ContextualPreprocessor, dim: int, candidate_row: bool, context_dim: int
) -> tuple[SimpleActionEncoder, ContextualizedMLP]:
    """The action encoder (with its candidate row if asked) and the action MLP to ``dim``.

    ``context_dim``: the contextual features' width (read by a parameterized action MLP).
    """
    if pre.action_encoder.WhichOneof("action_encoder") != "simple_action_encoder":
        raise ValueError("action_encoder needs simple_action_encoder { ... }")
    if not pre.HasField("action_mlp"):
        raise ValueError("action_encoder needs action_mlp { simple_mlp { hidden_dim } }")
    enc = pre.action_encoder.simple_action_encoder
    encoder = SimpleActionEncoder(
        enc.action_embedding_dim,
        list(enc.action_weights),
        list(enc.watchtime_to_action_thresholds),
        list(enc.watchtime_to_action_weights),
        enc.embedding_init_std,
        candidate_row=candidate_row,
    )
    mlp = contextualized_mlp(pre.action_mlp, encoder.output_dim, dim, context_dim, "action_mlp")
    return encoder, mlp
