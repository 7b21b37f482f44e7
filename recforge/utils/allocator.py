"""The memory allocator behind pyarrow's buffers, chosen once per command.

pyarrow reads ``ARROW_DEFAULT_MEMORY_POOL`` when it is first imported and keeps that pool for
the process. Its default (mimalloc in current wheels, jemalloc in older ones) keeps the freed
pages of every decoded batch for reuse; recforge's reader decodes a batch, converts it to
tensors and drops it, so those pages only add to the peak resident set of training and
prediction. The system allocator (glibc malloc) gives them back, at the same reading speed
(benchmarks/README.md, "Arrow's memory pool"). Switching later with
``pyarrow.set_memory_pool`` leaves the pages the first pool already holds, so the choice is
made before the first ``import pyarrow``: the command entry points call
:func:`prefer_system_arrow_pool` first thing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_system_arrow_pool(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Makes pyarrow use the system allocator unless the user chose a pool.

    A value the user set in ``ARROW_DEFAULT_MEMORY_POOL`` is kept. Child processes (DataLoader
    workers, torchrun ranks started by this process) inherit the choice through the
    environment.

    Args:
        environ: the environment to set (the process's own by default).

    Returns:
        True when the system pool will be used because of this call; False when pyarrow was
        already imported (its pool is fixed) or the user's own setting stands.

    """
    if "pyarrow" in sys.modules or ARROW_POOL_ENV in environ:
        return False
    environ[ARROW_POOL_ENV] = "system"
    return True
