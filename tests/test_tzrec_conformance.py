"""TorchEasyRec 1.3.16's example configs (../shared/tzrec-configs/examples) load unchanged.

Those whose models and features recforge has validate; each of the others fails validation
with lines that name what is missing (a model, a feature kind, a sequence encoder, ...).
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from recforge.config import ConfigError
from recforge.config.loader import load_pipeline_config
from recforge.config.validation import validate_config

EXAMPLES = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "tzrec-configs", "examples"
)
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "*.config")))

# what each config still needs from recforge (empty: it validates today)
MISSING = {
    "dbmtl_taobao.config": [],
    "dbmtl_taobao_jrc.config": [],
    "dbmtl_taobao_seq.config": [],
    "deepfm_criteo.config": [],
    "dlrm_criteo.config": [],
    "dssm_taobao.config": [],
    "dssm_v2_taobao.config": [],
    "masknet_criteo.config": [],
    "mind_taobao.config": [],
    "mmoe_taobao.config": [],
    "multi_tower_din_taobao.config": [],
    "multi_tower_taobao.config": [],
    "pepnet_taobao.config": [],
    "ple_taobao.config": [],
    "rocket_launching_criteo.config": [],
    "tdm_taobao.config": ["data_config.tdm_sampler", "model_config.tdm"],
    "wukong_criteo.config": [],
}


# TorchEasyRec's example configs that its own model refuses too: {config: (the field the
# one-line error names, the --edit_config_json edits that fix it for the training test)}.
# wukong_criteo's dense_mlp ends in 128 but its sparse embeddings are 16 wide; TorchEasyRec's
# WuKong raises "dense mlp last hidden_unit must be the same sparse feature dim" for it.
UPSTREAM_MISTAKES = {
    "wukong_criteo.config": (
        "model_config.wukong.dense_mlp.hidden_units",
        {"model_config.wukong.dense_mlp.hidden_units[2]": 16},
    ),
}


def _path(name: str) -> str:
    path = os.path.join(EXAMPLES, name)
    if not os.path.exists(path):
        pytest.skip(f"{EXAMPLES} is absent (TorchEasyRec's example configs live in ../shared)")
    return path


def test_the_seventeen_configs_are_all_here():
    if not CONFIGS:
        pytest.skip(f"{EXAMPLES} is absent (TorchEasyRec's example configs live in ../shared)")
    assert CONFIGS == sorted(MISSING)


@pytest.mark.parametrize("name", sorted(MISSING))
def test_config_loads_unchanged_and_validates_or_names_what_is_missing(name):
    path = _path(name)
    config = load_pipeline_config(path)
    if not MISSING[name]:
        validate_config(config, path)
        return
    with pytest.raises(ConfigError) as error:
        validate_config(config, path)
    lines = [str(e) for e in error.value.errors]
    assert len(lines) == len(MISSING[name])
    for line, missing in zip(lines, MISSING[name]):
        assert name in line and missing in line and "not supported yet" in line


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
    path = _path(name)
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


@pytest.mark.parametrize("name", sorted(UPSTREAM_MISTAKES))
def test_upstream_config_mistake_is_a_config_error_at_its_field(name):
    from recforge.features import create_features
    from recforge.models.factory import build_model

    config = load_pipeline_config(_path(name))
    features = create_features(config.feature_configs)
    with pytest.raises(ConfigError) as error:  # meta: the uncapped tables take no memory
        build_model(config, features, embedding_device=torch.device("meta"))
    assert error.value.field == UPSTREAM_MISTAKES[name][0]
