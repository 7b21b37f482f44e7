r"""TorchEasyRec's ``fg.json``: the feature-generation plan of a pipeline config's features.

A pipeline built around TorchEasyRec's format (its ``create_fg_json`` tool, an online
processor that runs the FG before the model) reads ``{"features": [...]}``: one object per
feature (``feature_type``, ``feature_name``, ``expression``, ``default_value``, the bucketizer
such as ``hash_bucket_size`` / ``vocab_list`` / ``boundaries``, ...), a ``sequence_feature``
as one object holding its elements. :func:`create_fg_json` writes the same objects
TorchEasyRec's features write for the same config.

Writers are per ``FeatureConfig`` kind (:data:`FG_JSON_WRITERS`, each a function of the kind's
message); a kind without one is an error naming it.

Example:
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.IdFeature(feature_name="cate", expression="item:cate",
    ...                             hash_bucket_size=100)
    >>> id_feature_fg(cfg)[0]["hash_bucket_size"]
    100

"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recforge.features.base_feature import FeatureError

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
            cfg["vocab_file"] = msg.vocab_file
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


def _common_tail(msg: Any, cfg: FgJson, grouped: bool) -> None:
    if _has(msg, "stub_type"):
        cfg["stub_type"] = msg.stub_type
    if grouped and len(msg.sequence_fields) > 0:
        cfg["sequence_fields"] = list(msg.sequence_fields)


def id_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``id_feature``: ids bucketized by hash, vocabulary or ``num_buckets``."""
    cfg: FgJson = {
        "feature_type": "id_feature",
        "feature_name": msg.feature_name,
        "default_value": _default_value(msg, sequence),
        # TorchEasyRec requires expression; recforge reads the feature name's column without
        "expression": msg.expression or msg.feature_name,
        "value_type": "string",
        "need_prefix": False,
    }
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
    cfg: FgJson = {
        "feature_type": "raw_feature",
        "feature_name": msg.feature_name,
        "default_value": _default_value(msg, sequence),
        "expression": msg.expression or msg.feature_name,
        "value_type": "float",
    }
    if msg.value_dim > 1:
        if msg.separator != DEFAULT_SEPARATOR:
            cfg["separator"] = msg.separator
        cfg["value_dim"] = int(msg.value_dim)
    if msg.normalizer:
        cfg["normalizer"] = msg.normalizer
    if len(msg.boundaries) > 0:
        cfg["boundaries"] = list(msg.boundaries)
    _common_tail(msg, cfg, grouped)
    return [cfg]


def combo_feature_fg(msg: Any, sequence: bool = False, grouped: bool = False) -> list[FgJson]:
    """``combo_feature``: the cross of several id inputs."""
    cfg: FgJson = {
        "feature_type": "combo_feature",
        "feature_name": msg.feature_name,
        "default_value": _default_value(msg, sequence),
        "expression": list(msg.expression),
        "value_type": "string",
        "need_prefix": False,
        "value_dim": int(msg.value_dim),
    }
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
    default_value = _default_value(msg, sequence)
    cfg: FgJson = {
        "feature_type": "lookup_feature",
        "feature_name": msg.feature_name,
        "map": msg.map,
        "key": msg.key,
        "default_value": default_value,
        "value_type": "float",
        "needDiscrete": msg.need_discrete,
        "needKey": msg.need_key,
        "combiner": msg.combiner.lower(),
    }
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
        if msg.HasField("normalizer"):
            raw["normalizer"] = msg.normalizer
        if len(msg.boundaries) > 0:
            raw["boundaries"] = list(msg.boundaries)
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
    cfg: FgJson = {
        "feature_type": "match_feature",
        "feature_name": msg.feature_name,
        "user": msg.nested_map,
        "category": msg.pkey,
        "item": msg.skey,
        "matchType": "multihit" if "ALL" in (msg.pkey, msg.skey) else "hit",
        "default_value": _default_value(msg, sequence),
        "value_type": "float",
        "needDiscrete": msg.need_discrete,
        "show_category": msg.show_pkey,
        "show_item": msg.show_skey,
    }
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
    cfg: FgJson = {
        "feature_type": "expr_feature",
        "feature_name": msg.feature_name,
        "default_value": _default_value(msg, sequence),
        "expression": msg.expression,
        "variables": list(msg.variables),
        "value_type": "float",
    }
    if msg.separator != DEFAULT_SEPARATOR:
        cfg["separator"] = msg.separator
    if msg.HasField("fill_missing"):
        cfg["fill_missing"] = msg.fill_missing
    if len(msg.boundaries) > 0:
        cfg["boundaries"] = list(msg.boundaries)
    if msg.HasField("value_dim"):
        cfg["value_dim"] = int(msg.value_dim)
    _common_tail(msg, cfg, grouped)
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
}


def _writer(kind: str, where: str) -> FgWriter:
    writer = FG_JSON_WRITERS.get(kind)
    if writer is None:
        raise FeatureError(
            f"{where}: recforge writes no fg.json entry for {kind} yet (it writes"
            f" {', '.join(sorted(FG_JSON_WRITERS))}, their sequence_ variants and"
            " sequence_feature)"
        )
    return writer


def feature_config_fg(feature_config: Any, where: str) -> list[FgJson]:
    """The fg.json entries of one ``FeatureConfig``.

    Args:
        feature_config: a ``FeatureConfig`` message.
        where: its field path, e.g. ``feature_configs[2]`` (for errors).

    Raises:
        FeatureError: no kind set, or a kind without an fg.json writer (named).

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
            writer = _writer(element_kind, f"{where}.sequence_feature.features[{i}]")
            entries += writer(getattr(element, element_kind), sequence=True, grouped=True)
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
        entries = _writer(kind.removeprefix("sequence_"), f"{where}.{kind}")(msg, sequence=True)
        for entry in entries:
            entry["sequence_delim"] = msg.sequence_delim
            entry["sequence_length"] = int(msg.sequence_length)
            entry["feature_type"] = "sequence_" + entry["feature_type"]
        return entries
    return _writer(kind, f"{where}.{kind}")(msg)


def remove_bucketizer(entry: FgJson) -> FgJson:
    """An entry without its bucketizer (``--remove_bucketizer``): the FG emits raw values."""
    for key in BUCKETIZER_KEYS:
        entry.pop(key, None)
    if entry.get("feature_type") != "tokenize_feature":  # a tokenizer's vocab is not one
        entry.pop("vocab_file", None)
    for element in entry.get("features", ()):
        remove_bucketizer(element)
    return entry


def create_fg_json(config: Any, remove_bucketizers: bool = False) -> dict[str, Any]:
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
