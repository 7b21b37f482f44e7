#!/usr/bin/env bash
# Checks recforge on a GPU machine in one command: builds the GPU environment (RECFORGE_GPU=1,
# in .venv-gpu/ beside the CPU .venv/), runs the GPU tests (tests/gpu: nccl, fbgemm-gpu's fused
# kernels including Adam, row-wise sharding, bf16 autocast), one training through the CLI on the
# demo data (fused Adam + bf16, then torchrun over every GPU with nccl when there are several)
# and the criteo-synth benchmark. Without an NVIDIA GPU it stops at once with status 2.
#   bash scripts/gpu_check.sh            # VENV=DIR to use another virtualenv
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "gpu_check: error: $*" >&2; exit 2; }

if ! command -v nvidia-smi > /dev/null 2>&1; then
  fail "no NVIDIA driver (nvidia-smi not found): run this on a machine with a CUDA GPU"
fi
ngpu=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true)
[ "$ngpu" -ge 1 ] || fail "nvidia-smi lists no GPU: run this on a machine with a CUDA GPU"
echo "gpu_check: $ngpu GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort -u | paste -sd,)"

VENV=${VENV:-.venv-gpu}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q --upgrade pip
RECFORGE_GPU=1 bash scripts/install_torch_stack.sh
pip install -q -r requirements.txt -r requirements-dev.txt
pip install -q --no-deps --no-build-isolation -e .
python -m recforge.protos
python - << 'PY' || fail "the GPU build of torch / fbgemm-gpu does not see the GPU (see above)"
import fbgemm_gpu, torch, torchrec  # noqa: F401
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert torch.distributed.is_nccl_available(), "torch was built without nccl"
print("gpu_check: torch", torch.__version__, "cuda", torch.version.cuda, "torchrec",
      torchrec.__version__, "devices", torch.cuda.device_count())
PY

echo "gpu_check: GPU tests"
python -m pytest -q -rs -m gpu tests/gpu

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "gpu_check: training on the demo data in $work (fused Adam, bf16 autocast)"
python -c "from recforge.demo.simulate import generate_demo_data as g; g('$work/data/demo', 60000)"
edits='{"train_config.sparse_optimizer.adam_optimizer.lr": 0.002, "train_config.mixed_precision": "BF16"}'
(cd "$work" && python -m recforge train --config "$OLDPWD/examples/deepfm_demo.config" \
    --model_dir one --edit_config_json "$edits")
python - "$work/one/eval_result.json" << 'PY'
import json, sys
result = json.load(open(sys.argv[1]))
print("gpu_check: 1 GPU:", result)
assert result["auc"] >= 0.75, f"the demo's planted signal was not learned: {result}"
PY
if [ "$ngpu" -ge 2 ]; then
  echo "gpu_check: torchrun over $ngpu GPUs (nccl, sharded tables)"
  (cd "$work" && torchrun --nproc-per-node="$ngpu" -m recforge train \
      --config "$OLDPWD/examples/deepfm_demo.config" --model_dir many --edit_config_json "$edits")
  python - "$work/one/eval_result.json" "$work/many/eval_result.json" << 'PY'
import json, sys
one, many = (json.load(open(p)) for p in sys.argv[1:])
print("gpu_check: all GPUs:", many)
assert abs(one["auc"] - many["auc"]) <= 0.01, (one, many)
PY
fi

echo "gpu_check: benchmark (criteo-synth, recforge alone)"
nproc=0
[ "$ngpu" -ge 2 ] && nproc=$ngpu
python -m benchmarks criteo-synth --repeats 1 --epochs 2 --refs none --nproc "$nproc"
echo "gpu_check: OK"
