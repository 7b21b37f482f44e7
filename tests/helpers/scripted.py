"""Runs a scripted (exported) model in a fresh Python process, as a server would load it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pyarrow as pa

    from recforge.models.model import BaseModel

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


def assert_scripted_matches_eager(model: BaseModel, table: pa.Table) -> None:
    """Scripts ``model`` (in eval mode) and checks it scores ``table``'s rows (a pyarrow
    table in the model's input layout) as the eager model does."""
    from recforge.datasets.data_parser import DataParser
    from recforge.export.scripting import script_model

    model.eval()
    parser = DataParser(model.features)
    parsed = parser.parse(table.to_batches()[0])
    scripted = script_model(model)
    with torch.no_grad():
        eager = model.predict(parser.to_batch(parsed))
        torch.testing.assert_close(scripted(parsed), eager)
