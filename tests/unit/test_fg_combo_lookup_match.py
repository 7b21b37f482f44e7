"""combo / lookup / match features and TorchEasyRec's FG hash, on hand-made rows.

Expected ids are worked out from TorchEasyRec's documented semantics; hashed buckets are
the ones TorchEasyRec's own tests pin for its FG (pyfg), so recforge's ids agree with it.
"""

import numpy as np
import pyarrow as pa
import pytest

from recforge.features import FG_BUCKETIZE, FG_DAG, FG_NONE, FeatureError, create_feature
from recforge.features.combo_feature import ComboFeature
from recforge.features.hashing import hash_bytes, std_hash
from recforge.features.lookup_feature import LookupFeature
from recforge.features.match_feature import MatchFeature
from recforge.protos import feature_pb2

USERS = pa.array(["ua\x1dub", "uc\x1dud", "uee\x1duf", "ug", "uh", "uj", "", None, ""])
ITEMS = pa.array(["ia\x1dib", "ic", "", "id\x1die", "if", None, "ig", "ij", ""])


def sparse(out: dict, name: str) -> tuple[list, list]:
    return out[f"{name}.values"].tolist(), out[f"{name}.lengths"].tolist()


def dense(out: dict, name: str) -> list:
    return out[f"{name}.values"].reshape(-1).tolist()


# ------------------------------------------------------------------------------ hashing
class TestHash:
    def test_torcheasyrec_buckets(self):
        # TorchEasyRec's FG buckets for hash_bucket_size 100 (its id / combo / lookup tests)
        pinned = {"abc": 33, "efg": 44, "hij": 66, "xyz": 13, "1": 95, "2": 70, "3": 13}
        pinned.update({"4": 56, "ua_ia": 37, "ub_ib": 97, "x": 35, "y": 30, "z": 54})
        got = std_hash(pa.array(list(pinned))) % np.uint64(100)
        assert got.tolist() == list(pinned.values())

    def test_known_full_values(self):
        # libstdc++ std::hash<std::string> (std::_Hash_bytes, seed 0xc70f6907) of "" and "a"
        got = hash_bytes(pa.array(["", "abc"]))
        assert got[0] == np.uint64(6142509188972423790)
        assert hash_bytes(pa.array(["abc"]))[0] == got[1]

    def test_lengths_across_word_boundaries_and_utf8(self):
        words = ["a" * n for n in range(0, 20)] + ["中文", "é" * 9]
        whole = hash_bytes(pa.array(words))
        one_by_one = [int(hash_bytes(pa.array([w]))[0]) for w in words]
        assert whole.tolist() == one_by_one
        assert len(set(one_by_one)) == len(words)
        sliced = hash_bytes(pa.array(words).slice(5, 4))
        assert sliced.tolist() == one_by_one[5:9]

    def test_ints_and_nulls(self):
        assert std_hash(pa.array([1, None])).tolist() == std_hash(pa.array(["1", ""])).tolist()


# ------------------------------------------------------------------------------ combo
def combo(**kwargs) -> ComboFeature:
    kwargs.setdefault("feature_name", "c")
    kwargs.setdefault("expression", ["user:u", "item:i"])
    kwargs.setdefault("embedding_dim", 4)
    fg_mode = kwargs.pop("fg_mode", FG_DAG)
    return ComboFeature(feature_pb2.ComboFeature(**kwargs), fg_mode)


class TestCombo:
    def test_hash_cross(self):
        f = combo(hash_bucket_size=100)
        assert f.inputs == ["u", "i"] and f.num_embeddings == 100 and f.is_sparse
        values, lengths = sparse(f.parse({"u": USERS, "i": ITEMS}), "c")
        # ua_ia ua_ib ub_ia ub_ib | uc_ic ud_ic | (empty i) | ug_id ug_ie | uh_if | rest empty
        assert values == [37, 90, 5, 97, 60, 56, 40, 57, 55]
        assert lengths == [4, 2, 0, 2, 1, 0, 0, 0, 0]

    def test_default_value_fills_rows_without_combinations(self):
        values, lengths = sparse(
            combo(hash_bucket_size=100, default_value="xyz").parse({"u": USERS, "i": ITEMS}), "c"
        )
        assert lengths == [4, 2, 1, 2, 1, 1, 1, 1, 1]
        assert values[6] == 13  # "xyz"

    def test_vocab_list_reserves_default_and_oov(self):
        f = combo(vocab_list=["ua_ia", "ua_ib", "ub_ia"], default_value="xyz")
        assert f.num_embeddings == 5
        u = pa.array(["ua\x1dub", "ua", None])
        i = pa.array(["ia\x1dib", "ib", "ia"])
        # ub_ib is out of vocabulary (1); the null row takes the default (0)
        assert sparse(f.parse({"u": u, "i": i}), "c") == ([2, 3, 4, 1, 3, 0], [4, 1, 1])

    def test_vocab_dict_and_list_columns_and_three_inputs(self):
        f = combo(vocab_dict={"1_a_x": 2, "2_a_x": 3}, expression=["a", "b", "c"])
        cols = {
            "a": pa.array([[1, 2], [3]]),
            "b": pa.array(["a", "a"]),
            "c": pa.array([["x"], []]),
        }
        assert sparse(f.parse(cols), "c") == ([2, 3], [2, 0])

    def test_const_input(self):
        f = combo(hash_bucket_size=100, expression=["user:u", "const:ia"])
        assert f.inputs == ["u"]
        assert sparse(f.parse({"u": pa.array(["ua"])}), "c") == ([37], [1])

    def test_fg_none_reads_encoded_ids(self):
        f = combo(hash_bucket_size=100, fg_mode=FG_NONE)
        assert f.inputs == ["c"]
        assert sparse(f.parse({"c": pa.array(["1\x032", None, "3"])}), "c") == (
            [1, 2, 3],
            [2, 0, 1],
        )
        with pytest.raises(FeatureError, match=r"'c'.*100.*row 0"):
            f.parse({"c": pa.array(["100"])})

    def test_fg_bucketize_hashes_the_combinations(self):
        f = combo(hash_bucket_size=100, fg_mode=FG_BUCKETIZE)
        assert sparse(f.parse({"c": pa.array(["ua_ia"])}), "c") == ([37], [1])

    def test_needs_two_inputs(self):
        with pytest.raises(FeatureError, match="2 or more inputs"):
            combo(hash_bucket_size=10, expression=["u"])

    def test_needs_one_id_kind(self):
        with pytest.raises(FeatureError, match="exactly one of"):
            combo()

    def test_missing_column_is_named(self):
        with pytest.raises(FeatureError, match=r"feature 'c' \(column 'i'\): column not found"):
            combo(hash_bucket_size=10).parse({"u": USERS})

    def test_registered(self):
        cfg = feature_pb2.FeatureConfig()
        cfg.combo_feature.CopyFrom(
            feature_pb2.ComboFeature(
                feature_name="c", expression=["u", "i"], hash_bucket_size=5, embedding_dim=4
            )
        )
        assert isinstance(create_feature(cfg, FG_DAG), ComboFeature)


# ------------------------------------------------------------------------------ lookup
KV = pa.array(["ca:1\x1dcb:2"] * 5 + ["", None])
KEYS = pa.array(["ca\x1dcb", "ca", "ca\x1dcd", "cd", "", "ca", None])


def lookup(**kwargs) -> LookupFeature:
    kwargs.setdefault("feature_name", "l")
    kwargs.setdefault("map", "user:kv")
    kwargs.setdefault("key", "item:cate")
    fg_mode = kwargs.pop("fg_mode", FG_DAG)
    return LookupFeature(feature_pb2.LookupFeature(**kwargs), fg_mode)


class TestLookup:
    @pytest.mark.parametrize(
        "combiner, expected",
        [
            ("sum", [3, 1, 1, 0, 0, 0, 0]),
            ("mean", [1.5, 1, 1, 0, 0, 0, 0]),
            ("avg", [1.5, 1, 1, 0, 0, 0, 0]),
            ("min", [1, 1, 1, 0, 0, 0, 0]),
            ("max", [2, 1, 1, 0, 0, 0, 0]),
            ("count", [2, 1, 1, 0, 0, 0, 0]),
        ],
    )
    def test_dense_combiners(self, combiner, expected):
        f = lookup(combiner=combiner)
        assert not f.is_sparse and f.value_dim == 1 and f.inputs == ["kv", "cate"]
        assert dense(f.parse({"kv": KV, "cate": KEYS}), "l") == expected

    def test_default_value_for_missing_keys(self):
        out = lookup(default_value="-1").parse({"kv": KV, "cate": KEYS})
        assert dense(out, "l") == [3, 1, 1, -1, -1, -1, -1]

    def test_map_column_and_list_keys(self):
        kv = pa.array(
            [{"ca": 1, "cb": 2}, {"ca": 1}, {}, None], type=pa.map_(pa.string(), pa.int64())
        )
        keys = pa.array([["ca", "cb"], ["cb"], ["ca"], ["ca"]])
        assert dense(lookup().parse({"kv": kv, "cate": keys}), "l") == [3, 0, 0, 0]

    def test_integer_keys_in_an_integer_map(self):
        kv = pa.array([{1: 0.5, 2: 1.5}], type=pa.map_(pa.int64(), pa.float32()))
        out = lookup().parse({"kv": kv, "cate": pa.array([[2, 3]])})
        assert dense(out, "l") == [1.5]

    def test_keys_of_other_rows_do_not_match(self):
        kv = pa.array(["a:1", "b:5"])
        assert dense(lookup().parse({"kv": kv, "cate": pa.array(["b", "a"])}), "l") == [0, 0]

    @pytest.mark.parametrize(
        "combiner, values, lengths",
        [
            ("sum", [4, 2, 2, 1, 1, 1, 1], [1] * 7),
            ("mean", [3, 2, 2, 1, 1, 1, 1], [1] * 7),
            ("", [2, 3, 2, 2, 1, 1, 1, 1], [2, 1, 1, 1, 1, 1, 1]),
        ],
    )
    def test_boundaries(self, combiner, values, lengths):
        f = lookup(boundaries=[-0.5, 0.5, 1.5, 2.5], embedding_dim=4, combiner=combiner)
        assert f.is_sparse and f.num_embeddings == 5
        assert sparse(f.parse({"kv": KV, "cate": KEYS}), "l") == (values, lengths)

    def test_boundaries_with_empty_default_leave_rows_empty(self):
        f = lookup(boundaries=[0.5, 1.5], embedding_dim=4, default_value="")
        assert sparse(f.parse({"kv": KV, "cate": KEYS}), "l") == ([2, 1, 1], [1, 1, 1, 0, 0, 0, 0])

    def test_normalizer_applies_after_combining(self):
        f = lookup(normalizer="method=expression,expr=x*10")
        assert dense(f.parse({"kv": KV, "cate": KEYS}), "l")[:2] == [30, 10]

    def test_value_dim_vectors(self):
        kv = pa.array(["ca:1,2\x1dcb:3,4"] * 3 + ["", "ca:1,2"])
        keys = pa.array(["cb", "cd", "", "ca", None])
        f = lookup(value_dim=2, combiner="")
        assert f.value_dim == 2
        out = f.parse({"kv": kv, "cate": keys})["l.values"].tolist()
        assert out == [[3, 4], [0, 0], [0, 0], [0, 0], [0, 0]]

    @pytest.mark.parametrize(
        "default, values, lengths",
        [
            ("", [1, 2, 1, 1], [2, 1, 1, 0, 0, 0, 0]),
            ("0", [1, 2, 1, 1, 0, 0, 0, 0], [2, 1, 1, 1, 1, 1, 1]),
        ],
    )
    def test_num_buckets(self, default, values, lengths):
        f = lookup(num_buckets=10, embedding_dim=4, default_value=default)
        assert sparse(f.parse({"kv": KV, "cate": KEYS}), "l") == (values, lengths)

    def test_num_buckets_out_of_range_names_the_row(self):
        f = lookup(num_buckets=2, embedding_dim=4)
        with pytest.raises(FeatureError, match=r"feature 'l'.*id 2 out of range.*row 0"):
            f.parse({"kv": KV, "cate": KEYS})

    @pytest.mark.parametrize(
        "default, values, lengths",
        [
            ("", [35, 30, 35, 35], [2, 1, 1, 0, 0, 0, 0]),
            ("z", [35, 30, 35, 35, 54, 54, 54, 54], [2, 1, 1, 1, 1, 1, 1]),
        ],
    )
    def test_hash_bucket_size_matches_torcheasyrec(self, default, values, lengths):
        kv = pa.array(["ca:x\x1dcb:y"] * 5 + ["", ""])
        f = lookup(hash_bucket_size=100, embedding_dim=4, default_value=default)
        assert sparse(f.parse({"kv": kv, "cate": KEYS}), "l") == (values, lengths)

    def test_need_key_prefixes_the_key(self):
        f = lookup(vocab_list=["ca_1", "cb_2"], need_key=True, embedding_dim=4)
        # vocab ids start at 2; "1" without its key would be out of vocabulary
        assert sparse(f.parse({"kv": KV[:1], "cate": KEYS[:1]}), "l") == ([2, 3], [2])

    def test_malformed_map_cell_names_feature_column_and_row(self):
        kv = pa.array(["ca:1", "ca:1\x1dcb"])
        with pytest.raises(FeatureError, match=r"feature 'l' \(column 'kv'\).*'cb' at row 1"):
            lookup().parse({"kv": kv, "cate": pa.array(["ca", "ca"])})

    def test_non_numeric_value_names_the_row(self):
        kv = pa.array(["ca:1", "ca:x"])
        with pytest.raises(FeatureError, match=r"\(column 'kv'\).*'x' at row 1"):
            lookup().parse({"kv": kv, "cate": pa.array(["ca", "ca"])})

    def test_unknown_combiner(self):
        with pytest.raises(FeatureError, match="gap_min"):
            lookup(combiner="gap_min")

    def test_need_discrete_without_id_field(self):
        with pytest.raises(FeatureError, match="need_discrete"):
            lookup(need_discrete=True)

    def test_fg_none_dense_and_sparse(self):
        f = lookup(value_dim=2, fg_mode=FG_NONE)
        assert f.inputs == ["l"]
        assert f.parse({"l": pa.array(["1\x032", None])})["l.values"].tolist() == [[1, 2], [0, 0]]
        g = lookup(num_buckets=10, embedding_dim=4, fg_mode=FG_NONE)
        assert sparse(g.parse({"l": pa.array(["1\x032", "3"])}), "l") == ([1, 2, 3], [2, 1])


# ------------------------------------------------------------------------------ match
NESTED = pa.array(["ca^ba:1,bb:2|cb^ba:3,bb:4"] * 3 + ["", None])
COLS = {
    "kkv": NESTED,
    "cate": pa.array(["ca", "ca", "", "ca", None]),
    "brand": pa.array(["ba", "", "", "ba", None]),
}


def match(**kwargs) -> MatchFeature:
    kwargs.setdefault("feature_name", "match_feat")
    kwargs.setdefault("nested_map", "user:kkv")
    kwargs.setdefault("pkey", "item:cate")
    kwargs.setdefault("skey", "item:brand")
    fg_mode = kwargs.pop("fg_mode", FG_DAG)
    return MatchFeature(feature_pb2.MatchFeature(**kwargs), fg_mode)


class TestMatch:
    def test_dense(self):
        f = match()
        assert f.inputs == ["kkv", "cate", "brand"] and not f.is_sparse
        assert dense(f.parse(COLS), "match_feat") == [1, 0, 0, 0, 0]

    def test_second_pkey(self):
        cols = dict(COLS, cate=pa.array(["cb"] * 5), brand=pa.array(["bb"] * 5))
        assert dense(match().parse(cols), "match_feat") == [4, 4, 4, 0, 0]

    @pytest.mark.parametrize(
        "default, values, lengths", [("0", [2, 1, 1, 1, 1], [1] * 5), ("", [2], [1, 0, 0, 0, 0])]
    )
    def test_boundaries(self, default, values, lengths):
        f = match(boundaries=[-0.5, 0.5, 1.5, 2.5], embedding_dim=4, default_value=default)
        assert sparse(f.parse(COLS), "match_feat") == (values, lengths)

    @pytest.mark.parametrize(
        "default, values, lengths", [("", [1], [1, 0, 0, 0, 0]), ("0", [1, 0, 0, 0, 0], [1] * 5)]
    )
    def test_num_buckets(self, default, values, lengths):
        f = match(num_buckets=10, embedding_dim=4, default_value=default)
        assert sparse(f.parse(COLS), "match_feat") == (values, lengths)

    @pytest.mark.parametrize(
        "default, values, lengths",
        [("", [71], [1, 0, 0, 0, 0]), ("z", [71, 54, 54, 54, 54], [1] * 5)],
    )
    def test_hash_matches_torcheasyrec(self, default, values, lengths):
        f = match(hash_bucket_size=100, embedding_dim=4, default_value=default)
        assert sparse(f.parse(COLS), "match_feat") == (values, lengths)

    def test_pkey_all_is_multihit(self):
        f = match(pkey="ALL", num_buckets=10, embedding_dim=4, default_value="")
        assert f.inputs == ["kkv", "brand"]
        # brand ba under ca (1) and cb (3)
        assert sparse(f.parse(COLS), "match_feat") == ([1, 3], [2, 0, 0, 0, 0])

    def test_skey_all_takes_every_skey(self):
        f = match(skey="ALL", num_buckets=10, embedding_dim=4, default_value="")
        assert sparse(f.parse(COLS), "match_feat") == ([1, 2, 1, 2], [2, 2, 0, 0, 0])

    def test_show_keys(self):
        f = match(vocab_list=["ca_ba_1"], show_pkey=True, show_skey=True, embedding_dim=4)
        assert sparse(f.parse(COLS), "match_feat")[0][0] == 2

    def test_map_column_of_inner_maps(self):
        nested = pa.array(
            [{"ca": "ba:1,bb:2", "cb": "ba:3"}, None], type=pa.map_(pa.string(), pa.string())
        )
        cols = {"kkv": nested, "cate": pa.array(["cb", "cb"]), "brand": pa.array(["ba", "ba"])}
        assert dense(match().parse(cols), "match_feat") == [3, 0]

    def test_malformed_nested_cell(self):
        cols = dict(COLS, kkv=pa.array(["ca^ba:1", "ca-ba:1", "", "", ""]))
        with pytest.raises(FeatureError, match=r"\(column 'kkv'\).*'ca-ba:1' at row 1"):
            match().parse(cols)

    def test_value_dim_above_one_is_refused(self):
        with pytest.raises(FeatureError, match="value_dim"):
            match(value_dim=2)


# ------------------------------------------------------------------------------ mock data
@pytest.mark.parametrize(
    "text",
    [
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate" num_buckets: 7 '
        "embedding_dim: 4 }",
        'lookup_feature { feature_name: "l" map: "user:kv" key: "item:cate" '
        'vocab_list: ["a", "b"] embedding_dim: 4 }',
        'match_feature { feature_name: "m" nested_map: "user:kkv" pkey: "item:cate" '
        'skey: "item:brand" num_buckets: 5 embedding_dim: 4 }',
        'match_feature { feature_name: "m" nested_map: "user:kkv" pkey: "ALL" '
        'skey: "item:brand" boundaries: [0.5] embedding_dim: 4 }',
        'combo_feature { feature_name: "c" expression: ["user:a", "item:b"] '
        "hash_bucket_size: 50 embedding_dim: 4 }",
    ],
)
def test_mock_data_raw_columns_parse(text):
    from google.protobuf import text_format

    from recforge.datasets.mock_columns import MockFormat, plan_feature

    config = text_format.Parse(text, feature_pb2.FeatureConfig())
    rng = np.random.default_rng(0)
    columns: dict = {}
    for plan in plan_feature(config, rng, MockFormat(FG_DAG)):
        columns.update(plan.make(rng, 50))
    feature = create_feature(config, FG_DAG)
    assert set(feature.inputs) <= set(columns)
    out = feature.parse(columns)
    values = out[f"{feature.name}.values"]
    assert len(out[f"{feature.name}.lengths"]) == 50
    assert ((values >= 0) & (values < feature.num_embeddings)).all()
    assert len(set(values.tolist())) > 1  # the maps and keys meet: not only defaults
