"""``TokenizeFeature``: text split into token ids by a tokenizer file, looked up in an embedding."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import FeatureError
from recforge.features.derived_feature import DerivedFeature
from recforge.features.text_normalizer import TextNormalizer
from recforge.features.utils import is_string_type, truncate_rows

_TOKENIZER_TYPES = ("bpe", "sentencepiece")
#: the pinned versions in requirements.txt (named in the message when one is missing)
_PACKAGES = {"bpe": "tokenizers==0.23.3", "sentencepiece": "sentencepiece==0.2.3"}


class _Tokenizer:
    """One tokenizer file: ``vocab_size`` and a batch ``encode``."""

    def __init__(self, path: str, kind: str, feature_name: str) -> None:
        where = f"feature '{feature_name}': vocab_file '{path}'"
        if not os.path.isfile(path):
            raise FeatureError(f"{where}: file not found")
        module = "tokenizers" if kind == "bpe" else "sentencepiece"
        try:
            lib = __import__(module)
        except ImportError:
            raise FeatureError(
                f"{where}: tokenizer_type {kind} needs the Python package {_PACKAGES[kind]} "
                "(in requirements.txt), which is not installed"
            ) from None
        try:
            if kind == "bpe":
                self._bpe = lib.Tokenizer.from_file(path)
                self.vocab_size = int(self._bpe.get_vocab_size(with_added_tokens=True))
            else:
                self._sp = lib.SentencePieceProcessor(model_file=path)
                self.vocab_size = int(self._sp.get_piece_size())
        except Exception as e:  # both libraries raise bare Exception / RuntimeError / OSError
            expected = (
                "a Hugging Face tokenizer.json (tokenizer_type bpe)"
                if kind == "bpe"
                else "a sentencepiece model (tokenizer_type sentencepiece)"
            )
            raise FeatureError(
                f"{where}: expected {expected}, found an unreadable file: {e}"
            ) from None
        self.kind = kind

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added)."""
        if self.kind == "bpe":
            return [e.ids for e in self._bpe.encode_batch(texts, add_special_tokens=False)]
        return self._sp.encode(texts)


class TokenizeFeature(DerivedFeature):
    """Token ids of the text in ``expression``, a bag of ids per row.

    ``vocab_file`` (joined to ``asset_dir`` when that is set) is the tokenizer:
    ``tokenizer_type: bpe`` (the default) reads a Hugging Face ``tokenizer.json`` (what
    TorchEasyRec's tokenizers-cpp reads) with the ``tokenizers`` package,
    ``sentencepiece`` a sentencepiece model with the ``sentencepiece`` package. The table has
    one row per token of the vocabulary (added tokens included). No special tokens (BOS, EOS,
    ...) are added.

    The text first goes through ``text_normalizer`` when it is set (see
    :class:`~recforge.features.text_normalizer.TextNormalizer`). A null or empty cell takes
    ``default_value`` (itself normalized and tokenized); an empty ``default_value`` (the
    default) gives an empty bag. With ``fg_mode: FG_NONE`` the column named by
    ``feature_name`` holds the token ids, checked to lie in ``[0, vocab size)``.

    ``tokens_as_sequence: true`` makes the ids a sequence (one token per element, unpooled
    in a ``SEQUENCE`` group), cut to the first ``sequence_length`` tokens; as in
    TorchEasyRec an empty ``default_value`` then means ``"0"`` (the text tokenized for null
    and empty cells). FG output still joins the ids by ``fg_encoded_multival_sep``.
    """

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        self._tokenizer: Optional[_Tokenizer] = None
        self._require_inputs("expression")
        # the table has a row per token; vocab_file and default_value are the kind's own
        self._out = self._id_output(
            skip=("vocab_file", "asset_dir", "default_value"),
            num_buckets=self.tokenizer.vocab_size,
        )
        cfg = self.config
        self._default_text = cfg.default_value
        if cfg.tokens_as_sequence:
            if cfg.sequence_length <= 0:
                raise FeatureError(
                    f"feature '{self.name}': tokens_as_sequence needs sequence_length > 0 (the "
                    f"most tokens kept), found {cfg.sequence_length}"
                )
            self._default_text = cfg.default_value or "0"
        self._normalize: Optional[TextNormalizer] = None
        if cfg.HasField("text_normalizer"):
            self._normalize = TextNormalizer(cfg.text_normalizer, self.name, cfg.asset_dir)

    @classmethod
    def asset_fields(cls) -> tuple[str, ...]:
        """The tokenizer file and the normalizer's stop characters (copied into an export)."""
        return ("vocab_file", "text_normalizer.stop_char_file")

    @property
    def vocab_path(self) -> str:
        """``vocab_file``, joined to ``asset_dir`` when that is set."""
        cfg = self.config
        if cfg.asset_dir and not os.path.isabs(cfg.vocab_file):
            return os.path.join(cfg.asset_dir, cfg.vocab_file)
        return cfg.vocab_file

    @property
    def tokenizer(self) -> _Tokenizer:
        """The loaded tokenizer (loaded again after unpickling, e.g. in a data worker)."""
        if self._tokenizer is None:
            cfg = self.config
            if cfg.tokenizer_type not in _TOKENIZER_TYPES:
                raise FeatureError(
                    f"feature '{cfg.feature_name}': tokenizer_type must be one of "
                    f"{list(_TOKENIZER_TYPES)}, found '{cfg.tokenizer_type}'"
                )
            if not cfg.vocab_file:
                raise FeatureError(
                    f"feature '{cfg.feature_name}': a tokenize_feature needs vocab_file (the "
                    "tokenizer file)"
                )
            self._tokenizer = _Tokenizer(self.vocab_path, cfg.tokenizer_type, cfg.feature_name)
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokenizer"] = None  # native objects: each process loads its own
        return state

    @property
    def raw_inputs(self) -> list[str]:
        """``[expression]``."""
        return [self.config.expression] if self.config.expression else []

    def _encode(self, text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        if self._normalize is not None:
            text = self._normalize(text)
        # the tokenizers take and return Python lists: flattening them is one pass over the ids
        ids = self.tokenizer.encode(text.to_pylist())
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int32, count=len(ids))
        flat = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(lengths.sum()))
        return flat, lengths

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """``list<int64> [B]`` token ids per row."""
        (text,) = self.input_columns(columns)
        if pa.types.is_null(text.type):
            text = pa.nulls(len(text), pa.string())
        elif not is_string_type(text.type):
            raise FeatureError(
                f"feature '{self.name}' (column '{self.inputs[0]}'): expected text, "
                f"found values of type {text.type}"
            )
        text = pc.cast(text, pa.string())
        default = self._default_text
        empty = pc.or_kleene(pc.is_null(text), pc.equal(text, "")).fill_null(True)
        if default:
            text = pc.if_else(empty, pa.scalar(default, pa.string()), text)
        else:
            text = text.fill_null("")
        flat, lengths = self._encode(text)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int64()))

    @property
    def is_sequence(self) -> bool:
        """``tokens_as_sequence``."""
        return bool(self.config.tokens_as_sequence)

    @property
    def sequence_length(self) -> int:
        """The most tokens kept per row (with ``tokens_as_sequence``)."""
        return int(self.config.sequence_length)

    def parse(self, columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        """Token ids of one batch: ``{"{name}.values": int64 [N], "{name}.lengths": int32 [B]}``.

        With ``tokens_as_sequence`` each row keeps its first ``sequence_length`` ids.
        """
        out = super().parse(columns)
        if not self.is_sequence:
            return out
        values, lengths = out[f"{self.name}.values"], out[f"{self.name}.lengths"]
        values, lengths = truncate_rows(values, lengths, self.sequence_length)
        return {f"{self.name}.values": values, f"{self.name}.lengths": lengths}
