"""zch end to end: two ranks learn ids up to 1e12, resume on one process, export, serve.

The planted users' labels follow each user's own click rate, so the AUC is high only when
every user has a row of its own; the two-rank checkpoint resumes on one process with the
same rows for every user (the remapper's state resharded), and the export, loaded in a
fresh process, scores rows exactly as the eager model restored from the checkpoint.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import torch
from google.protobuf import text_format

from recforge.datasets.data_parser import DataParser
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.protos import pipeline_pb2
from recforge.utils.checkpoint import latest_checkpoint, load_checkpoint
from recforge.utils.pipeline import build_features
from tests.helpers.cli_util import edits, read_json, run_cli
from tests.helpers.paths import REPO_ROOT
from tests.helpers.zch import NUM_USERS, ZCH_SIZE, planted_rows, planted_users, zch_config

_SERVE = """
import json, sys
import pyarrow.parquet as pq
import recforge
predictor = recforge.load_predictor(sys.argv[1])
probs = predictor.predict(pq.read_table(sys.argv[2]))["probs"]
json.dump([float(p) for p in probs], open(sys.argv[3], "w"))
"""


def _restored(cwd: str, model_dir: str):
    """The eager model of ``model_dir``'s latest checkpoint, and its user rows."""
    text = open(os.path.join(cwd, "pipeline.config")).read()
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    load_checkpoint(latest_checkpoint(os.path.join(cwd, model_dir)), TrainWrapper(model))
    model.eval()
    parser = DataParser(model.features)
    ids = torch.from_numpy(planted_users()[0])
    hashed = parser.parse(pq.read_table(os.path.join(cwd, "users.parquet")).to_batches()[0])[
        "user.values"
    ]
    rows = model.embedding_group.zch["user_emb"]([hashed])[0]
    assert rows.numel() == ids.numel()
    return model, parser, rows


def test_zch_trains_on_two_ranks_resumes_on_one_and_serves(tmp_path):
    cwd = str(tmp_path)
    pq.write_table(planted_rows(1600, 1), tmp_path / "train.parquet")
    pq.write_table(planted_rows(600, 2), tmp_path / "eval.parquet")
    users = planted_rows(NUM_USERS, 3).set_column(
        0, "user", [planted_users()[0].tolist()]
    )  # every user once
    pq.write_table(users, tmp_path / "users.parquet")
    (tmp_path / "pipeline.config").write_text(zch_config(eval_path="eval.parquet"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    cmd += ["-m", "recforge", "train", "--config", "pipeline.config"]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    two = read_json(os.path.join(cwd, "model", "eval_result.json"))
    assert two["auc"] > 0.8, two  # chance: 0.5

    # every user got a row of its own, the same on both ranks (one copy in the checkpoint)
    _, _, rows = _restored(cwd, "model")
    assert rows.unique().numel() == NUM_USERS and int(rows.max()) < ZCH_SIZE - 1

    # the two-rank checkpoint resumes on one process: no user loses or changes its row
    more = edits(train_config__num_epochs=2)
    resumed = run_cli(["train", "--config", "pipeline.config", "--continue_train", *more], cwd)
    assert "resumed from" in resumed.stderr
    one = read_json(os.path.join(cwd, "model", "eval_result.json"))
    assert one["global_step"] > two["global_step"] and one["auc"] > 0.8, one
    model, parser, rows_after = _restored(cwd, "model")
    assert torch.equal(rows_after, rows)

    # the export, in a fresh process, applies the same remapping as the eager model
    run_cli(["export", "--config", "pipeline.config", "--export_dir", "export"], cwd)
    out = os.path.join(cwd, "served.json")
    serve = [sys.executable, "-c", _SERVE, "export", "eval.parquet", out]
    proc = subprocess.run(serve, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    with open(out) as f:
        served = np.array(json.load(f))
    batch = parser.to_batch(parser.parse(pq.read_table(tmp_path / "eval.parquet").to_batches()[0]))
    with torch.no_grad():
        eager = model.predict(batch)["probs"].numpy()
    np.testing.assert_allclose(served, eager, atol=1e-5)
