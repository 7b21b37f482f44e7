"""``model_config.kernel``: which attention implementation HSTU models run.

recforge has one implementation, plain PyTorch (``recforge.modules.gr.attention``), which runs
on CPU and GPU. TorchEasyRec also ships Triton and CUTLASS kernels; they compute the same
function faster on a GPU. Here ``TRITON`` and ``CUTLASS`` run the PyTorch path with one logged
warning that says so (and, where the kernel could not run at all, what is missing: a CUDA GPU,
the ``triton`` package, TorchEasyRec's CUTLASS package ``fbgemm_gpu_hstu``), so that
TorchEasyRec's HSTU configs, which ask for them, run unchanged, on a CPU too. The kernels'
config constraints still apply (CUTLASS's ``attention_dim == hidden_dim``, Triton's lack of
semi-local attention), so a config accepted here is one TorchEasyRec accepts.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Optional

import torch

from recforge.config import ConfigError
from recforge.protos import model_pb2

logger = logging.getLogger(__name__)

#: the models whose attention the field selects
HSTU_MODELS = ("hstu_match", "dlrm_hstu", "ultra_hstu")


def _missing(kernel: int) -> list[str]:
    """What this machine lacks to run ``kernel`` itself (empty: nothing)."""
    missing = [] if torch.cuda.is_available() else ["a CUDA GPU"]
    if kernel == model_pb2.TRITON and importlib.util.find_spec("triton") is None:
        missing.append("the triton package")
    if kernel == model_pb2.CUTLASS and importlib.util.find_spec("hstu") is None:
        missing.append("the fbgemm_gpu_hstu package (module hstu)")
    return missing


def kernel_problem(kernel: int) -> Optional[str]:
    """Why ``kernel`` (a ``model_pb2.Kernel`` value) is not a kernel recforge knows; else None."""
    if kernel in (model_pb2.PYTORCH, model_pb2.TRITON, model_pb2.CUTLASS):
        return None
    return f"kernel: unknown value {kernel}; use kernel: PYTORCH"


def log_kernel_choice(kernel: int) -> None:
    """Logs that a GPU kernel request runs on the PyTorch path (call once per model build)."""
    if kernel == model_pb2.PYTORCH:
        return
    name = model_pb2.Kernel.Name(kernel)
    missing = _missing(kernel)
    where = (
        f"; TorchEasyRec's {name} kernel could not run here (missing: {', '.join(missing)})"
        if missing
        else ""
    )
    logger.warning(
        "model_config.kernel: %s runs recforge's PyTorch HSTU attention (the same function)%s",
        name,
        where,
    )


def check_hstu_build(
    kernel: int,
    ascending: bool,
    ascending_field: str,
    allow_descending: bool = False,
) -> None:
    """The checks every HSTU model's ``build`` starts with.

    Raises a ``ConfigError`` at ``model_config.kernel`` for a kernel value recforge does not
    know (see :func:`kernel_problem`), logs a GPU kernel request (:func:`log_kernel_choice`),
    and unless ``allow_descending`` refuses ``sequence_timestamp_is_ascending: false``.

    Args:
        kernel: ``model_config.kernel`` (a ``model_pb2.Kernel`` value).
        ascending: the model's ``sequence_timestamp_is_ascending``.
        ascending_field: that field's path, for the error.
        allow_descending: the model reverses newest-first histories itself.

    """
    problem = kernel_problem(kernel)
    if problem is not None:
        raise ConfigError(problem, field="model_config.kernel")
    log_kernel_choice(kernel)
    if not ascending and not allow_descending:
        raise ConfigError(
            "sequence_timestamp_is_ascending: false (newest event first) is not supported"
            " yet; give the history oldest first",
            field=ascending_field,
        )
