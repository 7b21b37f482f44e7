#!/usr/bin/env bash
# Creates benchmarks/.venv-deepctr: DeepCTR-Torch 0.3.0 beside torch 2.13.0 (CPU), the peer
# that `python -m benchmarks frappe` measures in the same run as recforge.
# torch is pinned first and deepctr-torch installed with --no-deps, so pip never picks a newer
# torch (a newer one would be a CUDA build of several GB). deepctr-torch's own imports need only
# numpy, scikit-learn, tqdm and requests (its import-time version check; the benchmark stubs
# the network call out), listed here by hand; pandas is not needed for DeepFM.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv-deepctr
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q "numpy<3" scikit-learn tqdm requests
"$VENV/bin/pip" install -q --no-deps deepctr-torch==0.3.0
"$VENV/bin/python" -c "import torch, deepctr_torch; print('torch', torch.__version__, 'deepctr-torch', deepctr_torch.__version__)"
