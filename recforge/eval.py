"""``python -m recforge.eval``: TorchEasyRec's evaluation command.

Takes ``tzrec.eval``'s flags (``--pipeline_config_path --checkpoint_path --eval_input_path
--eval_result_filename``) and runs ``recforge evaluate``. See :mod:`recforge.tzrec_commands`.
"""

from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; see the module docstring."""
    from recforge.tzrec_commands import main as run

    return run("eval", argv)


if __name__ == "__main__":
    sys.exit(main())
