"""``python -m recforge.export``: export with TorchEasyRec's flags.

``--pipeline_config_path --export_dir --checkpoint_path --asset_files``; see
:mod:`recforge.tzrec_commands`. An entry point only: the export package itself never imports
the command line (``tests/unit/test_errors.py`` checks the import graph).
"""

from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    """Runs ``recforge export`` with TorchEasyRec's flags; returns the exit status."""
    from recforge.tzrec_commands import main as run

    return run("export", argv)


if __name__ == "__main__":
    sys.exit(main())
