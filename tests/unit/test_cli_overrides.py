"""``recforge train`` path overrides, and examples that say which data they need."""

import glob
import os

import recforge.train
from recforge.cli import build_parser, run_command
from tests.helpers.paths import REPO_ROOT


def _train_kwargs(monkeypatch, argv: list[str]) -> dict:
    seen: dict = {}

    def fake_train(config_path: str, **kwargs) -> dict:
        seen.update(kwargs, config_path=config_path)
        return {}

    monkeypatch.setattr(recforge.train, "train_and_evaluate", fake_train)
    run_command(build_parser().parse_args(["train", *argv]))
    return seen


def test_train_takes_input_paths_and_model_dir(monkeypatch):
    seen = _train_kwargs(
        monkeypatch,
        ["--config", "c.config", "--train_input_path", "a/*.parquet", "--eval_input_path", "e.csv"]
        + ["--model_dir", "m"],
    )
    assert seen["edits"] == {"train_input_path": "a/*.parquet", "eval_input_path": "e.csv"}
    assert seen["model_dir"] == "m" and seen["config_path"] == "c.config"


def test_json_edits_win_over_the_path_flags(monkeypatch):
    # as TorchEasyRec's train_eval: the flags set the config, then the JSON edits apply
    seen = _train_kwargs(
        monkeypatch,
        ["--config", "c", "--train_input_path", "a", "--edit_config_json"]
        + ['{"train_input_path": "b"}'],
    )
    assert seen["edits"] == {"train_input_path": "b"}
    assert _train_kwargs(monkeypatch, ["--config", "c"])["edits"] == {}


def test_examples_that_read_shared_data_say_so():
    configs = glob.glob(os.path.join(REPO_ROOT, "examples", "*.config"))
    assert configs
    for path in configs:
        with open(path) as f:
            text = f.read()
        reads_shared = any(
            "../shared" in line for line in text.splitlines() if not line.startswith("#")
        )
        comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        if reads_shared:
            assert "../shared" in comments, f"{path} reads ../shared without saying so"
