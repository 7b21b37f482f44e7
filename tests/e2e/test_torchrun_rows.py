"""Under torchrun every row is trained once per epoch (two ranks step together)."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.paths import REPO_ROOT, ROBUSTNESS_DIR

HERE = ROBUSTNESS_DIR  # the robustness corpus' data and base.config


def test_two_processes_train_every_row(tmp_path):
    # 161 rows in batches of 40 on 2 ranks: 81 + 80 rows, 2 batches each (40 + 41, 40 + 40);
    # cutting by batches instead (3 + 2 batches) made the ranks stop after 2 steps each
    table = pq.read_table(os.path.join(HERE, "data", "train.parquet"))
    pq.write_table(pa.concat_tables([table] * 5).slice(0, 161), tmp_path / "rows.parquet")
    config = open(os.path.join(HERE, "base.config")).read()
    config = config.replace("data/train.parquet", "rows.parquet").replace(
        "batch_size: 16", "batch_size: 40"
    )
    (tmp_path / "pipeline.config").write_text(config)
    shutil.rmtree(tmp_path / "model", ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    cmd += ["-m", "recforge", "train", "--config", "pipeline.config"]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    with open(tmp_path / "model" / "train_stats.json") as f:
        stats = json.load(f)
    assert [e["samples"] for e in stats["epochs"]] == [161]
    assert "eval over 161 samples" in proc.stderr
