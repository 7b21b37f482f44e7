#!/usr/bin/env bash
# The whole test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m pytest -q -x --durations=15 tests "$@"
