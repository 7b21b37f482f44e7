"""Sequence variants of combo / lookup / match / expr features, on hand-made rows."""

import pyarrow as pa
import pytest
from google.protobuf import text_format

from recforge.features import FG_DAG, FG_NONE, FeatureError, create_feature_group
from recforge.protos import feature_pb2


def group(text: str, fg_mode: int = FG_DAG) -> list:
    return create_feature_group(text_format.Parse(text, feature_pb2.FeatureConfig()), fg_mode)


def sparse(out: dict, name: str) -> tuple[list, list]:
    return out[f"{name}.values"].tolist(), out[f"{name}.lengths"].tolist()


def test_combo_element_of_a_sequence_feature():
    (f,) = group(
        """sequence_feature { sequence_name: "s" sequence_length: 50 features { combo_feature {
        feature_name: "c" hash_bucket_size: 100 embedding_dim: 4
        expression: ["user:id_str", "item:iid_str"] } } }"""
    )
    assert f.name == "s__c" and f.is_sequence and f.sequence_length == 50
    assert f.inputs == ["id_str", "s__iid_str"]
    cols = {
        "id_str": pa.array(["ua", "", "ub"]),
        "s__iid_str": pa.array(["abc\x1defg;hij", "", "hij"]),
    }
    # per element: ua_abc (2; the first id of the element, TorchEasyRec's value_dim 1),
    # ua_hij (3); row 1 has no combination; ub_hij (23)
    assert sparse(f.parse(cols), "s__c") == ([2, 3, 23], [2, 0, 1])


def test_sequence_lookup_with_boundaries_matches_torcheasyrec():
    (f,) = group(
        """sequence_lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate"
        boundaries: [-0.5, 0.5, 1.5, 2.5] embedding_dim: 4 sequence_length: 50 }"""
    )
    cols = {
        "kv": pa.array(["ca:1\x1dcb:2"] * 5 + ["", ""]),
        "cate": pa.array(["ca\x1dcb;ca", "ca", "ca\x1dcd;ce", "cd", "", "ca", ""]),
    }
    # element sums: 3 1 | 1 | 1 0 | 0 | 0 (an empty element) | 0 | 0 -> buckets
    assert sparse(f.parse(cols), "l") == ([4, 2, 2, 2, 1, 1, 1, 1, 1], [2, 1, 2, 1, 1, 1, 1])


def test_sequence_length_cuts_and_missing_keys_are_left_out():
    (f,) = group(
        """sequence_lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate"
        num_buckets: 10 embedding_dim: 4 sequence_length: 2 default_value: "" }"""
    )
    cols = {"kv": pa.array(["a:1\x1db:2"]), "cate": pa.array(["a;x;b"])}
    assert sparse(f.parse(cols), "l") == ([1], [1])  # "b" is cut; "x" has no value


def test_sequence_expr_per_element():
    (f,) = group(
        """sequence_expr_feature { feature_name: "e" variables: ["user:age", "item:item_age"]
        expression: "item_age - age" boundaries: [0] embedding_dim: 4 sequence_length: 5 }"""
    )
    cols = {"age": pa.array([20, 30]), "item_age": pa.array(["18;25", "40"])}
    assert sparse(f.parse(cols), "e") == ([0, 1, 1], [2, 1])


def test_sequence_match_per_element():
    (f,) = group(
        """sequence_match_feature { feature_name: "m" nested_map: "user:kkv" pkey: "item:cate"
        skey: "item:brand" num_buckets: 10 embedding_dim: 4 sequence_length: 5 }"""
    )
    cols = {
        "kkv": pa.array(["ca^ba:1,bb:2|cb^ba:3"]),
        "cate": pa.array(["ca;cb;ca"]),
        "brand": pa.array(["bb;ba;ba"]),
    }
    assert sparse(f.parse(cols), "m") == ([2, 3, 1], [3])


def test_sequence_inputs_of_a_row_must_have_as_many_elements():
    (f,) = group(
        """sequence_match_feature { feature_name: "m" nested_map: "user:kkv" pkey: "item:cate"
        skey: "item:brand" num_buckets: 10 embedding_dim: 4 sequence_length: 5 }"""
    )
    cols = {
        "kkv": pa.array(["", ""]),
        "cate": pa.array(["a", "a;b"]),
        "brand": pa.array(["a", "b"]),
    }
    with pytest.raises(FeatureError, match=r"'brand' and 'cate' have 1 and 2 elements at row 1"):
        f.parse(cols)


def test_dense_sequences_are_refused():
    with pytest.raises(FeatureError, match="dense number sequences are not built yet"):
        group(
            """sequence_lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate"
            sequence_length: 5 }"""
        )


def test_fg_none_reads_the_id_sequence():
    (f,) = group(
        """sequence_combo_feature { feature_name: "c" expression: ["user:a", "item:b"]
        hash_bucket_size: 10 embedding_dim: 4 sequence_length: 2 }""",
        FG_NONE,
    )
    assert f.inputs == ["c"]
    assert sparse(f.parse({"c": pa.array(["1;2;3", None])}), "c") == ([1, 2], [2, 0])
