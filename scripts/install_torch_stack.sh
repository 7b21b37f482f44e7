#!/usr/bin/env bash
# Installs the pinned torch + torchrec + fbgemm stack into the active virtualenv: the one place
# that knows how (scripts/setup_env.sh and scripts/check_wheel.sh call it; the README points here).
# CPU by default; RECFORGE_GPU=1 installs fbgemm-gpu (CUDA) instead of fbgemm-gpu-cpu.
set -euo pipefail
# torch first and exactly pinned: anything that lets pip pick a newer torch pulls a CUDA build.
pip install -q torch==2.13.0
# torchrec's metadata asks for the CUDA fbgemm-gpu, which would replace the CPU build: no deps.
if [ "${RECFORGE_GPU:-0}" = "1" ]; then FBGEMM=fbgemm-gpu==1.8.0; else FBGEMM=fbgemm-gpu-cpu==1.8.0; fi
pip install -q --no-deps torchrec==1.8.0 "$FBGEMM"
