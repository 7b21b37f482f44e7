"""TorchEasyRec's feature-generation expression language, parsed once, evaluated over columns.

The language is the one of TorchEasyRec's ``expr_feature.expression`` and of a raw feature's
``normalizer: "method=expression,expr=..."`` (there the only variable is ``x``):

* numbers (``3``, ``2.5``, ``.5``, ``1e-3``), variables, the constants ``_pi`` and ``_e``;
* binary operators, loosest first: ``||`` (1); ``&&`` (2); ``|`` (3); ``&`` (4);
  ``<= >= != == > <`` (5); ``+ -`` (6); ``* /`` (7); ``^`` (8, power, right-associative:
  ``2^3^2 == 2^9``); the others are left-associative (``8-3-2 == 3``);
* unary ``-``, ``+`` and ``!`` (logical not), binding tighter than ``* /`` and looser than
  ``^`` (``-2^2 == -4``, ``2^-1 == 0.5``);
* the C-style ternary ``cond ? a : b``, loosest of all and right-associative
  (``a ? b : c ? d : e == a ? b : (c ? d : e)``);
* the functions of :data:`FUNCTIONS` (scalar, variadic and vector functions).

Evaluation is vectorised with numpy in float64: a variable is one column, ``[N]`` (one number
per row) or ``[N, D]`` (a vector of ``D`` numbers per row, for the vector functions); a
column of one row, like a number, broadcasts to every row. Numbers behave as IEEE doubles do
in C: ``1/0 == inf``, ``0/0``, ``log(-1)`` and ``sqrt(-1)`` are NaN, NaN compares unequal to
everything, and as a condition (``? :``, ``&&``, ``||``, ``!``) any non-zero value, NaN
included, is true. Comparisons and logical operators give ``1.0`` or ``0.0``.

Where TorchEasyRec's documentation leaves a detail open we chose (and the tests pin):

* ``rnd`` (a random number) is refused: a feature must be the same at training and serving.
* Unary ``!`` and ``+`` are not in TorchEasyRec's tables; they are accepted with C's meaning.
* ``%`` is not an operator of the language (its operator table has none); ``mod(a, b)`` is.
* ``mod`` is C's ``fmod``: the result has the sign of the dividend (``mod(-7, 3) == -1``).
* ``|`` and ``&`` truncate their operands to 64-bit integers; a NaN or infinite operand
  gives NaN.
* ``sign``, ``min``, ``max`` return NaN for a NaN argument (numpy's rule).
* ``round`` rounds half away from zero, ``rint`` half to even, ``roundp(x, d)`` rounds
  ``x`` to ``d`` decimals half away from zero.
* ``sphere_dist`` and ``haversine`` take ``(lng1, lat1, lng2, lat2)`` in degrees and return
  kilometres on a sphere of radius :data:`EARTH_RADIUS_KM`: ``sphere_dist`` by the
  spherical law of cosines, ``haversine`` by the haversine formula (the same distance; the
  latter is the more accurate for nearby points).
* ``std_dev`` and ``variance`` divide by ``n``, ``pop_std_dev`` and ``pop_variance`` by
  ``n - 1``, as TorchEasyRec's function table says (the reverse of the usual naming).
* A vector's length must be the same in every row (a 2-D array); ragged vectors are refused.

Errors are :class:`ExpressionError` with one-line messages such as
``expr 'log(x+3': expected ')', found the end of the expression at position 8`` (1-based);
:attr:`ExpressionError.pointer` draws the expression with a caret under that position.

Example:
    >>> import numpy as np
    >>> expr = compile_expression("log(x+3)", ["x"])
    >>> expr.evaluate({"x": np.array([-2.0, 0.0])}).round(4).tolist()
    [0.0, 1.0986]
    >>> compile_expression("a > 18 ? 1 : 0", ["a"]).evaluate({"a": np.array([20, 3])}).tolist()
    [1.0, 0.0]

"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from recforge.errors import RecforgeError

#: the Earth's mean radius, the sphere ``sphere_dist`` and ``haversine`` measure on
EARTH_RADIUS_KM = 6371.0
#: deeper nesting is refused (Python's recursion limit would otherwise end in a traceback)
MAX_DEPTH = 100

Array = np.ndarray


class ExpressionError(RecforgeError):
    """An expression does not parse, names something unknown, or does not fit its inputs.

    Attributes:
        expression: the expression's text.
        position: the 1-based character position of the problem (``None`` when the problem
            is in the inputs rather than at a place in the text).
        reason: what was expected and what was found.

    """

    def __init__(self, expression: str, reason: str, position: Optional[int] = None) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"expr {expression!r}: {reason}{where}")

    @property
    def pointer(self) -> str:
        """The expression with a caret under the problem on a second line ("" without one)."""
        if self.position is None:
            return ""
        return f"{self.expression}\n{' ' * (self.position - 1)}^"


# ------------------------------------------------------------------------------ helpers
def _align(*arrays: Array) -> list[Array]:
    """Let per-row numbers ``[N]`` meet vectors ``[N, D]``: ``[N]`` becomes ``[N, 1]``."""
    if any(a.ndim == 2 for a in arrays):
        return [a[:, None] if a.ndim == 1 else a for a in arrays]
    return list(arrays)


def _elementwise(ufunc: Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    def apply(a: Array, b: Array) -> Array:
        a, b = _align(a, b)
        return ufunc(a, b)

    return apply


def _compare(ufunc: Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    def apply(a: Array, b: Array) -> Array:
        a, b = _align(a, b)
        return ufunc(a, b).astype(np.float64)

    return apply


def _truth(a: Array) -> Array:
    """C's truth of a double: non-zero (NaN included) is true."""
    return a != 0


def _logical_and(a: Array, b: Array) -> Array:
    a, b = _align(a, b)
    return (_truth(a) & _truth(b)).astype(np.float64)


def _logical_or(a: Array, b: Array) -> Array:
    a, b = _align(a, b)
    return (_truth(a) | _truth(b)).astype(np.float64)


def _bitwise(ufunc: Callable[[Array, Array], Array]) -> Callable[[Array, Array], Array]:
    def apply(a: Array, b: Array) -> Array:
        a, b = _align(a, b)
        finite = np.isfinite(a) & np.isfinite(b)
        ia = np.where(np.isfinite(a), a, 0).astype(np.int64)
        ib = np.where(np.isfinite(b), b, 0).astype(np.int64)
        return np.where(finite, ufunc(ia, ib).astype(np.float64), np.nan)

    return apply


def _ternary(cond: Array, a: Array, b: Array) -> Array:
    cond, a, b = _align(cond, a, b)
    return np.where(_truth(cond), a, b)


def _negate(a: Array) -> Array:
    return np.negative(a)


def _not(a: Array) -> Array:
    return (a == 0).astype(np.float64)


def _round_half_away(x: Array) -> Array:
    whole = np.trunc(x)
    frac = x - whole  # exact in floating point
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def _roundp(x: Array, digits: Array) -> Array:
    x, digits = _align(x, digits)
    scale = np.power(10.0, digits)
    return _round_half_away(x * scale) / scale


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def _isnan(x: Array) -> Array:
    return np.isnan(x).astype(np.float64)


def _sphere_dist(lng1: Array, lat1: Array, lng2: Array, lat2: Array) -> Array:
    lng1, lat1, lng2, lat2 = (np.radians(a) for a in _align(lng1, lat1, lng2, lat2))
    cos_angle = np.sin(lat1) * np.sin(lat2) + np.cos(lat1) * np.cos(lat2) * np.cos(lng2 - lng1)
    return EARTH_RADIUS_KM * np.arccos(np.clip(cos_angle, -1.0, 1.0))


def _haversine(lng1: Array, lat1: Array, lng2: Array, lat2: Array) -> Array:
    lng1, lat1, lng2, lat2 = (np.radians(a) for a in _align(lng1, lat1, lng2, lat2))
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    )
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _fold(ufunc: Callable[[Array, Array], Array]) -> Callable[..., Array]:
    def apply(*args: Array) -> Array:
        return functools.reduce(ufunc, _align(*args))

    return apply


def _avg(*args: Array) -> Array:
    return functools.reduce(np.add, _align(*args)) / len(args)


# ------------------------------------------------------------------------------ vectors
def _as_vectors(a: Array) -> Array:
    """``[N, D]`` vectors; a per-row number ``[N]`` (or a number) is a vector of length 1."""
    if a.ndim == 2:
        return a
    return a.reshape(-1, 1)


def _reducer(
    reduce: Callable[[Array], Array], empty: Optional[float] = None
) -> Callable[[Array], Array]:
    """A function of one vector per row; ``empty``: its value on vectors of length 0."""

    def apply(a: Array) -> Array:
        v = _as_vectors(a)
        if v.shape[1] == 0:
            return np.full(v.shape[0], np.nan if empty is None else empty)
        return reduce(v)

    return apply


def _length(a: Array) -> Array:
    v = _as_vectors(a)
    return np.full(v.shape[0], float(v.shape[1]))


def _variance(ddof: int) -> Callable[[Array], Array]:
    def apply(v: Array) -> Array:
        centred = v - v.mean(axis=1, keepdims=True)
        return np.sum(centred * centred, axis=1) / (v.shape[1] - ddof)

    return apply


class _LengthMismatch(Exception):
    """Two vectors of different lengths met in a two-vector function."""

    def __init__(self, left: int, right: int) -> None:
        super().__init__(left, right)
        self.left, self.right = left, right
        #: the plan node that raised it (set on the way up)
        self.node: Optional[_Apply] = None


def _pair(reduce: Callable[[Array, Array], Array], empty: float) -> Callable[[Array, Array], Array]:
    """A function of two equally long vectors per row."""

    def apply(a: Array, b: Array) -> Array:
        va, vb = _as_vectors(a), _as_vectors(b)
        if va.shape[1] != vb.shape[1]:
            raise _LengthMismatch(va.shape[1], vb.shape[1])
        if va.shape[1] == 0:
            return np.full(max(va.shape[0], vb.shape[0]), empty)
        return reduce(va, vb)

    return apply


def _corr(a: Array, b: Array) -> Array:
    ca = a - a.mean(axis=1, keepdims=True)
    cb = b - b.mean(axis=1, keepdims=True)
    return np.sum(ca * cb, axis=1) / np.sqrt(np.sum(ca * ca, axis=1) * np.sum(cb * cb, axis=1))


def _euclid(a: Array, b: Array) -> Array:
    d = a - b
    return np.sqrt(np.sum(d * d, axis=1))


# ------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Function:
    """A built-in function.

    Attributes:
        name: its name in expressions.
        arity: the number of arguments; ``None``: one or more.
        apply: the vectorised implementation (float64 arrays in, a float64 array out).
        vector: whether its arguments are vectors (``[N, D]``) reduced to one number per row.

    """

    name: str
    arity: Optional[int]
    apply: Callable[..., Array]
    vector: bool = False


def _table() -> dict[str, Function]:
    unary: dict[str, Callable[[Array], Array]] = {
        "isnan": _isnan,
        "sin": np.sin,
        "cos": np.cos,
        "tan": np.tan,
        "asin": np.arcsin,
        "acos": np.arccos,
        "atan": np.arctan,
        "sinh": np.sinh,
        "cosh": np.cosh,
        "tanh": np.tanh,
        "asinh": np.arcsinh,
        "acosh": np.arccosh,
        "atanh": np.arctanh,
        "log2": np.log2,
        "log10": np.log10,
        "log": np.log,
        "ln": np.log,
        "exp": np.exp,
        "sqrt": np.sqrt,
        "sign": np.sign,
        "abs": np.abs,
        "rint": np.rint,
        "floor": np.floor,
        "ceil": np.ceil,
        "trunc": np.trunc,
        "round": _round_half_away,
        "sigmoid": _sigmoid,
    }
    table = {name: Function(name, 1, fn) for name, fn in unary.items()}
    table["roundp"] = Function("roundp", 2, _roundp)
    table["mod"] = Function("mod", 2, _elementwise(np.fmod))
    table["sphere_dist"] = Function("sphere_dist", 4, _sphere_dist)
    table["haversine"] = Function("haversine", 4, _haversine)
    table["min"] = Function("min", None, _fold(np.minimum))
    table["max"] = Function("max", None, _fold(np.maximum))
    table["sum"] = Function("sum", None, _fold(np.add))
    table["avg"] = Function("avg", None, _avg)
    vector_unary: dict[str, Callable[[Array], Array]] = {
        "len": _length,
        "l2_norm": _reducer(lambda v: np.sqrt(np.sum(v * v, axis=1)), 0.0),
        "squared_norm": _reducer(lambda v: np.sum(v * v, axis=1), 0.0),
        "std_dev": _reducer(lambda v: np.sqrt(_variance(0)(v))),
        "pop_std_dev": _reducer(lambda v: np.sqrt(_variance(1)(v))),
        "variance": _reducer(_variance(0)),
        "pop_variance": _reducer(_variance(1)),
        "reduce_min": _reducer(lambda v: np.min(v, axis=1)),
        "reduce_max": _reducer(lambda v: np.max(v, axis=1)),
        "reduce_sum": _reducer(lambda v: np.sum(v, axis=1), 0.0),
        "reduce_mean": _reducer(lambda v: np.mean(v, axis=1)),
        "reduce_prod": _reducer(lambda v: np.prod(v, axis=1), 1.0),
    }
    for name, fn in vector_unary.items():
        table[name] = Function(name, 1, fn, vector=True)
    table["dot"] = Function("dot", 2, _pair(lambda a, b: np.sum(a * b, axis=1), 0.0), True)
    table["euclid_dist"] = Function("euclid_dist", 2, _pair(_euclid, 0.0), True)
    table["corr"] = Function("corr", 2, _pair(_corr, np.nan), True)
    return table


#: name -> built-in function
FUNCTIONS: dict[str, Function] = _table()
#: functions of TorchEasyRec's language that are refused, with the reason
REFUSED_FUNCTIONS: dict[str, str] = {
    "rnd": "it draws a random number, so a feature would differ between training and serving",
}
#: name -> value of the built-in constants
CONSTANTS: dict[str, float] = {"_pi": math.pi, "_e": math.e}
#: binary operator -> (precedence, implementation); higher binds tighter
BINARY_OPERATORS: dict[str, tuple[int, Callable[[Array, Array], Array]]] = {
    "||": (1, _logical_or),
    "&&": (2, _logical_and),
    "|": (3, _bitwise(np.bitwise_or)),
    "&": (4, _bitwise(np.bitwise_and)),
    "<=": (5, _compare(np.less_equal)),
    ">=": (5, _compare(np.greater_equal)),
    "!=": (5, _compare(np.not_equal)),
    "==": (5, _compare(np.equal)),
    ">": (5, _compare(np.greater)),
    "<": (5, _compare(np.less)),
    "+": (6, _elementwise(np.add)),
    "-": (6, _elementwise(np.subtract)),
    "*": (7, _elementwise(np.multiply)),
    "/": (7, _elementwise(np.divide)),
    "^": (8, _elementwise(np.power)),
}
_RIGHT_ASSOCIATIVE = {"^"}
#: unary operator -> implementation; their operand binds like ``^``'s operands
UNARY_OPERATORS: dict[str, Callable[[Array], Array]] = {
    "-": _negate,
    "+": lambda a: a,
    "!": _not,
}
_UNARY_OPERAND_PRECEDENCE = BINARY_OPERATORS["^"][0]


# ------------------------------------------------------------------------------ tokens
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOLS = sorted(
    set(BINARY_OPERATORS) | set(UNARY_OPERATORS) | {"?", ":", "(", ")", ","},
    key=len,
    reverse=True,
)
_HINTS = {
    "%": "'%' is not an operator of the language; use mod(a, b)",
    "=": "'=' is not an operator; did you mean '=='?",
}


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "symbol" or "end"
    text: str
    pos: int  # 0-based offset in the expression

    def describe(self) -> str:
        return "the end of the expression" if self.kind == "end" else repr(self.text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        match = _NUMBER.match(text, i)
        if match:
            tokens.append(_Token("number", match.group(), i))
            i = match.end()
            continue
        match = _NAME.match(text, i)
        if match:
            tokens.append(_Token("name", match.group(), i))
            i = match.end()
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol is None:
            hint = _HINTS.get(ch, f"unexpected character {ch!r}")
            raise ExpressionError(text, hint, i + 1)
        tokens.append(_Token("symbol", symbol, i))
        i += len(symbol)
    tokens.append(_Token("end", "", len(text)))
    return tokens


# ------------------------------------------------------------------------------ plan
class _Node:
    """A node of the evaluation plan."""

    depth: int = 1

    def evaluate(self, env: Mapping[str, Array]) -> Array:
        raise NotImplementedError


class _Const(_Node):
    def __init__(self, value: Any) -> None:
        self.value = np.asarray(value, dtype=np.float64)

    def evaluate(self, env: Mapping[str, Array]) -> Array:
        return self.value


class _Var(_Node):
    def __init__(self, name: str) -> None:
        self.name = name

    def evaluate(self, env: Mapping[str, Array]) -> Array:
        return env[self.name]


class _Apply(_Node):
    """An operator or function applied to the values of its argument nodes."""

    def __init__(
        self, label: str, fn: Callable[..., Array], args: Sequence[_Node], pos: int
    ) -> None:
        self.label, self.fn, self.args, self.pos = label, fn, tuple(args), pos
        self.depth = 1 + max(a.depth for a in self.args)

    def evaluate(self, env: Mapping[str, Array]) -> Array:
        try:
            return self.fn(*(a.evaluate(env) for a in self.args))
        except _LengthMismatch as e:
            if e.node is None:
                e.node = self
            raise


class _Parser:
    """Precedence climbing over the tokens of one expression."""

    def __init__(self, text: str, variables: Sequence[str]) -> None:
        self.text = text
        self.variables = set(variables)
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0
        self.used: list[str] = []

    # -- token helpers
    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def error(self, reason: str, token: Optional[_Token] = None) -> ExpressionError:
        return ExpressionError(self.text, reason, (token or self.token).pos + 1)

    def advance(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def is_symbol(self, text: str) -> bool:
        return self.token.kind == "symbol" and self.token.text == text

    def expect(self, text: str) -> None:
        if not self.is_symbol(text):
            raise self.error(f"expected {text!r}, found {self.token.describe()}")
        self.advance()

    # -- building nodes
    def apply(self, label: str, fn: Callable[..., Array], args: list[_Node], pos: int) -> _Node:
        constants = [a.value for a in args if isinstance(a, _Const)]
        if len(constants) == len(args):  # fold: numbers are vectors of length 1, never ragged
            with np.errstate(all="ignore"):
                return _Const(fn(*constants))
        node = _Apply(label, fn, args, pos)
        if node.depth > MAX_DEPTH:
            raise ExpressionError(self.text, f"nests deeper than {MAX_DEPTH} levels", pos + 1)
        return node

    # -- grammar
    def parse(self) -> _Node:
        node = self.ternary()
        if self.token.kind != "end":
            raise self.error(f"expected an operator or the end, found {self.token.describe()}")
        return node

    def ternary(self) -> _Node:
        cond = self.binary(1)
        if not self.is_symbol("?"):
            return cond
        pos = self.advance().pos
        then = self.ternary()
        self.expect(":")
        otherwise = self.ternary()
        return self.apply("?:", _ternary, [cond, then, otherwise], pos)

    def binary(self, min_precedence: int) -> _Node:
        self.nesting += 1
        try:
            return self._binary(min_precedence)
        finally:
            self.nesting -= 1

    def _binary(self, min_precedence: int) -> _Node:
        if self.nesting > MAX_DEPTH:
            raise self.error(f"nests deeper than {MAX_DEPTH} levels")
        left = self.unary()
        while self.token.kind == "symbol" and self.token.text in BINARY_OPERATORS:
            op = self.token.text
            precedence, fn = BINARY_OPERATORS[op]
            if precedence < min_precedence:
                break
            pos = self.advance().pos
            right = self.binary(precedence if op in _RIGHT_ASSOCIATIVE else precedence + 1)
            left = self.apply(op, fn, [left, right], pos)
        return left

    def unary(self) -> _Node:
        token = self.token
        if token.kind == "symbol" and token.text in UNARY_OPERATORS:
            self.advance()
            operand = self.binary(_UNARY_OPERAND_PRECEDENCE)
            return self.apply(token.text, UNARY_OPERATORS[token.text], [operand], token.pos)
        return self.primary()

    def primary(self) -> _Node:
        token = self.advance()
        if token.kind == "number":
            return _Const(float(token.text))
        if token.kind == "name":
            if self.is_symbol("("):
                return self.call(token)
            return self.name(token)
        if token.kind == "symbol" and token.text == "(":
            node = self.ternary()
            self.expect(")")
            return node
        raise self.error(
            f"expected a number, a name, '(' or a unary operator, found {token.describe()}",
            token,
        )

    def name(self, token: _Token) -> _Node:
        if token.text in CONSTANTS:
            return _Const(CONSTANTS[token.text])
        if token.text in self.variables:
            if token.text not in self.used:
                self.used.append(token.text)
            return _Var(token.text)
        if token.text in FUNCTIONS or token.text in REFUSED_FUNCTIONS:
            raise self.error(f"function {token.text!r} needs '(' and its arguments", token)
        known = ", ".join(sorted(self.variables)) or "none"
        raise self.error(f"unknown variable {token.text!r} (variables: {known})", token)

    def call(self, name: _Token) -> _Node:
        if name.text in REFUSED_FUNCTIONS:
            reason = REFUSED_FUNCTIONS[name.text]
            raise self.error(f"function {name.text!r} is not supported: {reason}", name)
        function = FUNCTIONS.get(name.text)
        if function is None:
            raise self.error(f"unknown function {name.text!r}", name)
        self.expect("(")
        args: list[_Node] = []
        if not self.is_symbol(")"):
            args.append(self.ternary())
            while self.is_symbol(","):
                self.advance()
                args.append(self.ternary())
        self.expect(")")
        if function.arity is None and not args:
            raise self.error(f"function {name.text!r} takes 1 or more arguments, found 0", name)
        if function.arity is not None and len(args) != function.arity:
            plural = "s" if function.arity != 1 else ""
            raise self.error(
                f"function {name.text!r} takes {function.arity} argument{plural}, found "
                f"{len(args)}",
                name,
            )
        return self.apply(name.text, function.apply, args, name.pos)


# ------------------------------------------------------------------------------ public
class Expression:
    """A compiled expression: parse once with :func:`compile_expression`, evaluate often.

    Attributes:
        text: the expression's text.
        variables: the variable names it may use (as declared).
        used_variables: those it does use, in order of first use.

    """

    def __init__(
        self, text: str, variables: tuple[str, ...], used: tuple[str, ...], root: _Node
    ) -> None:
        self.text = text
        self.variables = variables
        self.used_variables = used
        self._root = root

    def __repr__(self) -> str:
        return f"Expression({self.text!r}, variables={list(self.variables)})"

    def __reduce__(self) -> tuple[Any, tuple[str, tuple[str, ...]]]:
        # the plan holds closures; a copy in another process compiles the text again
        return compile_expression, (self.text, self.variables)

    def _error(self, reason: str, position: Optional[int] = None) -> ExpressionError:
        return ExpressionError(self.text, reason, position)

    def _inputs(self, values: Mapping[str, Any]) -> tuple[dict[str, Array], Optional[int]]:
        """The declared variables' columns as float64 arrays, and their common row count."""
        env: dict[str, Array] = {}
        rows: dict[str, int] = {}
        for name in self.variables:
            if name not in values:
                if name in self.used_variables:
                    raise self._error(f"no values given for variable {name!r}")
                continue
            try:
                column = np.asarray(values[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise self._error(
                    f"variable {name!r}: expected numbers, one per row or a vector of the same "
                    "length in every row (ragged vectors are not supported)"
                ) from None
            if column.ndim == 0:
                column = column.reshape(1)
            if column.ndim > 2:
                raise self._error(
                    f"variable {name!r}: expected one number or one vector per row, found an "
                    f"array of shape {column.shape}"
                )
            env[name] = column
            rows[name] = column.shape[0]
        sizes = {n for n in rows.values() if n != 1}
        if len(sizes) > 1:
            listed = ", ".join(f"{k!r} {v}" for k, v in rows.items())
            raise self._error(f"variables have different row counts ({listed})")
        num_rows = sizes.pop() if sizes else (1 if rows else None)
        return env, num_rows

    def evaluate(self, values: Mapping[str, Any]) -> Array:
        """Evaluate the expression for every row.

        Args:
            values: variable name -> its column: ``[N]`` (one number per row) or ``[N, D]``
                (one vector per row); a column of one row broadcasts to all ``N``.

        Returns:
            float64 ``[N]``, a new array (``N``: the declared variables' row count; shape
            ``[]`` when no declared variable is given).

        Raises:
            ExpressionError: a used variable is missing, a column is ragged or of another
                shape, row counts differ, two vectors of different lengths meet in ``dot``,
                ``euclid_dist`` or ``corr``, or the result is a vector per row.

        """
        env, num_rows = self._inputs(values)
        with np.errstate(all="ignore"):
            try:
                result = np.asarray(self._root.evaluate(env), dtype=np.float64)
            except _LengthMismatch as e:
                assert e.node is not None
                raise self._error(
                    f"{e.node.label} needs vectors of equal length, found {e.left} and {e.right}",
                    e.node.pos + 1,
                ) from None
        if result.ndim == 2:
            if result.shape[1] != 1:
                raise self._error(
                    f"gives {result.shape[1]} numbers per row (a vector); reduce it to one "
                    "with a vector function such as reduce_sum"
                )
            result = result[:, 0]
        if num_rows is None:
            return result.reshape(()) if result.size == 1 else result.copy()
        if result.shape != (num_rows,):
            return np.array(np.broadcast_to(result, (num_rows,)), dtype=np.float64)
        if any(np.may_share_memory(result, column) for column in env.values()):
            result = result.copy()
        return result


def compile_expression(text: str, variables: Sequence[str]) -> Expression:
    """Parse an expression into a plan that evaluates vectorised (never ``eval``).

    Args:
        text: the expression, e.g. ``"log(x+3)"`` or ``"u_age == i_age ? 1 : 0"``.
        variables: the names it may use (for a normalizer: ``["x"]``).

    Returns:
        The compiled :class:`Expression`.

    Raises:
        ExpressionError: a syntax error, an unknown function or variable, a wrong number of
            arguments, a refused function (``rnd``), or a variable name that is no identifier
            or is a built-in constant; the message gives the 1-based position.

    """
    declared = tuple(variables)
    for name in declared:
        if not _NAME.fullmatch(name):
            raise ExpressionError(text, f"variable name {name!r} is not an identifier")
        if name in CONSTANTS:
            raise ExpressionError(text, f"variable name {name!r} is a built-in constant")
    parser = _Parser(text, declared)
    root = parser.parse()
    return Expression(text, declared, tuple(parser.used), root)
