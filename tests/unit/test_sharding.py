"""shard_model: fused vs fallback kernels, frozen tables, checkpoint/resume, mixed precision."""

import os

import pytest
import torch
from google.protobuf import text_format

from recforge.config import ConfigError
from recforge.features import create_features
from recforge.models.model import BaseModel, TrainWrapper
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from recforge.utils.sharding import ShardedTraining, shard_model, user_table_constraints
from tests.helpers.models import build, make_batch, make_config
from tests.helpers.sharding import (
    CPU,
    make_sharded,
    table_weights,
    train_config,
    train_steps,
)


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


# ------------------------------------------------------------------- fused vs fallback kernels


@pytest.mark.parametrize("dim", [8, 10])
@pytest.mark.parametrize("sparse", ["sgd", "adagrad", "adam", "rowwise_adagrad"])
def test_every_sparse_optimizer_trains_its_tables(sparse, dim):
    torch.manual_seed(0)
    model_name = "DeepFM"
    sharded, (dims, frozen_tables) = make_sharded(model_name, dim, train_config(sparse, "adam"))
    assert frozen_tables and all(t.startswith("tags") for t in frozen_tables)
    trainable_tables = set(dims) - frozen_tables

    # fbgemm's CPU kernel trains SGD / (row-wise) Adagrad on widths divisible by 4 only
    expected_fallback = {t for t in trainable_tables if sparse == "adam" or dims[t] % 4 != 0}
    assert sorted(sharded.fallback_tables) == sorted(expected_fallback)
    if sparse == "adam":
        assert set(sharded.fallback_tables) == trainable_tables
    if dim == 10 and sparse != "adam":
        assert set(sharded.fallback_tables) == {"user_emb", "item_emb"}

    batch = make_batch(16)
    before = table_weights(sharded.model)
    assert set(before) == set(dims)
    losses = train_steps(sharded, batch, 0, 4)
    after = table_weights(sharded.model)
    assert losses[-1] < losses[0], losses
    for table in trainable_tables:
        assert not torch.equal(before[table], after[table]), f"{table} did not train"
    for table in frozen_tables:
        assert torch.equal(before[table], after[table]), f"frozen {table} changed"


@pytest.mark.parametrize("sparse", ["adagrad", "adam"])
def test_mixed_widths_fall_back_per_table(sparse):
    torch.manual_seed(0)
    dims = {"user": 8, "item": 10, "tags": 6}
    sharded, (_, frozen_tables) = make_sharded("MultiTower", dims, train_config(sparse, "sgd"))
    assert frozen_tables == {"tags_emb"}
    expected = ["user_emb", "item_emb"] if sparse == "adam" else ["item_emb"]
    assert sorted(sharded.fallback_tables) == sorted(expected)

    before = table_weights(sharded.model)
    losses = train_steps(sharded, make_batch(16), 0, 4)
    after = table_weights(sharded.model)
    assert losses[-1] < losses[0], losses
    assert not torch.equal(before["user_emb"], after["user_emb"])
    assert not torch.equal(before["item_emb"], after["item_emb"])
    assert torch.equal(before["tags_emb"], after["tags_emb"])


def test_sharding_for_evaluation_builds_no_optimizer():
    sharded, _ = make_sharded("MultiTower", 8, None)
    assert sharded.optimizer is None and sharded.schedules == []
    assert sharded.fallback_tables == []
    with torch.no_grad():
        loss, _ = sharded.model(make_batch())
    assert torch.isfinite(loss)


def test_fused_tables_follow_the_schedule_in_the_same_step():
    # the fused kernel updates inside backward: a rate set before the step must already apply
    schedule = "manual_step_learning_rate { schedule_sizes: [2] learning_rates: [0.0] }"
    torch.manual_seed(0)
    sharded, _ = make_sharded("MultiTower", 8, train_config("sgd", "sgd", schedule))
    assert sharded.fallback_tables == []
    batch = make_batch(16)
    changed = []
    for step in range(4):
        before = table_weights(sharded.model)["user_emb"]
        train_steps(sharded, batch, step, 1)
        changed.append(not torch.equal(before, table_weights(sharded.model)["user_emb"]))
    assert changed == [True, True, False, False]


# ----------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def small_sharded():
    torch.manual_seed(0)
    sharded, _ = make_sharded("MultiTower", 8, train_config("sgd", "sgd"))
    train_steps(sharded, make_batch(), 0, 1)
    return sharded


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path, small_sharded):
    missing = str(tmp_path / "model.ckpt-5")
    with pytest.raises(CheckpointError, match="model.ckpt-5"):
        load_checkpoint(missing, small_sharded.model, small_sharded.optimizer)
    assert latest_checkpoint(str(tmp_path / "no_such_dir")) is None


def test_keep_checkpoint_max_keeps_the_newest(tmp_path, small_sharded):
    model_dir = str(tmp_path)
    for step in (1, 2, 3):
        save_checkpoint(
            model_dir, step, small_sharded.model, small_sharded.optimizer, {"step": step}, 2
        )
    names = [os.path.basename(p) for p in list_checkpoints(model_dir)]
    assert names == ["model.ckpt-2", "model.ckpt-3"]
    assert sorted(os.listdir(model_dir)) == ["model.ckpt-2", "model.ckpt-3"]


def test_leftover_tmp_and_incomplete_checkpoints_are_ignored(tmp_path, small_sharded):
    model_dir = str(tmp_path)
    final = save_checkpoint(model_dir, 3, small_sharded.model, small_sharded.optimizer, {"step": 3})
    # a crash between writing and renaming leaves a complete-looking .tmp directory
    leftover = tmp_path / "model.ckpt-9.tmp"
    leftover.mkdir()
    (leftover / "train_state.json").write_text('{"step": 9}')
    # and an interrupted copy may leave a directory without train_state.json
    (tmp_path / "model.ckpt-7").mkdir()
    assert latest_checkpoint(model_dir) == final
    assert list_checkpoints(model_dir) == [final]
    with pytest.raises(CheckpointError):
        load_checkpoint(str(tmp_path / "model.ckpt-7"), small_sharded.model)


# ------------------------------------------------------------------------------ mixed precision


@pytest.mark.parametrize("model_name", ["DeepFM", "MultiTower"])
def test_bf16_train_wrapper_runs_on_cpu(model_name):
    torch.manual_seed(0)
    model = build(model_name)
    loss, (losses, predictions, _) = TrainWrapper(model, "bf16")(make_batch())
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    trainable, _ = model.sparse_parameters()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert isinstance(float(losses["binary_cross_entropy"]), float)


def test_bf16_sharded_training_runs_on_cpu():
    torch.manual_seed(0)
    sharded, _ = make_sharded("DeepFM", 8, train_config("adagrad", "adam"), "bf16")
    losses = train_steps(sharded, make_batch(16), 0, 3)
    assert all(isinstance(v, float) and v == v for v in losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("mixed_precision", ["fp8", "bfloat16x", "int8"])
def test_invalid_mixed_precision_is_a_value_error(mixed_precision):
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainWrapper(build("MultiTower"), mixed_precision)


# ------------------------------------------------------------ embedding_constraints -> planner


def _plan_of(sharded: ShardedTraining) -> dict[str, tuple[str, str]]:
    """table -> (sharding type, compute kernel) of the applied plan."""
    return {
        table: (ps.sharding_type, ps.compute_kernel)
        for module_plan in sharded.model.plan.plan.values()
        for table, ps in module_plan.items()
    }


def _constrained(constraints: dict[str, str], global_text: str = ""):
    """DeepFM with dim-8 tables, ``{feature: ParameterConstraints text}``, and its features."""
    config = make_config("DeepFM")
    for feature_config in config.feature_configs:
        if feature_config.HasField("id_feature"):
            cfg = feature_config.id_feature
            cfg.embedding_dim = 8
            if cfg.feature_name in constraints:
                text_format.Parse(constraints[cfg.feature_name], cfg.embedding_constraints)
    train = train_config("adagrad", "adam")
    if global_text:
        text_format.Parse(global_text, train.global_embedding_constraints)
    features = create_features(config.feature_configs)
    model = BaseModel.create_class("DeepFM")(
        config.model_config, features, ["label"], embedding_device=torch.device("meta")
    )
    return model, features, train


def test_embedding_constraints_narrow_the_plan_and_global_fills_the_rest():
    model, features, train = _constrained(
        {"user": 'sharding_types: "column_wise"', "item": 'compute_kernels: "dense"'},
        global_text='sharding_types: "table_wise"',
    )
    constraints = user_table_constraints(features, train)
    sharded = shard_model(TrainWrapper(model), CPU, train, None, constraints)
    plan = _plan_of(sharded)
    assert plan["user_emb"] == ("column_wise", "fused")
    assert plan["item_emb"] == ("data_parallel", "dense")
    assert plan["tags_emb"] == ("table_wise", "fused")  # the global constraint


def test_an_impossible_constraint_is_a_config_error_naming_the_field():
    model, features, train = _constrained({"user": 'sharding_types: "row_wise"'})
    constraints = user_table_constraints(features, train)
    with pytest.raises(ConfigError, match="user.*embedding_constraints.sharding_types.*row_wise"):
        shard_model(TrainWrapper(model), CPU, train, None, constraints)
