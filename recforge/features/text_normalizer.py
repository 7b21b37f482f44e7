"""``TextNormalizer``: clean text before it is tokenized (case, width, symbols, spaces, length)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import FeatureError
from recforge.protos import feature_pb2

logger = logging.getLogger(__name__)

#: TorchEasyRec's options when ``norm_options`` is empty
DEFAULT_OPTIONS = (
    feature_pb2.TEXT_LOWER2UPPER,
    feature_pb2.TEXT_SBC2DBC,
    feature_pb2.TEXT_CHT2CHS,
    feature_pb2.TEXT_FILTER,
)
#: full-width ASCII (U+FF01..U+FF5E) and the ideographic space -> their half-width forms
_SBC2DBC = {0xFF01 + i: 0x21 + i for i in range(94)} | {0x3000: 0x20}
_FULL_WIDTH = r"[\x{FF01}-\x{FF5E}\x{3000}]"
#: what TEXT_FILTER removes without a stop_char_file: Unicode punctuation and symbols
_SYMBOLS = r"[\p{P}\p{S}]"
#: the PyPI package TEXT_CHT2CHS converts with (pinned in requirements.txt)
CHT2CHS_PACKAGE = "opencc-python-reimplemented"


@functools.lru_cache(maxsize=1)
def traditional_to_simplified() -> Optional[Callable[[str], str]]:
    """OpenCC's ``t2s`` conversion (traditional -> simplified Chinese), or None without it.

    From :data:`CHT2CHS_PACKAGE` (a pure-Python OpenCC with its dictionaries); loaded once
    per process, not pickled with the features.
    """
    try:
        from opencc import OpenCC
    except ImportError:
        return None
    return OpenCC("t2s").convert


class TextNormalizer:
    """Applies a ``TextNormalizer`` config to a string array, vectorised with pyarrow.

    Steps, in this order, each when its option is set: ``TEXT_SBC2DBC`` (full-width ASCII
    and the ideographic space to half-width), ``TEXT_LOWER2UPPER`` / ``TEXT_UPPER2LOWER``,
    ``TEXT_FILTER`` (remove the characters of ``stop_char_file``, one per line; without
    one, every Unicode punctuation mark and symbol: TorchEasyRec's built-in list is a
    download, not part of its package), ``TEXT_SPLITCHRS`` (each Han character becomes a
    word: spaces around it), ``TEXT_REMOVE_SPACE`` (all whitespace removed), then the first
    ``max_length`` characters are kept (when set). An empty ``norm_options`` means
    TorchEasyRec's default: LOWER2UPPER, SBC2DBC, CHT2CHS, FILTER.

    ``TEXT_CHT2CHS`` (traditional to simplified Chinese, right after ``TEXT_SBC2DBC``)
    converts with OpenCC's ``t2s`` tables (:func:`traditional_to_simplified`, the package
    ``opencc-python-reimplemented`` of requirements.txt). Where we differ: OpenCC converts
    phrases as well as characters, so a character whose simplified form depends on the word
    follows the word; TorchEasyRec's FG table is not published. Without the package the
    option is skipped with a warning.

    Args:
        config: a ``TextNormalizer`` message.
        feature_name: for messages.
        asset_dir: a directory ``stop_char_file`` is relative to (empty: as given).

    Raises:
        FeatureError: both case options, or a ``stop_char_file`` that cannot be read.

    """

    def __init__(
        self, config: feature_pb2.TextNormalizer, feature_name: str, asset_dir: str = ""
    ) -> None:
        self.feature_name = feature_name
        options = set(config.norm_options) or set(DEFAULT_OPTIONS)
        self.options = options
        if {feature_pb2.TEXT_LOWER2UPPER, feature_pb2.TEXT_UPPER2LOWER} <= options:
            raise FeatureError(
                f"feature '{feature_name}': text_normalizer.norm_options: expected at most one "
                "of TEXT_LOWER2UPPER and TEXT_UPPER2LOWER, found both"
            )
        if feature_pb2.TEXT_CHT2CHS in options and traditional_to_simplified() is None:
            logger.warning(
                "feature '%s': text_normalizer option TEXT_CHT2CHS (traditional to simplified "
                "Chinese) is skipped: install %s (requirements.txt) for its conversion tables",
                feature_name,
                CHT2CHS_PACKAGE,
            )
        self.max_length = int(config.max_length) if config.HasField("max_length") else 0
        self.filter_pattern = _SYMBOLS
        if config.stop_char_file:
            self.filter_pattern = self._stop_chars(config.stop_char_file, asset_dir)

    def _stop_chars(self, path: str, asset_dir: str) -> str:
        if asset_dir and not path.startswith("/"):
            path = f"{asset_dir.rstrip('/')}/{path}"
        try:
            with open(path, encoding="utf-8") as f:
                chars = [line.rstrip("\r\n") for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise FeatureError(
                f"feature '{self.feature_name}': text_normalizer.stop_char_file '{path}': "
                f"expected a readable UTF-8 file of stop characters, one per line: {e}"
            ) from None
        chars = sorted({c for c in chars if c}, key=len, reverse=True)
        if not chars:
            return r"(?!)"  # nothing to remove
        return "|".join(re.escape(c) for c in chars)

    def __call__(self, text: pa.Array) -> pa.Array:
        """Normalize ``string [B]`` (nulls stay null)."""
        options = self.options
        if feature_pb2.TEXT_SBC2DBC in options and len(text):
            wide = pc.match_substring_regex(text, _FULL_WIDTH).fill_null(False)
            if pc.any(wide).as_py():
                # str.translate per row: pyarrow has no character mapping kernel
                converted = pa.array(
                    [None if s is None else s.translate(_SBC2DBC) for s in text.to_pylist()],
                    pa.string(),
                )
                text = pc.if_else(wide, converted, text)
        convert = traditional_to_simplified() if feature_pb2.TEXT_CHT2CHS in options else None
        if convert is not None and len(text):
            han = pc.match_substring_regex(text, r"\p{Han}").fill_null(False)
            if pc.any(han).as_py():
                simplified = pa.array(
                    [None if s is None else convert(s) for s in text.to_pylist()], pa.string()
                )
                text = pc.if_else(han, simplified, text)
        if feature_pb2.TEXT_LOWER2UPPER in options:
            text = pc.utf8_upper(text)
        elif feature_pb2.TEXT_UPPER2LOWER in options:
            text = pc.utf8_lower(text)
        if feature_pb2.TEXT_FILTER in options:
            text = pc.replace_substring_regex(text, self.filter_pattern, "")
        if feature_pb2.TEXT_SPLITCHRS in options:
            text = pc.replace_substring_regex(text, r"(\p{Han})", r" \1 ")
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
        if feature_pb2.TEXT_REMOVE_SPACE in options:
            text = pc.replace_substring_regex(text, r"\s+", "")
        if self.max_length > 0:
            text = pc.utf8_slice_codeunits(text, 0, self.max_length)
        return text
