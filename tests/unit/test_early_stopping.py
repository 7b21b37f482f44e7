"""``train_config.early_stopping``: when training stops and what it records (no training here;
tests/e2e/test_ux_cli.py trains until it stops)."""

import json

import pytest
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.protos import train_pb2
from recforge.train import train_and_evaluate
from recforge.utils.early_stopping import EarlyStopping
from tests.helpers.tiny_run import CONFIG, CSV


def stopping(text: str) -> EarlyStopping:
    return EarlyStopping.from_config(text_format.Parse(text, train_pb2.EarlyStopping()))


def feed(es: EarlyStopping, values: list[float]) -> list[bool]:
    out = []
    for i, v in enumerate(values):
        es.update(10 * (i + 1), {"auc": v, "loss": -v}, f"ckpt-{10 * (i + 1)}")
        out.append(es.should_stop)
    return out


def test_stops_after_patience_evaluations_without_improvement():
    es = stopping("patience: 2")
    assert feed(es, [0.6, 0.7, 0.69, 0.7, 0.65]) == [False, False, False, True, True]
    record = es.as_dict()
    assert record["best_step"] == 20 and record["best_value"] == 0.7
    assert record["best_checkpoint"] == "ckpt-20" and record["stopped"]


def test_an_improvement_resets_the_count():
    es = stopping("patience: 2")
    assert feed(es, [0.6, 0.5, 0.7, 0.6]) == [False, False, False, False]
    assert es.evaluations_without_improvement == 1


def test_smaller_is_better_and_min_delta():
    es = stopping('metric: "loss" bigger_is_better: false patience: 1 min_delta: 0.05')
    # loss -0.6, then -0.62 (better by 0.02 < min_delta: no improvement)
    assert feed(es, [0.6, 0.62]) == [False, True]
    es = stopping('metric: "loss" bigger_is_better: false patience: 1')
    assert feed(es, [0.6, 0.62]) == [False, False]


def test_a_step_is_recorded_once():
    es = stopping("patience: 1")
    es.update(5, {"auc": 0.5})
    es.update(5, {"auc": 0.4})
    assert len(es.history) == 1 and not es.should_stop


def test_bad_settings_and_unknown_metric():
    with pytest.raises(ConfigError, match="patience of at least 1"):
        stopping("patience: 0")
    with pytest.raises(ConfigError, match="min_delta"):
        stopping("min_delta: -1")
    with pytest.raises(ConfigError, match=r"\['auc'\], found 'gauc'"):
        stopping('metric: "gauc"').update(1, {"auc": 0.5})


def test_resuming_replays_the_evaluations_up_to_the_checkpoint(tmp_path):
    es = stopping("patience: 2")
    feed(es, [0.6, 0.7, 0.65, 0.64])
    path = str(tmp_path / "early_stopping.json")
    es.write(path)
    assert json.loads(open(path).read())["stopped"]
    resumed = stopping("patience: 2")
    resumed.replay(path, up_to_step=30)  # the checkpoint of step 30
    assert [h[0] for h in resumed.history] == [10, 20, 30]
    assert resumed.evaluations_without_improvement == 1 and not resumed.should_stop
    other = stopping('metric: "loss"')
    other.replay(path, up_to_step=30)  # another metric: starts afresh
    assert other.history == []


def test_early_stopping_needs_eval_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "c.config").write_text(CONFIG)
    edits = {"eval_input_path": "", "train_config.early_stopping.patience": "2"}
    with pytest.raises(ConfigError, match="eval_input_path for early stopping"):
        train_and_evaluate("c.config", edits=edits)
    assert not (tmp_path / "model").exists()
