#!/usr/bin/env bash
# Creates benchmarks/.venv-fuxictr: FuxiCTR 2.3.10 beside torch 2.13.0 (CPU), the peer that
# `python -m benchmarks frappe --refs fuxictr` measures in the same run as recforge.
# As in setup_deepctr.sh, torch is pinned first and fuxictr installed with --no-deps, so pip can
# never replace the CPU torch with another build (fuxictr does not declare torch at all). Its
# declared dependencies are listed here by hand: `import fuxictr.pytorch.layers` already reaches
# `fuxictr.preprocess`, which imports ray.data, polars, h5py and scikit-learn, and the npz data
# loader's package imports the ray-based parquet loader. ray[data] (ray, pyarrow, pandas) is the
# bulk of the virtualenv's 1.9 GB; none of it pulls torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv-fuxictr
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q "numpy<3" pandas "pyyaml>=6.0.1" scikit-learn h5py tqdm pyarrow polars \
    "ray[data]>=2.52.0" pydantic
"$VENV/bin/pip" install -q --no-deps fuxictr==2.3.10
"$VENV/bin/python" -c "import torch, fuxictr, fuxictr.pytorch.models, fuxictr.pytorch.layers, fuxictr.pytorch.dataloaders; print('torch', torch.__version__, 'fuxictr', fuxictr.__version__)"
