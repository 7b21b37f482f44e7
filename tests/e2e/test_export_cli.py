"""Export: every registered model, trained briefly through the CLI, exports to TorchScript and
reproduces its eager predictions in a fresh process that imports torch and torchrec only."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch

from recforge.config import load_pipeline_config
from recforge.datasets.data_parser import DataParser
from recforge.export import restore_model
from recforge.models.model import BaseModel
from recforge.utils.checkpoint import latest_checkpoint
from tests.helpers.cli_util import edits, read_json, run_cli
from tests.helpers.export_util import make_table, model_config, train_and_export, write_training_run
from tests.helpers.match_configs import MATCH_MODEL_CONFIGS
from tests.helpers.scripted import (
    run_scripted_in_fresh_process,
)

# registered models that cannot be exported yet: {class name: reason} (marked xfail)
NOT_EXPORTABLE: dict = {}


def _cases():
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=NOT_EXPORTABLE[name], strict=True))
        if name in NOT_EXPORTABLE
        else name
        for name in BaseModel.registered_models()
    ]


@pytest.mark.parametrize("model_name", _cases())
def test_exported_model_reproduces_eager_predictions(model_name, tmp_path):
    export_dir = train_and_export(str(tmp_path), model_config(model_name))
    towers = ["item", "user"] if model_name in MATCH_MODEL_CONFIGS else []  # tower exports
    assert sorted(os.listdir(export_dir)) == sorted(
        [*towers, "fg.json", "model_info.json", "pipeline.config", "scripted_model.pt"]
    )
    info = read_json(os.path.join(export_dir, "model_info.json"))
    assert info["model_class"] == model_name

    # eager: the same checkpoint restored into the Python model in this process
    config = load_pipeline_config(os.path.join(export_dir, "pipeline.config"))
    checkpoint = latest_checkpoint(str(tmp_path / "model"))
    assert info["checkpoint"] == os.path.abspath(checkpoint)
    model, state = restore_model(config, checkpoint)
    assert info["global_step"] == state["global_step"] == 4
    parser = DataParser(model._features)
    rows = make_table(100, seed=1, labels=()).to_batches()[0]  # unseen rows, with nulls
    parsed = parser.parse(rows)
    with torch.no_grad():
        eager = model.predict(parser.to_batch(parsed))

    scripted = run_scripted_in_fresh_process(
        os.path.join(export_dir, "scripted_model.pt"), parsed, str(tmp_path)
    )
    assert set(scripted) == set(eager) == {o["name"] for o in info["outputs"]}
    for name, value in eager.items():
        torch.testing.assert_close(scripted[name], value, atol=1e-5, rtol=0)
    probs = [k for k in eager if k.startswith("probs") or k == "similarity"]
    assert probs and all(eager[k].std() > 0 for k in probs)  # depends on the features

    # independent of restore_model: the export scores the eval data as training's last
    # evaluation (through the sharded model) did
    final = read_json(str(tmp_path / "model" / "eval_result.json"))
    if "auc" in final and "probs" in eager:
        from torchmetrics.functional.classification import binary_auroc

        table = pq.read_table(tmp_path / "train.parquet").combine_chunks()
        scripted_model = torch.jit.load(os.path.join(export_dir, "scripted_model.pt"))
        with torch.no_grad():
            all_probs = scripted_model(parser.parse(table.to_batches()[0]))["probs"]
        labels = torch.tensor(table.column("label").to_numpy())
        # the configs leave auc { thresholds } at its default of 200 bins, as TorchEasyRec does
        auc = binary_auroc(all_probs, labels, thresholds=200)
        assert float(auc) == pytest.approx(final["auc"], abs=1e-5)

    # model_info describes the inputs the scripted model reads
    assert sorted(i["name"] for i in info["inputs"]) == sorted(parsed)
    for entry in info["inputs"]:
        assert entry["dtype"] == str(parsed[entry["name"]].dtype).removeprefix("torch.")
    by_feature = {f["name"]: f for f in info["features"]}
    assert by_feature["item"]["kind"] == "sparse" and by_feature["item"]["source_columns"] == [
        "item"
    ]
    assert by_feature["price"]["kind"] == "dense" and by_feature["price"]["value_dim"] == 1
    outputs = {o["name"]: o for o in info["outputs"]}
    for name, value in eager.items():
        assert outputs[name]["dtype"] == str(value.dtype).removeprefix("torch.")
        assert outputs[name]["shape"][0] == "B"


@pytest.fixture(scope="module")
def checkpoints_dir(tmp_path_factory):
    """A DeepFM run with a checkpoint after each of its 4 steps."""
    workdir = tmp_path_factory.mktemp("checkpoints")
    config = model_config("DeepFM")
    extra = "train_config { save_checkpoints_steps: 1 }"
    write_training_run(str(workdir), config, extra=extra)
    run_cli(["train", "--config", "train.config"], str(workdir))
    return str(workdir)


def write_history(workdir: str, records: list) -> None:
    with open(os.path.join(workdir, "model", "eval_history.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def export(workdir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = ["export", "--config", "model/pipeline.config", "--export_dir", "export", *args]
    return run_cli(command, workdir, check=check)


def test_best_exporter_picks_the_best_evaluated_checkpoint(checkpoints_dir):
    write_history(
        checkpoints_dir,
        [
            {"global_step": 1, "auc": 0.60, "binary_cross_entropy": 0.50},
            {"global_step": 2, "auc": 0.90, "binary_cross_entropy": 0.45},
            {"global_step": 3, "auc": 0.70, "binary_cross_entropy": 0.30},
            {"global_step": 9, "auc": 0.99, "binary_cross_entropy": 0.10},  # no checkpoint
        ],
    )
    export(checkpoints_dir, *edits(export_config__exporter_type="best"))
    info = read_json(os.path.join(checkpoints_dir, "export", "model_info.json"))
    assert info["global_step"] == 2
    best_loss = edits(
        export_config__exporter_type="best",
        export_config__best_exporter_metric="binary_cross_entropy",
        export_config__metric_larger_is_better=False,
    )
    export(checkpoints_dir, *best_loss)
    info = read_json(os.path.join(checkpoints_dir, "export", "model_info.json"))
    assert info["global_step"] == 3

    # an explicit checkpoint wins, and a second export replaces the first
    export(checkpoints_dir, "--checkpoint", "model/model.ckpt-1")
    info = read_json(os.path.join(checkpoints_dir, "export", "model_info.json"))
    assert info["global_step"] == 1
    assert not os.path.exists(os.path.join(checkpoints_dir, "export.tmp"))


def test_best_exporter_with_an_unrecorded_metric_names_the_recorded_ones(checkpoints_dir):
    write_history(checkpoints_dir, [{"global_step": 2, "auc": 0.9}])
    args = edits(export_config__exporter_type="best", export_config__best_exporter_metric="gauc")
    proc = export(checkpoints_dir, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "'gauc'" in proc.stderr and "['auc']" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_without_a_checkpoint_is_a_clear_error(tmp_path):
    write_training_run(str(tmp_path), model_config("DeepFM"))
    proc = run_cli(
        ["export", "--config", "train.config", "--export_dir", "export"], str(tmp_path), check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no checkpoint found in model_dir 'model'" in proc.stderr
    assert not os.path.exists(tmp_path / "export")


def test_checkpoint_of_a_two_process_run_exports(tmp_path):
    """Tables sharded over 2 ranks come back whole: the export scores as the run's evaluation."""
    from torchmetrics.functional.classification import binary_auroc

    import recforge

    write_training_run(str(tmp_path), model_config("DeepFM"), num_rows=512)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    cmd += ["-m", "recforge", "train", "--config", "train.config"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    export(str(tmp_path))
    final = read_json(str(tmp_path / "model" / "eval_result.json"))
    table = pq.read_table(tmp_path / "train.parquet")
    probs = recforge.load_predictor(str(tmp_path / "export")).predict(table)["probs"]
    labels = torch.tensor(table.column("label").to_numpy())
    auc = binary_auroc(torch.tensor(probs), labels, thresholds=200)  # auc {} bins by default
    assert float(auc) == pytest.approx(final["auc"], abs=1e-5)
