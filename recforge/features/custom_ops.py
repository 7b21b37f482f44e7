"""Operators of ``custom_feature``, chosen by ``operator_name``: built-in ones and user plugins.

TorchEasyRec loads a custom feature's operator from a C++ library (``operator_lib_file``);
recforge has the operators TorchEasyRec ships built in and takes user operators as Python
functions registered by name in a plugin module (``plugins: "my_pkg.ops"`` in the config or
``--plugin my_pkg.ops``, imported before the features are built)::

    import pyarrow.compute as pc
    from recforge.features.custom_ops import register_operator

    @register_operator("TitleLength")
    def title_length(inputs, params):
        return pc.utf8_length(inputs[0].fill_null(""))

An operator takes ``(inputs, params)``: one ``pa.Array`` of ``B`` rows per ``expression``
entry and the ``operator_params`` as a dict (plus the inputs' column names under
:data:`INPUT_NAMES`), and returns ``B`` rows (a ``pa.Array``, numpy
array or list): numbers for a dense or ``boundaries`` feature, values to bucketize for a
``hash_bucket_size`` / ``num_buckets`` / vocabulary one, lists for several values per row.
A ``ValueError`` it raises is reported as a data error of the feature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.expression import ExpressionError, compile_expression
from recforge.features.utils import FLOAT_PATTERN
from recforge.utils.registry import RegistryError

#: the key of ``params`` holding the column names of the inputs, in ``expression`` order
INPUT_NAMES = "_input_names"

Operator = Callable[[list[pa.Array], dict[str, Any]], Union[pa.Array, np.ndarray, list]]

_OPERATORS: dict[str, Operator] = {}


def register_operator(name: str) -> Callable[[Operator], Operator]:
    """Register a custom-feature operator under ``name`` (a decorator).

    Args:
        name: the ``operator_name`` configs use.

    Raises:
        RegistryError: ``name`` is taken by another function.

    """

    def add(fn: Operator) -> Operator:
        known = _OPERATORS.get(name)
        if known is not None and known is not fn:
            where = f"{getattr(known, '__module__', '?')}.{getattr(known, '__name__', '?')}"
            raise RegistryError(
                f"custom operator '{name}' is already registered by {where}; pick another name"
            )
        _OPERATORS[name] = fn
        return fn

    return add


def get_operator(name: str) -> Operator:
    """The operator registered as ``name``.

    Raises:
        RegistryError: no operator has that name (the message lists the known ones).

    """
    if name not in _OPERATORS:
        raise RegistryError(
            f"unknown custom operator '{name}'; known: {sorted(_OPERATORS)} (register one with "
            "recforge.features.custom_ops.register_operator in a plugin module)"
        )
    return _OPERATORS[name]


def operator_names() -> list[str]:
    """The registered operator names, sorted."""
    return sorted(_OPERATORS)


# ------------------------------------------------------------------------------ built-ins
def _levenshtein(a: Any, b: Any) -> int:
    """Edit distance (insert, delete, substitute: cost 1 each) of two sequences."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@register_operator("EditDistance")
def edit_distance(inputs: list[pa.Array], params: dict[str, Any]) -> np.ndarray:
    """Levenshtein distance between two text inputs, per row (a null text is empty).

    ``encoding``: ``"utf-8"`` compares characters; ``"latin"`` (TorchEasyRec's default)
    compares bytes, so a 3-byte character counts as 3. The distance is computed row by row
    in Python (a dynamic programme per pair of texts).
    """
    if len(inputs) != 2:
        raise ValueError(f"EditDistance takes 2 inputs, found {len(inputs)}")
    encoding = str(params.get("encoding", "latin")).lower().replace("_", "-")
    if encoding not in ("utf-8", "utf8", "latin", "latin1", "latin-1"):
        raise ValueError(f"EditDistance encoding must be utf-8 or latin, found '{encoding}'")
    by_chars = encoding in ("utf-8", "utf8")
    texts = [pc.cast(column, pa.string()).fill_null("").to_pylist() for column in inputs]
    if by_chars:
        out = [_levenshtein(a, b) for a, b in zip(*texts)]
    else:
        out = [_levenshtein(a.encode(), b.encode()) for a, b in zip(*texts)]
    return np.asarray(out, dtype=np.float64)


@register_operator("RegexReplace")
def regex_replace(inputs: list[pa.Array], params: dict[str, Any]) -> pa.Array:
    r"""Replace every match of ``regex_patten`` (TorchEasyRec's spelling) by ``replacement``.

    The pattern is RE2 syntax (pyarrow's), groups are referred to as ``\1`` in the
    replacement; TorchEasyRec's operator uses C++ ``std::regex``, which agrees on ordinary
    patterns. Nulls stay null.
    """
    if len(inputs) != 1:
        raise ValueError(f"RegexReplace takes 1 input, found {len(inputs)}")
    pattern = params.get("regex_patten", params.get("regex_pattern"))
    if not pattern:
        raise ValueError("RegexReplace needs operator_params regex_patten")
    replacement = str(params.get("replacement", ""))
    try:
        return pc.replace_substring_regex(
            pc.cast(inputs[0], pa.string()), str(pattern), replacement
        )
    except pa.ArrowInvalid as e:
        raise ValueError(f"regex_patten '{pattern}' is no valid RE2 pattern: {e}") from None


#: SeqExpr formulas that name a function of the inputs instead of spelling it out
_NAMED_FORMULAS = {"spherical_distance": "sphere_dist"}


def _numbers(column: pa.Array, name: str) -> np.ndarray:
    """float64 ``[B]`` of a number or numeric-string column; nulls are NaN."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_trim_whitespace(column)
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    try:
        numbers = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise ValueError(f"input '{name}': expected numbers, found {column.type}") from None
        ok = pc.match_substring_regex(column, FLOAT_PATTERN).fill_null(True)
        row = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"input '{name}': expected numbers, found {column[row].as_py()!r} at row {row}"
        ) from None
    return numbers.to_numpy(zero_copy_only=False)


@register_operator("SeqExpr")
def seq_expr(inputs: list[pa.Array], params: dict[str, Any]) -> pa.Array:
    """A formula of the inputs, per row (per element in a ``sequence_custom_feature``).

    ``formula`` is an expression of :mod:`recforge.features.expression` whose variables are
    the inputs' column names (``"cur_time-clk_time_seq"``), or ``spherical_distance``: the
    distance in km of ``(lng1, lat1, lng2, lat2)``, the four inputs in order. A row with a
    null input, or whose result is not finite, is null (the feature's ``default_value``).
    """
    formula = str(params.get("formula", "")).strip()
    names = list(params.get(INPUT_NAMES, [f"x{i}" for i in range(len(inputs))]))
    if not formula:
        raise ValueError("SeqExpr needs operator_params formula")
    if formula in _NAMED_FORMULAS:
        if len(inputs) != 4:
            raise ValueError(f"formula {formula} takes 4 inputs, found {len(inputs)}")
        names = ["lng1", "lat1", "lng2", "lat2"]
        formula = f"{_NAMED_FORMULAS[formula]}(lng1, lat1, lng2, lat2)"
    try:
        expression = compile_expression(formula, names)
    except ExpressionError as e:
        raise ValueError(str(e)) from None
    values = {n: _numbers(c, n) for n, c in zip(names, inputs)}
    with np.errstate(all="ignore"):
        out = np.broadcast_to(expression.evaluate(values), (len(inputs[0]),)).astype(np.float64)
    return pa.array(out, mask=~np.isfinite(out))
