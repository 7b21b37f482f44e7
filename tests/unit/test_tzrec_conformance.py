"""TorchEasyRec 1.3.16's example configs (../shared/tzrec-configs/examples) load unchanged.

Those whose models and features recforge has validate; each of the others fails validation
with lines that name what is missing (a model, a feature kind, a sequence encoder, ...).
"""

from __future__ import annotations

import pytest
import torch

from recforge.config import ConfigError
from recforge.config.loader import load_pipeline_config
from recforge.config.validation import validate_config
from tests.helpers.tzrec_examples import (
    CONFIGS,
    EXAMPLES,
    MISSING,
    UPSTREAM_MISTAKES,
    example_path,
)


def test_the_seventeen_configs_are_all_here():
    if not CONFIGS:
        pytest.skip(f"{EXAMPLES} is absent (TorchEasyRec's example configs live in ../shared)")
    assert CONFIGS == sorted(MISSING)


@pytest.mark.parametrize("name", sorted(MISSING))
def test_config_loads_unchanged_and_validates_or_names_what_is_missing(name):
    path = example_path(name)
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


@pytest.mark.parametrize("name", sorted(UPSTREAM_MISTAKES))
def test_upstream_config_mistake_is_a_config_error_at_its_field(name):
    from recforge.features import create_features
    from recforge.models.factory import build_model

    config = load_pipeline_config(example_path(name))
    features = create_features(config.feature_configs)
    with pytest.raises(ConfigError) as error:  # meta: the uncapped tables take no memory
        build_model(config, features, embedding_device=torch.device("meta"))
    assert error.value.field == UPSTREAM_MISTAKES[name][0]
