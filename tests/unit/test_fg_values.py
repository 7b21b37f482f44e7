"""kv_dot_product, bool_mask_feature and combine_feature on hand-made rows.

Expected values are worked out by hand from TorchEasyRec's documented semantics
(docs/source/feature/feature.md and its feature tests).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from recforge.features import FEATURE_CLASSES, FG_DAG, FG_NONE, FeatureError, create_feature
from recforge.protos import feature_pb2

MAP = pa.map_(pa.string(), pa.float32())


def feature(kind: str, fg_mode: int = FG_DAG, **kwargs):
    kwargs.setdefault("feature_name", "f")
    assert kind in FEATURE_CLASSES
    cfg = feature_pb2.FeatureConfig(**{kind: kwargs})
    return create_feature(cfg, fg_mode)


# ------------------------------------------------------------------------------ kv_dot_product
def kv(**kwargs):
    return feature("kv_dot_product", query="user:q", document="item:d", separator="|", **kwargs)


@pytest.mark.parametrize(
    "query,document",
    [
        (["a:0.5|b:0.5", "a|b|c", "a|b", None], ["d:0.5|b:0.5", "a|b", "", ""]),
        (
            [["a:0.5", "b:0.5"], ["a", "b", "c"], ["a", "b"], None],
            [["d:0.5", "b:0.5"], ["a", "b"], [], []],
        ),
        (
            pa.array([{"a": 0.5, "b": 0.5}, {"a": 1, "b": 1, "c": 1}, {"a": 1}, None], MAP),
            pa.array([{"d": 0.5, "b": 0.5}, {"a": 1, "b": 1}, {}, {}], MAP),
        ),
    ],
)
def test_kv_dot_product_strings_lists_maps(query, document):
    out = kv(default_value="0.1").parse({"q": pa.array(query), "d": pa.array(document)})
    # b: 0.5*0.5; {a,b,c}.{a,b} = 2; an empty side takes default_value
    assert out["f.values"].ravel().tolist() == pytest.approx([0.25, 2.0, 0.1, 0.1])


def test_kv_dot_product_mixed_inputs_and_no_shared_key():
    query = pa.array([["a", "b", "c"], ["a", "b", "c"], ["x:2"]])
    document = pa.array(["a|b|d", "a:0.5|b:0.5", "y:3"])
    out = kv().parse({"q": query, "d": document})
    assert out["f.values"].ravel().tolist() == [2.0, 1.0, 0.0]


def test_kv_dot_product_repeated_key_keeps_its_last_value_and_boundaries():
    out = kv().parse({"q": pa.array(["a:1|a:3"]), "d": pa.array(["a:2"])})
    assert out["f.values"].ravel().tolist() == [6.0]
    bucketized = kv(default_value="0.1", boundaries=[0.05, 0.15, 1.0], embedding_dim=4)
    out = bucketized.parse(
        {"q": pa.array(["a:0.5|b:0.5", "a|b|c", None]), "d": pa.array(["a:0.5|b:0.5", "a|b", ""])}
    )
    assert out["f.values"].tolist() == [2, 3, 1] and bucketized.num_embeddings == 4


def test_kv_dot_product_bad_value_names_column_and_row():
    with pytest.raises(
        FeatureError, match=r"feature 'f' \(column 'd'\): .*no number in 'b:x' at row 1"
    ):
        kv().parse({"q": pa.array(["a", "b"]), "d": pa.array(["a:1", "b:x"])})


def test_kv_dot_product_needs_both_inputs():
    with pytest.raises(FeatureError, match="feature 'f': expected its input fields"):
        feature("kv_dot_product", query="user:q")


# ------------------------------------------------------------------------------ bool_mask
def bool_mask(**kwargs):
    kwargs.setdefault("num_buckets", 1000)
    kwargs.setdefault("embedding_dim", 4)
    return feature("bool_mask_feature", expression=["user:v", "user:m"], separator=",", **kwargs)


@pytest.mark.parametrize(
    "values,mask,expected,lengths",
    [
        (["1,2,3,4"], ["true,false,true,false"], [1, 3], [2]),
        (["1", "2", "3", "4"], ["true", "false", "TRUE", "0"], [1, 3], [1, 0, 1, 0]),
        (["1", "2", None], ["true", "false", "true"], [1], [1, 0, 0]),  # null value cell
        (["1,2", "3,4,5"], ["true,false", "true,false,true"], [1, 3, 5], [1, 2]),
        ([[1, 2, 3, 4]], [[1, 0, 1, 0]], [1, 3], [2]),
        ([[1, 2, 3, 4]], ["true,false,true,false"], [1, 3], [2]),
        (["123,456,90,80"], [[True, False, True, None]], [123, 90], [2]),  # null mask: false
        (["1,2", "3"], [None, "1"], [3], [0, 1]),  # a null mask cell: an empty row
    ],
)
def test_bool_mask_selects_values(values, mask, expected, lengths):
    out = bool_mask().parse({"v": pa.array(values), "m": pa.array(mask)})
    assert out["f.values"].tolist() == expected and out["f.lengths"].tolist() == lengths


def test_bool_mask_vocab_and_default_value():
    mask_feature = bool_mask(num_buckets=0, vocab_list=["a", "b"], default_value="a")
    out = mask_feature.parse({"v": pa.array(["a,b,z", "b"]), "m": pa.array(["1,0,1", "0"])})
    # vocab_list: a -> 2, b -> 3, out of vocabulary -> 1; an emptied row takes the default a
    assert out["f.values"].tolist() == [2, 1, 2] and out["f.lengths"].tolist() == [2, 1]


def test_bool_mask_bad_mask():
    with pytest.raises(
        FeatureError, match=r"\(column 'm'\): expected mask items .*'maybe' at row 1"
    ):
        bool_mask().parse({"v": pa.array(["1", "1,2"]), "m": pa.array(["1", "true,maybe"])})
    with pytest.raises(
        FeatureError, match=r"\(column 'm'\): expected one mask item per value .* at row 0"
    ):
        bool_mask().parse({"v": pa.array(["1,2"]), "m": pa.array(["1,0,1"])})
    with pytest.raises(FeatureError, match="expression must name 2 inputs"):
        feature("bool_mask_feature", expression=["user:v"], num_buckets=3, embedding_dim=4)


# ------------------------------------------------------------------------------ combine
def combine(**kwargs):
    return feature("combine_feature", expression="user:c", **kwargs)


@pytest.mark.parametrize(
    "combiner,expected",
    [
        ("sum", [3.0, 3.0, 0.0, 0.0]),
        ("mean", [1.5, 3.0, 0.0, 0.0]),
        ("avg", [1.5, 3.0, 0.0, 0.0]),
        ("min", [1.0, 3.0, 0.0, 0.0]),
        ("max", [2.0, 3.0, 0.0, 0.0]),
        ("count", [2.0, 1.0, 0.0, 0.0]),
    ],
)
def test_combine_dense(combiner, expected):
    out = combine(combiner=combiner).parse({"c": pa.array(["1.0\x1d2.0", "3.0", "", None])})
    assert out["f.values"].ravel().tolist() == expected


def test_combine_boundaries_num_buckets_value_map():
    rows = pa.array(["1.0\x1d2.0", "0.0", "", None])
    out = combine(boundaries=[-0.5, 0.5, 1.5, 2.5], embedding_dim=4).parse({"c": rows})
    assert out["f.values"].tolist() == [4, 1, 1, 1]  # sum 3 >= 2.5; empty rows take 0
    out = combine(combiner="mean", num_buckets=10, embedding_dim=4).parse({"c": rows})
    assert out["f.values"].tolist() == [1, 0, 0, 0]  # mean 1.5 truncated to id 1
    tags = combine(
        num_buckets=10, embedding_dim=4, value_map={"t1": 1.0, "t2": 2.0}, default_value="7"
    )
    out = tags.parse({"c": pa.array(["t1\x1dt2\x1dunknown", "unknown", None])})
    assert out["f.values"].tolist() == [3, 7, 7]  # unknown tags are dropped


def test_combine_fg_none_reads_ids():
    ids = feature(
        "combine_feature", FG_NONE, num_buckets=10, embedding_dim=4, fg_encoded_default_value="0"
    )
    out = ids.parse({"f": pa.array([1, 2, None, 3])})
    assert out["f.values"].tolist() == [1, 2, 0, 3] and out["f.lengths"].tolist() == [1, 1, 1, 1]


def test_combine_errors():
    with pytest.raises(FeatureError, match=r"\(column 'c'\): expected numbers .*'x' at row 1"):
        combine().parse({"c": pa.array(["1", "2\x1dx"])})
    with pytest.raises(FeatureError, match=r"combined value 12 is no id in \[0, 10\).* at row 0"):
        combine(num_buckets=10, embedding_dim=4).parse({"c": pa.array(["5\x1d7"])})
    with pytest.raises(FeatureError, match="combiner 'gap_min' is not supported"):
        combine(combiner="gap_min")
    with pytest.raises(FeatureError, match="combiner must be one of"):
        combine(combiner="median")


def test_config_checks_accept_the_kinds_without_hash_bucket_size():
    from recforge.config.support import check_support
    from recforge.config.value_checks import check_values
    from recforge.protos import pipeline_pb2

    config = pipeline_pb2.EasyRecConfig()
    config.feature_configs.add().combine_feature.CopyFrom(
        feature_pb2.CombineFeature(
            feature_name="cb", expression="user:c", num_buckets=10, embedding_dim=4
        )
    )
    config.feature_configs.add().kv_dot_product.CopyFrom(
        feature_pb2.KvDotProduct(
            feature_name="kv", query="user:q", document="item:d", kv_delimiter=1
        )
    )
    problems: list = []
    check_values(config, lambda field, message: problems.append((field, message)))
    assert problems == []
    # kv_delimiter is a float in the schema: setting it is refused, the rest is supported
    assert [path for path, _ in check_support(config)] == [
        "feature_configs[1].kv_dot_product.kv_delimiter"
    ]


# ------------------------------------------------------------------------------ sequence combine
@pytest.mark.parametrize("combiner,expected", [("sum", [3, 3, 4, 0]), ("mean", [1, 3, 4, 0])])
@pytest.mark.parametrize("default_value", ["0", ""])
def test_sequence_combine_feature(combiner, expected, default_value):
    sequence = feature(
        "sequence_combine_feature",
        expression="user:s",
        num_buckets=10,
        embedding_dim=4,
        combiner=combiner,
        default_value=default_value,
        sequence_length=50,
    )
    assert sequence.is_sequence and sequence.sequence_length == 50
    out = sequence.parse({"s": pa.array(["1\x1d2;3", "4", ""])})
    # elements are combined one by one; an empty sequence is one default element
    assert out["f.values"].tolist() == expected
    assert out["f.lengths"].tolist() == [2, 1, 1]


def test_combine_element_of_a_sequence_feature_and_truncation():
    from recforge.features import create_features

    group = feature_pb2.SequenceFeature(sequence_name="seq", sequence_length=2)
    group.features.add().combine_feature.CopyFrom(
        feature_pb2.CombineFeature(
            feature_name="tags",
            expression="item:tags",
            num_buckets=10,
            embedding_dim=4,
            value_map={"t1": 1.0, "t2": 2.0},
        )
    )
    config = feature_pb2.FeatureConfig(sequence_feature=group)
    (element,) = create_features([config], FG_DAG)
    assert element.name == "seq__tags" and element.inputs == ["seq__tags"]
    out = element.parse({"seq__tags": pa.array(["t1\x1dt2;t1;t2", None])})
    assert out["seq__tags.values"].tolist() == [3, 1, 0]  # the third element is cut
    assert out["seq__tags.lengths"].tolist() == [2, 1]
    (encoded,) = create_features([config], FG_NONE)
    out = encoded.parse({"seq__tags": pa.array(["3;1", None])})
    assert out["seq__tags.values"].tolist() == [3, 1]
    assert out["seq__tags.lengths"].tolist() == [2, 0]


def test_sequence_combine_needs_ids():
    with pytest.raises(FeatureError, match="needs boundaries"):
        feature("sequence_combine_feature", expression="user:s", sequence_length=5)


def test_sequence_kv_dot_product_sequence_fields_and_mismatched_lengths():
    sequence = feature(
        "sequence_kv_dot_product",
        query="user:q",
        document="user:d",
        separator="|",
        boundaries=[0.5, 1.5],
        embedding_dim=4,
        sequence_length=3,
        sequence_fields=["d"],
    )
    out = sequence.parse({"q": pa.array(["a:1|b:2", "c"]), "d": pa.array(["a:1;b:1|a:1;z", "c:1"])})
    # a.a = 1 -> 1; b + a = 3 -> 2; no shared key 0 -> 0; c.c = 1 -> 1
    assert out["f.values"].tolist() == [1, 2, 0, 1] and out["f.lengths"].tolist() == [3, 1]
    both = feature(
        "sequence_kv_dot_product",
        query="item:q",
        document="item:d",
        boundaries=[0.5],
        embedding_dim=4,
        sequence_length=3,
    )
    with pytest.raises(
        FeatureError, match=r"sequence inputs 'd' and 'q' have 1 and 2 elements at row 0"
    ):
        both.parse({"q": pa.array(["a;b"]), "d": pa.array(["a"])})
    with pytest.raises(FeatureError, match="no input is a sequence"):
        feature(
            "sequence_kv_dot_product",
            query="user:q",
            document="user:d",
            boundaries=[0.5],
            embedding_dim=4,
            sequence_length=3,
        )
