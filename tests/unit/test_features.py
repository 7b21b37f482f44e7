"""Tests for recforge.features: parsing every feature kind and every documented error."""

from __future__ import annotations

import functools
import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from recforge.features import (
    FG_DAG,
    FG_NONE,
    FeatureError,
    IdFeature,
    RawFeature,
    create_feature,
    create_features,
)
from recforge.protos import feature_pb2
from tests.helpers.paths import REPO_ROOT

SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")


# the features below read raw columns (fg_mode FG_DAG); FG_NONE is tested in test_fg_mode.py
def id_feature(**kwargs) -> IdFeature:
    kwargs.setdefault("feature_name", "f")
    kwargs.setdefault("embedding_dim", 8)
    return IdFeature(feature_pb2.IdFeature(**kwargs), fg_mode=FG_DAG)


def raw_feature(**kwargs) -> RawFeature:
    kwargs.setdefault("feature_name", "f")
    return RawFeature(feature_pb2.RawFeature(**kwargs), fg_mode=FG_DAG)


def ids(feature, column, name="f"):
    out = feature.parse({name: column})
    assert out[f"{feature.name}.values"].dtype == np.int64
    assert out[f"{feature.name}.lengths"].dtype == np.int32
    return out[f"{feature.name}.values"].tolist(), out[f"{feature.name}.lengths"].tolist()


# ---------------------------------------------------------------------------- id features
class TestNumBuckets:
    def test_int_ids_and_nulls(self):
        f = id_feature(num_buckets=10)
        assert ids(f, pa.array([3, None, 0, 9])) == ([3, 0, 9], [1, 0, 1, 1])
        assert f.is_sparse and f.num_embeddings == 10 and f.output_dim == 8

    def test_digit_strings_floats_and_chunks(self):
        f = id_feature(num_buckets=10)
        assert ids(f, pa.array(["3", " 4", None, ""])) == ([3, 4], [1, 1, 0, 0])
        assert ids(f, pa.array([1.0, None, 2.0])) == ([1, 2], [1, 0, 1])
        chunked = pa.chunked_array([pa.array([1, 2]), pa.array([3])])
        assert ids(f, chunked) == ([1, 2, 3], [1, 1, 1])
        assert ids(f, pa.array([1, 2]).dictionary_encode()) == ([1, 2], [1, 1])

    def test_all_null_column(self):
        f = id_feature(num_buckets=10)
        assert ids(f, pa.nulls(3)) == ([], [0, 0, 0])

    def test_out_of_range(self):
        f = id_feature(feature_name="user", num_buckets=5382)
        with pytest.raises(FeatureError) as err:
            f.parse({"user": pa.array([1, 2, 3, 6000])})
        message = str(err.value)
        assert "feature 'user' (column 'user')" in message
        assert "6000 out of range [0, 5382)" in message and "row 3" in message

    def test_negative(self):
        f = id_feature(feature_name="user", expression="user:uid", num_buckets=10)
        with pytest.raises(FeatureError, match=r"column 'uid'.*negative id -2.*row 1"):
            f.parse({"uid": pa.array([1, -2])})

    def test_non_integer(self):
        f = id_feature(num_buckets=10)
        with pytest.raises(FeatureError, match=r"column 'f'.*non-integer value 'x' at row 1"):
            f.parse({"f": pa.array(["1", "x"])})
        with pytest.raises(FeatureError, match=r"expected integer ids.*1.5"):
            f.parse({"f": pa.array([1.0, 1.5])})

    def test_default_bucketize_value_replaces_out_of_range(self):
        f = id_feature(num_buckets=10, default_bucketize_value=0)
        assert ids(f, pa.array([3, 11, -1])) == ([3, 0, 0], [1, 1, 1])

    def test_missing_column(self):
        f = id_feature(feature_name="item", num_buckets=10)
        with pytest.raises(FeatureError, match=r"column 'item'.*not found"):
            f.parse({"other": pa.array([1])})


class TestMultiValue:
    def test_separator_strings(self):
        f = id_feature(num_buckets=100, separator="|")
        column = pa.array(["1|2|3", None, "", "4", "5||6"])
        assert ids(f, column) == ([1, 2, 3, 4, 5, 6], [3, 0, 0, 1, 2])

    def test_default_separator(self):
        f = id_feature(num_buckets=100)
        assert ids(f, pa.array(["1\x1d2", "3"])) == ([1, 2, 3], [2, 1])

    def test_list_column(self):
        f = id_feature(num_buckets=100)
        column = pa.array([[1, 2], None, [], [3, None]])
        assert ids(f, column) == ([1, 2, 3], [2, 0, 0, 1])
        assert ids(f, column.slice(1)) == ([3], [0, 0, 1])

    def test_default_value_fills_empty_bags(self):
        f = id_feature(num_buckets=100, separator="|", default_value="7|8")
        assert ids(f, pa.array(["1", None, "", "2|3"])) == ([1, 7, 8, 7, 8, 2, 3], [1, 2, 2, 2])
        # fg_encoded_default_value is for FG_NONE data only (as in TorchEasyRec)
        g = id_feature(num_buckets=100, fg_encoded_default_value="5")
        assert ids(g, pa.array([None, 1])) == ([1], [0, 1])


class TestHashBuckets:
    def test_matches_torcheasyrec_buckets(self):
        # the buckets TorchEasyRec's own id-feature tests pin for hash_bucket_size 100
        f = id_feature(hash_bucket_size=100)
        values = ["abc", "efg", "hij", "xyz", "1", "2", "3", "4"]
        assert ids(f, pa.array(values))[0] == [33, 44, 66, 13, 95, 70, 13, 56]
        assert ids(f, pa.array([1, 2, None, 3]))[0] == [95, 70, 13]

    def test_int_hashes_like_string(self):
        f = id_feature(hash_bucket_size=1000)
        assert ids(f, pa.array([123, 45]))[0] == ids(f, pa.array(["123", "45"]))[0]
        assert ids(f, pa.array([123.0]))[0] == ids(f, pa.array(["123"]))[0]

    def test_multi_value_hash(self):
        f = id_feature(hash_bucket_size=50, separator="|")
        values, lengths = ids(f, pa.array(["a|b", None]))
        assert lengths == [2, 0] and values == ids(f, pa.array(["a", "b"]))[0]
        assert all(0 <= v < 50 for v in values)


class TestVocab:
    def test_vocab_list(self):
        f = id_feature(vocab_list=["a", "b", "c"])
        assert f.num_embeddings == 5
        assert ids(f, pa.array(["a", "c", "zzz", None])) == ([2, 4, 1], [1, 1, 1, 0])

    def test_vocab_default_value(self):
        f = id_feature(vocab_list=["a", "b"], default_value="b")
        assert ids(f, pa.array([None, "a"])) == ([3, 2], [1, 1])
        g = id_feature(vocab_list=["a", "b"], default_value="none")
        assert ids(g, pa.array([None, "a"])) == ([0, 2], [1, 1])

    def test_vocab_of_ints(self):
        f = id_feature(vocab_list=["10", "20"])
        assert ids(f, pa.array([20, 10, 30])) == ([3, 2, 1], [1, 1, 1])

    def test_vocab_dict(self):
        f = id_feature(vocab_dict={"a": 2, "b": 5})
        assert f.num_embeddings == 6
        assert ids(f, pa.array(["b", "a", "x"])) == ([5, 2, 1], [1, 1, 1])


class TestIdConfigErrors:
    def test_needs_exactly_one_kind(self):
        with pytest.raises(FeatureError, match="exactly one of num_buckets"):
            id_feature()
        with pytest.raises(FeatureError, match="exactly one of"):
            id_feature(num_buckets=3, hash_bucket_size=4)

    def test_embedding_dim_required(self):
        with pytest.raises(FeatureError, match=r"feature 'f'.*embedding_dim > 0"):
            id_feature(num_buckets=3, embedding_dim=0)

    def test_bad_pooling_and_init_fn(self):
        with pytest.raises(FeatureError, match="pooling"):
            id_feature(num_buckets=3, pooling="max")
        with pytest.raises(FeatureError, match="init_fn"):
            id_feature(num_buckets=3, init_fn="nn.init.not_a_function_")


class TestEmbeddingConfig:
    def test_emb_bag_config(self):
        from torchrec import PoolingType

        f = id_feature(
            feature_name="item",
            num_buckets=100,
            embedding_dim=16,
            pooling="mean",
            init_fn="nn.init.uniform_,a=-0.01,b=0.01",
        )
        cfg = f.emb_bag_config
        assert cfg.name == "item_emb" and cfg.feature_names == ["item"]
        assert cfg.num_embeddings == 100 and cfg.embedding_dim == 16
        assert cfg.pooling == PoolingType.MEAN
        assert isinstance(cfg.init_fn, functools.partial)
        assert cfg.init_fn.func is torch.nn.init.uniform_
        assert cfg.init_fn.keywords == {"a": -0.01, "b": 0.01}
        weight = torch.empty(10, 4)
        cfg.init_fn(weight)
        assert weight.abs().max() <= 0.01

    def test_shared_embedding_name_and_trainable(self):
        f = id_feature(num_buckets=10, embedding_name="shared", trainable=False)
        assert f.emb_bag_config.name == "shared" and not f.trainable

    def test_dense_has_no_table(self):
        f = raw_feature(value_dim=3)
        assert f.emb_bag_config is None and not f.is_sparse and f.output_dim == 3


# ---------------------------------------------------------------------------- raw features
def dense(feature, column, name="f"):
    out = feature.parse({name: column})[f"{feature.name}.values"]
    assert out.dtype == np.float32
    return out


class TestRawFeature:
    def test_values_and_nulls(self):
        f = raw_feature()
        np.testing.assert_allclose(dense(f, pa.array([1.5, None, 3])), [[1.5], [0.0], [3.0]])
        g = raw_feature(default_value="-1")
        np.testing.assert_allclose(dense(g, pa.array([None, 2], pa.int64())), [[-1], [2]])
        np.testing.assert_allclose(dense(g, pa.nulls(2)), [[-1], [-1]])

    def test_numeric_strings(self):
        f = raw_feature()
        np.testing.assert_allclose(
            dense(f, pa.array(["1.5", "", None, "2e3"])), [[1.5], [0], [0], [2000]]
        )

    def test_value_dim_lists_and_strings(self):
        f = raw_feature(value_dim=2, separator="|")
        np.testing.assert_allclose(
            dense(f, pa.array(["1|2", None, "3|", ""])), [[1, 2], [0, 0], [3, 0], [0, 0]]
        )
        np.testing.assert_allclose(
            dense(f, pa.array([[1.0, 2.0], None, [3.0, None]])), [[1, 2], [0, 0], [3, 0]]
        )
        g = raw_feature(value_dim=2, default_value="7\x1d8")
        np.testing.assert_allclose(dense(g, pa.array([None, [1.0, 2.0]])), [[7, 8], [1, 2]])

    def test_wrong_list_length(self):
        f = raw_feature(value_dim=2)
        with pytest.raises(FeatureError, match=r"expected 2 values per row.*found 3 at row 1"):
            f.parse({"f": pa.array([[1, 2], [1, 2, 3]])})

    def test_non_numeric(self):
        f = raw_feature(feature_name="price")
        with pytest.raises(FeatureError) as err:
            f.parse({"price": pa.array(["1"] * 17 + ["abc"])})
        assert str(err.value) == (
            "feature 'price' (column 'price'): expected numbers, found non-numeric value 'abc' "
            "at row 17"
        )

    def test_nan_is_an_error(self):
        f = raw_feature(feature_name="price", expression="item:cost")
        with pytest.raises(FeatureError, match=r"column 'cost'.*found nan at row 1"):
            f.parse({"cost": pa.array([1.0, float("nan")])})
        with pytest.raises(FeatureError, match=r"column 'cost'.*found nan at row 0"):
            f.parse({"cost": pa.array(["nan"])})

    def test_normalizers(self):
        log = raw_feature(normalizer="method=log10,threshold=1e-10,default=-10")
        np.testing.assert_allclose(dense(log, pa.array([100.0, 0.0, -5.0])), [[2], [-10], [-10]])
        z = raw_feature(normalizer="method=zscore,mean=2,standard_deviation=4")
        np.testing.assert_allclose(dense(z, pa.array([2.0, 10.0])), [[0], [2]])
        mm = raw_feature(normalizer="method=minmax,min=0,max=10")
        np.testing.assert_allclose(dense(mm, pa.array([5, 10])), [[0.5], [1.0]])

    def test_bad_normalizer(self):
        with pytest.raises(FeatureError, match="method=log10"):
            raw_feature(normalizer="method=sqrt")
        with pytest.raises(FeatureError, match="missing parameters"):
            raw_feature(normalizer="method=minmax,min=0")
        with pytest.raises(FeatureError, match="unknown parameter 'foo'"):
            raw_feature(normalizer="method=zscore,foo=1")

    def test_boundaries(self):
        f = raw_feature(boundaries=[0, 10, 100], embedding_dim=4)
        assert f.is_sparse and f.num_embeddings == 4 and f.output_dim == 4
        assert ids(f, pa.array([-1.0, 0.0, 5.0, 10.0, 1000.0, None])) == (
            [0, 1, 1, 2, 3, 1],
            [1, 1, 1, 1, 1, 1],
        )
        assert f.emb_bag_config.num_embeddings == 4

    def test_boundaries_value_dim(self):
        f = raw_feature(boundaries=[0.5], embedding_dim=4, value_dim=2)
        assert ids(f, pa.array([[0.0, 1.0], [1.0, 1.0]])) == ([0, 1, 1, 1], [2, 2])

    def test_boundaries_need_embedding_dim(self):
        with pytest.raises(FeatureError, match="embedding_dim"):
            raw_feature(boundaries=[1.0])
        with pytest.raises(FeatureError, match="strictly increasing"):
            raw_feature(boundaries=[2.0, 1.0], embedding_dim=4)


# ---------------------------------------------------------------------------- factory
class TestCreateFeatures:
    def test_dispatch_and_inputs(self):
        a = feature_pb2.FeatureConfig()
        a.id_feature.feature_name = "user"
        a.id_feature.expression = "user:user_id"
        a.id_feature.hash_bucket_size = 10
        a.id_feature.embedding_dim = 4
        b = feature_pb2.FeatureConfig()
        b.raw_feature.feature_name = "price"
        features = create_features([a, b], fg_mode=FG_DAG)
        assert [type(f) for f in features] == [IdFeature, RawFeature]
        assert features[0].inputs == ["user_id"] and features[1].inputs == ["price"]
        # FG output (TorchEasyRec's default FG_NONE) is read under the feature's name
        assert [f.inputs for f in create_features([a, b])] == [["user"], ["price"]]

    def test_duplicate_names(self):
        a = feature_pb2.FeatureConfig()
        a.raw_feature.feature_name = "x"
        with pytest.raises(FeatureError, match="feature 'x': duplicate feature name"):
            create_features([a, a])

    def test_unknown_kind(self):
        with pytest.raises(FeatureError, match="no feature kind set"):
            create_feature(feature_pb2.FeatureConfig())


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_DATA, "criteo-sample")),
    reason="../shared/data/criteo-sample is absent (real data is not shipped with the repo)",
)
def test_criteo_sample_columns():
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(os.path.join(SHARED_DATA, "criteo-sample", "criteo_sample.txt"))
    c1 = id_feature(feature_name="C20", hash_bucket_size=1000)
    values, lengths = ids(c1, table["C20"], name="C20")
    non_empty = sum(1 for v in table["C20"].to_pylist() if v)
    assert len(lengths) == 200 and sum(lengths) == non_empty and 0 < non_empty < 200
    i1 = raw_feature(feature_name="I1", normalizer="method=log10,threshold=1e-10,default=-10")
    assert dense(i1, table["I1"], name="I1").shape == (200, 1)


@pytest.mark.parametrize("fg_mode", [FG_NONE, FG_DAG])
@pytest.mark.parametrize(
    "column, shown",
    [
        (pa.array([1, 2**64 - 1], pa.uint64()), "18446744073709551615"),
        (pa.array([1.0, 1e20]), r"(1e\+20|100000000000000000000)"),
        (pa.array(["1", "99999999999999999999"]), "'99999999999999999999'"),
    ],
)
def test_ids_beyond_int64_are_refused_with_their_value(fg_mode, column, shown):
    config = feature_pb2.FeatureConfig()
    config.id_feature.CopyFrom(
        feature_pb2.IdFeature(feature_name="u", num_buckets=10, embedding_dim=4)
    )
    (feature,) = create_features([config], fg_mode=fg_mode)
    with pytest.raises(FeatureError, match=rf"{shown} at row 1") as info:
        feature.parse({"u": column})
    assert "-9223372036854775808" not in str(info.value) and "id -1 " not in str(info.value)


def test_dense_values_beyond_float32_are_refused():
    config = feature_pb2.FeatureConfig()
    config.raw_feature.feature_name = "price"
    (feature,) = create_features([config], fg_mode=FG_DAG)
    with pytest.raises(FeatureError, match=r"float32's range .*found 1e\+40 at row 1"):
        feature.parse({"price": pa.array([1.0, 1e40])})


def test_init_fn_arguments_are_checked_when_parsed():
    from recforge.features.base_feature import parse_init_fn

    with pytest.raises(FeatureError, match=r"does not take these arguments: .*'low'"):
        parse_init_fn("nn.init.uniform_,low=-0.1", "user")
    with pytest.raises(FeatureError, match=r"does not take these arguments: .*must be float"):
        parse_init_fn('nn.init.uniform_,a="x"', "user")
    parse_init_fn("nn.init.dirac_")  # refuses the 2-d trial tensor, not its arguments
