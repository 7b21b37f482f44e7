"""The parts of an HSTU encoder that its ``HSTU`` config message alone defines.

Shared by the retrieval encoder (:mod:`recforge.modules.gr.hstu_encoder`) and the ranking
transducer (:mod:`recforge.modules.gr.hstu_transducer`): the positional/time encoder, the STU
stack and the output postprocessor.
"""

from __future__ import annotations

from typing import Optional, Union

from torch import nn

from recforge.modules.gr.positional import HSTUPositionalEncoder
from recforge.modules.gr.postprocessors import TimestampLayerNormPostprocessor
from recforge.modules.gr.stu import STULayer, STUStack
from recforge.protos import module_pb2

#: the two input preprocessors of the ranking transducer (one set of fields)
ContextualPreprocessor = Union[
    module_pb2.GRContextualPreprocessor, module_pb2.GRContextualInterleavePreprocessor
]

#: ``HSTU.input_preprocessor``'s kinds the ranking transducer builds
RANKING_PREPROCESSORS = ("contextual_preprocessor", "contextual_interleave_preprocessor")


def contextual_preprocessor(hstu: module_pb2.HSTU) -> tuple[ContextualPreprocessor, bool]:
    """``hstu``'s (interleave) contextual preprocessor and whether it interleaves.

    TorchEasyRec builds both with one class: ``contextual_preprocessor`` is the interleave
    preprocessor with ``enable_interleaving: false``.
    """
    if hstu.input_preprocessor.WhichOneof("input_preprocessor") == RANKING_PREPROCESSORS[1]:
        pre = hstu.input_preprocessor.contextual_interleave_preprocessor
        return pre, pre.enable_interleaving
    return hstu.input_preprocessor.contextual_preprocessor, False


def positional_encoder(
    hstu: module_pb2.HSTU, contextual_len: int, unit_scale_input: bool = False
) -> Optional[HSTUPositionalEncoder]:
    """``hstu.positional_encoder`` as a module of width ``stu.embedding_dim`` (None if unset).

    ``unit_scale_input``: the encoded rows are layer-normed (see ``HSTUPositionalEncoder``).
    """
    if not hstu.HasField("positional_encoder"):
        return None
    pe = hstu.positional_encoder
    return HSTUPositionalEncoder(
        hstu.stu.embedding_dim,
        pe.num_position_buckets,
        pe.num_time_buckets,
        pe.use_time_encoding,
        pe.time_bucket_fn,
        pe.time_bucket_increments,
        contextual_len,
        unit_scale_input,
    )


def check_contextual_seq_len(stu: module_pb2.STU, contextual_len: int) -> None:
    """Raises ValueError unless ``stu.contextual_seq_len`` is unset (< 0) or ``contextual_len``.

    TorchEasyRec's STU layers take the field when it is >= 0 and else the preprocessor's
    count of contextual tokens; recforge always uses that count (the layers and the positional
    encoder must agree on the prefix), so a config may only restate it.
    """
    if 0 <= stu.contextual_seq_len != contextual_len:
        raise ValueError(
            f"stu.contextual_seq_len must be the number of contextual tokens, {contextual_len}"
            f" here (one per feature of the 'contextual' group, one with"
            f" concat_contextual_features, 0 without the group), or unset; found"
            f" {stu.contextual_seq_len}"
        )


def stu_stack(hstu: module_pb2.HSTU, max_seq_len: int, contextual_len: int) -> STUStack:
    """``hstu.attn_num_layers`` STU layers of ``hstu.stu`` (``scaling_seqlen`` 0: max_seq_len).

    Raises:
        ValueError: only one of ``attn_truncation_split_layer`` / ``attn_truncation_tail_len``
            set, the split not below ``attn_num_layers``, or ``stu.contextual_seq_len`` set to
            another count than ``contextual_len``.

    """
    stu = hstu.stu
    check_contextual_seq_len(stu, contextual_len)
    scaling = stu.scaling_seqlen if stu.scaling_seqlen > 0 else max_seq_len
    return STUStack(
        [
            STULayer(
                stu.embedding_dim,
                stu.num_heads,
                stu.hidden_dim,
                stu.attention_dim,
                output_dropout_ratio=stu.output_dropout_ratio,
                max_attn_len=stu.max_attn_len,
                attn_alpha=stu.attn_alpha,
                use_group_norm=stu.use_group_norm,
                scaling_seqlen=scaling,
                contextual_seq_len=contextual_len,
                sla_k1=stu.sla_k1,
                sla_k2=stu.sla_k2,
                recompute_normed_x=stu.recompute_normed_x,
                recompute_uvqk=stu.recompute_uvqk,
                recompute_y=stu.recompute_y,
            )
            for _ in range(hstu.attn_num_layers)
        ],
        hstu.attn_truncation_split_layer,
        hstu.attn_truncation_tail_len,
        contextual_len,
    )


def output_postprocessor(hstu: module_pb2.HSTU) -> tuple[bool, Optional[nn.LayerNorm]]:
    """``(l2-normalise, layer norm or None)`` for ``hstu.output_postprocessor``.

    ``timestamp_layernorm_postprocessor`` gives ``(False, None)``: the caller builds it with
    :func:`timestamp_postprocessor` and applies it to the rows with their timestamps.
    """
    post = hstu.output_postprocessor.WhichOneof("output_postprocessor")
    layer_norm = nn.LayerNorm(hstu.stu.embedding_dim) if post == "layernorm_postprocessor" else None
    return post == "l2norm_postprocessor", layer_norm


def timestamp_postprocessor(hstu: module_pb2.HSTU) -> Optional[TimestampLayerNormPostprocessor]:
    """``hstu.output_postprocessor``'s timestamp layer-norm postprocessor (None if another).

    Raises:
        ValueError: its period lists differ in length or hold a value that is not positive.

    """
    if hstu.output_postprocessor.WhichOneof("output_postprocessor") != (
        "timestamp_layernorm_postprocessor"
    ):
        return None
    post = hstu.output_postprocessor.timestamp_layernorm_postprocessor
    return TimestampLayerNormPostprocessor(
        hstu.stu.embedding_dim,
        list(post.time_duration_period_units),
        list(post.time_duration_units_per_period),
    )
