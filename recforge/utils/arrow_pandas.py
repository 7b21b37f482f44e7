"""pyarrow's pandas integration, loaded only when something asks for pandas.

pyarrow looks for pandas once, the first time it checks whether an object is a pandas one:
any ``Array.to_numpy`` or ``pa.array`` of a numpy array does, so the first parsed batch
imports all of pandas. Training never uses it (recforge converts arrow columns to numpy and
torch), and pandas adds tens of MB to the process's resident set (benchmarks/README.md,
"Issue 20 speed, third pass"). :func:`defer_pandas_in_pyarrow` lets pyarrow's one look find no
pandas. Nothing is lost: pyarrow's functions that need pandas (``to_pandas``,
``Table.from_pandas``) import it again when called, and recforge's string hashing imports it
itself.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Optional


class _NotImportable:
    """A ``sys.meta_path`` finder for which the named top-level modules do not exist."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]] = None,
        target: Optional[ModuleType] = None,
    ) -> Optional[ModuleSpec]:
        """Raises ImportError for the blocked names; None (not mine) for the others."""
        if fullname.partition(".")[0] in self.names:
            raise ImportError(f"{fullname} is not imported here", name=fullname)
        return None


@contextlib.contextmanager
def not_importable(*names: str) -> Iterator[None]:
    """Inside the block, ``import NAME`` raises ImportError for each of ``names``.

    Modules already imported stay in ``sys.modules`` and are not affected.
    """
    finder = _NotImportable(frozenset(names))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def defer_pandas_in_pyarrow() -> bool:
    """Makes pyarrow's first look for pandas find none, unless pandas is already imported.

    Returns:
        Whether pandas is still unimported afterwards (False when something imported it
        before: then there is nothing to save).

    """
    if "pandas" in sys.modules:
        return False
    import numpy as np
    import pyarrow as pa

    with not_importable("pandas"):
        pa.array(np.zeros(1, dtype=np.int64)).to_numpy()  # pyarrow's one look happens here
    return "pandas" not in sys.modules
