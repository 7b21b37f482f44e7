r"""TorchEasyRec's ``fg.json``: the feature-generation plan of a pipeline config's features.

A pipeline built around TorchEasyRec's format (its ``create_fg_json`` tool, an online
processor that runs the FG before the model) reads ``{"features": [...]}``: one object per
feature (``feature_type``, ``feature_name``, ``expression``, ``default_value``, the bucketizer
such as ``hash_bucket_size`` / ``vocab_list`` / ``boundaries``, ...), a ``sequence_feature``
as one object holding its elements. :func:`create_fg_json` writes the same objects
TorchEasyRec's features write for the same config.

Writers are per ``FeatureConfig`` kind (:data:`FG_JSON_WRITERS`, each a function of the kind's
message); a kind without one, or a message its writer cannot write (e.g. a tokenize_feature
without ``vocab_file``), is an error naming its field path. Files (a tokenizer's
``vocab_file``, ...) are written as the config names them: an exported config names its
copies in ``assets/`` relative to the export directory (:mod:`recforge.export.assets`).

Example:
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.IdFeature(feature_name="cate", expression="item:cate",
    ...                             hash_bucket_size=100)
    >>> id_feature_fg(cfg)[0]["hash_bucket_size"]
    100

"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from recforge.features.base_feature import FeatureError
from recforge.protos import feature_pb2

if TYPE_CHECKING:
    from recforge.protos import pipeline_pb2

#: TorchEasyRec's multi-value separator default; a feature's ``separator`` is written only
#: when it differs
DEFAULT_SEPARATOR = "\x1d"
#: the ``hash_bucket_size`` TorchEasyRec writes for zero-collision / dynamic tables
MAX_HASH_BUCKET_SIZE = 2**63 - 1
#: keys :func:`remove_bucketizer` drops (``--remove_bucketizer``)
BUCKETIZER_KEYS = ("hash_bucket_size", "vocab_dict", "vocab_list", "boundaries", "num_buckets")

FgJson = dict[str, Any]


def _default_value(msg: Any, sequence: bool) -> str:
    # a sequence element needs a non-empty default in TorchEasyRec's FG: "0"
    value = msg.default_value
    return "0" if sequence and not value else value


def _vocab_list(msg: Any, default_value: str) -> list[str]:
    """The table's vocabulary as TorchEasyRec writes it.

    Without ``default_bucketize_value`` rows 0 and 1 are the default value and ``<OOV>``.
    """
    if msg.HasField("default_bucketize_value"):
        return list(msg.vocab_list)
    return [default_value, "<OOV>", *msg.vocab_list]


def _vocab_dict(msg: Any, default_value: str) -> dict[str, int]:
    vocab = {k: int(v) for k, v in msg.vocab_dict.items()}
    if not msg.HasField("default_bucketize_value") and default_value:
        vocab[default_value] = 0  # row 0 is the default value's
    return vocab


def _default_bucketize_value(msg: Any) -> int:
    if msg.HasField("default_bucketize_value"):
        return int(msg.default_bucketize_value)
    return 1


def _has(msg: Any, name: str) -> bool:
    return name in msg.DESCRIPTOR.fields_by_name and msg.HasField(name)


def _asset_file(msg: Any, name: str, holder: Any = None) -> str:
    """A file field's path, joined to the message's ``asset_dir`` when set (as TorchEasyRec).

    An exported config names its copies relative to the export directory and has no
    ``asset_dir`` (see :mod:`recforge.export.assets`), so fg.json names them so too.
    """
    value = getattr(msg if holder is None else holder, name)
    if value and _has(msg, "asset_dir") and msg.asset_dir:
        return os.path.join(msg.asset_dir, value)
    return value


class _Unwritable(Exception):
    """A writer cannot write this feature message; the text says why (named by the caller)."""


def _bucketizer(msg: Any, cfg: FgJson, order: tuple[str, ...], discrete: bool) -> bool:
    """Adds the first configured bucketizer of ``order`` to ``cfg``; returns whether one was.

    ``discrete``: the kind reads strings once bucketized (lookup / match set ``value_type``
    to ``string`` then).
    """
    default_value = cfg.get("default_value", "")
    for kind in order:
        if kind == "zch" and (_has(msg, "zch") or _has(msg, "dynamicemb")):
            cfg["hash_bucket_size"] = MAX_HASH_BUCKET_SIZE
        elif kind in ("hash_bucket_size", "num_buckets") and msg.HasField(kind):
            cfg[kind] = int(getattr(msg, kind))
        elif kind == "vocab_list" and len(msg.vocab_list) > 0:
            cfg["vocab_list"] = _vocab_list(msg, default_value)
            cfg["default_bucketize_value"] = _default_bucketize_value(msg)
        elif kind == "vocab_dict" and len(msg.vocab_dict) > 0:
            cfg["vocab_dict"] = _vocab_dict(msg, default_value)
            cfg["default_bucketize_value"] = _default_bucketize_value(msg)
        elif kind == "vocab_file" and msg.HasField("vocab_file"):
            cfg["vocab_file"] = _asset_file(msg, "vocab_file")
            cfg["default_bucketize_value"] = _default_bucketize_value(msg)
        elif kind == "boundaries" and len(msg.boundaries) > 0:
            cfg["boundaries"] = list(msg.boundaries)
            return True  # boundaries keep a float value_type
        else:
            continue
        if discrete:
            cfg["value_type"] = "string"
        return True
    return False


_NAME = object()  # _base_entry's expression: the feature's own name when expression is unset


def _base_entry(
    msg: Any, kind: str, sequence: bool, expression: Any = None, default: bool = True
) -> FgJson:
    """The header every entry starts with: ``feature_type``, ``feature_name``, ...

    ``default_value`` unless ``default`` is false; ``expression`` when given (:data:`_NAME`:
    ``msg.expression``, or the feature name when that is empty, as recforge reads it).
    """
    cfg: FgJson = {"feature_type": kind, "feature_name": msg.feature_name}
    if default:
        cfg["default_value"] = _default_value(msg, sequence)
    if expression is _NAME:
        # TorchEasyRec requires expression; recforge reads the feature name's column without
        cfg["expression"] = msg.expression or msg.feature_name
    elif expression is not None:
        cfg["expression"] = expression
    return cfg


def _numeric_tail(msg: Any, cfg: FgJson, normalizer: bool = True) -> None:
    """``normalizer`` (when set and ``normalizer``) and ``boundaries`` (when any)."""
    if normalizer and _has(msg, "normalizer") and msg.normalizer:
        cfg["normalizer"] = msg.normalizer
    if len(msg.boundaries) > 0:
        cfg["boundaries"] = list(msg.boundaries)


def _common_tail(msg: Any, cfg: FgJson, grouped: bool) -> None:
    if _has(msg, "stub_type"):
        cfg["stub_type"] = msg.stub_type
    if grouped and len(msg.sequence_fields) > 0:
        cfg["sequence_fields"] = list(msg.sequence_fields)


def id_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``id_feature``: ids bucketized by hash, vocabulary or ``num_buckets``."""
    cfg = _base_entry(msg, "id_feature", sequence, _NAME)
    cfg.update(value_type="string", need_prefix=False)
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    order = ("zch", "hash_bucket_size", "vocab_list", "vocab_dict", "vocab_file", "num_buckets")
    _bucketizer(msg, cfg, order, discrete=False)
    if msg.weighted:
        cfg["weighted"] = True
    if msg.HasField("value_dim"):
        cfg["value_dim"] = int(msg.value_dim)
    else:  # one value per sequence element, any number otherwise
        cfg["value_dim"] = 1 if sequence else 0
    if msg.HasField("fg_value_type"):
        cfg["value_type"] = msg.fg_value_type
    _common_tail(msg, cfg, grouped)
    return [cfg]


def raw_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``raw_feature``: numbers, normalized or bucketized by ``boundaries``."""
    cfg = _base_entry(msg, "raw_feature", sequence, _NAME)
    cfg["value_type"] = "float"
    if msg.value_dim > 1:
        if msg.separator != DEFAULT_SEPARATOR:
            cfg["separator"] = msg.separator
        cfg["value_dim"] = int(msg.value_dim)
    _numeric_tail(msg, cfg)
    _common_tail(msg, cfg, grouped)
    return [cfg]


def combo_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``combo_feature``: the cross of several id inputs."""
    cfg = _base_entry(msg, "combo_feature", sequence, list(msg.expression))
    cfg.update(value_type="string", need_prefix=False, value_dim=int(msg.value_dim))
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    order = ("zch", "hash_bucket_size", "vocab_list", "vocab_dict", "vocab_file")
    _bucketizer(msg, cfg, order, discrete=False)
    _common_tail(msg, cfg, grouped)
    return [cfg]


_MAP_ORDER = (
    "zch",
    "hash_bucket_size",
    "num_buckets",
    "vocab_list",
    "vocab_dict",
    "vocab_file",
    "boundaries",
)


def _map_value_dim(msg: Any) -> int:
    return int(msg.value_dim) if msg.HasField("value_dim") else 1


def lookup_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``lookup_feature``: a key's value in a map column.

    With ``value_dim > 1`` the lookup yields a string of ``value_separator``-joined numbers:
    TorchEasyRec writes it as an FG-only ``<name>__lookup`` feature read by a
    ``raw_feature`` of the feature's name.
    """
    cfg = _base_entry(msg, "lookup_feature", sequence)
    default_value = cfg["default_value"]
    cfg.update(
        map=msg.map,
        key=msg.key,
        value_type="float",
        needDiscrete=msg.need_discrete,
        needKey=msg.need_key,
        combiner=msg.combiner.lower(),
    )
    out = [cfg]
    if msg.value_dim > 1:
        lookup_name = msg.feature_name + "__lookup"
        cfg.update(
            feature_name=lookup_name,
            default_value=msg.value_separator.join([default_value] * msg.value_dim),
            value_type="string",
            value_dim=1,
            needDiscrete=True,
            combiner="",
            stub_type=True,
        )
        raw: FgJson = {
            "feature_type": "raw_feature",
            "feature_name": msg.feature_name,
            "default_value": default_value,
            "expression": "feature:" + lookup_name,
            "separator": msg.value_separator,
            "value_dim": int(msg.value_dim),
            "value_type": "float",
        }
        _numeric_tail(msg, raw)
        if grouped:
            if len(msg.sequence_fields) > 0:
                cfg["sequence_fields"] = list(msg.sequence_fields)
            raw["sequence_fields"] = [lookup_name]
        return [cfg, raw]
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("normalizer"):
        cfg["normalizer"] = msg.normalizer
    _bucketizer(msg, cfg, _MAP_ORDER, discrete=True)
    if msg.HasField("fg_value_type"):
        cfg["value_type"] = msg.fg_value_type
    if cfg["value_type"] == "string":
        cfg["needDiscrete"] = True
    if cfg["needDiscrete"]:
        cfg["combiner"] = ""
    if cfg["combiner"] == "":
        cfg["value_dim"] = _map_value_dim(msg)
    _common_tail(msg, cfg, grouped)
    return out


def match_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``match_feature``: hits of ``pkey`` / ``skey`` in a two-level map column."""
    cfg = _base_entry(msg, "match_feature", sequence)
    cfg.update(
        user=msg.nested_map,
        category=msg.pkey,
        item=msg.skey,
        matchType="multihit" if "ALL" in (msg.pkey, msg.skey) else "hit",
        value_type="float",
        needDiscrete=msg.need_discrete,
        show_category=msg.show_pkey,
        show_item=msg.show_skey,
    )
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("normalizer"):
        cfg["normalizer"] = msg.normalizer
    if _bucketizer(msg, cfg, _MAP_ORDER, discrete=True) and cfg["value_type"] == "string":
        cfg["needDiscrete"] = True
    if cfg["needDiscrete"]:
        cfg["value_dim"] = _map_value_dim(msg)
    if msg.HasField("fg_value_type"):
        cfg["value_type"] = msg.fg_value_type
    _common_tail(msg, cfg, grouped)
    return [cfg]


def expr_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``expr_feature``: an arithmetic expression of variables."""
    cfg = _base_entry(msg, "expr_feature", sequence, msg.expression)
    cfg.update(variables=list(msg.variables), value_type="float")
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("fill_missing"):
        cfg["fill_missing"] = msg.fill_missing
    _numeric_tail(msg, cfg)
    if msg.HasField("value_dim"):
        cfg["value_dim"] = int(msg.value_dim)
    _common_tail(msg, cfg, grouped)
    return [cfg]


def overlap_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``overlap_feature``: how much of ``query``'s terms ``title`` holds (``method``).

    TorchEasyRec writes no ``default_value`` and always writes ``separator``.
    """
    cfg = _base_entry(msg, "overlap_feature", sequence, default=False)
    cfg.update(
        query=msg.query,
        title=msg.title,
        method=msg.method,
        value_type="float",
        separator=msg.separator,
    )
    _numeric_tail(msg, cfg)
    _common_tail(msg, cfg, grouped)
    return [cfg]


def kv_dot_product_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``kv_dot_product``: the dot product of two ``key:value`` lists (or their overlap)."""
    cfg = _base_entry(msg, "kv_dot_product", sequence)
    cfg.update(query=msg.query, document=msg.document)
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("kv_delimiter"):
        cfg["kv_delimiter"] = msg.kv_delimiter
    # as TorchEasyRec: the FG writes no normalizer for kv_dot_product
    _numeric_tail(msg, cfg, normalizer=False)
    _common_tail(msg, cfg, grouped)
    return [cfg]


#: TorchEasyRec's FG ``parameter`` bit of each text_normalizer option (TEXT_REMOVE_SPACE is
#: written as ``remove_space`` instead)
TEXT_NORM_BITS = {
    feature_pb2.TEXT_LOWER2UPPER: 2,
    feature_pb2.TEXT_UPPER2LOWER: 4,
    feature_pb2.TEXT_SBC2DBC: 8,
    feature_pb2.TEXT_CHT2CHS: 16,
    feature_pb2.TEXT_FILTER: 32,
    feature_pb2.TEXT_SPLITCHRS: 512,
}
#: the tokenizers TorchEasyRec's FG runs
TOKENIZER_TYPES = ("bpe", "sentencepiece")


def _text_normalizer_fg(msg: Any, name: str, grouped: bool) -> FgJson:
    """The FG-only ``text_normalizer`` entry a tokenize_feature reads as ``feature:<name>``."""
    norm = msg.text_normalizer
    cfg: FgJson = {
        "feature_type": "text_normalizer",
        "feature_name": name,
        "expression": msg.expression,
        "is_gbk_input": False,
        "is_gbk_output": False,
        "stub_type": True,
    }
    if norm.HasField("max_length"):
        cfg["max_length"] = int(norm.max_length)
    if norm.stop_char_file:
        cfg["stop_char_file"] = _asset_file(msg, "stop_char_file", norm)
    if len(norm.norm_options) > 0:
        cfg["parameter"] = sum(TEXT_NORM_BITS.get(o, 0) for o in norm.norm_options)
        if feature_pb2.TEXT_REMOVE_SPACE in norm.norm_options:
            cfg["remove_space"] = True
    if grouped and len(msg.sequence_fields) > 0:
        cfg["sequence_fields"] = list(msg.sequence_fields)
    return cfg


def tokenize_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``tokenize_feature``: token ids of a text by the ``vocab_file`` tokenizer.

    With ``text_normalizer`` the text first goes through an FG-only ``<name>__text_norm``
    entry the tokenizer reads. ``tokens_as_sequence`` makes the ids one sequence: the entry
    keeps its ``feature_type`` and gets no ``sequence_delim``; an empty ``default_value`` is
    ``"0"`` then, as for sequences.
    """
    if msg.tokenizer_type not in TOKENIZER_TYPES:
        raise _Unwritable(
            f"tokenizer_type: expected one of {list(TOKENIZER_TYPES)}, found '{msg.tokenizer_type}'"
        )
    if not msg.vocab_file:
        raise _Unwritable("vocab_file: expected the tokenizer file, found none")
    if msg.tokens_as_sequence and sequence and not grouped:
        raise _Unwritable(
            "tokens_as_sequence: only a tokenize_feature (not a sequence_tokenize_feature)"
            " can make its tokens a sequence"
        )
    entries: list[FgJson] = []
    expression = msg.expression
    norm_name = ""
    if msg.HasField("text_normalizer"):
        norm_name = msg.feature_name + "__text_norm"
        expression = "feature:" + norm_name
        entries.append(_text_normalizer_fg(msg, norm_name, grouped))
    cfg = _base_entry(msg, "tokenize_feature", sequence or msg.tokens_as_sequence, expression)
    cfg.update(
        vocab_file=_asset_file(msg, "vocab_file"),
        tokenizer_type=msg.tokenizer_type,
        output_type="word_id",
    )
    if msg.HasField("stub_type"):
        cfg["stub_type"] = msg.stub_type
    if grouped and norm_name:
        cfg["sequence_fields"] = [norm_name]
    elif grouped and len(msg.sequence_fields) > 0:
        cfg["sequence_fields"] = list(msg.sequence_fields)
    entries.append(cfg)
    return entries


def bool_mask_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``bool_mask_feature``: the ids of ``expression[0]`` where ``expression[1]`` is true.

    Its ``sequence_`` variant keeps the ``feature_type`` (see :data:`SELF_SEQUENCED`).
    """
    cfg = _base_entry(msg, "bool_mask_feature", sequence, list(msg.expression))
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    order = ("zch", "hash_bucket_size", "vocab_list", "vocab_dict", "vocab_file", "num_buckets")
    _bucketizer(msg, cfg, order, discrete=False)
    cfg["value_dim"] = int(msg.value_dim) if msg.HasField("value_dim") else 0
    if msg.HasField("fg_value_type"):
        cfg["value_type"] = msg.fg_value_type
    _common_tail(msg, cfg, grouped)
    return [cfg]


def combine_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``combine_feature``: the values of ``expression`` mapped by ``value_map``, combined."""
    cfg = _base_entry(msg, "combine_feature", sequence, msg.expression)
    cfg.update(value_type="float", need_prefix=False, combiner=msg.combiner.lower())
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("normalizer"):
        cfg["normalizer"] = msg.normalizer
    if len(msg.value_map) > 0:
        cfg["value_map"] = dict(msg.value_map)
    if msg.HasField("num_buckets"):
        cfg["num_buckets"] = int(msg.num_buckets)
        cfg["value_type"] = "int64"
    elif len(msg.boundaries) > 0:
        cfg["boundaries"] = list(msg.boundaries)
    if msg.HasField("num_buckets") or len(msg.boundaries) > 0:  # ids: one per row
        cfg["value_dim"] = 1
    _common_tail(msg, cfg, grouped)
    return [cfg]


def custom_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``custom_feature``: operator ``operator_name`` of the ``expression`` inputs.

    ``operator_params`` are written as top-level keys. Its ``sequence_`` variant keeps the
    ``feature_type`` and says ``is_sequence`` (see :data:`SELF_SEQUENCED`).

    Where we differ: recforge's custom_feature takes a vocabulary as the whole table with
    unknown values at ``default_bucketize_value`` 0 when that is unset (see
    :class:`~recforge.features.custom_feature.CustomFeature`); TorchEasyRec writes rows 0
    and 1 (default value, ``<OOV>``) before it. fg.json writes recforge's table, so that
    the FG gives the ids the model was trained on. ``operator_lib_file`` is written as
    configured (a ``pyfg/lib/`` path names a library of the FG's own installation).
    """
    cfg = _base_entry(msg, "custom_feature", sequence, list(msg.expression))
    cfg.update(
        operator_name=msg.operator_name,
        operator_lib_file=_asset_file(msg, "operator_lib_file"),
        is_op_thread_safe=msg.is_op_thread_safe,
        value_type="float",
    )
    if msg.HasField("operator_params"):
        cfg.update(json_format.MessageToDict(msg.operator_params))
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("normalizer"):
        cfg["normalizer"] = msg.normalizer
    whole_table = int(msg.default_bucketize_value)  # 0 when unset
    if _has(msg, "zch") or _has(msg, "dynamicemb"):
        cfg.update(hash_bucket_size=MAX_HASH_BUCKET_SIZE, value_type="string")
    elif msg.HasField("hash_bucket_size"):
        cfg.update(hash_bucket_size=int(msg.hash_bucket_size), value_type="string")
    elif msg.HasField("num_buckets"):
        cfg.update(num_buckets=int(msg.num_buckets), value_type="int64")
    elif len(msg.vocab_list) > 0:
        cfg.update(vocab_list=list(msg.vocab_list), default_bucketize_value=whole_table)
        cfg["value_type"] = "string"
    elif len(msg.vocab_dict) > 0:
        vocab = {k: int(v) for k, v in msg.vocab_dict.items()}
        cfg.update(vocab_dict=vocab, default_bucketize_value=whole_table, value_type="string")
    elif msg.HasField("vocab_file"):
        cfg.update(vocab_file=_asset_file(msg, "vocab_file"), value_type="string")
        cfg["default_bucketize_value"] = _default_bucketize_value(msg)
    elif len(msg.boundaries) > 0:
        cfg["boundaries"] = list(msg.boundaries)
    cfg["value_dim"] = int(msg.value_dim) if msg.HasField("value_dim") else 1
    if msg.HasField("stub_type"):
        cfg["stub_type"] = msg.stub_type
    if sequence:
        if grouped and len(msg.sequence_fields) > 0:
            cfg["sequence_fields"] = list(msg.sequence_fields)
        cfg["is_sequence"] = True
    return [cfg]


FgWriter = Callable[..., list[FgJson]]

#: ``FeatureConfig`` kind (also a ``sequence_feature`` element's kind) -> its fg.json writer;
#: ``sequence_<kind>`` (a standalone sequence) uses the writer of ``<kind>``
FG_JSON_WRITERS: dict[str, FgWriter] = {
    "id_feature": id_feature_fg,
    "raw_feature": raw_feature_fg,
    "combo_feature": combo_feature_fg,
    "lookup_feature": lookup_feature_fg,
    "match_feature": match_feature_fg,
    "expr_feature": expr_feature_fg,
    "overlap_feature": overlap_feature_fg,
    "tokenize_feature": tokenize_feature_fg,
    "kv_dot_product": kv_dot_product_fg,
    "bool_mask_feature": bool_mask_feature_fg,
    "combine_feature": combine_feature_fg,
    "custom_feature": custom_feature_fg,
}

#: kinds whose standalone ``sequence_`` variant keeps its ``feature_type`` in fg.json
#: (TorchEasyRec writes their sequence keys itself); every other kind gets the prefix
SELF_SEQUENCED = ("bool_mask_feature", "custom_feature")


def _write(kind: str, msg: Any, where: str, sequence: bool, grouped: bool) -> list[FgJson]:
    """The entries of one feature message; an error naming ``where`` when it cannot be."""
    writer = FG_JSON_WRITERS.get(kind)
    if writer is None:
        raise FeatureError(
            f"{where}: recforge writes no fg.json entry for {kind} yet (it writes"
            f" {', '.join(sorted(FG_JSON_WRITERS))}, their sequence_ variants and"
            " sequence_feature)"
        )
    try:
        entries = writer(msg, sequence=sequence, grouped=grouped)
    except _Unwritable as e:
        raise FeatureError(
            f"{where}: recforge writes no fg.json entry for this {kind}: {e}"
        ) from None
    if sequence and not getattr(msg, "tokens_as_sequence", False):
        for entry in entries:  # TorchEasyRec's FG needs a default for each sequence element
            if not entry.get("default_value"):
                entry["default_value"] = "0"
    return entries


def feature_config_fg(feature_config: feature_pb2.FeatureConfig, where: str) -> list[FgJson]:
    """The fg.json entries of one ``FeatureConfig``.

    Args:
        feature_config: a ``FeatureConfig`` message.
        where: its field path, e.g. ``feature_configs[2]`` (for errors).

    Raises:
        FeatureError: no kind set, a kind without an fg.json writer, or a message the FG
            cannot run (e.g. a tokenize_feature without vocab_file), naming its field path.

    """
    kind = feature_config.WhichOneof("feature")
    if kind is None:
        raise FeatureError(f"{where}: expected a feature kind, found none set")
    msg = getattr(feature_config, kind)
    if kind == "sequence_feature":
        entries: list[FgJson] = []
        for i, element in enumerate(msg.features):
            element_kind = element.WhichOneof("feature")
            if element_kind is None:
                continue
            element_where = f"{where}.sequence_feature.features[{i}].{element_kind}"
            entries += _write(
                element_kind, getattr(element, element_kind), element_where, True, True
            )
        return [
            {
                "sequence_name": msg.sequence_name,
                "sequence_length": int(msg.sequence_length),
                "sequence_delim": msg.sequence_delim,
                "sequence_pk": msg.sequence_pk or f"user:{msg.sequence_name}",
                "features": entries,
            }
        ]
    if kind.startswith("sequence_"):
        base = kind.removeprefix("sequence_")
        entries = _write(base, msg, f"{where}.{kind}", True, False)
        for entry in entries:
            entry["sequence_delim"] = msg.sequence_delim
            entry["sequence_length"] = int(msg.sequence_length)
            if base not in SELF_SEQUENCED:
                entry["feature_type"] = "sequence_" + entry["feature_type"]
        return entries
    return _write(kind, msg, f"{where}.{kind}", False, False)


def remove_bucketizer(entry: FgJson) -> FgJson:
    """An entry without its bucketizer (``--remove_bucketizer``): the FG emits raw values."""
    for key in BUCKETIZER_KEYS:
        entry.pop(key, None)
    if entry.get("feature_type") != "tokenize_feature":  # a tokenizer's vocab is not one
        entry.pop("vocab_file", None)
    for element in entry.get("features", ()):
        remove_bucketizer(element)
    return entry


def create_fg_json(
    config: pipeline_pb2.EasyRecConfig, remove_bucketizers: bool = False
) -> dict[str, Any]:
    """TorchEasyRec's ``fg.json`` of a pipeline config's features, in config order.

    Args:
        config: an ``EasyRecConfig``.
        remove_bucketizers: drop hash / vocabulary / boundaries bucketizers.

    Returns:
        ``{"features": [...]}``.

    Raises:
        FeatureError: a feature kind without an fg.json writer (naming its field path).

    """
    entries: list[FgJson] = []
    for i, feature_config in enumerate(config.feature_configs):
        entries += feature_config_fg(feature_config, f"feature_configs[{i}]")
    if remove_bucketizers:
        entries = [remove_bucketizer(e) for e in entries]
    return {"features": entries}
