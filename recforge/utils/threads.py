"""CPU thread settings chosen before torch loads (see benchmarks/README.md for the numbers).

torch's CPU kernels run on an OpenMP pool (GNU libgomp in the pip wheels) whose idle threads
spin ("active" waiting) at every parallel region's barrier. When the machine has other work
than this process's threads (a DataLoader worker, other jobs, a second torchrun rank), a
spinning thread burns the core another thread needs: on the project's 2-core machine a Frappe
DeepFM run fell from ~43k to 3k-7k samples/s while other processes kept the cores busy. With
passive waiting the same loaded runs kept 20k-30k samples/s, and on a quiet machine passive
waiting costs little (about 42k vs 43k samples/s), so recforge's command line makes it the
default. libgomp reads the setting once, when it loads, so it must be set before ``import
torch``; an ``OMP_WAIT_POLICY`` the user exported wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: What :func:`configure_openmp` sets unless the environment already names it.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp(environ: MutableMapping[str, str] = os.environ) -> dict:
    """Sets recforge's OpenMP defaults in ``environ`` where they are unset.

    Call it before torch is imported (the ``recforge`` command does, first thing).

    Args:
        environ: the environment to update (default: this process's).

    Returns:
        The settings that were applied (empty when the user had set them all).

    """
    applied = {}
    for name, value in OPENMP_DEFAULTS.items():
        if name not in environ:
            environ[name] = value
            applied[name] = value
    return applied
