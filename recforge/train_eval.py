"""``python -m recforge.train_eval``: TorchEasyRec's train-and-evaluate command.

Takes ``tzrec.train_eval``'s flags (``--pipeline_config_path --train_input_path
--eval_input_path --model_dir --continue_train --fine_tune_checkpoint --edit_config_json
--ignore_restore_optimizer``) and runs ``recforge train``; ``torchrun -m recforge.train_eval``
runs it on several processes. See :mod:`recforge.tzrec_commands` for each flag's mapping.
"""

from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; see the module docstring."""
    from recforge.tzrec_commands import main as run

    return run("train_eval", argv)


if __name__ == "__main__":
    sys.exit(main())
