"""``recforge inspect-batch``: the first parsed batch, feature by feature (in-process)."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recforge.cli import main
from recforge.config import ConfigError
from recforge.datasets.batch import Batch
from recforge.tools.inspect_batch import describe_batch, format_batch, inspect_batch
from tests.helpers.tiny_run import CONFIG, CSV


def test_inspect_batch_shows_the_parsed_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "c.config").write_text(CONFIG)
    described = inspect_batch("c.config", num_rows=5)
    # batch_size 2: the first two CSV rows, as the model gets them
    assert described["batch_size"] == 2 and described["rows_shown"] == 2
    assert described["sparse"] == {"user": {"ids": [[3], [4]]}}
    assert described["dense"] == {"price": [2.5, 1.5]}
    assert described["labels"] == {"label": [1.0, 0.0]}
    lines = format_batch(described)
    assert lines[0] == "batch of 2 rows, the first 2:"
    assert any(line.split() == ["dense", "price", "2.5", "|", "1.5"] for line in lines)
    assert main(["inspect-batch", "--config", "c.config", "--num_rows", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["sparse", "user", "[3]"]
    with pytest.raises(ConfigError, match="eval data's path"):
        inspect_batch("c.config", mode="eval", edits={"eval_input_path": ""})


def test_describe_batch_splits_multi_value_rows_with_weights():
    sparse = KeyedJaggedTensor(
        keys=["tags"],
        values=torch.tensor([7, 8, 9]),
        lengths=torch.tensor([2, 0, 1], dtype=torch.int32),
        weights=torch.tensor([0.5, 1.0, 2.0]),
    )
    dense = KeyedTensor.from_tensor_list(["vec"], [torch.arange(6.0).reshape(3, 2)])
    described = describe_batch(Batch(sparse, dense), num_rows=2)
    assert described["sparse"]["tags"] == {"ids": [[7, 8], []], "weights": [[0.5, 1.0], []]}
    assert described["dense"]["vec"] == [[0.0, 1.0], [2.0, 3.0]]
    assert any(line.startswith("weights") for line in format_batch(described))
