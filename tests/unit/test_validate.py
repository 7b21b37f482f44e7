"""``recforge validate`` (in-process) and the model summary it logs."""

import os

import pytest
import torch

from recforge.config import ConfigError
from recforge.errors import DataError
from recforge.utils.model_summary import human_bytes, summarize_model
from recforge.validate import validate
from tests.helpers.models import build
from tests.helpers.tiny_run import CONFIG, CSV


@pytest.fixture()
def tiny(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "pipeline.config").write_text(CONFIG)
    return str(tmp_path)


def test_validate_reads_the_first_batch_and_runs_forward_without_writing(tiny):
    result = validate("pipeline.config")
    assert result["ok"] and result["model"] == "MultiTower"
    assert result["train_batch"] == 2 and result["eval_batch"] == 2
    assert result["loss"] > 0
    # user table 10x4 plus the towers: the summary counts what the model holds
    assert result["parameters"] > 40
    assert not os.path.exists(os.path.join(tiny, "model"))


def test_validate_reports_bad_rows_of_the_first_batch(tiny):
    with open("bad.csv", "w") as f:
        f.write("label,user,price\n1,3,abc\n")
    with pytest.raises(DataError, match=r"bad.csv: row 0 .*'price'"):
        validate("pipeline.config", edits={"train_input_path": "bad.csv"})


def test_validate_reports_empty_input(tiny):
    with open("empty.csv", "w") as f:
        f.write("label,user,price\n")
    with pytest.raises(DataError, match="empty.csv"):
        validate("pipeline.config", edits={"eval_input_path": "empty.csv"})


def test_validate_needs_train_input(tiny):
    with pytest.raises(ConfigError, match="train_input_path"):
        validate("pipeline.config", edits={"train_input_path": ""})


def test_summary_counts_tables_and_modules_on_meta():
    model = build("DeepFM")
    summary = summarize_model(model)
    assert summary.tables, "every DeepFM has embedding tables"
    for table in summary.tables:
        rows, dim = (int(x) for x in table.detail.split("x"))
        assert table.parameters == rows * dim
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    assert sum(m.parameters for m in summary.modules) == summary.parameters
    assert summary.bytes == 4 * summary.parameters  # float32
    assert any("table" in line for line in summary.lines())


def test_human_bytes():
    assert human_bytes(12) == "12 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert human_bytes(5 << 40) == "5120.0 GiB"


def test_summary_of_meta_parameters():
    module = torch.nn.Sequential(torch.nn.Linear(3, 2, device="meta"))
    summary = summarize_model(module)
    assert summary.parameters == 8 and summary.bytes == 32
    assert [m.detail for m in summary.modules] == ["Linear"]


def test_validate_skips_the_forward_pass_for_large_tables(tiny, monkeypatch):
    import recforge.validate

    monkeypatch.setattr(recforge.validate, "FORWARD_MAX_BYTES", 100)  # the user table: 160 B
    result = validate("pipeline.config")
    assert result["ok"] and result["loss"] is None and result["train_batch"] == 2
