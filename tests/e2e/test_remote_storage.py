"""Everything on an S3 bucket: train, SIGTERM, resume, export and predict (CLI).

The bucket is served by moto's S3 server on 127.0.0.1, started once per test session; the
CLI reaches it through s3fs with the endpoint in ``AWS_ENDPOINT_URL``, as a user's would.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import pyarrow.parquet as pq
import pytest

from recforge.demo.simulate import generate_demo_data
from tests.helpers.cli_util import example
from tests.helpers.paths import REPO_ROOT
from tests.helpers.s3 import BUCKET

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _recforge(args: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "recforge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"recforge {args[0]} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    )
    return proc


def test_train_kill_resume_export_predict_on_s3(tmp_path, s3, s3_env):
    data = generate_demo_data(str(tmp_path / "data"), num_rows=1000)
    s3.put(str(tmp_path / "data") + "/", f"{BUCKET}/data/", recursive=True)
    cwd = str(tmp_path / "work")
    os.makedirs(cwd)
    env = {
        **os.environ,
        **s3_env,
        "PYTHONPATH": REPO_ROOT,
        "RECFORGE_STAGING_DIR": str(tmp_path / "staging"),
    }
    model_dir = f"s3://{BUCKET}/runs/deepfm"
    edits = json.dumps(
        {
            "train_input_path": f"s3://{BUCKET}/data/train_*.parquet",
            "eval_input_path": f"s3://{BUCKET}/data/eval.parquet",
            "data_config.batch_size": 32,
            "train_config.num_epochs": 1,
            "train_config.log_step_count_steps": 5,
        }
    )
    train = ["train", "--config", example("deepfm_demo.config"), "--model_dir", model_dir]
    train += ["--edit_config_json", edits]

    # train and stop it with SIGTERM mid-epoch: it saves a checkpoint and uploads it
    stopped = subprocess.Popen(
        [sys.executable, "-m", "recforge", *train],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    guard = threading.Timer(300, stopped.kill)
    guard.start()
    seen = []
    for line in stopped.stderr:
        seen.append(line)
        if "step 10 |" in line:
            stopped.send_signal(signal.SIGTERM)
            break
    err = "".join(seen) + stopped.communicate()[1]
    guard.cancel()
    s3.invalidate_cache()  # the test's client lists the bucket anew after each command
    assert stopped.returncode == 143, err[-4000:]
    last = err.strip().splitlines()[-1]
    step = int(last.split("at step ")[1].split(",")[0])
    run = f"{BUCKET}/runs/deepfm"
    assert s3.isfile(f"{run}/model.ckpt-{step}/train_state.json")
    assert s3.isfile(f"{run}/model.ckpt-{step}/checksums.json")
    assert not s3.exists(f"{run}/train.lock")  # released, and deleted on the bucket
    assert f'model_dir: "s3://{run}"' in s3.cat(f"{run}/pipeline.config").decode()

    # resume from the bucket's checkpoint and finish the epoch (1000 rows / 32: 32 steps)
    resumed = _recforge([*train, "--continue_train"], cwd, env)
    s3.invalidate_cache()
    assert f"at step {step} (epoch 0" in resumed.stderr
    state = json.loads(s3.cat(f"{run}/model.ckpt-32/train_state.json"))
    assert state["global_step"] == 32
    assert "auc" in json.loads(s3.cat(f"{run}/eval_result.json"))
    assert s3.find(f"{run}/train"), "no TensorBoard events on the bucket"

    # export and predict with the config the run saved on the bucket
    config = f"s3://{run}/pipeline.config"
    export = f"s3://{BUCKET}/export/deepfm"
    summary = json.loads(
        _recforge(["export", "--config", config, "--export_dir", export], cwd, env).stdout
    )
    assert summary["checkpoint"] == f"s3://{run}/model.ckpt-32"
    s3.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in s3.find(f"{BUCKET}/export")}
    assert {"scripted_model.pt", "pipeline.config", "model_info.json"} <= names
    assert not [p for p in s3.ls(f"{BUCKET}/export") if ".tmp-" in p]
    assert f'model_dir: "s3://{run}"' in s3.cat(f"{BUCKET}/export/deepfm/pipeline.config").decode()
    output = f"s3://{BUCKET}/predictions"
    _recforge(
        [
            "predict",
            "--scripted_model_path",
            export,
            "--predict_input_path",
            f"s3://{BUCKET}/data/eval.parquet",
            "--predict_output_path",
            output,
            "--reserved_columns",
            "label",
        ],
        cwd,
        env,
    )
    s3.invalidate_cache()
    with s3.open(f"{BUCKET}/predictions/part-00000.parquet", "rb") as f:
        table = pq.read_table(f)
    assert table.num_rows == pq.read_metadata(data["eval"]).num_rows
    assert {"label", "probs"} <= set(table.column_names)

    # the working copies are gone, and nothing local stands in for the bucket (the old bug:
    # a folder named 's3:')
    assert os.listdir(tmp_path / "staging") == []
    for root, dirs, files in os.walk(cwd):
        assert not [n for n in dirs + files if n.startswith("s3")], (root, dirs, files)
