"""TorchEasyRec 1.3.16's example configs in ../shared: where, which, what each still needs."""

from __future__ import annotations

import glob
import os

import pytest

from tests.helpers.paths import SHARED_DIR

EXAMPLES = os.path.join(SHARED_DIR, "tzrec-configs", "examples")
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


def example_path(name: str) -> str:
    path = os.path.join(EXAMPLES, name)
    if not os.path.exists(path):
        pytest.skip(f"{EXAMPLES} is absent (TorchEasyRec's example configs live in ../shared)")
    return path
