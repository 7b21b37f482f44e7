"""``model_config.kernel``: which attention implementation HSTU models run.

recforge has one implementation, plain PyTorch (``recforge.modules.gr.attention``), which runs
on CPU and GPU. TorchEasyRec also ships Triton and CUTLASS kernels; they compute the same
function faster on a GPU. Here ``TRITON`` is accepted where a GPU and the ``triton`` package
exist, ``CUTLASS`` where a GPU and TorchEasyRec's CUTLASS attention package
(``fbgemm_gpu_hstu``, imported as ``hstu``) exist, and then run the PyTorch path (same
results, one logged warning); elsewhere they are a config error, so that a run never silently
differs from what was asked.
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


def _triton_usable() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def _cutlass_usable() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("hstu") is not None


def kernel_problem(kernel: int) -> Optional[str]:
    """Why ``kernel`` (a ``model_pb2.Kernel`` value) cannot run here; None if it can."""
    if kernel == model_pb2.PYTORCH:
        return None
    if kernel == model_pb2.TRITON:
        if _triton_usable():
            return None
        return (
            "kernel: TRITON needs a CUDA GPU and the triton package, found "
            f"cuda={'yes' if torch.cuda.is_available() else 'no'}, "
            f"triton={'yes' if importlib.util.find_spec('triton') else 'no'}; "
            "use kernel: PYTORCH (same results, CPU and GPU)"
        )
    if kernel == model_pb2.CUTLASS:
        if _cutlass_usable():
            return None
        return (
            "kernel: CUTLASS needs a CUDA GPU and the fbgemm_gpu_hstu package (module hstu),"
            f" found cuda={'yes' if torch.cuda.is_available() else 'no'},"
            f" hstu={'yes' if importlib.util.find_spec('hstu') else 'no'};"
            " use kernel: PYTORCH (same results, CPU and GPU)"
        )
    return f"kernel: unknown value {kernel}; use kernel: PYTORCH"


def log_kernel_choice(kernel: int) -> None:
    """Logs that a GPU kernel request runs on the PyTorch path (call once per model build)."""
    if kernel != model_pb2.PYTORCH:
        logger.warning(
            "model_config.kernel: %s runs recforge's PyTorch HSTU attention (same results)",
            model_pb2.Kernel.Name(kernel),
        )


def check_hstu_build(
    kernel: int,
    ascending: bool,
    ascending_field: str,
    allow_descending: bool = False,
) -> None:
    """The checks every HSTU model's ``build`` starts with.

    Raises a ``ConfigError`` at ``model_config.kernel`` when the kernel cannot run here (see
    :func:`kernel_problem`), logs a GPU kernel request (:func:`log_kernel_choice`), and unless
    ``allow_descending`` refuses ``sequence_timestamp_is_ascending: false``.

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
