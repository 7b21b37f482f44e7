"""TorchEasyRec 1.3.16's example configs that validate train, evaluate and export on mock data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from recforge.config.loader import load_pipeline_config
from tests.helpers.tzrec_examples import (
    MISSING,
    UPSTREAM_MISTAKES,
    example_path,
)

# Table rows are capped (by --edit_config_json, on the command line) so that the criteo
# configs' 200M-row tables fit this machine; everything else runs as the config says.
MAX_TABLE_ROWS = 10000
TRAIN_SCRIPT = """
import json, os, sys
from recforge import cli, tzrec_commands

config, work, edits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
data = f"{work}/data"
assert cli.main(["mock-data", "--config", config, "--output_dir", data, "--num_rows", "256",
                 "--edit_config_json", json.dumps(edits)]) == 0
items = f"{data}/negative_sampler/items.parquet"  # mock-data writes a sampler's item table
if os.path.exists(items):
    edits["data_config.negative_sampler.input_path"] = items
paths = ["--train_input_path", f"{data}/part-00000.parquet",
         "--eval_input_path", f"{data}/part-00000.parquet"]
assert tzrec_commands.main("train_eval", ["--pipeline_config_path", config, *paths,
    "--model_dir", f"{work}/model", "--edit_config_json", json.dumps(edits)]) == 0
assert tzrec_commands.main("export", ["--pipeline_config_path", f"{work}/model/pipeline.config",
    "--export_dir", f"{work}/export"]) == 0
"""


def _table_caps(config) -> dict[str, int]:
    """``--edit_config_json`` entries that cap every table at ``MAX_TABLE_ROWS`` rows."""
    edits = {}
    for fc in config.feature_configs:
        kind = fc.WhichOneof("feature")
        feature = getattr(fc, kind)
        if kind == "sequence_feature":
            prefix = f"feature_configs[sequence_name={feature.sequence_name}].sequence_feature"
            elements = [
                (e.WhichOneof("feature"), getattr(e, e.WhichOneof("feature")))
                for e in feature.features
            ]
            paths = [
                (f"{prefix}.features[feature_name={e.feature_name}].{k}", e) for k, e in elements
            ]
        else:
            paths = [(f"feature_configs[feature_name={feature.feature_name}].{kind}", feature)]
        for path, element in paths:
            for size in ("hash_bucket_size", "num_buckets"):
                if getattr(element, size, 0) > MAX_TABLE_ROWS:
                    edits[f"{path}.{size}"] = MAX_TABLE_ROWS
    return edits


@pytest.mark.e2e
@pytest.mark.parametrize("name", [name for name, missing in sorted(MISSING.items()) if not missing])
def test_config_trains_evaluates_and_exports_on_its_mock_data(name, tmp_path):
    path = example_path(name)
    edits = {
        "data_config.dataset_type": "ParquetDataset",
        "data_config.batch_size": 64,
        "data_config.num_workers": 0,
        "train_config.num_steps": 20,
        "train_config.num_epochs": 0,
        **_table_caps(load_pipeline_config(path)),
        **UPSTREAM_MISTAKES.get(name, ("", {}))[1],
    }
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, path, str(tmp_path), json.dumps(edits)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(tmp_path / "model" / "eval_result.json"))
    assert result and all(math.isfinite(v) for v in result.values())
    assert os.path.exists(tmp_path / "export" / "scripted_model.pt")
