"""Build hook: the wheel carries the generated ``*_pb2.py`` modules.

Everything else about the package is declared in ``pyproject.toml``. The generated modules are
not committed (``recforge/protos/__init__.py`` regenerates them in a checkout), so ``build_py``
compiles every ``.proto`` into the wheel's staging folder; an installed recforge never compiles
into site-packages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithProtos(build_py):
    """``build_py`` plus the generated proto modules."""

    def run(self) -> None:
        """Builds the package, then compiles every ``.proto`` into the staging folder."""
        super().run()
        os.environ["RECFORGE_SKIP_PROTO_BUILD"] = "1"  # importing must not write into the checkout
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from recforge.protos import compile_protos

        compile_protos(out_dir=Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
