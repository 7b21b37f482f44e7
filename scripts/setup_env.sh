#!/usr/bin/env bash
# Creates .venv/ with the pinned torch + torchrec stack and installs recforge into it (editable).
# CPU by default; RECFORGE_GPU=1 installs fbgemm-gpu (CUDA) instead of fbgemm-gpu-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first and exactly pinned: anything that lets pip pick a newer torch pulls a CUDA build.
pip install -q torch==2.13.0
# torchrec's metadata asks for the CUDA fbgemm-gpu, which would replace the CPU build: no deps.
if [ "${RECFORGE_GPU:-0}" = "1" ]; then FBGEMM=fbgemm-gpu==1.8.0; else FBGEMM=fbgemm-gpu-cpu==1.8.0; fi
pip install -q --no-deps torchrec==1.8.0 "$FBGEMM"
pip install -q -r requirements.txt -r requirements-dev.txt
pip install -q --no-deps --no-build-isolation -e .
python -m recforge.protos
python -c "import torch, torchrec, fbgemm_gpu; print('torch', torch.__version__, 'torchrec', torchrec.__version__)"
