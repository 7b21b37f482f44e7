"""data_config.fg_mode: FG_NONE reads encoded columns as they are; FG_DAG/FG_NORMAL compute."""

from __future__ import annotations

import pyarrow as pa
import pytest
from google.protobuf import text_format

from recforge.config import required_columns
from recforge.datasets import DataError
from recforge.datasets.data_parser import DataParser
from recforge.features import (
    FG_BUCKETIZE,
    FG_DAG,
    FG_NONE,
    FG_NORMAL,
    FeatureError,
    IdFeature,
    RawFeature,
    SequenceIdFeature,
    SequenceRawFeature,
    create_features,
    create_pipeline_features,
    resolve_fg_mode,
)
from recforge.protos import data_pb2, feature_pb2, pipeline_pb2


def id_feature(fg_mode: int = FG_NONE, sep: str = "\x03", **kwargs) -> IdFeature:
    kwargs.setdefault("feature_name", "f")
    kwargs.setdefault("embedding_dim", 4)
    return IdFeature(feature_pb2.IdFeature(**kwargs), fg_mode, sep)


def raw_feature(fg_mode: int = FG_NONE, **kwargs) -> RawFeature:
    kwargs.setdefault("feature_name", "f")
    return RawFeature(feature_pb2.RawFeature(**kwargs), fg_mode)


def parsed(feature, column, name="f"):
    out = feature.parse({name: column})
    values = out[f"{feature.name}.values"].tolist()
    if f"{feature.name}.lengths" not in out:
        return values
    return values, out[f"{feature.name}.lengths"].tolist()


# ---------------------------------------------------------------------------- FG_NONE ids
def test_multi_value_cell_is_several_ids_not_one_hashed_value():
    encoded = id_feature(hash_bucket_size=100)
    assert parsed(encoded, pa.array(["12\x0334", None, "", "5"])) == ([12, 34, 5], [2, 0, 0, 1])
    assert parsed(encoded, pa.array([[12, 34], [], [7]])) == ([12, 34, 7], [2, 0, 1])
    assert parsed(encoded, pa.array([3, None])) == ([3], [1, 0])
    raw = id_feature(FG_DAG, hash_bucket_size=100)  # the same cell as a raw value: one hash
    values, lengths = parsed(raw, pa.array(["12\x0334"]))
    assert lengths == [1] and values != [12]


def test_every_id_kind_reads_final_table_rows():
    vocab = id_feature(vocab_list=["a", "b", "c"])  # rows 0 default, 1 OOV, 2.. the list
    assert vocab.num_embeddings == 5
    assert parsed(vocab, pa.array(["4", "0\x031"])) == ([4, 0, 1], [1, 2])
    buckets = id_feature(num_buckets=10, default_bucketize_value=0)
    with pytest.raises(FeatureError, match=r"encoded id 12 at row 1 out of range \[0, 10\)"):
        buckets.parse({"f": pa.array([1, 12])})  # not replaced by default_bucketize_value


def test_out_of_range_id_names_column_and_row():
    f = id_feature(feature_name="user", expression="user:uid", hash_bucket_size=100)
    with pytest.raises(FeatureError) as err:
        f.parse({"user": pa.array(["1", "2\x03100", "3"])})
    message = str(err.value)
    assert "feature 'user' (column 'user')" in message
    assert "encoded id 100 at row 1 out of range [0, 100)" in message
    assert "set data_config.fg_mode: FG_DAG" in message


def test_raw_string_id_is_an_error_that_hints_at_the_raw_modes():
    f = id_feature(feature_name="city", hash_bucket_size=100)
    with pytest.raises(FeatureError) as err:
        f.parse({"city": pa.array(["3", "beijing"])})
    message = str(err.value)
    assert "(column 'city')" in message and "'beijing' at row 1 is not an encoded id" in message
    assert "if the column holds raw values, set data_config.fg_mode: FG_DAG (or FG_NORMAL)" in (
        message
    )
    assert "\n" not in message
    with pytest.raises(FeatureError, match=r"found the feature's separator \('\\x1d'\)"):
        f.parse({"city": pa.array(["3\x1d4"])})  # joined by the FG separator, not \x03


def test_separator_in_a_single_value_cell_is_an_error():
    f = id_feature(feature_name="cat", value_dim=1, num_buckets=10)
    assert parsed(f, pa.array(["3", None]), "cat") == ([3], [1, 0])
    with pytest.raises(FeatureError, match=r"\(column 'cat'\).*one encoded id per row.*at row 2"):
        f.parse({"cat": pa.array(["3", "4", "5\x036"])})


def test_fg_encoded_multival_sep_and_default_value():
    f = id_feature(sep="|", num_buckets=10, fg_encoded_default_value="7|8", default_value="1")
    assert parsed(f, pa.array(["1|2", None, ""])) == ([1, 2, 7, 8, 7, 8], [2, 2, 2])
    with pytest.raises(FeatureError, match="fg_encoded_default_value '12'.*in \\[0, 10\\)"):
        id_feature(num_buckets=10, fg_encoded_default_value="12")
    # default_value is a value before bucketization: FG_NONE leaves empty bags empty
    assert parsed(id_feature(num_buckets=10, default_value="1"), pa.nulls(2)) == ([], [0, 0])


# ---------------------------------------------------------------------------- FG_NONE raw
def test_bucket_ids_under_boundaries_are_taken_as_they_are():
    encoded = raw_feature(boundaries=[10.0, 20.0, 30.0], embedding_dim=4)
    assert parsed(encoded, pa.array(["0", "3", None])) == ([0, 3], [1, 1, 0])
    assert parsed(encoded, pa.array([2, 1])) == ([2, 1], [1, 1])
    raw = raw_feature(FG_DAG, boundaries=[10.0, 20.0, 30.0], embedding_dim=4)
    assert parsed(raw, pa.array(["0", "3", "25"])) == ([0, 0, 2], [1, 1, 1])
    with pytest.raises(FeatureError, match=r"encoded bucket id 4 at row 1 out of range \[0, 4\)"):
        encoded.parse({"f": pa.array([0, 4])})
    with pytest.raises(FeatureError, match=r"'15.5' at row 0 is not an encoded bucket id"):
        encoded.parse({"f": pa.array(["15.5"])})
    with pytest.raises(FeatureError, match=r"one encoded id per row.*'1\\x032' at row 0"):
        encoded.parse({"f": pa.array(["1\x032"])})
    two = raw_feature(
        boundaries=[0.5], embedding_dim=4, value_dim=2, fg_encoded_default_value="1\x030"
    )
    assert parsed(two, pa.array(["0\x031", None])) == ([0, 1, 1, 0], [2, 2])
    with pytest.raises(FeatureError, match="expected 2 bucket ids per row.*at row 0"):
        two.parse({"f": pa.array(["1"])})


def test_normalizer_is_not_applied_again():
    spec = "method=zscore,mean=1,standard_deviation=2"
    encoded = raw_feature(normalizer=spec, default_value="3")
    # a null takes what the FG writes for one: the normalized default (3 - 1) / 2
    assert parsed(encoded, pa.array([0.5, None])) == [[0.5], [1.0]]
    assert parsed(raw_feature(FG_DAG, normalizer=spec), pa.array([0.5])) == [[-0.25]]
    filled = raw_feature(normalizer=spec, value_dim=2, fg_encoded_default_value="7\x038")
    assert parsed(filled, pa.array(["1\x032", None])) == [[1.0, 2.0], [7.0, 8.0]]
    # FG_BUCKETIZE: the FG normalized, recforge bucketizes
    bucketize = raw_feature(FG_BUCKETIZE, normalizer=spec, boundaries=[0.0], embedding_dim=4)
    assert parsed(bucketize, pa.array([-0.5, 0.5])) == ([0, 1], [1, 1])


# ---------------------------------------------------------------------------- columns
def test_fg_none_reads_the_column_named_by_feature_name():
    config = feature_pb2.FeatureConfig()
    config.id_feature.CopyFrom(
        feature_pb2.IdFeature(
            feature_name="uid_enc", expression="user:uid", num_buckets=10, embedding_dim=4
        )
    )
    encoded, raw = create_features([config])[0], create_features([config], fg_mode=FG_DAG)[0]
    assert encoded.inputs == ["uid_enc"] and raw.inputs == ["uid"]
    batch = pa.record_batch({"uid": pa.array([7, 1]), "uid_enc": pa.array([2, 3])})
    assert DataParser([encoded]).parse(batch)["uid_enc.values"].tolist() == [2, 3]
    assert DataParser([raw]).parse(batch)["uid_enc.values"].tolist() == [7, 1]
    with pytest.raises(DataError, match="column 'uid_enc'.*the expression's column 'uid'.*FG_DAG"):
        DataParser([encoded]).check_columns(["uid"])
    with pytest.raises(FeatureError, match="the expression's column 'uid'"):
        encoded.parse({"uid": pa.array([1])})


def pipeline(data_config: str) -> pipeline_pb2.EasyRecConfig:
    text = f"""
      data_config {{ label_fields: "label" {data_config} }}
      feature_configs {{
        id_feature {{ feature_name: "u" expression: "user:uid" num_buckets: 10 embedding_dim: 4 }}
      }}
      feature_configs {{
        sequence_feature {{
          sequence_name: "click" sequence_length: 2
          features {{ raw_feature {{ feature_name: "gap" expression: "item:g" boundaries: [1]
                                    embedding_dim: 4 }} }}
        }}
      }}
    """
    return text_format.Parse(text, pipeline_pb2.EasyRecConfig())


@pytest.mark.parametrize(
    "data_config, fg_mode",
    [
        ("", FG_NONE),
        ("fg_mode: FG_DAG", FG_DAG),
        ("fg_mode: FG_BUCKETIZE", FG_BUCKETIZE),
        ("fg_encoded: false", FG_DAG),  # TorchEasyRec: FG_DAG while fg_threads > 0 (default 1)
        ("fg_encoded: false fg_threads: 0", FG_NORMAL),
        ("fg_encoded: true fg_mode: FG_DAG", FG_NONE),  # an explicit fg_encoded decides
    ],
)
def test_fg_mode_and_the_deprecated_fg_encoded(data_config, fg_mode):
    config = pipeline(data_config)
    assert resolve_fg_mode(config.data_config) == fg_mode
    features = create_pipeline_features(config)
    assert {f.fg_mode for f in features} == {fg_mode}
    encoded = fg_mode in (FG_NONE, FG_BUCKETIZE)
    columns = ["u", "click__gap"] if encoded else ["uid", "click__g"]
    assert [f.column for f in features] == columns
    assert list(required_columns(config)) == ["label", *columns]


def test_fg_encoded_warns_that_it_is_deprecated(caplog):
    resolve_fg_mode(data_pb2.DataConfig(fg_encoded=False, fg_mode=data_pb2.FG_NONE))
    assert "fg_encoded is deprecated" in caplog.text
    assert "overrides data_config.fg_mode: FG_NONE" in caplog.text


# ---------------------------------------------------------------------------- sequences
def test_encoded_sequences():
    seq = SequenceIdFeature(
        feature_pb2.IdFeature(
            feature_name="s",
            num_buckets=10,
            embedding_dim=4,
            sequence_length=2,
            fg_encoded_default_value="0",
        )
    )
    assert parsed(seq, pa.array(["1;2;3", None, "4"]), "s") == ([1, 2, 0, 4], [2, 1, 1])
    with pytest.raises(FeatureError, match=r"element '2\\x033' at row 1 .*not supported yet"):
        seq.parse({"s": pa.array(["1", "2\x033;4"])})
    with pytest.raises(FeatureError, match=r"column 's'.*encoded id 10 at row 0"):
        seq.parse({"s": pa.array(["1;10"])})
    gaps = SequenceRawFeature(
        feature_pb2.RawFeature(
            feature_name="g",
            boundaries=[1.0, 10.0],
            embedding_dim=4,
            sequence_length=3,
            normalizer="method=log10",
        )
    )
    assert parsed(gaps, pa.array(["2;0", ""]), "g") == ([2, 0], [2, 0])  # bucket ids as is


# ---------------------------------------------------------------------------- vocabularies
def test_vocab_list_with_default_bucketize_value_is_the_whole_table():
    # TorchEasyRec: with default_bucketize_value, vocab_list[i] -> i and OOV -> that value
    f = id_feature(FG_DAG, vocab_list=["a", "b", "c"], default_bucketize_value=1, default_value="x")
    assert f.num_embeddings == 3
    assert parsed(f, pa.array(["a", "c", "zz", None])) == ([0, 2, 1, 1], [1, 1, 1, 1])
    g = id_feature(FG_DAG, vocab_list=["a", "b", "c"], default_bucketize_value=2, default_value="b")
    assert parsed(g, pa.array([None])) == ([1], [1])  # a default in the list keeps its index
    with pytest.raises(FeatureError, match=r"default_bucketize_value 3 out of range \[0, 3\)"):
        id_feature(FG_DAG, vocab_list=["a", "b", "c"], default_bucketize_value=3)
    # without it: 0 default, 1 OOV, the list from 2
    h = id_feature(FG_DAG, vocab_list=["a", "b", "c"], default_value="x")
    assert h.num_embeddings == 5
    assert parsed(h, pa.array(["a", "c", "zz", None])) == ([2, 4, 1, 0], [1, 1, 1, 1])


def test_vocab_dict_maps_the_default_value_to_row_zero():
    f = id_feature(FG_DAG, vocab_dict={"a": 2, "b": 3}, default_value="b")
    assert parsed(f, pa.array(["a", "b", "zz", None])) == ([2, 0, 1, 0], [1, 1, 1, 1])
    g = id_feature(
        FG_DAG, vocab_dict={"a": 2, "b": 3}, default_value="b", default_bucketize_value=4
    )
    assert parsed(g, pa.array(["b", "zz", None])) == ([3, 4, 3], [1, 1, 1])


def test_fg_bucketize_applies_the_bucketizers_to_fg_output():
    f = id_feature(FG_BUCKETIZE, feature_name="c", expression="item:cate", vocab_list=["a", "b"])
    assert f.inputs == ["c"]
    assert parsed(f, pa.array(["b\x03a", "zz"]), "c") == ([3, 2, 1], [2, 1])
    seq = SequenceIdFeature(
        feature_pb2.IdFeature(
            feature_name="s",
            expression="item:cate",
            vocab_list=["a", "b"],
            embedding_dim=4,
            sequence_length=5,
        ),
        FG_BUCKETIZE,
    )
    assert seq.inputs == ["s"]
    assert parsed(seq, pa.array(["b;a;zz", None]), "s") == ([3, 2, 1], [3, 0])
