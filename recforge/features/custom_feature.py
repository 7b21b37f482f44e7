"""``CustomFeature``: a named operator's output, encoded like an id or raw feature."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import json_format

from recforge.features.base_feature import FeatureError
from recforge.features.custom_ops import INPUT_NAMES, get_operator
from recforge.features.derived_feature import DerivedFeature, split_expression
from recforge.utils.registry import RegistryError

logger = logging.getLogger(__name__)

#: operators shipped with recforge, tried on one empty text when the feature is built
_BUILT_IN = ("EditDistance", "RegexReplace", "SeqExpr")
_ID_KINDS = ("hash_bucket_size", "num_buckets", "vocab_list", "vocab_dict", "vocab_file", "zch")


class CustomFeature(DerivedFeature):
    """The output of operator ``operator_name`` on the ``expression`` inputs.

    The operator is looked up in :mod:`recforge.features.custom_ops` (built in:
    ``EditDistance``, ``RegexReplace``, ``SeqExpr``; user operators are registered there by
    plugins); ``operator_lib_file`` (TorchEasyRec's C++ library) is only logged, and
    ``is_op_thread_safe`` does not matter here. ``operator_params`` is passed to the operator
    as a dict.

    The operator's output is encoded as TorchEasyRec does:

    * ``hash_bucket_size`` / ``num_buckets`` / ``vocab_list`` / ``vocab_dict``: as an
      :class:`~recforge.features.id_feature.IdFeature`; a vocabulary is the whole table
      (``vocab_list[i] -> i``) and unknown values take ``default_bucketize_value`` (0 when
      unset), so ``num_embeddings`` is ``len(vocab_list)`` (``max(vocab_dict) + 1``).
    * otherwise as a :class:`~recforge.features.raw_feature.RawFeature`: ``default_value``
      (default ``"0"``) for nulls, ``normalizer``, ``value_dim`` numbers per row, and
      ``boundaries`` bucketize.
    """

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """``vocab_file`` of an id output (copied into an export)."""
        return ("vocab_file",)

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        self._require_inputs("expression")
        self._build_output()
        cfg = self.config
        self.params: dict[str, Any] = (
            json_format.MessageToDict(cfg.operator_params)
            if cfg.HasField("operator_params")
            else {}
        )
        self._operator = None
        if self.reads_fg_output:
            return
        try:
            self._operator = get_operator(cfg.operator_name)
        except RegistryError as e:
            raise FeatureError(f"feature '{self.name}': operator_name: {e}") from None
        if cfg.operator_lib_file:
            logger.info(
                "feature '%s': operator_lib_file '%s' is not loaded; recforge runs its "
                "operator '%s'",
                self.name,
                cfg.operator_lib_file,
                cfg.operator_name,
            )
        if cfg.operator_name in _BUILT_IN:  # bad operator_params fail here, not mid-training
            self._run([pa.array([""]) for _ in self.raw_inputs])

    @property
    def raw_inputs(self) -> list[str]:
        """``expression``: the operator's inputs, in order."""
        return list(self.config.expression)

    def _build_output(self) -> None:
        """An id output (an id kind is set) or a number output."""
        cfg = self.config
        is_id = any(
            len(getattr(cfg, k)) if k.startswith("vocab") else cfg.HasField(k) for k in _ID_KINDS
        )
        fields: dict[str, Any] = {}
        if cfg.HasField("separator"):  # it splits a multi-value default_value
            fields["separator"] = cfg.separator
        if is_id:
            if cfg.HasField("value_dim"):
                fields["value_dim"] = cfg.value_dim
            if (cfg.vocab_list or cfg.vocab_dict) and not cfg.HasField("default_bucketize_value"):
                fields["default_bucketize_value"] = 0  # the vocabulary is the whole table
            self._out = self._id_output(**fields)
        else:
            self._out = self._raw_output(value_dim=max(int(cfg.value_dim), 1), **fields)

    def _run(self, inputs: list[pa.Array]) -> pa.Array:
        assert self._operator is not None
        try:
            names = [split_expression(e)[1] for e in self.raw_inputs]
            params = {**self.params, INPUT_NAMES: names}
            out = self._operator(inputs, params)
        except ValueError as e:
            raise FeatureError(
                f"feature '{self.name}': operator '{self.config.operator_name}': {e}"
            ) from None
        if isinstance(out, pa.ChunkedArray):
            out = out.combine_chunks()
        if not isinstance(out, pa.Array):
            out = pa.array(np.asarray(out) if isinstance(out, np.ndarray) else out)
        rows = len(inputs[0]) if inputs else 0
        if len(out) != rows:
            raise FeatureError(
                f"feature '{self.name}': operator '{self.config.operator_name}' returned "
                f"{len(out)} rows for {rows} input rows; expected one output per row"
            )
        return out

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """The operator's output (``B`` rows)."""
        return self._run(self.input_columns(columns))
