#!/usr/bin/env bash
# Creates .venv/ with the pinned torch + torchrec stack and installs recforge into it (editable).
# CPU by default; RECFORGE_GPU=1 installs fbgemm-gpu (CUDA) instead of fbgemm-gpu-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
bash scripts/install_torch_stack.sh
pip install -q -r requirements.txt -r requirements-dev.txt
pip install -q --no-deps --no-build-isolation -e .
python -m recforge.protos
python -c "import torch, torchrec, fbgemm_gpu; print('torch', torch.__version__, 'torchrec', torchrec.__version__)"
