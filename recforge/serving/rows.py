"""``/predict`` request bodies: ``{"rows": [{column: value, ...}, ...]}`` into a pyarrow table.

Each input column becomes one arrow array built the way ``Predictor.predict`` builds a dict of
lists (``pa.array(values, from_pandas=True)``): JSON integers give int64, numbers with a
fraction float64, strings string, lists list arrays, ``null`` a missing value. The model's
features then parse the table exactly as ``recforge predict`` parses a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import pyarrow as pa

from recforge.serving.errors import RequestError

__all__ = ["PredictRequest", "column_needers", "decode_body", "parse_request"]


@dataclass
class PredictRequest:
    """A checked ``/predict`` request.

    Attributes:
        table: the input columns of the model, one row per request row.
        outputs: the model outputs to answer with, in order.

    """

    table: pa.Table
    outputs: list[str]

    @property
    def num_rows(self) -> int:
        """Rows in the request."""
        return self.table.num_rows


def column_needers(model_info: dict[str, Any]) -> dict[str, str]:
    """``{input column: "feature 'f' (IdFeature)"}`` from ``model_info.json``'s features."""
    needers: dict[str, str] = {}
    for feature in model_info.get("features", []):
        for column in feature.get("source_columns", []):
            needers.setdefault(column, f"feature '{feature['name']}' ({feature['type']})")
    return needers


def _describe(value: Any) -> str:
    text = json.dumps(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _column(name: str, values: list[Any]) -> pa.Array:
    """One column as an arrow array; a value unlike the rows before it is named by its row."""
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as error:
        reason = str(error).splitlines()[0]
    # the shortest failing prefix ends at the first bad row (a prefix of a good column is good)
    low, high = 1, len(values)
    while low < high:
        middle = (low + high) // 2
        try:
            pa.array(values[:middle], from_pandas=True)
            low = middle + 1
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            high = middle
    row = low - 1
    if row == 0:
        raise RequestError(
            f"rows[0].{name}: expected a number, string, list or null, found"
            f" {_describe(values[0])}: {reason}"
        )
    before = pa.array(values[:row], from_pandas=True).type
    raise RequestError(
        f"rows[{row}].{name}: expected a value of the column's type in the rows before it"
        f" ({before}), found {_describe(values[row])}"
    )


def decode_body(body: Union[bytes, Any]) -> Any:
    """The JSON value of a request body (a value already decoded is returned as it is).

    Raises:
        RequestError: invalid JSON.

    """
    if not isinstance(body, (bytes, bytearray, str)):
        return body
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(f"body: expected a JSON object, found invalid JSON ({error})") from None


def parse_request(
    body: Union[bytes, dict],
    input_columns: Sequence[str],
    outputs: Sequence[str],
    max_rows: int,
    needers: Optional[dict[str, str]] = None,
) -> PredictRequest:
    """Checks a ``/predict`` body and builds its input table.

    Args:
        body: the request body: ``{"rows": [{column: value}, ...], "outputs": [...]}``
            (``outputs`` optional: a subset of the model's outputs, default all), as bytes or
            already decoded (:func:`decode_body`).
        input_columns: the columns the model reads (``Predictor.input_columns``); other keys
            of a row are ignored.
        outputs: the model's outputs.
        max_rows: the most rows one request may hold (the server's ``max_batch_size``).
        needers: ``{column: what reads it}`` for the missing-column message.

    Returns:
        The table (``input_columns`` in order) and the outputs to answer with.

    Raises:
        RequestError: invalid JSON, no ``rows`` list, an empty or too long ``rows``, a row
            that is not an object or lacks a column, a value unlike its column (status 413
            for too many rows, else 400). The message names the field or row.

    """
    payload = decode_body(body)
    if not isinstance(payload, dict):
        raise RequestError(
            f'body: expected a JSON object {{"rows": [...]}}, found {type(payload).__name__}'
        )
    rows = payload.get("rows")
    if not isinstance(rows, list):
        found = "no 'rows' field" if rows is None else type(rows).__name__
        raise RequestError(f"rows: expected a list of row objects, found {found}")
    if not rows:
        raise RequestError("rows: expected at least one row, found an empty list")
    if len(rows) > max_rows:
        raise RequestError(
            f"rows: expected at most {max_rows} rows (the server's max_batch_size), found"
            f" {len(rows)}; split the request",
            status=413,
        )
    wanted = payload.get("outputs")
    if wanted is None:
        wanted = list(outputs)
    elif not (isinstance(wanted, list) and all(isinstance(o, str) for o in wanted) and wanted):
        raise RequestError(f"outputs: expected a non-empty list of output names, found {wanted!r}")
    unknown = [o for o in wanted if o not in outputs]
    if unknown:
        raise RequestError(
            f"outputs: {unknown} are not outputs of the model; its outputs: {list(outputs)}"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(
                f"rows[{i}]: expected an object of column: value, found {type(row).__name__}"
            )
        for column in input_columns:
            if column not in row:
                needer = (needers or {}).get(column, "the model")
                raise RequestError(
                    f"rows[{i}]: missing column '{column}' needed by {needer} (send null for a"
                    f" missing value); the model reads: {list(input_columns)}"
                )
    table = pa.table({name: _column(name, [row[name] for row in rows]) for name in input_columns})
    return PredictRequest(table=table, outputs=list(wanted))
