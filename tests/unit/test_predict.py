"""Predict's output placement checks and a full disk while saving a scripted model."""

import errno
import os

import pytest
import torch

from recforge.predict import check_output_apart
from recforge.utils.disk import save_scripted


def test_outputs_beside_the_input_are_allowed(tmp_path):
    os.makedirs(tmp_path / "data")
    (tmp_path / "data" / "x.parquet").write_bytes(b"")
    check_output_apart(str(tmp_path / "data/*.parquet"), str(tmp_path / "data" / "out"))
    check_output_apart(str(tmp_path / "data"), str(tmp_path / "scores.parquet"))
    check_output_apart(str(tmp_path / "data" / "x.parquet"), str(tmp_path / "data.parquet"))


def test_a_full_disk_while_saving_a_scripted_model_raises(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    scripted = torch.jit.script(torch.nn.Linear(256, 256))
    with pytest.raises(OSError) as error:  # torch's own save would abort the process here
        save_scripted(scripted, "/dev/full")
    assert error.value.errno == errno.ENOSPC
