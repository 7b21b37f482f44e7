"""The HSTU user encoder of ``hstu_match``: a jagged history in, one embedding per user out.

The pipeline is TorchEasyRec's ``HSTUMatchEncoder``: the UIH preprocessor projects the history
group's rows to ``stu.embedding_dim`` (plus, with an action encoder, the action MLP of each
event's actions); with contextual features (a DEEP group of ``c`` features of one width) each
feature becomes a token of width ``stu.embedding_dim`` (a linear map per feature) put before
the history, attended to by every event (see ``hstu_attention``). Then the positional encoder
adds position (and time) embeddings, input dropout, ``attn_num_layers`` STU layers, the output
postprocessor (L2 norm, layer norm, or the timestamp layer norm, which norms each event's row
with its own timestamp as TorchEasyRec's encoder passes it every row's time), and the last
event's row is the user's embedding.

Inputs are the EmbeddingGroup's outputs (JAGGED_SEQUENCE groups): ``"<uih>.sequence"``
``[L, D]`` with ``"<uih>.sequence_length"`` ``[B]``; with time encoding or the timestamp
postprocessor ``"<prefix>_timestamp.sequence"`` ``[L, 1]``; with an action encoder
``"<prefix>_action.sequence"`` ``[L, 1]`` (and ``"<prefix>_watchtime.sequence"`` with
watch-time thresholds); the contextual group ``[B, c * d]``; optionally a ``query_time``
group ``[B, 1]``, the request time that anchors the time buckets (else the last event's time).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recforge.errors import DataError
from recforge.modules.gr.action_encoder import SimpleActionEncoder
from recforge.modules.gr.contextual import ContextualTokens
from recforge.modules.gr.contextualized_mlp import (
    ContextualizedMLP,
    contextualized_mlp,
    run_contextualized_mlp,
)
from recforge.modules.gr.from_config import (
    output_postprocessor,
    positional_encoder,
    stu_stack,
    timestamp_postprocessor,
)
from recforge.modules.gr.jagged import last_rows, offsets_of, prepend_rows
from recforge.protos import module_pb2

# traced export graphs call it as one opaque (scripted) function: it depends on the data
torch.fx.wrap("last_rows")
torch.fx.wrap("prepend_rows")


class HSTUUserEncoder(nn.Module):
    """History -> user embedding ``[B, stu.embedding_dim]`` (see the module docstring).

    Args:
        uih_dim: width of the history group's rows.
        hstu: the ``HSTU`` message (its input preprocessor a ``uih_preprocessor``, checked by
            the caller).
        max_seq_len: ``HSTUUserTower.max_seq_len``: the attention's fixed divisor and the
            longest history (TorchEasyRec's ``scaling_seqlen``).
        uih_key: the history group.
        timestamp_key: the timestamp group (read with time encoding or the timestamp
            layer-norm postprocessor).
        query_time_key: the request-time group, or None.
        action_key: the action group (read only with an action encoder).
        watchtime_key: the watch-time group (read only with watch-time thresholds).
        contextual_key: the contextual group, or None.
        contextual_dims: the widths of its features (all equal).

    Raises:
        ValueError: an action encoder without ``action_mlp`` (or with bad settings).

    """

    def __init__(
        self,
        uih_dim: int,
        hstu: module_pb2.HSTU,
        max_seq_len: int,
        uih_key: str,
        timestamp_key: str,
        query_time_key: Optional[str] = None,
        action_key: str = "uih_action",
        watchtime_key: str = "uih_watchtime",
        contextual_key: Optional[str] = None,
        contextual_dims: Optional[list[int]] = None,
    ) -> None:
        super().__init__()
        stu = hstu.stu
        dim = stu.embedding_dim
        self._uih_key = uih_key
        self._timestamp_key = timestamp_key
        self._query_time_key = query_time_key
        self._max_seq_len = max_seq_len
        self._input_dropout = hstu.input_dropout_ratio
        self.input_projection = nn.Linear(uih_dim, dim)
        self._contextual_key = contextual_key
        dims = list(contextual_dims or []) if contextual_key is not None else []
        self.contextual: Optional[ContextualTokens] = None
        if dims:
            self.contextual = ContextualTokens(dims, dim)
        self._contextual_len = self.contextual.num_tokens if self.contextual is not None else 0
        self._action_key = action_key
        self._watchtime_key = watchtime_key
        self.action_encoder: Optional[SimpleActionEncoder] = None
        self.action_mlp: Optional[ContextualizedMLP] = None
        pre = hstu.input_preprocessor.uih_preprocessor
        if pre.HasField("action_encoder"):
            enc = pre.action_encoder.simple_action_encoder
            self.action_encoder = SimpleActionEncoder(
                enc.action_embedding_dim,
                list(enc.action_weights),
                list(enc.watchtime_to_action_thresholds),
                list(enc.watchtime_to_action_weights),
                enc.embedding_init_std,
            )
            if not pre.HasField("action_mlp"):
                raise ValueError(
                    "input_preprocessor.uih_preprocessor.action_encoder needs action_mlp"
                    " { simple_mlp { hidden_dim } } or { parameterized_mlp { ... } }"
                )
            self.action_mlp = contextualized_mlp(
                pre.action_mlp, self.action_encoder.output_dim, dim, sum(dims), "action_mlp"
            )
        self.positional_encoder = positional_encoder(hstu, self._contextual_len)
        self._use_time = (
            hstu.positional_encoder.use_time_encoding if self.positional_encoder else False
        )
        self.stu = stu_stack(hstu, max_seq_len, self._contextual_len)
        self._l2norm, self.layer_norm = output_postprocessor(hstu)
        # as TorchEasyRec's HSTUMatchEncoder: each event's row is normed with its own timestamp
        self.timestamp_norm = timestamp_postprocessor(hstu)
        self._output_dim = dim

    def output_dim(self) -> int:
        """Width of the user embedding."""
        return self._output_dim

    def contextual_len(self) -> int:
        """Contextual tokens put before each history (0 without a contextual group)."""
        return self._contextual_len

    def forward(self, grouped: dict[str, torch.Tensor]) -> torch.Tensor:
        """The user embeddings ``[B, D]`` (zeros' image for an empty history)."""
        return last_rows(*self.encode(grouped))

    def encode(self, grouped: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token's output row ``[L', D]`` and the offsets ``[B + 1]`` of the sequences.

        Each sequence is its :meth:`contextual_len` contextual tokens, then its events.
        """
        values = grouped[f"{self._uih_key}.sequence"]
        lengths = grouped[f"{self._uih_key}.sequence_length"].to(torch.int64)
        offsets = offsets_of(lengths)
        x = self.input_projection(values)
        if self.action_encoder is not None and self.action_mlp is not None:
            actions = grouped[f"{self._action_key}.sequence"].reshape(-1)
            watchtimes: Optional[torch.Tensor] = None
            if self.action_encoder.need_watchtime:
                watchtimes = grouped[f"{self._watchtime_key}.sequence"].reshape(-1)
            context: Optional[torch.Tensor] = None
            if self._contextual_key is not None:
                context = grouped[self._contextual_key]
            x = x + run_contextualized_mlp(
                self.action_mlp, self.action_encoder(actions, watchtimes), offsets, context
            )
        timestamps: Optional[torch.Tensor] = None
        if self._use_time or self.timestamp_norm is not None:
            timestamps = grouped[f"{self._timestamp_key}.sequence"].reshape(-1)
            if not is_fx_symbolic_tracing() and timestamps.shape[0] != x.shape[0]:
                raise DataError(
                    f"feature group '{self._timestamp_key}' has {timestamps.shape[0]}"
                    f" timestamps for the {x.shape[0]} events of '{self._uih_key}'; a"
                    " history needs one timestamp per event"
                )
        if self.contextual is not None:
            tokens = self.contextual(grouped[str(self._contextual_key)])  # [B, c, D]
            x = prepend_rows(x, offsets, tokens)
            if timestamps is not None:  # contextual tokens have time 0
                zeros = torch.zeros_like(tokens[:, :, 0]).to(timestamps.dtype)
                timestamps = prepend_rows(timestamps, offsets, zeros)
            offsets = offsets_of(lengths + self._contextual_len)
        if self.positional_encoder is not None:
            query_time: Optional[torch.Tensor] = None
            if self._query_time_key is not None:
                query_time = grouped[self._query_time_key].reshape(-1)
            x = self.positional_encoder(x, offsets, timestamps, None, query_time)
        x = F.dropout(x, p=self._input_dropout, training=self.training)
        x, stu_offsets = self.stu.run(x, offsets, self._max_seq_len)
        if self.timestamp_norm is not None and timestamps is not None:
            x = self.timestamp_norm(x, self.stu.kept_rows(timestamps, offsets))
        offsets = stu_offsets
        if self._l2norm:
            x = x / torch.linalg.norm(x, ord=2, dim=-1, keepdim=True).clamp(min=1e-6)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return x, offsets
