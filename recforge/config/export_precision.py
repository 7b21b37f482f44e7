"""The dtype an export runs its MLPs in: ``mlp_dtype`` and TorchEasyRec's ``mixed_precision``.

Both are ``export_config`` fields. TorchEasyRec's ``mixed_precision`` (``"BF16"``, ``"FP16"``
or empty) wraps the dense part of the model in ``torch.autocast`` for its AOT Inductor and
TensorRT exports, and its TorchScript export does not read it. recforge exports TorchScript
and reads it there too: the MLPs, where the dense matmuls are, store and compute in that dtype
(the mechanism of ``mlp_dtype``, a recforge field), and the rest of the model stays float32.
Both fields may be set if they name the same dtype.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from recforge.config.errors import ConfigError

logger = logging.getLogger(__name__)

#: ``mlp_dtype`` names (``recforge.export.exporter.MLP_DTYPES`` maps them to torch dtypes)
MLP_DTYPE_NAMES = ("float32", "bfloat16", "float16")
#: TorchEasyRec's ``mixed_precision`` values and the ``mlp_dtype`` each means
MIXED_PRECISION_DTYPES = {"": "float32", "BF16": "bfloat16", "FP16": "float16"}


def precision_problem(export_config: Any) -> Optional[tuple[str, str]]:
    """``(field path, message)`` when the two fields are unknown or disagree, else None."""
    mlp = export_config.mlp_dtype
    if mlp not in MLP_DTYPE_NAMES:
        return (
            "export_config.mlp_dtype",
            f"expected one of {', '.join(MLP_DTYPE_NAMES)}, found {mlp!r}",
        )
    mixed = export_config.mixed_precision.upper()  # train_config's is read in any case too
    if mixed not in MIXED_PRECISION_DTYPES:
        known = ", ".join(repr(k) for k in MIXED_PRECISION_DTYPES)
        return ("export_config.mixed_precision", f"expected one of {known}, found {mixed!r}")
    if export_config.HasField("mlp_dtype") and mixed and MIXED_PRECISION_DTYPES[mixed] != mlp:
        return (
            "export_config.mixed_precision",
            f"mixed_precision {mixed!r} means mlp_dtype {MIXED_PRECISION_DTYPES[mixed]!r}, but"
            f" export_config.mlp_dtype is {mlp!r}; set one of them, or both to one dtype",
        )
    return None


def export_mlp_dtype(export_config: Any) -> str:
    """The ``mlp_dtype`` name the export uses (``mixed_precision`` when it is set).

    Raises:
        ConfigError: :func:`precision_problem` found one.

    """
    problem = precision_problem(export_config)
    if problem is not None:
        raise ConfigError(problem[1], field=problem[0])
    mixed = export_config.mixed_precision.upper()
    return MIXED_PRECISION_DTYPES[mixed] if mixed else export_config.mlp_dtype


def warn_if_trained_otherwise(train_mixed_precision: str, mlp_dtype: str) -> None:
    """Logs when training autocast to another dtype than the export's MLPs use.

    As TorchEasyRec does (it warns when ``train_config.mixed_precision`` and
    ``export_config.mixed_precision`` differ and exports with the latter).
    """
    trained = MIXED_PRECISION_DTYPES.get(train_mixed_precision.upper(), train_mixed_precision)
    if train_mixed_precision and trained != mlp_dtype:
        logger.warning(
            "train_config.mixed_precision is %r but the export's MLPs run in %s"
            " (export_config.mixed_precision / mlp_dtype decide the export)",
            train_mixed_precision,
            mlp_dtype,
        )
