#!/usr/bin/env bash
# The whole test suite (what .ci/run calls): the fast unit tests first, then the end-to-end ones.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m pytest -q -x --durations=15 tests/unit "$@"
python -m pytest -q -x --durations=15 tests/e2e "$@"
