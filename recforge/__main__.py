"""``python -m recforge ...`` runs the ``recforge`` command."""

import sys

from recforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
