#!/usr/bin/env bash
# Builds recforge's wheel, installs it into a fresh virtualenv as a user would (the torch stack,
# then the wheel with its declared dependencies, pinned by requirements.txt), and runs
# `recforge --version` and a small `recforge demo` from outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# .venv has the build requirements (setuptools, grpcio-tools): no isolated build needed.
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" .
wheel=$(ls "$work"/dist/recforge-*.whl)
# listed in full first: `zipfile -l | grep -q` fails under pipefail once grep stops reading
# before a listing longer than the pipe's buffer is written (BrokenPipeError)
listing=$(python3 -m zipfile -l "$wheel")
if ! grep -q "recforge/protos/pipeline_pb2.py" <<< "$listing"; then
  echo "check_wheel: $wheel lacks the generated proto modules" >&2
  exit 1
fi
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
pip install -q --upgrade pip
bash "$repo/scripts/install_torch_stack.sh"
pip install -q -c "$repo/requirements.txt" "$wheel"
cd "$work"
recforge --version
recforge demo --output_dir "$work/demo" --num_rows 3000
ls "$work/venv"/lib/python3*/site-packages/recforge/protos/*_pb2.py > /dev/null
echo "check_wheel: OK"
