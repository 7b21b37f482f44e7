"""Runs a scripted (exported) model in a fresh Python process, as a server would load it."""

import os
import subprocess
import sys

import torch

LOAD_AND_RUN = r"""
import sys

import torch
import torchrec  # noqa: F401  registers the fbgemm operators the model calls

model = torch.jit.load(sys.argv[1])
outputs = model(torch.load(sys.argv[2]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "recforge")
assert not loaded, f"recforge was imported: {loaded}"
torch.save({k: v.detach() for k, v in outputs.items()}, sys.argv[3])
"""


def run_scripted_in_fresh_process(model_path: str, inputs: dict, workdir: str) -> dict:
    inputs_path = os.path.join(workdir, "inputs.pt")
    outputs_path = os.path.join(workdir, "outputs.pt")
    torch.save(inputs, inputs_path)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, model_path, inputs_path, outputs_path],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(outputs_path)
