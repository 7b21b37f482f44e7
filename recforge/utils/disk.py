"""Disk-full errors: recognising them and writing TorchScript files so that they surface."""

from __future__ import annotations

import errno
import os
from typing import Any, TypeGuard

#: "no space left on device" and "disk quota exceeded"
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def is_disk_full(error: BaseException) -> TypeGuard[OSError]:
    """Whether ``error`` is an ``OSError`` saying the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_message(path: str, error: OSError) -> str:
    """``PATH: no space left on device`` (the start of a one-line error message)."""
    reason = os.strerror(error.errno) if error.errno is not None else str(error)
    return f"{path}: {reason[:1].lower()}{reason[1:]}"


def save_scripted(module: Any, path: str) -> None:
    """Saves a TorchScript module to ``path``.

    Writes through a Python file object: ``module.save(path)`` aborts the whole process
    (SIGABRT from the zip writer's destructor) when the disk fills up, whereas a failed write
    to a Python file raises ``OSError`` (``errno.ENOSPC``).

    Raises:
        OSError: the file cannot be written.

    """
    import torch

    with open(path, "wb") as f:
        torch.jit.save(module, f)
