"""File-backed embedding tables (``train_config.embedding_file_dir``): same training, on disk."""

from __future__ import annotations

import os
from typing import Optional

import pytest
import torch

from recforge.config.errors import ConfigError
from recforge.models.model import TrainWrapper
from recforge.optim import sparse_optimizer_spec
from recforge.utils import dist as dist_util
from recforge.utils import memory_estimate as me
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from recforge.utils.embedding_files import file_backed_tables, resolve_dir
from recforge.utils.sharding import ShardedTraining, shard_model
from tests.helpers.models import make_batch
from tests.helpers.sharding import build_model, table_weights, train_config, train_steps

CPU = torch.device("cpu")
GIB = 1024**3


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def _sharded(directory: Optional[str], sparse: str = "adagrad") -> tuple[ShardedTraining, list]:
    torch.manual_seed(0)
    model = build_model("DeepFM", 8)
    _, frozen = model.sparse_parameters()
    with file_backed_tables(directory) as tables:
        sharded = shard_model(TrainWrapper(model), CPU, train_config(sparse, "adam"), frozen)
    return sharded, tables


def _fused_modules(sharded: ShardedTraining) -> list:
    """fbgemm's fused (split) table-batched modules inside the sharded collections."""
    return [
        kernel._emb_module
        for m in sharded.model.modules()
        for lookup in getattr(m, "_lookups", [])
        for kernel in getattr(getattr(lookup, "module", lookup), "_emb_modules", [])
        if type(kernel._emb_module).__name__ == "SplitTableBatchedEmbeddingBagsCodegen"
    ]


@pytest.mark.parametrize("sparse", ["adagrad", "rowwise_adagrad", "sgd"])
def test_file_backed_tables_train_exactly_as_in_memory(tmp_path, sparse):
    batch = make_batch(16)
    in_memory, none = _sharded(None, sparse)
    on_disk, tables = _sharded(str(tmp_path), sparse)
    assert none == [] and {"user_emb", "item_emb"} <= set(tables)
    modules = _fused_modules(on_disk)
    assert modules
    for module in modules:  # weights and optimizer state are mapped from files in tmp_path
        names = ["weights_host"] + (["momentum1_host"] if sparse != "sgd" else [])
        for name in names:
            filename = getattr(module, name).untyped_storage().filename
            assert filename is not None and filename.startswith(str(tmp_path)), name
    assert not os.listdir(tmp_path)  # unlinked once mapped: nothing left behind
    torch.manual_seed(1)  # the same dropout masks for both
    disk_losses = train_steps(on_disk, batch, 0, 4)
    torch.manual_seed(1)
    assert disk_losses == train_steps(in_memory, batch, 0, 4)
    memory, disk = table_weights(in_memory.model), table_weights(on_disk.model)
    assert all(torch.equal(memory[t], disk[t]) for t in memory)


def test_file_backed_checkpoint_resumes_in_memory_and_on_disk(tmp_path):
    batch = make_batch(16)
    os.makedirs(tmp_path / "files")
    first, _ = _sharded(str(tmp_path / "files"))
    train_steps(first, batch, 0, 3)
    path = save_checkpoint(str(tmp_path / "model"), 3, first.model, first.optimizer, {"s": 3})
    torch.manual_seed(1)
    expected = train_steps(first, batch, 3, 3)
    os.makedirs(tmp_path / "files2")
    for directory in (str(tmp_path / "files2"), None):
        torch.manual_seed(7)  # another initialisation: the checkpoint must replace it
        second, _ = _sharded(directory)
        load_checkpoint(path, second.model, second.optimizer)
        torch.manual_seed(1)
        assert train_steps(second, batch, 3, 3) == expected, directory


def test_memory_check_counts_file_backed_tables_as_disk():
    model = build_model("DeepFM", 8)
    spec = sparse_optimizer_spec(train_config("adagrad", "adam").sparse_optimizer)
    in_ram = me.estimate_training_memory(model, spec, CPU)
    on_disk = me.estimate_training_memory(model, spec, CPU, file_backed=True)
    fused = sum(t.total for t in on_disk.tables if t.fused)
    assert fused and on_disk.disk_bytes == fused and in_ram.disk_bytes == 0
    assert abs(in_ram.needed - on_disk.needed - fused * (1 + me.MARGIN_FRACTION)) <= 1
    with pytest.raises(ConfigError) as error:
        me.check_training_memory(on_disk, available=GIB, disk_available=fused - 1)
    assert error.value.field == "train_config.embedding_file_dir"
    me.check_training_memory(on_disk, available=GIB, disk_available=fused)


def test_too_big_job_is_told_about_file_backed_tables():
    estimate = me.MemoryEstimate(
        (me.TableMemory("big", 100_000_000, 16, 4, "adagrad_optimizer", True),), 0, 1, 1, True
    )
    with pytest.raises(ConfigError, match='embedding_file_dir: "..."') as error:
        me.check_training_memory(estimate, available=2 * GIB)
    assert "of disk" in str(error.value)


def test_unwritable_file_dir_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as error:
        resolve_dir(str(blocker / "sub"), str(tmp_path))
    assert error.value.field == "train_config.embedding_file_dir"
    assert resolve_dir("files", str(tmp_path)) == str(tmp_path / "files" / "rank_0")
