#!/usr/bin/env bash
# The whole test suite (what .ci/run calls): the fast unit tests first, then the end-to-end ones.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
for folder in tests/unit tests/e2e; do
    # status 5: no test selected in this folder (e.g. by -k), not a failure
    python -m pytest -q -x --durations=15 "$folder" "$@" || [ $? -eq 5 ]
done
