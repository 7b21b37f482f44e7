r"""``ExprFeature``: a number computed by an expression over raw columns.

``variables`` name the input columns (``"user:u_age"`` is the variable ``u_age`` reading
column ``u_age``) and ``expression`` is a formula of TorchEasyRec's expression language over
them (``"u_age == i_age ? 1 : 0"``; see :mod:`recforge.features.expression` for the
operators, the scalar functions such as ``log``, ``sigmoid``, ``haversine``, ``round``,
``isnan`` and the vector functions such as ``dot``, ``euclid_dist``, ``l2_norm``,
``reduce_sum``). The expression is parsed once, when the feature is built, into a plan that
evaluates over whole columns; an unknown function or variable is an error naming its
position. A config's text is never evaluated as Python.

A variable holds one number per row (number columns or numeric strings), or one vector per
row (list columns, or strings joined by ``separator``) for the vector functions; a vector
must have the same length in every row of a batch. A null or empty input takes
``fill_missing`` when it is set; otherwise that row's result is ``default_value`` (default
``"0"``), and so is a result that is NaN or infinite (``log(0)``): recforge never hands the
model a non-finite number. The result is dense (``value_dim`` 0 or 1: one number) or, with
``boundaries``, bucketized into ``len(boundaries) + 1`` ids as a ``raw_feature`` is.

Example:
    >>> from recforge.features.fg_mode import FG_DAG
    >>> from recforge.protos import feature_pb2
    >>> cfg = feature_pb2.ExprFeature(
    ...     feature_name="e", variables=["user:a", "item:b"], expression="a > b ? 1 : 0"
    ... )
    >>> ExprFeature(cfg, FG_DAG).parse(
    ...     {"a": pa.array([3, 1, None]), "b": pa.array([2, 2, 2])}
    ... )["e.values"].tolist()
    [[1.0], [0.0], [0.0]]

"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recforge.features.base_feature import FeatureError
from recforge.features.derived_feature import DerivedFeature, split_expression
from recforge.features.expression import ExpressionError, compile_expression
from recforge.features.utils import (
    first_true,
    is_list_type,
    is_number_type,
    is_string_type,
    split_cells,
    to_floats,
)


class ExprFeature(DerivedFeature):
    """An expression over raw columns (see the module docstring)."""

    def setup(self) -> None:
        """Checks the config and builds the parts this kind needs."""
        cfg = self.config
        if cfg.value_dim > 1:
            raise self._error(
                f"an expr_feature gives one number: value_dim must be 0 or 1, found {cfg.value_dim}"
            )
        self._names = [split_expression(v)[1] for v in cfg.variables]
        self._fill = float(cfg.fill_missing) if cfg.HasField("fill_missing") else None
        if not self.reads_fg_output:
            if not cfg.expression:
                raise self._error("an expr_feature needs an expression")
            try:
                self._expr = compile_expression(cfg.expression, self._names)
            except ExpressionError as e:
                raise FeatureError(
                    f"feature '{self.name}': expression: {e}; variables: {list(cfg.variables)}"
                ) from None
        self._out = self._raw_output(value_dim=1)

    @property
    def raw_inputs(self) -> list[str]:
        """The ``variables``."""
        return list(self.config.variables)

    def _numbers(self, values: pa.Array, rows: np.ndarray, column: str) -> np.ndarray:
        if not (is_number_type(values.type) or is_string_type(values.type)):
            raise self._column_error(column, f"expected numbers, found type {values.type}")
        numbers, bad = to_floats(values)
        if bad >= 0:
            raise self._column_error(
                column, f"expected numbers, found {values[bad].as_py()!r} at row {int(rows[bad])}"
            )
        return numbers

    def _variable(self, column: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values float64 [B] or [B, D], missing bool [B])`` of one variable's column."""
        num_rows = len(column)
        if pa.types.is_null(column.type):
            return np.zeros(num_rows), np.ones(num_rows, dtype=bool)
        if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        if is_string_type(column.type):
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
            column = split_cells(column, self.config.separator)
        if not is_list_type(column.type):
            missing = column.is_null().to_numpy(zero_copy_only=False)
            fill = "0" if is_string_type(column.type) else 0
            values = column.fill_null(fill) if column.null_count else column
            rows = np.arange(num_rows)
            return self._numbers(values, rows, name), missing
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        present = lengths > 0
        dims = np.unique(lengths[present])
        if dims.size > 1:
            bad = first_true(present & (lengths != dims[0]))
            raise self._column_error(
                name,
                f"expected vectors of one length in every row, found {int(dims[0])} values "
                f"and {int(lengths[bad])} at row {bad}",
            )
        dim = int(dims[0]) if dims.size else 0
        items = pc.list_flatten(column)
        rows = np.repeat(np.arange(num_rows), lengths)
        missing = ~present
        if items.null_count or (is_string_type(items.type) and len(items)):
            if is_string_type(items.type):
                items = pc.if_else(pc.equal(items, ""), pa.scalar(None, items.type), items)
            null_items = items.is_null().to_numpy(zero_copy_only=False)
            if null_items.any():
                missing[np.unique(rows[null_items])] = True
                items = items.fill_null("0" if is_string_type(items.type) else 0)
        flat = self._numbers(items, rows, name)
        out = np.zeros((num_rows, dim))
        out[present] = flat.reshape(-1, dim) if dim else flat.reshape(0, 0)
        return out, missing

    def compute(self, columns: dict[str, pa.Array]) -> pa.Array:
        """The expression's value per row (null where ``default_value`` applies)."""
        num_rows = self.num_rows(columns, self.raw_inputs)
        env: dict[str, np.ndarray] = {}
        missing = np.zeros(num_rows, dtype=bool)
        for expression, name in zip(self.raw_inputs, self._names):
            if name not in self._expr.used_variables:
                continue
            column = self.input_column(columns, expression, num_rows)
            values, absent = self._variable(column, split_expression(expression)[1])
            if absent.any():
                if self._fill is not None:
                    values = values.copy()
                    values[absent] = self._fill
                else:
                    missing |= absent
            env[name] = values
        try:
            result = self._expr.evaluate(env)
        except ExpressionError as e:
            raise self._error(str(e)) from None
        result = np.broadcast_to(np.asarray(result, dtype=np.float64), (num_rows,))
        return pa.array(result, pa.float64(), mask=missing | ~np.isfinite(result))
