"""expr features on hand-made rows, and a model trained from raw rows of the new FG kinds."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.datasets.mock_columns import MockFormat, plan_feature
from recforge.features import FG_DAG, FG_NONE, FeatureError, create_pipeline_features
from recforge.features.expr_feature import ExprFeature
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import feature_pb2, pipeline_pb2


def expr(text: str, variables=("user:a", "item:b"), **kwargs) -> ExprFeature:
    fg_mode = kwargs.pop("fg_mode", FG_DAG)
    cfg = feature_pb2.ExprFeature(
        feature_name="e", expression=text, variables=list(variables), **kwargs
    )
    return ExprFeature(cfg, fg_mode)


def values(feature: ExprFeature, **columns) -> list:
    return feature.parse(columns)["e.values"].reshape(-1).tolist()


class TestScalar:
    def test_comparison_and_ternary(self):
        f = expr("a == b ? 1 : 0")
        assert f.inputs == ["a", "b"] and not f.is_sparse and f.value_dim == 1
        assert values(f, a=pa.array([18, 20]), b=pa.array([18, 21])) == [1, 0]

    def test_numeric_strings_and_functions(self):
        f = expr("round(log(a) + sigmoid(b) * 2)")
        # log(e^2) + 2 * sigmoid(0) = 3
        assert values(f, a=pa.array([str(math.e**2)]), b=pa.array(["0"])) == [3]

    def test_haversine_and_constants(self):
        f = expr("haversine(a, 0, b, 0) / (2 * _pi * 6371 / 360)")
        assert values(f, a=pa.array([0.0]), b=pa.array([1.0])) == pytest.approx([1.0], rel=1e-6)

    def test_null_input_takes_default_value(self):
        f = expr("a + b", default_value="-1")
        assert values(f, a=pa.array([1, None, 2]), b=pa.array(["1", "1", ""])) == [2, -1, -1]

    def test_fill_missing_replaces_null_inputs(self):
        f = expr("a + b", fill_missing=10)
        assert values(f, a=pa.array([1, None]), b=pa.array([1, 1])) == [2, 11]

    def test_non_finite_result_takes_default_value(self):
        f = expr("log(a)", variables=["a"], default_value="-5")
        assert values(f, a=pa.array([1.0, 0.0, -1.0])) == [0, -5, -5]

    def test_isnan(self):
        assert values(expr("isnan(a)", variables=["a"]), a=pa.array([float("nan"), 1.0])) == [1, 0]

    def test_boundaries_bucketize(self):
        f = expr("a - b", boundaries=[0, 10], embedding_dim=4)
        assert f.is_sparse and f.num_embeddings == 3
        out = f.parse({"a": pa.array([5, 20, 1, None]), "b": pa.array([10, 1, 1, 1])})
        # -5 -> 0, 19 -> 2, 0 -> 1, null -> default 0 -> 1
        assert out["e.values"].tolist() == [0, 2, 1, 1]

    def test_unused_variable_column_is_not_needed(self):
        assert values(expr("a * 2"), a=pa.array([3])) == [6]


class TestVector:
    def test_dot_and_norms(self):
        a = pa.array(["1\x1d2", "3\x1d4"])
        b = pa.array([[1.0, 1.0], [0.0, 1.0]])
        assert values(expr("dot(a, b)"), a=a, b=b) == [3, 4]
        assert values(expr("l2_norm(a)"), a=a, b=b) == pytest.approx([math.sqrt(5), 5])
        assert values(expr("euclid_dist(a, b)"), a=a, b=b) == pytest.approx([1, math.sqrt(18)])
        assert values(expr("reduce_max(a) - reduce_min(b)"), a=a, b=b) == [1, 4]

    def test_empty_vector_row_takes_default(self):
        f = expr("reduce_sum(a)", variables=["a"], default_value="-1")
        assert values(f, a=pa.array([[1.0, 2.0], [], None])) == [3, -1, -1]

    def test_ragged_vectors_name_the_row(self):
        with pytest.raises(FeatureError, match=r"\(column 'a'\).*2 values and 3 at row 1"):
            expr("reduce_sum(a)", variables=["a"]).parse({"a": pa.array([[1, 2], [1, 2, 3]])})

    def test_vector_result_is_refused(self):
        with pytest.raises(FeatureError, match="reduce it"):
            expr("a + 1", variables=["a"]).parse({"a": pa.array([[1, 2]])})


class TestErrors:
    @pytest.mark.parametrize(
        "text, found",
        [
            ("log(a", "expected '\\)'.* at position 6"),
            ("foo(a)", "unknown function 'foo' at position 1"),
            ("a + zz", "unknown variable 'zz' .* at position 5"),
            ("rnd()", "'rnd' is not supported"),
        ],
    )
    def test_bad_expression_at_build(self, text, found):
        with pytest.raises(FeatureError, match=f"feature 'e'.*{found}"):
            expr(text)

    def test_non_numeric_value_names_column_and_row(self):
        with pytest.raises(FeatureError, match=r"feature 'e' \(column 'b'\).*'x' at row 1"):
            expr("a + b").parse({"a": pa.array([1, 2]), "b": pa.array(["1", "x"])})

    def test_missing_column(self):
        with pytest.raises(FeatureError, match=r"\(column 'b'\): column not found"):
            expr("a + b").parse({"a": pa.array([1])})

    def test_value_dim_above_one(self):
        with pytest.raises(FeatureError, match="value_dim"):
            expr("a", value_dim=2)

    def test_fg_none_reads_the_output_column(self):
        f = expr("a + b", fg_mode=FG_NONE)
        assert f.inputs == ["e"]
        assert values(f, e=pa.array([0.5, None])) == [0.5, 0]


# ------------------------------------------------------------------------------ in a model
PIPELINE = """
data_config { fg_mode: FG_DAG label_fields: "clk" }
feature_configs { id_feature { feature_name: "cate" expression: "item:cate"
  hash_bucket_size: 50 embedding_dim: 4 } }
feature_configs { combo_feature { feature_name: "age_cate"
  expression: ["user:age", "item:cate"] hash_bucket_size: 100 embedding_dim: 4 } }
feature_configs { lookup_feature { feature_name: "cate_clicks" map: "user:kv_clicks"
  key: "item:cate" } }
feature_configs { lookup_feature { feature_name: "cate_click_bucket" map: "user:kv_clicks"
  key: "item:cate" boundaries: [0.2, 0.5, 0.8] embedding_dim: 4 } }
feature_configs { match_feature { feature_name: "brand_score" nested_map: "user:kkv"
  pkey: "item:cate" skey: "item:brand" } }
feature_configs { expr_feature { feature_name: "age_gap" variables: ["user:age", "item:min_age"]
  expression: "abs(age - min_age) / 10" } }
model_config {
  feature_groups { group_name: "wide" feature_names: ["cate", "age_cate", "cate_click_bucket"]
    group_type: WIDE }
  feature_groups { group_name: "deep" feature_names: ["cate", "age_cate", "cate_clicks",
    "cate_click_bucket", "brand_score", "age_gap"] }
  feature_groups { group_name: "fm" feature_names: ["cate", "age_cate", "cate_click_bucket"] }
  deepfm { deep { hidden_units: [8] } final { hidden_units: [4] } }
  metrics { auc {} } losses { binary_cross_entropy {} }
}
"""


def test_model_trains_from_raw_rows_of_the_new_kinds():
    config = text_format.Parse(PIPELINE, pipeline_pb2.EasyRecConfig())
    features = create_pipeline_features(config)
    rng = np.random.default_rng(0)
    columns: dict[str, pa.Array] = {}
    for feature_config in config.feature_configs:  # mock-data's generators for raw inputs
        for plan in plan_feature(feature_config, rng, MockFormat(FG_DAG)):
            columns.update(plan.make(rng, 32))
    assert {"age", "cate", "kv_clicks", "kkv", "brand", "min_age"} <= set(columns)
    columns["clk"] = pa.array(rng.integers(0, 2, 32))
    parser = DataParser(features, labels=["clk"], binary_labels=["clk"])
    batch = parser.to_batch(parser.parse(pa.RecordBatch.from_pydict(columns)))
    model = BaseModel.create_class("DeepFM")(config.model_config, features, ["clk"])
    wrapper = TrainWrapper(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        total, _ = wrapper(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
