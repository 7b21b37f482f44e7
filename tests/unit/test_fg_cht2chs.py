"""TEXT_CHT2CHS: traditional -> simplified Chinese in text_normalizer (OpenCC's t2s tables)."""

import logging

import pyarrow as pa
import pytest

from recforge.features import text_normalizer
from recforge.features.text_normalizer import TextNormalizer
from recforge.protos import feature_pb2


def normalize(options, values):
    config = feature_pb2.TextNormalizer(norm_options=options)
    return TextNormalizer(config, "title")(pa.array(values, pa.string())).to_pylist()


def test_cht2chs_converts_rows_with_han_characters(monkeypatch):
    monkeypatch.setattr(
        text_normalizer, "traditional_to_simplified", lambda: lambda s: s.replace("漢", "汉")
    )
    values = ["漢字 abc", "ABC", None]
    assert normalize([feature_pb2.TEXT_CHT2CHS], values) == ["汉字 abc", "ABC", None]
    # the option off: unchanged
    assert normalize([feature_pb2.TEXT_FILTER], values) == ["漢字 abc", "ABC", None]


def test_without_the_package_the_option_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(text_normalizer, "traditional_to_simplified", lambda: None)
    with caplog.at_level(logging.WARNING, logger="recforge.features.text_normalizer"):
        assert normalize([feature_pb2.TEXT_CHT2CHS], ["漢字"]) == ["漢字"]
    assert "install opencc-python-reimplemented" in caplog.text


def test_opencc_t2s_tables():
    pytest.importorskip("opencc")
    text_normalizer.traditional_to_simplified.cache_clear()
    out = normalize([], ["漢字轉換 頭髮，abc"])  # the defaults: upper case, CHT2CHS, filter
    assert out == ["汉字转换 头发ABC"]
