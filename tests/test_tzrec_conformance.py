"""TorchEasyRec 1.3.16's example configs (../shared/tzrec-configs/examples) load unchanged.

Those whose models and features recforge has validate; each of the others fails validation
with lines that name what is missing (a model, a feature kind, a sequence encoder, ...).
"""

from __future__ import annotations

import glob
import os

import pytest

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
    "dbmtl_taobao_seq.config": ["sequence_groups", "sequence_encoders"],
    "deepfm_criteo.config": [],
    "dlrm_criteo.config": [],
    "dssm_taobao.config": ["sequence_groups", "sequence_encoders"],
    "dssm_v2_taobao.config": ["force_base_data_group", "sequence_groups", "sequence_encoders"],
    "masknet_criteo.config": [],
    "mind_taobao.config": ["model_config.mind"],
    "mmoe_taobao.config": [],
    "multi_tower_din_taobao.config": [],
    "multi_tower_taobao.config": [],
    "pepnet_taobao.config": ["model_config.pepnet"],
    "ple_taobao.config": [],
    "rocket_launching_criteo.config": ["model_config.rocket_launching"],
    "tdm_taobao.config": ["data_config.tdm_sampler", "model_config.tdm"],
    "wukong_criteo.config": ["model_config.wukong"],
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
