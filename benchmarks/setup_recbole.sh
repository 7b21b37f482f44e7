#!/usr/bin/env bash
# Creates benchmarks/.venv-recbole: RecBole 1.2.1 beside torch 2.13.0 (CPU), the SASRec peer
# that `python -m benchmarks ml-seq` measures in the same run as recforge's hstu_match.
# torch (2.13.0+cpu) comes from the PyTorch CPU index and is installed first; recbole is installed with
# --no-deps so pip never swaps torch for a CUDA build. Its other requirements are listed by
# hand, with two changes:
#   - numpy<1.24: recbole 1.2.1's evaluator still uses the alias np.float (removed in 1.24);
#   - no ray: recbole needs it only for hyper-parameter search (recbole.quick_start imports
#     it; benchmarks/ref_recbole.py does not use quick_start).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv-recbole
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# the "+cpu" local version exists only on the CPU index (or a local mirror of it in pip's
# find-links), so no CUDA build can satisfy it
"$VENV/bin/pip" install -q --retries 1 --timeout 15 "torch==2.13.0+cpu" \
    --extra-index-url https://download.pytorch.org/whl/cpu
"$VENV/bin/pip" install -q "numpy<1.24" "scipy>=1.6.0" "pandas>=1.3.0" "tqdm>=4.48.2" \
    colorlog==4.7.2 colorama==0.4.4 "scikit-learn>=0.23.2" "pyyaml>=5.1.0" \
    "tensorboard>=2.5.0" "thop>=0.1.1.post2207130030" "tabulate>=0.8.10" "plotly>=4.0.0" \
    "texttable>=0.9.0" "psutil>=5.9.0"
"$VENV/bin/pip" install -q --no-deps recbole==1.2.1
"$VENV/bin/python" -c "import torch, numpy, recbole; print('torch', torch.__version__, 'numpy', numpy.__version__, 'recbole', recbole.__version__); assert not torch.cuda.is_available() and '+cpu' in torch.__version__"
