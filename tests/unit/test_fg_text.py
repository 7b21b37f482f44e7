"""overlap_feature, tokenize_feature and text_normalizer on hand-made rows.

Expected values are worked out by hand from TorchEasyRec's documented semantics
(docs/source/feature/feature.md and its feature tests).
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from recforge.features import FG_DAG, FG_NONE, FeatureError, create_feature
from recforge.features.text_normalizer import TextNormalizer
from recforge.protos import feature_pb2
from tests.helpers.tokenizers import word_level_tokenizer

Q = ["abc\x1defg", "abc\x1defg", "", None]


def overlap(method: str, fg_mode: int = FG_DAG, **kwargs):
    cfg = feature_pb2.FeatureConfig(
        overlap_feature=feature_pb2.OverlapFeature(
            feature_name="ov", query="user:q", title="item:t", method=method, **kwargs
        )
    )
    return create_feature(cfg, fg_mode)


def overlap_values(method: str, query, title, **kwargs) -> list[float]:
    out = overlap(method, **kwargs).parse({"q": pa.array(query), "t": pa.array(title)})
    return out["ov.values"].ravel().tolist()


@pytest.mark.parametrize(
    "method,title,expected",
    [
        # abc of [abc, efg] is in the title: 1/2; equal rows: 1; empty and null rows: 0
        (
            "query_common_ratio",
            ["abc\x1dqwe\x1drty\x1duio", "abc\x1defg\x1drty", "", None],
            [0.5, 1, 0, 0],
        ),
        # 1 of the 4 title terms is in the query
        ("title_common_ratio", ["abc\x1dqwe\x1drty\x1duio", "abc", "", None], [0.25, 1, 0, 0]),
        ("is_contain", ["abc\x1dqwe\x1drty\x1duio", "abc\x1defg\x1drty", "", None], [0, 1, 0, 0]),
        ("is_equal", ["abc\x1defg\x1drty", "abc\x1defg", "", None], [0, 1, 0, 0]),
        # [abc, efg] starts at term 1 of [x, abc, efg]; reversed order is no match: -1
        ("index_of", ["x\x1dabc\x1defg", "efg\x1dabc", "", None], [1, -1, -1, -1]),
        # shortest run holding abc and efg: [efg, abc] (2); efg missing: 0
        ("proximity_min_cover", ["abc\x1dx\x1defg\x1dabc", "abc", "", None], [2, 0, 0, 0]),
    ],
)
def test_overlap_methods(method, title, expected):
    assert overlap_values(method, Q, title) == pytest.approx(expected)


def test_overlap_list_inputs_and_separator():
    query = [["abc", "efg"], ["abc", "efg"], [], None]
    title = [["abc", "qwe", "rty", "uio"], ["abc", "efg", "rty"], [], None]
    assert overlap_values("query_common_ratio", query, title) == [0.5, 1, 0, 0]
    got = overlap_values("query_common_ratio", ["a|b"], ["b|c"], separator="|")
    assert got == [0.5]


def test_overlap_boundaries_bucketize_and_normalizer_applies():
    title = ["abc\x1dqwe\x1drty\x1duio", "abc\x1defg\x1drty", "", None]
    feature = overlap("query_common_ratio", boundaries=[0.25, 0.75], embedding_dim=4)
    out = feature.parse({"q": pa.array(Q), "t": pa.array(title)})
    assert feature.num_embeddings == 3 and feature.is_sparse
    assert out["ov.values"].tolist() == [1, 2, 0, 0]
    assert out["ov.lengths"].tolist() == [1, 1, 1, 1]
    scaled = overlap_values("query_common_ratio", Q, title, normalizer="method=minmax,min=0,max=2")
    assert scaled == [0.25, 0.5, 0, 0]


def test_overlap_fg_none_reads_the_feature_column():
    feature = overlap("is_equal", FG_NONE, boundaries=[0.5], embedding_dim=4)
    assert feature.inputs == ["ov"]
    out = feature.parse({"ov": pa.array([1, 0])})
    assert out["ov.values"].tolist() == [1, 0]


def test_overlap_bad_method_and_missing_column():
    with pytest.raises(FeatureError, match="feature 'ov'.*method must be one of"):
        overlap("jaccard")
    with pytest.raises(FeatureError, match="'proximity_min_dist' is not supported"):
        overlap("proximity_min_dist")
    with pytest.raises(FeatureError, match="feature 'ov' \\(column 't'\\): column not found"):
        overlap("is_equal").parse({"q": pa.array(["a"])})


# ------------------------------------------------------------------------------ tokenize
VOCAB = {"[UNK]": 0, "hello": 1, "world": 2, "HELLO": 3, "WORLD": 4, "ABC": 5, "!": 6}


@pytest.fixture
def tokenizer_json(tmp_path) -> str:
    """A word-level tokenizer.json splitting on whitespace and punctuation."""
    return word_level_tokenizer(tmp_path, VOCAB)


def tokenize(vocab_file: str, fg_mode: int = FG_DAG, **kwargs):
    cfg = feature_pb2.FeatureConfig(
        tokenize_feature=feature_pb2.TokenizeFeature(
            feature_name="tok",
            expression="item:title",
            vocab_file=vocab_file,
            embedding_dim=4,
            **kwargs,
        )
    )
    return create_feature(cfg, fg_mode)


def test_tokenize_ids_oov_nulls(tokenizer_json):
    feature = tokenize(tokenizer_json)
    assert feature.num_embeddings == len(VOCAB) and feature.inputs == ["title"]
    out = feature.parse({"title": pa.array(["hello world", "hello zzz!", "", None])})
    assert out["tok.values"].tolist() == [1, 2, 1, 0, 6]  # zzz is out of vocabulary: [UNK]
    assert out["tok.lengths"].tolist() == [2, 3, 0, 0]


def test_tokenize_default_value_and_normalizer(tokenizer_json):
    normalizer = feature_pb2.TextNormalizer()  # TorchEasyRec's default options: upper case, ...
    feature = tokenize(tokenizer_json, text_normalizer=normalizer, default_value="abc")
    out = feature.parse({"title": pa.array(["Hello，World", None, ""])})
    # full-width comma -> ",", removed by TEXT_FILTER; upper case; empty rows take "abc" -> ABC
    assert out["tok.values"].tolist() == [0, 5, 5]
    assert out["tok.lengths"].tolist() == [1, 1, 1]
    lower = feature_pb2.TextNormalizer(
        norm_options=[feature_pb2.TEXT_UPPER2LOWER, feature_pb2.TEXT_SBC2DBC]
    )
    feature = tokenize(tokenizer_json, text_normalizer=lower)
    assert feature.parse({"title": pa.array(["ＨＥＬＬＯ　World"])})["tok.values"].tolist() == [
        1,
        2,
    ]


def test_tokenize_survives_pickling(tokenizer_json):
    feature = pickle.loads(pickle.dumps(tokenize(tokenizer_json)))
    assert feature.parse({"title": pa.array(["world"])})["tok.values"].tolist() == [2]


def test_tokenize_fg_none_checks_ids_against_the_vocabulary(tokenizer_json):
    feature = tokenize(tokenizer_json, FG_NONE)
    out = feature.parse({"tok": pa.array(["1\x032", None])})
    assert out["tok.values"].tolist() == [1, 2] and out["tok.lengths"].tolist() == [2, 0]
    with pytest.raises(FeatureError, match="feature 'tok'.*row 0"):
        feature.parse({"tok": pa.array(["99"])})


def test_tokenize_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["hello world", "hello there", "world peace"] * 20))
    prefix = str(tmp_path / "sp")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=prefix,
        vocab_size=7,
        model_type="word",
        minloglevel=2,
    )
    feature = tokenize(prefix + ".model", tokenizer_type="sentencepiece")
    processor = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert feature.num_embeddings == processor.get_piece_size()
    out = feature.parse({"title": pa.array(["hello world", None])})
    assert out["tok.values"].tolist() == processor.encode("hello world")
    assert out["tok.lengths"].tolist() == [len(processor.encode("hello world")), 0]


def test_tokenize_bad_vocab_files(tmp_path):
    with pytest.raises(FeatureError, match="feature 'tok': vocab_file '.*nothere.json': file not"):
        tokenize(str(tmp_path / "nothere.json"))
    with pytest.raises(FeatureError, match="feature 'tok': a tokenize_feature needs vocab_file"):
        tokenize("")
    with pytest.raises(FeatureError, match="tokenizer_type must be one of"):
        tokenize(str(tmp_path), tokenizer_type="wordpiece")
    bad = tmp_path / "bad.json"
    bad.write_text("not a tokenizer")
    pytest.importorskip("tokenizers")
    with pytest.raises(FeatureError, match="feature 'tok'.*expected a Hugging Face tokenizer"):
        tokenize(str(bad))


def test_tokenize_json_is_not_a_sentencepiece_model(tokenizer_json):
    pytest.importorskip("sentencepiece")
    with pytest.raises(FeatureError, match="feature 'tok'.*expected a sentencepiece model"):
        tokenize(tokenizer_json, tokenizer_type="sentencepiece")


# ------------------------------------------------------------------------------ normalizer
def normalize(options, texts, **kwargs) -> list:
    config = feature_pb2.TextNormalizer(norm_options=options, **kwargs)
    return TextNormalizer(config, "f")(pa.array(texts, pa.string())).to_pylist()


def test_text_normalizer_options(tmp_path):
    assert normalize([feature_pb2.TEXT_SBC2DBC], ["ＡＢ１！　x", None]) == ["AB1! x", None]
    assert normalize([feature_pb2.TEXT_LOWER2UPPER], ["aBc"]) == ["ABC"]
    assert normalize([feature_pb2.TEXT_UPPER2LOWER], ["aBc"]) == ["abc"]
    assert normalize([feature_pb2.TEXT_FILTER], ["a,b!c。"]) == ["abc"]
    assert normalize([feature_pb2.TEXT_SPLITCHRS], ["ab中文cd"]) == ["ab 中 文 cd"]
    assert normalize([feature_pb2.TEXT_REMOVE_SPACE], [" a b\tc "]) == ["abc"]
    assert normalize([feature_pb2.TEXT_REMOVE_SPACE], ["abcdef"], max_length=3) == ["abc"]
    stop = tmp_path / "stop_char"
    stop.write_text("x\n的\n")
    got = normalize([feature_pb2.TEXT_FILTER], ["a,x的b"], stop_char_file=str(stop))
    assert got == ["a,b"]  # only the listed characters go


def test_text_normalizer_bad_config(tmp_path):
    both = [feature_pb2.TEXT_LOWER2UPPER, feature_pb2.TEXT_UPPER2LOWER]
    with pytest.raises(FeatureError, match="at most one of TEXT_LOWER2UPPER"):
        normalize(both, ["a"])
    with pytest.raises(FeatureError, match="stop_char_file '.*missing'"):
        normalize([feature_pb2.TEXT_FILTER], ["a"], stop_char_file=str(tmp_path / "missing"))


def test_full_width_is_vectorised_per_row_only_where_needed():
    texts = ["plain"] * 3 + ["ｗｉｄｅ"]
    assert normalize([feature_pb2.TEXT_SBC2DBC], texts) == ["plain"] * 3 + ["wide"]
    assert np.array_equal(normalize([feature_pb2.TEXT_SBC2DBC], []), [])


def test_tokens_as_sequence_cut_to_sequence_length(tokenizer_json):
    feature = tokenize(tokenizer_json, tokens_as_sequence=True, sequence_length=2)
    assert feature.is_sequence and feature.sequence_length == 2
    out = feature.parse({"title": pa.array(["hello world hello", "world", None])})
    # a null row tokenizes the default "0": out of vocabulary
    assert out["tok.values"].tolist() == [1, 2, 2, 0]
    assert out["tok.lengths"].tolist() == [2, 1, 1]
    with pytest.raises(FeatureError, match="tokens_as_sequence needs sequence_length > 0"):
        tokenize(tokenizer_json, tokens_as_sequence=True)


def test_sequence_overlap_feature_per_element():
    cfg = feature_pb2.FeatureConfig(
        sequence_overlap_feature=feature_pb2.OverlapFeature(
            feature_name="so",
            query="user:q",
            title="item:t",
            method="query_common_ratio",
            boundaries=[0.25, 0.75],
            embedding_dim=4,
            sequence_length=3,
        )
    )
    feature = create_feature(cfg, FG_DAG)
    assert feature.is_sequence and feature.sequence_length == 3
    out = feature.parse(
        {"q": pa.array(["a\x1db", "c", None]), "t": pa.array(["a;a\x1db;x;y", "", None])}
    )
    # row 0: the user query against each item title: 1/2 -> 1, 2/2 -> 2, 0 -> 0 (y is cut);
    # an empty or null sequence is one element of ratio 0
    assert out["so.values"].tolist() == [1, 2, 0, 0, 0]
    assert out["so.lengths"].tolist() == [3, 1, 1]
    with pytest.raises(FeatureError, match="needs boundaries"):
        cfg.sequence_overlap_feature.ClearField("boundaries")
        create_feature(cfg, FG_DAG)
