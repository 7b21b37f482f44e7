"""custom_feature: the built-in operators and plugin operators registered by name."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from google.protobuf import struct_pb2

from recforge.features import FG_DAG, FG_NONE, FeatureError, create_feature, custom_ops
from recforge.protos import feature_pb2
from recforge.utils.registry import RegistryError


def params(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def custom(fg_mode: int = FG_DAG, **kwargs):
    kwargs.setdefault("feature_name", "c")
    return create_feature(
        feature_pb2.FeatureConfig(custom_feature=feature_pb2.CustomFeature(**kwargs)), fg_mode
    )


def test_edit_distance_by_characters_and_bytes(caplog):
    rows = {
        "q": pa.array(["裙子", None, "kitten", "é"]),
        "t": pa.array(["连衣裙", "ab", "sitting", "e"]),
    }
    with caplog.at_level(logging.INFO):
        chars = custom(
            operator_name="EditDistance",
            operator_lib_file="pyfg/lib/libedit_distance.so",
            expression=["user:q", "item:t"],
            operator_params=params(encoding="utf-8"),
        )
    assert "libedit_distance.so" in caplog.text  # only noted
    assert chars.inputs == ["q", "t"]
    # substitute 裙 -> 连, 子 -> 衣, insert 裙; a null text is empty
    assert chars.parse(rows)["c.values"].ravel().tolist() == [3, 2, 3, 1]
    latin = custom(operator_name="EditDistance", expression=["user:q", "item:t"])
    # the default encoding compares bytes: é is 2 bytes (c3 a9), e one
    assert latin.parse(rows)["c.values"].ravel().tolist()[2:] == [3, 2]


def test_edit_distance_boundaries():
    feature = custom(
        operator_name="EditDistance",
        expression=["user:q", "item:t"],
        operator_params=params(encoding="utf-8"),
        boundaries=[0, 5, 10],
        embedding_dim=4,
    )
    out = feature.parse({"q": pa.array(["裙子"]), "t": pa.array(["连衣裙"])})
    assert out["c.values"].tolist() == [1] and feature.num_embeddings == 4


def test_regex_replace_then_vocabulary():
    feature = custom(
        operator_name="RegexReplace",
        expression=["item:t"],
        operator_params=params(regex_patten="[0-9]+", replacement="#"),
        vocab_list=["a#", "b#"],
        embedding_dim=4,
    )
    out = feature.parse({"t": pa.array(["a1", "b22", "c3", None])})
    # the list is the whole table; unknown values take default_bucketize_value (0)
    assert out["c.values"].tolist() == [0, 1, 0] and out["c.lengths"].tolist() == [1, 1, 1, 0]
    assert feature.num_embeddings == 2


def test_plugin_operator_registered_by_name():
    @custom_ops.register_operator("TestTitleLength")
    def title_length(inputs, options):
        return pc.multiply(pc.utf8_length(inputs[0].fill_null("")), options.get("scale", 1))

    try:
        feature = custom(
            operator_name="TestTitleLength",
            expression=["item:t"],
            operator_params=params(scale=2),
        )
        out = feature.parse({"t": pa.array(["abc", None])})
        assert out["c.values"].ravel().tolist() == [6.0, 0.0]
        with pytest.raises(RegistryError, match="already registered"):
            custom_ops.register_operator("TestTitleLength")(lambda inputs, options: inputs[0])
    finally:
        custom_ops._OPERATORS.pop("TestTitleLength", None)


def test_operator_errors():
    with pytest.raises(
        FeatureError, match="feature 'c': operator_name: unknown custom operator 'Nope'"
    ):
        custom(operator_name="Nope", expression=["user:q"])
    with pytest.raises(FeatureError, match="feature 'c': operator 'RegexReplace': regex_patten"):
        custom(
            operator_name="RegexReplace",
            expression=["user:q"],
            operator_params=params(regex_patten="("),
        )
    with pytest.raises(FeatureError, match="EditDistance takes 2 inputs"):
        custom(operator_name="EditDistance", expression=["user:q"])

    @custom_ops.register_operator("TestShort")
    def short(inputs, options):
        return [1.0]

    try:
        with pytest.raises(FeatureError, match="returned 1 rows for 2 input rows"):
            custom(operator_name="TestShort", expression=["user:q"]).parse(
                {"q": pa.array(["a", "b"])}
            )
    finally:
        custom_ops._OPERATORS.pop("TestShort", None)


def test_fg_none_needs_no_operator():
    feature = custom(FG_NONE, operator_name="NotLoaded", hash_bucket_size=10, embedding_dim=4)
    out = feature.parse({"c": pa.array([3, None])})
    assert out["c.values"].tolist() == [3] and out["c.lengths"].tolist() == [1, 0]


# ------------------------------------------------------------------------------ mock data
def _configs(tokenizer: str) -> list[feature_pb2.FeatureConfig]:
    kinds = {
        "overlap_feature": dict(
            query="user:q", title="item:t", method="query_common_ratio", boundaries=[0.3, 0.6]
        ),
        "kv_dot_product": dict(query="user:kq", document="item:kd"),
        "bool_mask_feature": dict(expression=["user:ids", "user:mask"], num_buckets=50),
        "combine_feature": dict(expression="user:nums", num_buckets=12),
        "sequence_combine_feature": dict(
            expression="user:seq_nums", boundaries=[0.5, 1.5], sequence_length=5
        ),
        "sequence_overlap_feature": dict(
            query="user:sq", title="item:st", method="is_equal", boundaries=[0.5], sequence_length=4
        ),
        "sequence_kv_dot_product": dict(
            query="user:skq", document="item:skd", boundaries=[0.5], sequence_length=4
        ),
        "sequence_custom_feature": dict(
            operator_name="EditDistance",
            expression=["user:sa", "item:sb"],
            boundaries=[2.0],
            sequence_length=4,
        ),
        "tokenize_feature": dict(expression="item:title", vocab_file=tokenizer),
        "custom_feature": dict(
            operator_name="EditDistance", expression=["user:q", "item:t"], boundaries=[1, 5]
        ),
    }
    return [
        feature_pb2.FeatureConfig(**{kind: dict(feature_name=kind, embedding_dim=4, **fields)})
        for kind, fields in kinds.items()
    ]


@pytest.mark.parametrize("fg_mode", ["FG_DAG", "FG_NONE", "FG_BUCKETIZE"])
def test_mock_data_of_each_kind_parses(tmp_path, fg_mode):
    import json

    import numpy as np

    from recforge.datasets.mock_columns import MockFormat, plan_feature
    from recforge.protos import data_pb2

    pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(30)} | {"[UNK]": 30}
    spec = {
        "version": "1.0",
        "pre_tokenizer": {"type": "Whitespace"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(json.dumps(spec))
    rng = np.random.default_rng(0)
    mode = data_pb2.FgMode.Value(fg_mode)
    for config in _configs(str(tokenizer)):
        columns = {}
        for plan in plan_feature(config, rng, MockFormat(fg_mode=fg_mode)):
            columns.update(plan.make(rng, 50))
        out = create_feature(config, mode).parse(columns)
        name = config.WhichOneof("feature")
        rows = out[f"{name}.lengths"] if f"{name}.lengths" in out else out[f"{name}.values"]
        assert len(rows) == 50, name


def test_a_computed_value_out_of_range_names_the_source_columns_and_row():
    feature = custom(
        operator_name="EditDistance",
        expression=["user:q", "item:t"],
        num_buckets=3,
        embedding_dim=4,
    )
    with pytest.raises(
        FeatureError,
        match=r"feature 'c' \(computed from columns 'q', 't'\): id 5 out of range .* at row 1",
    ):
        feature.parse({"q": pa.array(["ab", "abcde"]), "t": pa.array(["ab", ""])})


def test_sequence_custom_feature_per_element():
    cfg = feature_pb2.FeatureConfig(
        sequence_custom_feature=feature_pb2.CustomFeature(
            feature_name="sc",
            operator_name="EditDistance",
            expression=["user:q", "item:t"],
            boundaries=[1, 3],
            embedding_dim=4,
            sequence_length=5,
        )
    )
    out = create_feature(cfg, FG_DAG).parse(
        {"q": pa.array(["abc", "x"]), "t": pa.array(["abc;abd;xyz", None])}
    )
    # distances 0, 1, 3 -> buckets 0, 1, 2; a null title is one empty element: 1 -> 1
    assert out["sc.values"].tolist() == [0, 1, 2, 1] and out["sc.lengths"].tolist() == [3, 1]
    encoded = create_feature(cfg, FG_NONE)
    assert encoded.inputs == ["sc"]
    out = encoded.parse({"sc": pa.array(["1;2", "0"])})
    assert out["sc.values"].tolist() == [1, 2, 0] and out["sc.lengths"].tolist() == [2, 1]


@pytest.mark.parametrize(
    "expression,sequence_fields",
    [
        (["item:ilng", "item:ilat", "user:ulng", "user:ulat"], []),
        (["user:ilng", "user:ilat", "user:ulng", "user:ulat"], ["ilng", "ilat"]),
    ],
)
def test_seq_expr_spherical_distance_per_element(expression, sequence_fields):
    cfg = feature_pb2.FeatureConfig(
        sequence_custom_feature=feature_pb2.CustomFeature(
            feature_name="d",
            operator_name="SeqExpr",
            operator_lib_file="pyfg/lib/libseq_expr.so",
            expression=expression,
            operator_params=params(formula="spherical_distance"),
            boundaries=[0, 150, 1500],
            embedding_dim=4,
            sequence_length=50,
            sequence_delim="|",
            sequence_fields=sequence_fields,
        )
    )
    out = create_feature(cfg, FG_DAG).parse(
        {
            "ilng": pa.array(["113.728|116.4074", "121.4737", None]),
            "ilat": pa.array(["23.002|39.9042", "31.2304", None]),
            "ulng": pa.array(["113.1057", "116.4074", None]),
            "ulat": pa.array(["22.5614", "39.9042", None]),
        }
    )
    # about 78 km, 1950 km (Shenzhen-Beijing), 1070 km (Shanghai-Beijing); nulls -> 0
    assert out["d.values"].tolist() == [1, 3, 2, 1]
    assert out["d.lengths"].tolist() == [2, 1, 1]


def test_seq_expr_formula_of_input_names():
    cfg = feature_pb2.FeatureConfig(
        sequence_custom_feature=feature_pb2.CustomFeature(
            feature_name="gap",
            operator_name="SeqExpr",
            expression=["user:cur_time", "item:clk_time_seq"],
            operator_params=params(formula="cur_time-clk_time_seq"),
            boundaries=[5, 7.5],
            embedding_dim=4,
            sequence_length=50,
            sequence_delim="|",
        )
    )
    out = create_feature(cfg, FG_DAG).parse(
        {"cur_time": pa.array(["10", None, None]), "clk_time_seq": pa.array(["2|3", "4", None])}
    )
    # 8 -> 2, 7 -> 1; a null input gives the default 0 -> 0
    assert out["gap.values"].tolist() == [2, 1, 0, 0]
    dense = custom(
        operator_name="SeqExpr",
        expression=["user:a", "item:b"],
        operator_params=params(formula="a*2+b"),
    )
    out = dense.parse({"a": pa.array([1, 2]), "b": pa.array(["0.5", "1"])})
    assert out["c.values"].ravel().tolist() == [2.5, 5.0]
    with pytest.raises(FeatureError, match="input 'b': expected numbers, found 'x1' at row 1"):
        dense.parse({"a": pa.array([1, 2]), "b": pa.array(["0.5", "x1"])})
    with pytest.raises(FeatureError, match="unknown variable 'cur_time'"):
        custom(
            operator_name="SeqExpr",
            expression=["user:a"],
            operator_params=params(formula="cur_time-1"),
        )
