"""``Predictor``: score tables in Python with an exported model (``recforge.load_predictor``).

Example:
    >>> import recforge
    >>> predictor = recforge.load_predictor("experiments/deepfm_export")  # doctest: +SKIP
    >>> predictor.predict(pandas_frame)["probs"]  # doctest: +SKIP
    array([0.12, 0.57, ...], dtype=float32)

Input columns are parsed exactly as in training and in ``recforge predict`` (same features,
same ``DataParser``, same ``fg_mode``: raw columns when training read raw columns), then
scored by the exported TorchScript model. Files the features read (vocabularies, ...) come
from the export directory's ``assets/``, wherever the directory was moved.

A model trained on FG output (``fg_mode: FG_NONE`` or ``FG_BUCKETIZE``) can also be served
from raw columns with ``raw_input=True``: the features are built in ``FG_DAG`` mode from the
exported config and compute themselves from the columns their expressions name, as
TorchEasyRec's serving runs the FG of ``fg.json`` before such a model. The ids are the
offline FG's when it was TorchEasyRec's FG or :func:`recforge.features.fg_offline.run_fg`.

"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa
import torch

from recforge.errors import ExportError, PredictError
from recforge.utils.layout import EXPORT_CONFIG_FILE as CONFIG_FILE
from recforge.utils.layout import EXPORT_FILES, MODEL_FILE, MODEL_INFO_FILE

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "MODEL_INFO_FILE",
    "Predictor",
    "check_export_id_hash",
    "load_predictor",
    "read_model_info",
    "resolve_export_dir",
]

DEFAULT_BATCH_SIZE = 8192


def resolve_export_dir(path: str) -> str:
    """The export directory of ``path`` (the directory or its ``scripted_model.pt``).

    Raises:
        ExportError: the directory does not exist or lacks one of the export files.

    """
    if os.path.isfile(path) and os.path.basename(path) == MODEL_FILE:
        path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise ExportError(
            f"export directory '{path}' not found (create one with recforge export --config"
            " ... --export_dir ...)"
        )
    for name in EXPORT_FILES:
        if not os.path.isfile(os.path.join(path, name)):
            raise ExportError(
                f"export directory '{path}' has no {name}: it is not a complete recforge export"
                " (re-run recforge export)"
            )
    return path


def read_model_info(export_dir: str) -> dict[str, Any]:
    """``model_info.json`` of an export directory, checked for what predict relies on.

    Raises:
        ExportError: the file is not JSON (the message gives its line and column) or lacks
            ``outputs``, a list of ``{"name", "dtype", "shape"}`` objects.

    """
    path = os.path.join(export_dir, MODEL_INFO_FILE)
    hint = "re-run recforge export"
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ExportError(
            f"{path}:{e.lineno}:{e.colno}: expected the JSON object recforge export writes,"
            f" found invalid JSON ({e.msg}); {hint}"
        ) from None
    except UnicodeDecodeError as e:
        raise ExportError(
            f"{path}: expected UTF-8 JSON, found byte {e.object[e.start : e.start + 1]!r} at"
            f" offset {e.start}; {hint}"
        ) from None
    if not isinstance(info, dict):
        raise ExportError(f"{path}: expected a JSON object, found {type(info).__name__}; {hint}")
    outputs = info.get("outputs")
    valid = (
        isinstance(outputs, list)
        and len(outputs) > 0
        and all(
            isinstance(o, dict)
            and isinstance(o.get("name"), str)
            and isinstance(o.get("dtype"), str)
            and isinstance(o.get("shape"), list)
            for o in outputs
        )
    )
    if not valid:
        found = json.dumps(outputs)
        found = found if len(found) <= 120 else found[:117] + "..."
        raise ExportError(
            f"{path}: expected 'outputs' to be a non-empty list of objects with name, dtype"
            f" and shape, found {found}; {hint}"
        )
    return info


def check_export_id_hash(info: dict[str, Any], features: Sequence[Any], export_dir: str) -> None:
    """Refuses an export whose hashed ids were bucketed by another hash than this version's.

    Args:
        info: the export's ``model_info.json``.
        features: the features predict parses input with.
        export_dir: the export directory, for the message.

    Raises:
        ExportError: a feature hashes raw ids and the export records another hash or none
            (written before recforge recorded it, when ids were bucketed by
            ``pandas_hash_array``).

    """
    from recforge.utils.id_hash import ID_HASH, ID_HASH_KEY, LEGACY_ID_HASH, hashing_features

    recorded = info.get(ID_HASH_KEY, LEGACY_ID_HASH)
    if recorded == ID_HASH:
        return
    names = hashing_features(features)
    if names:
        raise ExportError(
            f"{os.path.join(export_dir, MODEL_INFO_FILE)}: expected {ID_HASH_KEY} {ID_HASH} (the"
            f" id hash of this recforge), found {recorded if ID_HASH_KEY in info else 'none'}:"
            f" its model bucketed the ids of {', '.join(names)} with {recorded}, so predictions"
            " would read other ids' embeddings; train and export the model again"
        )


def table_from(data: Any) -> pa.Table:
    """A pyarrow Table from a Table, RecordBatch, pandas DataFrame or dict of columns.

    In a DataFrame or a dict of lists / numpy arrays, NaN and None are missing values (nulls).
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict):
        try:  # NaN and None are missing values, as in pandas
            return pa.table(
                {
                    name: column
                    if isinstance(column, (pa.Array, pa.ChunkedArray))
                    else pa.array(column, from_pandas=True)
                    for name, column in data.items()
                }
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise PredictError(f"cannot turn the input dict into a table: {e}") from None
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise PredictError(f"cannot convert the DataFrame to arrow: {e}") from None
    raise PredictError(
        "predict() takes a pyarrow Table or RecordBatch, a pandas DataFrame or a dict of"
        f" columns; found {type(data).__name__}"
    )


def output_to_arrow(values: torch.Tensor) -> pa.Array:
    """A ``[B]`` tensor as a flat arrow array; ``[B, K, ...]`` as fixed-size lists of K*...."""
    array = values.detach().cpu().numpy()
    if array.ndim <= 1:
        return pa.array(array.reshape(-1))
    flat = array.reshape(array.shape[0], -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def output_arrow_type(output: dict[str, Any]) -> pa.DataType:
    """The arrow type :func:`output_to_arrow` gives an output described in ``model_info.json``.

    Args:
        output: one entry of ``model_info["outputs"]`` (``dtype``, ``shape`` like ``["B", 4]``).

    """
    value = pa.from_numpy_dtype(np.dtype(output["dtype"]))
    tail = output["shape"][1:]
    if not tail:
        return value
    if all(isinstance(d, int) for d in tail):
        return pa.list_(value, int(np.prod(tail)))
    return pa.list_(value)  # a dimension that varies: no fixed width to declare


class Predictor:
    """An exported model with its feature parsing: tables in, predictions out.

    Args:
        export_dir: the directory ``recforge export`` wrote (or its ``scripted_model.pt``).
        batch_size: rows scored at once.
        num_threads: torch intra-op threads (None: leave torch's setting).
        raw_input: read raw columns when the model was trained on FG output (``fg_mode``
            FG_NONE / FG_BUCKETIZE): the features are built in ``FG_DAG`` mode (see the
            module docstring); nothing changes for a model that read raw columns.

    Raises:
        ExportError: the directory is missing or incomplete (also: a file its features
            read is not in ``assets/``), its ``model_info.json`` is not what recforge export
            writes, or the model hashes ids with another hash than this version's (see
            :func:`check_export_id_hash`).

    """

    def __init__(
        self,
        export_dir: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_threads: Optional[int] = None,
        raw_input: bool = False,
    ) -> None:
        import torchrec  # noqa: F401  (registers the fbgemm operators the model may call)

        from recforge.config import load_pipeline_config
        from recforge.datasets.data_parser import DataParser
        from recforge.export.assets import resolve_assets
        from recforge.features.fg_mode import FG_DAG
        from recforge.features.fg_offline import reads_raw_columns, with_fg_mode
        from recforge.utils.pipeline import build_features

        self.export_dir = resolve_export_dir(export_dir)
        self.model_info: dict[str, Any] = read_model_info(self.export_dir)
        self.config = load_pipeline_config(os.path.join(self.export_dir, CONFIG_FILE))
        if any(
            (fc.WhichOneof("feature") or "").endswith("custom_feature")
            for fc in self.config.feature_configs
        ):
            # custom_feature operators may come from the config's plugin modules
            from recforge.utils.registry import import_modules, load_entry_point_plugins

            load_entry_point_plugins()
            import_modules(self.config.plugins)
        resolve_assets(self.config, self.export_dir)
        self.features = build_features(self.config)
        # the hash the model's ids were bucketed with: the export's own features say
        check_export_id_hash(self.model_info, self.features, self.export_dir)
        #: whether the features read raw columns although the model was trained on FG output
        self.raw_input = bool(raw_input) and not reads_raw_columns(self.config)
        if self.raw_input:
            self.config = with_fg_mode(self.config, FG_DAG)
            self.features = build_features(self.config)
        self.parser = DataParser(self.features)
        if num_threads:
            torch.set_num_threads(num_threads)
        try:
            self.model = torch.jit.load(
                os.path.join(self.export_dir, MODEL_FILE), map_location="cpu"
            )
        except RuntimeError as e:
            raise ExportError(
                f"cannot load {os.path.join(self.export_dir, MODEL_FILE)}: {str(e).strip()[:500]}"
            ) from e
        self.model.eval()
        self.batch_size = int(batch_size)

    @property
    def outputs(self) -> list[str]:
        """Names of the model's outputs."""
        return [o["name"] for o in self.model_info["outputs"]]

    @property
    def input_columns(self) -> list[str]:
        """Columns a table must have."""
        return self.parser.input_columns

    def check_outputs(self, output_columns: Optional[Sequence[str]]) -> list[str]:
        """The outputs to keep (all when None).

        Raises:
            PredictError: an unknown output name (the message lists the model's outputs).

        """
        if not output_columns:
            return self.outputs
        unknown = [c for c in output_columns if c not in self.outputs]
        if unknown:
            raise PredictError(
                f"output column(s) {unknown} are not outputs of the exported model; its outputs:"
                f" {self.outputs}"
            )
        return list(output_columns)

    def score(self, parsed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs the scripted model on a flat tensor dict (``DataParser.parse``'s output)."""
        with torch.inference_mode():
            return self.model(parsed)

    def predict_batch(
        self, rb: pa.RecordBatch, output_columns: Optional[Sequence[str]] = None
    ) -> dict[str, torch.Tensor]:
        """Parses and scores one record batch; returns the chosen outputs as tensors."""
        outputs = self.score(self.parser.parse(rb))
        return {name: outputs[name] for name in self.check_outputs(output_columns)}

    def _batches(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        for start in range(0, table.num_rows, self.batch_size):
            part = table.slice(start, self.batch_size).combine_chunks()
            yield from part.to_batches()

    def predict(
        self,
        data: Union[pa.Table, pa.RecordBatch, dict, Any],
        output_columns: Optional[Sequence[str]] = None,
        as_frame: bool = False,
    ) -> Any:
        """Scores every row of ``data``.

        Args:
            data: a pyarrow Table / RecordBatch, a pandas DataFrame or a dict of columns
                (lists or arrays) holding :attr:`input_columns`.
            output_columns: outputs to return (default: all, see :attr:`outputs`).
            as_frame: return a pandas DataFrame instead of a dict.

        Returns:
            ``{output: numpy array [rows, ...]}`` in ``output_columns`` order, or a DataFrame
            (2-D outputs become columns of arrays).

        Raises:
            DataError: a needed column is missing (the message names it and its feature).
            FeatureError: a value cannot be parsed (names the feature, column and row).
            PredictError: unknown output column or unsupported input type.

        """
        names = self.check_outputs(output_columns)
        table = table_from(data)
        self.parser.check_columns(table.column_names)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for rb in self._batches(table):
            outputs = self.predict_batch(rb, names)
            for name in names:
                parts[name].append(outputs[name].detach().cpu().numpy())
        result = {}
        for name in names:
            if parts[name]:
                result[name] = np.concatenate(parts[name])
            else:
                info = next(o for o in self.model_info["outputs"] if o["name"] == name)
                tail = [d for d in info["shape"][1:] if isinstance(d, int)]
                result[name] = np.zeros([0, *tail], dtype=info["dtype"])
        if not as_frame:
            return result
        import pandas as pd

        return pd.DataFrame({k: list(v) if v.ndim > 1 else v for k, v in result.items()})

    def __repr__(self) -> str:
        return (
            f"Predictor({self.export_dir!r}, model={self.model_info.get('model_class')},"
            f" outputs={self.outputs}{', raw_input=True' if self.raw_input else ''})"
        )


def load_predictor(
    export_dir: str, batch_size: int = DEFAULT_BATCH_SIZE, raw_input: bool = False
) -> Predictor:
    """Loads an export directory for scoring tables in Python (see :class:`Predictor`)."""
    return Predictor(export_dir, batch_size=batch_size, raw_input=raw_input)
