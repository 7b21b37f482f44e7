r"""``data_config.fg_mode``: whether the input columns are raw or already encoded by an FG.

TorchEasyRec runs a feature generator (FG) between the table and the model. ``fg_mode`` says
how much of it has already been done to the data, and so what a feature's column holds:

* ``FG_NONE`` (the schema's default): the FG ran offline. Each feature reads the column
  named by its ``feature_name`` holding final values: table row ids (``< num_embeddings``),
  bucket ids of bucketized raw features, normalized numbers; multi-values joined by
  ``data_config.fg_encoded_multival_sep`` (default ``"\x03"``); nulls take
  ``fg_encoded_default_value``.
* ``FG_BUCKETIZE``: the FG ran offline without its bucketizers. Columns are named by
  ``feature_name`` and hold FG output (e.g. raw strings, normalized numbers); recforge applies
  ``hash_bucket_size`` / ``vocab_list`` / ``vocab_dict`` / ``num_buckets`` / ``boundaries``.
* ``FG_NORMAL`` / ``FG_DAG``: recforge computes every feature from the raw columns its
  ``expression`` names (defaults, normalizer, bucketization). The two differ in TorchEasyRec
  only in how the FG is scheduled; in recforge they are the same.

Example:
    >>> from recforge.protos import data_pb2
    >>> fg_mode_name(resolve_fg_mode(data_pb2.DataConfig(fg_mode=data_pb2.FG_DAG)))
    'FG_DAG'
    >>> fg_mode_name(resolve_fg_mode(data_pb2.DataConfig(fg_encoded=False, fg_threads=0)))
    'FG_NORMAL'

"""

from __future__ import annotations

import logging

from recforge.protos import data_pb2

logger = logging.getLogger(__name__)

FG_NONE: int = data_pb2.FG_NONE
FG_NORMAL: int = data_pb2.FG_NORMAL
FG_DAG: int = data_pb2.FG_DAG
FG_BUCKETIZE: int = data_pb2.FG_BUCKETIZE

#: TorchEasyRec's ``fg_encoded_multival_sep`` default (an empty separator falls back to it).
DEFAULT_MULTIVAL_SEP = "\x03"


def fg_mode_name(fg_mode: int) -> str:
    """The enum name of an ``FgMode`` value, e.g. ``"FG_NONE"`` (``"<n>"`` when unknown)."""
    try:
        return data_pb2.FgMode.Name(fg_mode)
    except ValueError:
        return f"<{fg_mode}>"


def resolve_fg_mode(data_config: data_pb2.DataConfig, warn: bool = True) -> int:
    """The ``FgMode`` a ``DataConfig`` asks for, reading the deprecated ``fg_encoded`` too.

    TorchEasyRec's rule: when ``fg_encoded`` is set explicitly it decides, whatever
    ``fg_mode`` says: ``true`` -> ``FG_NONE``; ``false`` -> ``FG_DAG`` when ``fg_threads > 0``
    (its default is 1), else ``FG_NORMAL``. Otherwise ``fg_mode`` (default ``FG_NONE``).
    A deprecation warning is logged when ``fg_encoded`` is set.

    Args:
        data_config: a ``DataConfig`` message.
        warn: log the deprecation warning (once per pipeline is enough).

    Returns:
        One of :data:`FG_NONE`, :data:`FG_NORMAL`, :data:`FG_DAG`, :data:`FG_BUCKETIZE`.

    """
    if not data_config.HasField("fg_encoded"):
        return int(data_config.fg_mode)
    if data_config.fg_encoded:
        fg_mode = FG_NONE
    elif data_config.fg_threads > 0:
        fg_mode = FG_DAG
    else:
        fg_mode = FG_NORMAL
    if not warn:
        return fg_mode
    overridden = ""
    if data_config.HasField("fg_mode") and data_config.fg_mode != fg_mode:
        overridden = f"; it overrides data_config.fg_mode: {fg_mode_name(data_config.fg_mode)}"
    logger.warning(
        "data_config.fg_encoded is deprecated (use data_config.fg_mode): fg_encoded: %s is "
        "read as fg_mode: %s%s",
        str(data_config.fg_encoded).lower(),
        fg_mode_name(fg_mode),
        overridden,
    )
    return fg_mode


def multival_sep(data_config: data_pb2.DataConfig) -> str:
    r"""``data_config.fg_encoded_multival_sep``, or ``"\x03"`` when it is empty."""
    return data_config.fg_encoded_multival_sep or DEFAULT_MULTIVAL_SEP
