"""Checkpoints record the id hash; one bucketed by another hash is refused, not misread."""

import json

import pytest

from recforge.errors import CheckpointError
from recforge.features import FG_DAG, FG_NONE, create_features
from recforge.models.model import BaseModel
from recforge.utils.id_hash import ID_HASH, ID_HASH_KEY, check_id_hash, hashed_features
from tests.helpers.models import make_config


def build(fg_mode: int) -> BaseModel:
    config = make_config("MultiTower")
    features = create_features(config.feature_configs, fg_mode=fg_mode)
    return BaseModel.create_class("MultiTower")(config.model_config, features, ["label"])


@pytest.fixture(scope="module")
def raw_model():
    return build(FG_DAG)


def test_features_that_hash_raw_values_are_found(raw_model):
    expected = [
        fc.id_feature.feature_name
        for fc in make_config("MultiTower").feature_configs
        if fc.WhichOneof("feature") == "id_feature" and fc.id_feature.hash_bucket_size > 0
    ]
    assert expected and hashed_features(raw_model) == expected
    assert hashed_features(build(FG_NONE)) == []  # FG_NONE columns hold bucket ids already


def test_a_checkpoint_of_another_hash_is_refused_for_a_hashing_model(raw_model):
    with pytest.raises(CheckpointError, match=r"ckpt-9: .*pandas_hash_array.*item"):
        check_id_hash({"global_step": 9}, raw_model, "ckpt-9")
    with pytest.raises(CheckpointError, match="other_hash"):
        check_id_hash({ID_HASH_KEY: "other_hash"}, raw_model, "ckpt-9")
    check_id_hash({ID_HASH_KEY: ID_HASH}, raw_model, "ckpt-9")
    check_id_hash({"global_step": 9}, build(FG_NONE), "ckpt-9")  # no hashed ids: nothing to misread


def test_saved_checkpoints_record_the_hash(tmp_path):
    from recforge.utils import dist as dist_util
    from recforge.utils.checkpoint import TRAIN_STATE_FILE, save_checkpoint
    from tests.helpers.sharding import make_sharded, train_config

    dist_util.init_process_group()
    sharded, _ = make_sharded("MultiTower", 8, train_config("sgd", "adam"))
    path = save_checkpoint(str(tmp_path), 1, sharded.model, sharded.optimizer, {"global_step": 1})
    with open(f"{path}/{TRAIN_STATE_FILE}") as f:
        assert json.load(f) == {"global_step": 1, ID_HASH_KEY: ID_HASH}
