"""Training controls: clipping, accumulation, loss scaling, dense EMA, profiling, feature masks,
evaluation after every checkpoint and warm start.

Each test shows that the setting changes what happens; the train step runs in-process on a
tiny DeepFM. One module-scoped training run (in-process, a few steps) covers what needs the
whole loop.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
import torch
from google.protobuf import text_format
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recforge.config import ConfigError
from recforge.datasets import DataParser, RecDataset
from recforge.datasets.sample_mask import SampleMask
from recforge.export import restore_model
from recforge.features import create_features
from recforge.models.factory import build_model
from recforge.models.model import BaseModel, TrainWrapper
from recforge.protos import pipeline_pb2
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from recforge.utils.dense_ema import DenseEMA, create_dense_ema, dense_named_parameters
from recforge.utils.sharding import ShardedTraining, shard_model
from recforge.utils.train_step import TrainStep
from recforge.utils.warm_start import read_param_map, warm_start
from tests.helpers.train_controls import (
    config_text,
    rows,
    sgd,
    write_parquet,
)

CPU = torch.device("cpu")


@dataclass
class Run:
    config: pipeline_pb2.EasyRecConfig
    model: BaseModel
    sharded: ShardedTraining
    step: TrainStep
    parser: DataParser


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def build(text: str, seed: int = 0) -> Run:
    """The model, sharded with its optimizers, and its train step, as the pipeline builds them."""
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    torch.manual_seed(seed)
    features = create_features(config.feature_configs)
    model = build_model(config, features, embedding_device=torch.device("meta"))
    _, frozen = model.sparse_parameters()
    tc = config.train_config
    wrapper = TrainWrapper(model, tc.mixed_precision, dense_ema=create_dense_ema(tc, model))
    sharded = shard_model(wrapper, CPU, tc, frozen)
    step = TrainStep(tc, sharded.optimizer, model, CPU, getattr(wrapper, "dense_ema", None))
    return Run(config, model, sharded, step, DataParser(features, labels=["label"]))


def train(run: Run, record_batches: list[pa.RecordBatch]) -> list[bool]:
    """One batch per step, as the train loop runs them; returns whether each step updated."""
    stepped = []
    for i, rb in enumerate(record_batches):
        for schedule in run.sharded.schedules:
            schedule.update(i, 0)
        loss, _ = run.sharded.model(run.parser.parse_batch(rb))
        run.step.backward(loss)
        stepped.append(run.step.step(i + 1))
    return stepped


def dense(run: Run) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in dense_named_parameters(run.model).items()}


def tables(run: Run) -> dict[str, torch.Tensor]:
    """Every table's full weights, by state-dict key."""
    found = {}
    for key, value in run.sharded.model.state_dict().items():
        if ".embedding_bags." in key:
            if isinstance(value, ShardedTensor):
                shards = sorted(value.local_shards(), key=lambda s: s.metadata.shard_offsets)
                value = torch.cat([s.tensor for s in shards])
            found[key] = value.detach().clone()
    return found


def delta(before: dict, after: dict) -> torch.Tensor:
    return torch.cat([(after[k] - before[k]).flatten() for k in before])


# ------------------------------------------------------------------------------ clipping


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_grad_clipping_bounds_the_dense_update(kind):
    limit = 1e-3
    clip = f'grad_clipping {{ clipping_type: "{kind}" max_gradient: {limit} }}'
    batch = [rows(16, seed=1)]
    free, clipped = build(config_text(sgd(0.1, 1.0))), build(config_text(sgd(0.1, 1.0, clip)))
    assert all(torch.equal(a, b) for a, b in zip(dense(free).values(), dense(clipped).values()))
    before = dense(free)
    train(free, batch)
    train(clipped, batch)
    free_update, clipped_update = delta(before, dense(free)), delta(before, dense(clipped))
    if kind == "norm":  # lr 1: the update is the gradient
        assert free_update.norm() > 10 * limit
        assert clipped_update.norm() == pytest.approx(limit, rel=1e-4)
        # same direction: the whole gradient is scaled by one factor
        scaled = free_update * (limit / free_update.norm())
        torch.testing.assert_close(clipped_update, scaled, rtol=1e-3, atol=1e-8)
    else:
        assert free_update.abs().max() > 10 * limit
        assert clipped_update.abs().max() <= limit * (1 + 1e-5)
        small = free_update.abs() < limit  # untouched where the gradient was within bounds
        torch.testing.assert_close(clipped_update[small], free_update[small])


def test_grad_clipping_checks_its_settings():
    clip = 'grad_clipping { clipping_type: "norm" max_gradient: 0 }'
    with pytest.raises(ConfigError, match=r"grad_clipping\.max_gradient: max_gradient must be"):
        build(config_text(sgd(0.1, 1.0, clip)))


# ------------------------------------------------------------------------------ accumulation


def test_accumulating_k_batches_equals_one_step_on_the_k_times_batch():
    k = 3
    parts = [rows(8, seed=10 + i) for i in range(k)]
    whole = pa.concat_batches(parts)
    # sparse lr 0: fused tables update inside backward on every batch (not accumulated), which
    # would change the embeddings later batches see; the dense part must match exactly
    accumulated = build(config_text(sgd(0.0, 0.5, f"gradient_accumulation_steps: {k}")))
    single = build(config_text(sgd(0.0, 0.5)))
    before = dense(single)

    assert train(accumulated, parts[:2]) == [False, False]
    torch.testing.assert_close(dense(accumulated), before, rtol=0, atol=0)  # inside the window
    loss, _ = accumulated.sharded.model(accumulated.parser.parse_batch(parts[2]))
    accumulated.step.backward(loss)
    assert accumulated.step.step(3) is True
    assert train(single, [whole]) == [True]

    after = dense(single)
    assert not torch.allclose(delta(before, after), torch.zeros(1))
    torch.testing.assert_close(dense(accumulated), after, rtol=1e-5, atol=1e-7)


def test_without_accumulation_every_batch_steps():
    run = build(config_text(sgd(0.0, 0.5)))
    before = dense(run)
    assert train(run, [rows(8, seed=1)]) == [True]
    assert not torch.allclose(delta(before, dense(run)), torch.zeros(1))


# ------------------------------------------------------------------------------ grad scaler


def test_fp16_grad_scaler_unscales_dense_and_table_gradients():
    scaler = "grad_scaler { init_scale: 1024 growth_interval: 1 }"
    fp16 = 'mixed_precision: "fp16"'
    scaled = build(config_text(sgd(0.5, 0.5, f"{fp16} {scaler}")))
    plain = build(config_text(sgd(0.5, 0.5, fp16)))
    dense_before, tables_before = dense(plain), tables(plain)
    batch = [rows(16, seed=3)]
    train(scaled, batch)
    train(plain, batch)
    assert scaled.step.scaler.get_scale() == 2048  # one good step, growth_interval 1
    for what, before in ((dense, dense_before), (tables, tables_before)):
        with_scaler, without = delta(before, what(scaled)), delta(before, what(plain))
        assert without.norm() > 0
        # unscaled: the same update as without loss scaling (fp16 rounding aside), not 1024x
        assert (with_scaler - without).norm() <= 0.02 * without.norm(), what.__name__


@pytest.mark.parametrize(
    "setting", ["init_scale: 0", "growth_factor: 1", "backoff_factor: 1", "growth_interval: 0"]
)
def test_grad_scaler_settings_are_checked(setting):
    name = setting.split(":")[0]
    with pytest.raises(ConfigError, match=rf"train_config\.grad_scaler\.{name}: {name} must be"):
        build(config_text(sgd(0.5, 0.5, f"grad_scaler {{ {setting} }}")))


def test_fp16_grad_scaler_skips_a_step_whose_gradients_overflow():
    scaler = "grad_scaler { init_scale: 1e30 }"
    run = build(config_text(sgd(0.5, 0.5, f'mixed_precision: "fp16" {scaler}')))
    dense_before, tables_before = dense(run), tables(run)
    assert train(run, [rows(16, seed=3)]) == [False]
    assert run.step.scaler.get_scale() == pytest.approx(0.5e30)  # backed off
    torch.testing.assert_close(dense(run), dense_before, rtol=0, atol=0)
    # tables got a zero gradient, not inf
    torch.testing.assert_close(tables(run), tables_before, rtol=0, atol=0)


# ------------------------------------------------------------------------------ dense EMA


def ema_config(use_in_export: str = "") -> str:
    return config_text(
        sgd(0.5, 0.5).replace(
            "dense_optimizer { sgd_optimizer { lr: 0.5 } }",
            "dense_optimizer { sgd_optimizer { lr: 0.5 } ema { decay: 0.5 } }",
        ),
        extra=use_in_export,
    )


def test_dense_ema_averages_the_weights_after_each_step():
    run = build(ema_config())
    ema = run.step.ema
    assert isinstance(ema, DenseEMA) and ema.names == list(dense(run))
    snapshots = []
    for i in range(3):
        train(run, [rows(8, seed=20 + i)])
        snapshots.append(dense(run))
    expected = snapshots[0]  # the first update copies
    for snapshot in snapshots[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * snapshot[k] for k in expected}
    averages = dict(zip(ema.names, ema.averages()))
    torch.testing.assert_close(averages, expected)
    assert not torch.allclose(delta(snapshots[-1], averages), torch.zeros(1))
    assert int(ema.n_averaged) == 3
    with ema.swapped():
        torch.testing.assert_close(dense(run), expected)
    torch.testing.assert_close(dense(run), snapshots[-1])


def test_dense_ema_decay_outside_0_1_is_a_config_error():
    model = build(config_text(sgd(0.5, 0.5))).model
    with pytest.raises(ConfigError, match=r"ema\.decay: decay must be in \[0, 1\]"):
        DenseEMA(model, 1.5)


def save_ema_run(model_dir: str, text: str) -> tuple[str, dict, dict]:
    """Trains 3 steps and saves; returns (checkpoint, raw weights, averages)."""
    run = build(text)
    train(run, [rows(8, seed=30 + i) for i in range(3)])
    path = save_checkpoint(model_dir, 3, run.sharded.model, run.sharded.optimizer, {})
    averages = dict(zip(run.step.ema.names, (a.clone() for a in run.step.ema.averages())))
    return path, dense(run), averages


@pytest.mark.parametrize("setting", ["", "use_dense_ema: true", "use_dense_ema: false"])
def test_export_restores_the_ema_weights_unless_use_dense_ema_is_false(tmp_path, setting):
    text = ema_config(f"export_config {{ {setting} }}")
    path, raw, averages = save_ema_run(str(tmp_path), text)
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    model, _ = restore_model(config, path, config.export_config)
    expected = raw if setting.endswith("false") else averages
    restored = {k: v.detach() for k, v in dense_named_parameters(model).items()}
    torch.testing.assert_close(restored, expected)


def test_use_dense_ema_true_without_averages_in_the_checkpoint_is_an_error(tmp_path):
    run = build(config_text(sgd(0.5, 0.5)))
    path = save_checkpoint(str(tmp_path), 1, run.sharded.model, run.sharded.optimizer, {})
    text = config_text(sgd(0.5, 0.5), extra="export_config { use_dense_ema: true }")
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    with pytest.raises(CheckpointError, match="holds no dense EMA"):
        restore_model(config, path, config.export_config)


# ------------------------------------------------------------------------------ use_mask


def test_use_mask_masks_the_configured_fraction_of_training_rows(tmp_path):
    text = config_text(
        sgd(0.1, 0.1),
        feature_options={"user": "use_mask: true"},
    )
    config = text_format.Parse(text, pipeline_pb2.EasyRecConfig())
    config.data_config.sample_mask_prob = 0.25
    config.data_config.batch_size = 4000
    config.feature_configs[2].raw_feature.use_mask = True  # price
    features = create_features(config.feature_configs)
    path = write_parquet(str(tmp_path / "data.parquet"), 4000, seed=5)

    train_batch = next(iter(RecDataset(config.data_config, features, path, mode="train")))
    sparse = train_batch.sparse_features.to_dict()
    user_empty = sparse["user"].lengths() == 0
    assert abs(float(user_empty.float().mean()) - 0.25) < 0.03
    assert bool((sparse["item"].lengths() == 1).all())  # no use_mask: never masked
    price = train_batch.dense_features.to_dict()["price"].flatten()
    original = torch.from_numpy(rows(4000, seed=5).column("price").to_numpy()).float()
    masked_price = price != original
    assert torch.equal(masked_price, user_empty)  # the same rows for every masked feature
    assert bool((price[masked_price] == 0).all())  # a masked raw feature reads its default

    eval_batch = next(iter(RecDataset(config.data_config, features, path, mode="eval")))
    assert bool((eval_batch.sparse_features.to_dict()["user"].lengths() == 1).all())


def test_negative_rows_are_masked_with_negative_sample_mask_prob():
    config = text_format.Parse(
        config_text(sgd(0.1, 0.1), feature_options={"item": "use_mask: true"}),
        pipeline_pb2.EasyRecConfig(),
    )
    config.data_config.sample_mask_prob = 0.1
    config.data_config.negative_sample_mask_prob = 0.6
    mask = SampleMask(config.data_config, create_features(config.feature_configs))
    assert mask.enabled and mask.features == ["item"]
    drawn = mask.draw(np.random.default_rng(0), 20000, num_negatives=10000)
    assert abs(drawn[:10000].mean() - 0.1) < 0.02
    assert abs(drawn[10000:].mean() - 0.6) < 0.02


def test_mask_probability_outside_0_1_is_a_config_error():
    config = text_format.Parse(config_text(sgd(0.1, 0.1)), pipeline_pb2.EasyRecConfig())
    config.data_config.sample_mask_prob = 1.5
    with pytest.raises(ConfigError, match=r"data_config\.sample_mask_prob"):
        SampleMask(config.data_config, [])


# ------------------------------------------------------------------------------ warm start

ADAM = (
    "sparse_optimizer { adagrad_optimizer { lr: 0.1 } }"
    " dense_optimizer { adam_optimizer { lr: 0.01 } }"
)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A trained user+item model and its checkpoint."""
    run = build(config_text(ADAM))
    train(run, [rows(8, seed=40 + i) for i in range(2)])
    model_dir = str(tmp_path_factory.mktemp("old"))
    progress = {"global_step": 2, "epoch": 0, "step_in_epoch": 2}
    save_checkpoint(model_dir, 2, run.sharded.model, run.sharded.optimizer, progress)
    return model_dir, run.sharded.model.state_dict(), run.sharded.optimizer.state_dict()


def full(value) -> torch.Tensor:
    if isinstance(value, ShardedTensor):
        shards = sorted(value.local_shards(), key=lambda s: s.metadata.shard_offsets)
        return torch.cat([s.tensor for s in shards])
    return value


def test_warm_start_after_adding_a_feature_restores_what_fits(old_run, caplog):
    model_dir, old_state, old_optimizer = old_run
    new = build(config_text(ADAM, ids=("user", "item", "city")), seed=1)
    with caplog.at_level(logging.WARNING):
        result = warm_start(model_dir, new.sharded.model, new.sharded.optimizer)

    user_table = "model.embedding_group.ebc.embedding_bags.user_emb.weight"
    city_table = "model.embedding_group.ebc.embedding_bags.city_emb.weight"
    first_layer = "model.deep.mlp.0.weight"  # its input grew by the city embedding
    assert city_table in result.missing
    assert first_layer in result.mismatched
    assert user_table in result.restored and "model.head.weight" in result.restored
    new_state = new.sharded.model.state_dict()
    for key in result.restored:
        torch.testing.assert_close(full(new_state[key]), full(old_state[key]))
    assert not torch.equal(new_state[first_layer][:, :4], old_state[first_layer][:, :4])
    old_shape, new_shape = list(old_state[first_layer].shape), list(new_state[first_layer].shape)
    assert new_shape[1] == old_shape[1] + 8
    warning = caplog.text
    assert city_table in warning
    assert f"{first_layer} (checkpoint {old_shape}, model {new_shape})" in warning
    # the optimizer state of restored parameters is the old run's
    state = new.sharded.optimizer.state_dict()["state"]
    torch.testing.assert_close(
        state["dense.model.head.weight"]["exp_avg"],
        old_optimizer["state"]["dense.model.head.weight"]["exp_avg"],
    )
    assert "dense.model.deep.mlp.0.weight.exp_avg" in result.optimizer_fresh


def test_warm_start_with_ignore_restore_optimizer_leaves_optimizer_state_fresh(old_run):
    model_dir, old_state, old_optimizer = old_run
    new = build(config_text(ADAM))
    result = warm_start(model_dir, new.sharded.model, optimizer=None)
    assert not result.missing and not result.mismatched and not result.optimizer_restored
    torch.testing.assert_close(
        new.sharded.model.state_dict()["model.head.weight"], old_state["model.head.weight"]
    )
    assert not new.sharded.optimizer.state_dict()["state"].get("dense.model.head.weight")


def test_fine_tune_ckpt_param_map_renames(old_run, tmp_path):
    model_dir, old_state, _ = old_run
    # the item feature now uses a table called "product"
    text = config_text(ADAM, feature_options={"item": 'embedding_name: "product"'})
    new = build(text, seed=1)
    prefix = "model.embedding_group.ebc.embedding_bags"
    mapping = tmp_path / "param_map.txt"
    mapping.write_text(
        f"# this model\tthe checkpoint\n{prefix}.product.weight\t{prefix}.item_emb.weight\n"
    )
    assert read_param_map(str(mapping)) == {f"{prefix}.product.weight": f"{prefix}.item_emb.weight"}
    result = warm_start(model_dir, new.sharded.model, new.sharded.optimizer, str(mapping))
    assert f"{prefix}.product.weight" in result.restored
    torch.testing.assert_close(
        full(new.sharded.model.state_dict()[f"{prefix}.product.weight"]),
        full(old_state[f"{prefix}.item_emb.weight"]),
    )
    assert any(k.startswith(f"sparse.{prefix}.product.weight") for k in result.optimizer_restored)


def test_bad_param_map_line_names_file_and_line(tmp_path):
    mapping = tmp_path / "param_map.txt"
    mapping.write_text("a b\nonly_one_name\n")
    with pytest.raises(ConfigError, match=r"param_map.txt:2: expected '<name in this model>"):
        read_param_map(str(mapping))


# ------------------------------------------------------------------------------ the train loop


def test_resume_with_ignore_restore_optimizer_and_a_checkpoint_without_ema(old_run, tmp_path):
    from recforge.train import _Trainer

    model_dir, old_state, old_optimizer = old_run
    checkpoint = list_checkpoints(model_dir)[-1]
    text = config_text(ADAM.replace("lr: 0.01 }", "lr: 0.01 } ema { decay: 0.9 }"))
    text += f'\nmodel_dir: "{tmp_path}"'
    text = text.replace("train_config {", "train_config { use_tensorboard: false")
    head = "dense.model.head.weight"
    for ignore in (True, False):
        run = build(text, seed=1)
        trainer = _Trainer(run.config, run.sharded, run.model, CPU, run.step)
        trainer.restore(checkpoint, ignore_restore_optimizer=ignore)
        restored = run.sharded.model.state_dict()["model.head.weight"]
        torch.testing.assert_close(restored, old_state["model.head.weight"])
        state = run.sharded.optimizer.state_dict()["state"]
        if ignore:
            assert not state.get(head)
        else:
            torch.testing.assert_close(
                state[head]["exp_avg"], old_optimizer["state"][head]["exp_avg"]
            )
        # the checkpoint has no averages: they start from the restored weights
        averages = dict(zip(run.step.ema.names, run.step.ema.averages()))
        torch.testing.assert_close(averages["head.weight"], old_state["model.head.weight"])


def test_warm_start_checks_the_checkpoint_files(old_run, tmp_path):
    import shutil

    model_dir, _, _ = old_run
    copy = tmp_path / "copy"
    shutil.copytree(list_checkpoints(model_dir)[-1], copy)
    (copy / ".metadata").write_bytes(b"not what was saved")
    new = build(config_text(ADAM))
    with pytest.raises(CheckpointError, match=r"\.metadata"):
        warm_start(str(copy), new.sharded.model, new.sharded.optimizer)
