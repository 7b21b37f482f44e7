"""The feature-generation expression language and the ``method=expression`` normalizer."""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pytest

from recforge.errors import RecforgeError
from recforge.features import FG_BUCKETIZE, FG_DAG, FG_NONE, FG_NORMAL, FeatureError, RawFeature
from recforge.features.expression import (
    EARTH_RADIUS_KM,
    FUNCTIONS,
    ExpressionError,
    compile_expression,
)
from recforge.protos import feature_pb2
from tests.helpers.paths import SHARED_DIR

NAN, INF = float("nan"), float("inf")


def ev(text: str, **columns) -> np.ndarray:
    """Evaluate ``text`` over the given columns (a number alone: one row)."""
    values = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    if not values:
        values = {"x": np.zeros(1)}
    return compile_expression(text, sorted(values)).evaluate(values)


def one(text: str, **columns) -> float:
    out = ev(text, **columns)
    assert out.shape == (1,)
    return float(out[0])


def error_of(text: str, variables=("x",)) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, list(variables))
    return info.value


# ---------------------------------------------------------------------------- scalar functions
@pytest.mark.parametrize(
    "text, expected",
    [
        ("isnan(0/0)", 1.0),
        ("isnan(1)", 0.0),
        ("sin(_pi/2)", 1.0),
        ("cos(_pi)", -1.0),
        ("tan(_pi/4)", 1.0),
        ("asin(1)", math.pi / 2),
        ("acos(-1)", math.pi),
        ("atan(1)", math.pi / 4),
        ("sinh(1)", (math.e - 1 / math.e) / 2),
        ("cosh(1)", (math.e + 1 / math.e) / 2),
        ("tanh(1)", (math.e - 1 / math.e) / (math.e + 1 / math.e)),
        ("asinh(0.5)", math.log(0.5 + math.sqrt(1.25))),
        ("acosh(2)", math.log(2 + math.sqrt(3))),
        ("atanh(0.5)", 0.5 * math.log(3)),
        ("log2(8)", 3.0),
        ("log10(1000)", 3.0),
        ("log(_e^2)", 2.0),
        ("ln(_e)", 1.0),
        ("exp(2)", math.e**2),
        ("sqrt(16)", 4.0),
        ("sign(-3)", -1.0),
        ("sign(0)", 0.0),
        ("sign(2.5)", 1.0),
        ("abs(-2.5)", 2.5),
        ("rint(2.5)", 2.0),  # half to even
        ("rint(3.5)", 4.0),
        ("floor(-1.5)", -2.0),
        ("ceil(-1.5)", -1.0),
        ("trunc(-1.7)", -1.0),
        ("trunc(1.7)", 1.0),
        ("round(2.5)", 3.0),  # half away from zero
        ("round(-2.5)", -3.0),
        ("round(0.49999999999999994)", 0.0),
        ("round(-1.4)", -1.0),
        ("roundp(3.14159, 2)", 3.14),
        ("roundp(-1.25, 1)", -1.3),
        ("roundp(1234.5, -2)", 1200.0),
        ("mod(7, 3)", 1.0),
        ("mod(-7, 3)", -1.0),  # C's fmod: the sign of the dividend
        ("mod(7.5, 2)", 1.5),
        ("sigmoid(0)", 0.5),
        ("sigmoid(2)", 1 / (1 + math.exp(-2))),
        ("min(3, 1, 2)", 1.0),
        ("max(3, 1, 2)", 3.0),
        ("min(4)", 4.0),
        ("sum(1, 2, 3)", 6.0),
        ("avg(1, 2, 3, 4)", 2.5),
        ("_pi", math.pi),
        ("_e", math.e),
        (".5 + 1e-3 + 2.5E+1 + 3.", 28.501),
    ],
)
def test_scalar_functions_and_constants(text, expected):
    assert one(text) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_every_built_in_function_is_tested():
    tested = (
        "isnan sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh log2 log10 log ln exp "
        "sqrt sign abs rint floor ceil trunc round roundp mod sigmoid min max sum avg "
        "sphere_dist haversine len l2_norm squared_norm dot euclid_dist corr std_dev pop_std_dev "
        "variance pop_variance reduce_min reduce_max reduce_sum reduce_mean reduce_prod"
    )
    assert set(FUNCTIONS) == set(tested.split())


def _great_circle_km(lng1, lat1, lng2, lat2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return EARTH_RADIUS_KM * math.acos(c)


@pytest.mark.parametrize("function", ["sphere_dist", "haversine"])
def test_sphere_distances_take_lng_lat_degrees_and_give_km(function):
    quarter = math.pi / 2 * EARTH_RADIUS_KM  # equator to pole, along the equator by 90 deg
    assert one(f"{function}(0, 0, 0, 90)") == pytest.approx(quarter)
    assert one(f"{function}(0, 0, 90, 0)") == pytest.approx(quarter)
    assert one(f"{function}(10, 20, 10, 20)") == pytest.approx(0.0, abs=1e-9)
    # Beijing -> Shanghai as (lng, lat): the order of the arguments matters
    expected = _great_circle_km(116.40, 39.90, 121.47, 31.23)
    assert 1000 < expected < 1100
    got = ev(f"{function}(a, b, 121.47, 31.23)", a=[116.40, 121.47], b=[39.90, 31.23])
    np.testing.assert_allclose(got, [expected, 0.0], rtol=1e-9, atol=1e-6)
    assert one(f"{function}(39.90, 116.40, 31.23, 121.47)") != pytest.approx(expected)


# ---------------------------------------------------------------------------- operators
@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 * 3 ^ 2", 18),
        ("2 ^ 3 ^ 2", 512),  # right-associative
        ("(2 ^ 3) ^ 2", 64),
        ("-2 ^ 2", -4),  # the sign binds looser than ^
        ("(-2) ^ 2", 4),
        ("2 ^ -1", 0.5),
        ("-2 * 3", -6),
        ("--3", 3),
        ("+3", 3),
        ("8 - 3 - 2", 3),  # left-associative
        ("16 / 4 / 2", 2),
        ("7 - 2 * 3 / 6", 6),
        ("1 + 1 > 1", 1),  # + before comparisons
        ("1 < 2 == 1", 1),  # (1 < 2) == 1
        ("3 > 2 > 1", 0),  # (3 > 2) > 1
        ("2 <= 2", 1),
        ("2 >= 3", 0),
        ("2 != 2", 0),
        ("2 == 2", 1),
        ("1 & 3 == 3", 1),  # comparisons before &: 1 & (3 == 3)
        ("(1 & 3) == 3", 0),
        ("4 | 1 & 2", 4),  # & before |: 4 | (1 & 2)
        ("(4 | 1) & 2", 0),
        ("6 & 3", 2),
        ("5 | 2", 7),
        ("5.7 | 0", 5),  # operands truncated to integers
        ("1 | 0 && 0", 0),  # | before &&: (1 | 0) && 0
        ("1 || 0 && 0", 1),  # && before ||: 1 || (0 && 0)
        ("(1 || 0) && 0", 0),
        ("0 && 1 || 1", 1),
        ("2 && -1", 1),
        ("0 || 0", 0),
        ("!0", 1),
        ("!2", 0),
        ("!0 == 1", 1),  # (!0) == 1
        ("!!5", 1),
        ("1 ? 2 : 3", 2),
        ("0 ? 2 : 3", 3),
        ("1 + 0 ? 5 : 6", 5),  # the ternary is loosest: (1 + 0) ? 5 : 6
        ("0 ? 1 : 0 ? 2 : 3", 3),  # right-associative: 0 ? 1 : (0 ? 2 : 3)
        ("1 ? 0 ? 5 : 6 : 7", 6),  # a ternary as the then-branch
        ("(1 ? 2 : 3) * 10", 20),
        ("max(1 > 0 ? 4 : 5, 3)", 4),
        ("log(exp(2)) + max(min(9, 1), -1)", 3),
        ("  1\t+\n2  ", 3),
    ],
)
def test_operators_precedence_and_associativity(text, expected):
    assert one(text) == pytest.approx(expected)


def test_ternary_chooses_per_row():
    x = [-2.0, 0.0, 3.0]
    np.testing.assert_array_equal(ev("x > 0 ? 1 : x < 0 ? -1 : 0", x=x), [-1, 0, 1])
    np.testing.assert_array_equal(ev("x > 0 ? x * 10 : -x", x=x), [2, 0, 30])


# ---------------------------------------------------------------------------- IEEE numbers
@pytest.mark.parametrize(
    "text, expected",
    [
        ("1/0", INF),
        ("-1/0", -INF),
        ("0/0", NAN),
        ("log(0)", -INF),
        ("log(-1)", NAN),
        ("sqrt(-1)", NAN),
        ("mod(1, 0)", NAN),
        ("(-8) ^ (1/3)", NAN),
        ("0 ^ 0", 1.0),
        ("exp(1000)", INF),
        ("sigmoid(-1000)", 0.0),
        ("acos(2)", NAN),
        ("(0/0) == (0/0)", 0.0),
        ("(0/0) != (0/0)", 1.0),
        ("(0/0) < 1", 0.0),
        ("(0/0) ? 1 : 2", 1.0),  # NaN is true, as a C double is
        ("!(0/0)", 0.0),
        ("(0/0) && 1", 1.0),
        ("(0/0) | 1", NAN),
        ("(1/0) & 1", NAN),
        ("sign(0/0)", NAN),
        ("min(0/0, 1)", NAN),
        ("max(1, 0/0)", NAN),
        ("isnan(log(-1))", 1.0),
        ("isnan(1/0)", 0.0),
    ],
)
def test_division_by_zero_and_nan_follow_ieee(text, expected):
    got = one(text)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected


def test_nan_in_a_column_propagates_and_isnan_finds_it():
    x = [1.0, NAN, -1.0]
    np.testing.assert_array_equal(ev("isnan(x)", x=x), [0, 1, 0])
    np.testing.assert_array_equal(ev("isnan(x) ? -1 : x * 2", x=x), [2, -1, -2])
    got = ev("log(x) + 1", x=x)
    assert got[0] == 1 and math.isnan(got[1]) and math.isnan(got[2])


# ---------------------------------------------------------------------------- columns
def test_scalars_broadcast_against_columns():
    x = np.array([0.0, 1.0, 7.0])
    np.testing.assert_allclose(ev("log(x+3)", x=x), np.log(x + 3))
    np.testing.assert_array_equal(ev("min(x, 1)", x=x), [0, 1, 1])
    np.testing.assert_array_equal(ev("2", x=x), [2, 2, 2])  # a constant fills every row
    # a column of one row broadcasts too
    np.testing.assert_array_equal(ev("a + b", a=[10.0], b=[1.0, 2.0, 3.0]), [11, 12, 13])
    np.testing.assert_array_equal(ev("a == b ? 1 : 0", a=[18, 20, 30], b=[18, 21, 30]), [1, 0, 1])
    np.testing.assert_array_equal(ev("max(a, b, 5)", a=[1, 9, 3], b=[7, 2, 3]), [7, 9, 5])
    np.testing.assert_array_equal(ev("avg(a, b)", a=[1, 9], b=[3, 2]), [2, 5.5])


def test_evaluate_returns_a_new_float64_array():
    expr = compile_expression("x", ["x"])
    x = np.array([1, 2, 3], dtype=np.int64)
    out = expr.evaluate({"x": x})
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0, 3.0]
    floats = np.array([1.0, 2.0])
    out = expr.evaluate({"x": floats})
    out[0] = 99
    assert floats[0] == 1.0
    assert compile_expression("+x", ["x"]).evaluate({"x": floats}) is not floats


def test_compiled_once_evaluated_many_times():
    expr = compile_expression("a * 2 + b", ["a", "b", "c"])
    assert expr.variables == ("a", "b", "c") and expr.used_variables == ("a", "b")
    assert expr.evaluate({"a": [1.0], "b": [1.0]}).tolist() == [3.0]
    assert expr.evaluate({"a": [1.0, 2.0], "b": [0.0, 0.0]}).tolist() == [2.0, 4.0]


def test_a_compiled_expression_pickles():
    import pickle

    expr = pickle.loads(pickle.dumps(compile_expression("max(a, 2) ^ 2", ["a"])))
    assert expr.variables == ("a",) and expr.evaluate({"a": [1.0, 3.0]}).tolist() == [4.0, 9.0]


def test_input_problems_are_expression_errors():
    expr = compile_expression("a + b", ["a", "b"])
    with pytest.raises(ExpressionError, match=r"no values given for variable 'b'"):
        expr.evaluate({"a": [1.0]})
    with pytest.raises(ExpressionError, match=r"different row counts \('a' 2, 'b' 3\)"):
        expr.evaluate({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    with pytest.raises(ExpressionError, match="ragged vectors are not supported"):
        expr.evaluate({"a": np.array([[1.0, 2.0], [3.0]], dtype=object), "b": [1.0]})
    with pytest.raises(ExpressionError, match=r"shape \(1, 1, 1\)"):
        expr.evaluate({"a": np.zeros((1, 1, 1)), "b": [1.0]})
    assert issubclass(ExpressionError, RecforgeError)


# ---------------------------------------------------------------------------- vectors
A = np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0]])
B = np.array([[1.0, 0.0, 1.0], [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("len(a)", [3, 3, 3]),
        ("l2_norm(a)", [math.sqrt(14), math.sqrt(48), math.sqrt(14)]),
        ("squared_norm(a)", [14, 48, 14]),
        ("dot(a, b)", [4, 24, 28]),
        ("euclid_dist(a, b)", [math.sqrt(8), math.sqrt(14), math.sqrt(14)]),
        ("corr(a, b)", [0.0, NAN, 1.0]),  # a constant vector has no correlation
        ("std_dev(a)", [math.sqrt(2 / 3), 0, math.sqrt(2 / 3)]),  # divides by n
        ("pop_std_dev(a)", [1, 0, 1]),  # divides by n - 1
        ("variance(a)", [2 / 3, 0, 2 / 3]),
        ("pop_variance(a)", [1, 0, 1]),
        ("reduce_min(a)", [1, 4, 1]),
        ("reduce_max(a)", [3, 4, 3]),
        ("reduce_sum(a)", [6, 12, 6]),
        ("reduce_mean(a)", [2, 4, 2]),
        ("reduce_prod(a)", [6, 64, 6]),
        ("reduce_sum(a * s)", [6, 24, 18]),  # a per-row number scales the row's vector
        ("reduce_sum(a + 1)", [9, 15, 9]),
        ("dot(a, b) > 10 ? s : -s", [-1, 2, 3]),
        ("reduce_max(b) - reduce_min(b) + s", [2, 4, 7]),
    ],
)
def test_vector_functions(text, expected):
    got = compile_expression(text, ["a", "b", "s"]).evaluate({"a": A, "b": B, "s": [1, 2, 3]})
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_vector_edge_cases():
    empty = np.zeros((2, 0))
    assert ev("len(v)", v=empty).tolist() == [0, 0]
    assert ev("reduce_sum(v) + reduce_prod(v) + l2_norm(v) + dot(v, v)", v=empty).tolist() == [
        1,
        1,
    ]
    assert np.isnan(ev("reduce_mean(v)", v=empty)).all()
    assert np.isnan(ev("reduce_min(v)", v=empty)).all()
    # a per-row number is a vector of length 1
    assert ev("len(x) + reduce_sum(x)", x=[5.0, 6.0]).tolist() == [6, 7]
    # n - 1 == 0: 0 / 0
    assert np.isnan(ev("pop_variance(v)", v=[[3.0]])).all()
    assert ev("variance(v)", v=[[3.0]]).tolist() == [0]
    # a vector of length one per row is fine as the result
    assert ev("v * 2", v=[[1.0], [2.0]]).tolist() == [2, 4]


def test_vector_errors_name_the_function_and_position():
    expr = compile_expression("1 + dot(a, b)", ["a", "b"])
    with pytest.raises(ExpressionError) as info:
        expr.evaluate({"a": np.ones((2, 3)), "b": np.ones((2, 2))})
    assert str(info.value) == (
        "expr '1 + dot(a, b)': dot needs vectors of equal length, found 3 and 2 at position 5"
    )
    with pytest.raises(ExpressionError, match="gives 3 numbers per row .*reduce_sum"):
        compile_expression("a + 1", ["a"]).evaluate({"a": np.ones((2, 3))})


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "text, message, position",
    [
        ("log(x+3", "expected ')', found the end of the expression", 8),
        ("foo(x)", "unknown function 'foo'", 1),
        ("x + foo(1)", "unknown function 'foo'", 5),
        ("x + y", "unknown variable 'y' (variables: x)", 5),
        ("log(x, 2)", "function 'log' takes 1 argument, found 2", 1),
        ("1 + roundp(x)", "function 'roundp' takes 2 arguments, found 1", 5),
        ("sphere_dist(1, 2, 3)", "function 'sphere_dist' takes 4 arguments, found 3", 1),
        ("min()", "function 'min' takes 1 or more arguments, found 0", 1),
        ("dot(x)", "function 'dot' takes 2 arguments, found 1", 1),
        ("rnd()", "function 'rnd' is not supported: it draws a random number", 1),
        ("x % 2", "'%' is not an operator of the language; use mod(a, b)", 3),
        ("x = 1", "'=' is not an operator; did you mean '=='?", 3),
        ("x # 1", "unexpected character '#'", 3),
        ("1 +", "expected a number, a name, '(' or a unary operator, found the end", 4),
        ("", "expected a number, a name, '(' or a unary operator, found the end", 1),
        ("(x", "expected ')', found the end of the expression", 3),
        ("x)", "expected an operator or the end, found ')'", 2),
        ("x ? 1", "expected ':', found the end of the expression", 6),
        ("x ? 1 , 2", "expected ':', found ','", 7),
        ("2x", "expected an operator or the end, found 'x'", 2),
        ("log x", "function 'log' needs '(' and its arguments", 1),
        ("max(1,)", "expected a number, a name, '(' or a unary operator, found ')'", 7),
        ("* 2", "expected a number, a name, '(' or a unary operator, found '*'", 1),
        ("__import__('os')", 'unexpected character "\'"', 12),  # never eval'd
        ("__import__(x)", "unknown function '__import__'", 1),
    ],
)
def test_errors_give_the_expression_and_position(text, message, position):
    error = error_of(text)
    assert error.position == position and error.expression == text
    assert message in str(error)
    assert str(error).startswith(f"expr {text!r}: ") and str(error).endswith(
        f" at position {position}"
    )
    assert "\n" not in str(error)  # one line for the CLI; the caret drawing is separate
    assert error.pointer == f"{text}\n{' ' * (position - 1)}^"


def test_exact_message_for_a_missing_parenthesis():
    assert str(error_of("log(x+3")) == (
        "expr 'log(x+3': expected ')', found the end of the expression at position 8"
    )


def test_bad_variable_names_and_deep_nesting_are_refused():
    with pytest.raises(ExpressionError, match="variable name 'a-b' is not an identifier"):
        compile_expression("1", ["a-b"])
    with pytest.raises(ExpressionError, match="variable name '_pi' is a built-in constant"):
        compile_expression("1", ["_pi"])
    for deep in ["(" * 500 + "x" + ")" * 500, "-" * 500 + "x", "x" + "+x" * 500, "2^" * 500 + "2"]:
        with pytest.raises(ExpressionError, match="nests deeper than"):
            compile_expression(deep, ["x"])


# ---------------------------------------------------------------------------- normalizer
def raw_feature(fg_mode: int = FG_DAG, **kwargs) -> RawFeature:
    kwargs.setdefault("feature_name", "f")
    return RawFeature(feature_pb2.RawFeature(**kwargs), fg_mode)


def dense(feature: RawFeature, column: pa.Array) -> np.ndarray:
    return feature.parse({"f": column})["f.values"]


@pytest.mark.parametrize("fg_mode", [FG_DAG, FG_NORMAL])
def test_expression_normalizer_on_raw_values(fg_mode):
    f = raw_feature(fg_mode, normalizer="method=expression,expr=log(x+3)")
    got = dense(f, pa.array([0.0, 1.0, None, 7.0, -1.0]))
    np.testing.assert_allclose(got, np.log([[3.0], [4.0], [3.0], [10.0], [2.0]]), rtol=1e-6)
    # the comma inside the expression belongs to the expression
    f = raw_feature(fg_mode, normalizer="method=expression,expr=min(x,1)")
    assert dense(f, pa.array([0.5, 1.0, 7.0])).tolist() == [[0.5], [1.0], [1.0]]
    f = raw_feature(fg_mode, normalizer=" method = expression , expr = x > 2 ? 1 : max(x, 0)")
    assert dense(f, pa.array([-1.0, 1.5, 3.0])).tolist() == [[0.0], [1.5], [1.0]]


def test_expression_normalizer_per_number_with_defaults_and_buckets():
    two = raw_feature(normalizer="method=expression,expr=x*10", value_dim=2, default_value="0.5")
    got = two.parse({"f": pa.array([[1.0, 2.0], None, [3.0, None]])})["f.values"]
    assert got.tolist() == [[10.0, 20.0], [5.0, 5.0], [30.0, 5.0]]
    buckets = raw_feature(
        normalizer="method=expression,expr=log(x+3)", boundaries=[1.2, 2.0], embedding_dim=4
    )
    # log(3)=1.10, log(4)=1.39, log(10)=2.30
    assert buckets.parse({"f": pa.array([0.0, 1.0, 7.0])})["f.values"].tolist() == [0, 1, 2]


def test_expression_normalizer_is_not_applied_to_fg_output():
    spec = "method=expression,expr=log(x+3)"
    encoded = raw_feature(FG_NONE, normalizer=spec)
    # FG output is normalized already; a null takes the normalized default, log(0 + 3)
    got = dense(encoded, pa.array([0.5, None]))
    np.testing.assert_allclose(got, [[0.5], [math.log(3)]], rtol=1e-6)
    bucketize = raw_feature(FG_BUCKETIZE, normalizer=spec, boundaries=[1.0], embedding_dim=4)
    assert bucketize.parse({"f": pa.array([0.5, 2.0])})["f.values"].tolist() == [0, 1]


def test_expression_normalizer_giving_nan_or_inf_is_an_error():
    f = raw_feature(normalizer="method=expression,expr=log(x)", default_value="1")
    with pytest.raises(FeatureError) as info:
        dense(f, pa.array([1.0, 0.0]))
    assert str(info.value) == (
        "feature 'f' (column 'f'): normalizer 'method=expression,expr=log(x)' turns 0 at row 1 "
        "into -inf; expected it to give finite numbers"
    )
    with pytest.raises(FeatureError, match=r"turns the default value 0 into -inf.*default_value"):
        raw_feature(normalizer="method=expression,expr=log(x)")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("method=expression", r"missing parameters \['expr'\]"),
        ("method=expression,expr=", r"missing parameters \['expr'\]"),
        (
            "method=expression,expr=log(x+3",
            r"normalizer 'method=expression,expr=log\(x\+3': expr 'log\(x\+3': expected '\)', "
            r"found the end of the expression at position 8",
        ),
        ("method=expression,expr=log(y)", r"unknown variable 'y' \(variables: x\) at position 5"),
        ("method=expression,expr=rnd()", "'rnd' is not supported"),
        ("method=expression,foo=1,expr=x", "unknown parameter 'foo' for method expression"),
        ("method=log10,expr=x", "unknown parameter 'expr' for method log10"),
        ("expr=min(x,1),method=expression", "expected expr= as the last key"),
        ("method=sqrt", r"expected method=log10\|zscore\|minmax\|expression"),
    ],
)
def test_bad_expression_normalizer(spec, message):
    with pytest.raises(FeatureError, match=message):
        raw_feature(normalizer=spec)


SHARED = SHARED_DIR


def test_tzrec_criteo_config_normalizes_the_criteo_sample():
    """TorchEasyRec's dlrm_criteo.config uses log(x+3) on the 13 integer columns."""
    config_path = os.path.join(SHARED, "tzrec-configs", "examples", "dlrm_criteo.config")
    data_path = os.path.join(SHARED, "data", "criteo-sample", "criteo_sample.txt")
    if not (os.path.exists(config_path) and os.path.exists(data_path)):
        pytest.skip("../shared/tzrec-configs or ../shared/data/criteo-sample is absent")
    import pyarrow.csv as pacsv

    from recforge.config.loader import load_pipeline_config
    from recforge.features import create_pipeline_features

    features = create_pipeline_features(load_pipeline_config(config_path))
    raw = [f for f in features if isinstance(f, RawFeature)]
    assert len(raw) == 13
    table = pacsv.read_csv(data_path)
    for i, feature in enumerate(raw):
        column = table[f"I{i + 1}"].combine_chunks()
        got = feature.parse({feature.column: column})[f"{feature.name}.values"][:, 0]
        expected = np.log(np.nan_to_num(column.to_numpy(zero_copy_only=False), nan=0.0) + 3)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
