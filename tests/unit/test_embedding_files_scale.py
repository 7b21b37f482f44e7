"""File-backed tables at scale: random-access mappings and checkpoints written without copies."""

from __future__ import annotations

import os

import pytest
import torch

from recforge.models.model import TrainWrapper
from recforge.utils import dist as dist_util
from recforge.utils import embedding_files
from recforge.utils.checkpoint import load_checkpoint, save_checkpoint
from recforge.utils.checkpoint_views import exact_view
from recforge.utils.embedding_files import file_backed_tables, sequential_access
from recforge.utils.sharding import ShardedTraining, shard_model
from tests.helpers.models import make_batch
from tests.helpers.sharding import build_model, table_weights, train_config, train_steps

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def _vm_flags(address: int) -> list[str]:
    """The ``VmFlags`` of the mapping of this process that starts at ``address``."""
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and int(head.split("-")[0], 16) == address:
            flags = next(x for x in lines[i + 1 :] if x.startswith("VmFlags:"))
            return flags.split()[1:]
    raise AssertionError(f"no mapping starts at {address:#x}")


def _sharded(directory: str) -> ShardedTraining:
    torch.manual_seed(0)
    model = build_model("DeepFM", 8)
    _, frozen = model.sparse_parameters()
    with file_backed_tables(directory):
        return shard_model(TrainWrapper(model), CPU, train_config("adagrad", "adam"), frozen)


def _host_buffers(sharded: ShardedTraining) -> list[torch.Tensor]:
    """The weights and optimizer-state buffers of the fused table-batched modules."""
    buffers = []
    for m in sharded.model.modules():
        for lookup in getattr(m, "_lookups", []):
            for kernel in getattr(getattr(lookup, "module", lookup), "_emb_modules", []):
                module = kernel._emb_module
                if type(module).__name__ == "SplitTableBatchedEmbeddingBagsCodegen":
                    buffers += [module.weights_host, module.momentum1_host]
    return buffers


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_table_files_are_mapped_for_random_access(tmp_path):
    # without MADV_RANDOM each cold row read faults in the device's whole read-ahead window
    buffers = _host_buffers(_sharded(str(tmp_path)))
    assert buffers
    for buffer in buffers:
        assert "rr" in _vm_flags(buffer.untyped_storage().data_ptr())


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_tables_are_read_ahead_while_being_built(tmp_path):
    # building fills and initialises whole tables: random-access advice would make each page
    # of those passes a synchronous read once memory pressure has evicted it
    with file_backed_tables(str(tmp_path)):
        buffer = embedding_files._mapped(str(tmp_path), 4096, torch.float32, "weights")
        assert "sr" in _vm_flags(buffer.data_ptr())
    assert "rr" in _vm_flags(buffer.data_ptr())


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_checkpoint_passes_read_the_files_sequentially_then_random_again(tmp_path):
    # a whole-table pass page by page under MADV_RANDOM is one synchronous read per page
    sharded = _sharded(str(tmp_path))
    starts = [b.untyped_storage().data_ptr() for b in _host_buffers(sharded)]
    with sequential_access() as switched:
        assert switched >= len(starts)
        for start in starts:
            flags = _vm_flags(start)
            assert "sr" in flags and "rr" not in flags
    for start in starts:
        flags = _vm_flags(start)
        assert "rr" in flags and "sr" not in flags


def test_exact_view_aliases_a_slice_without_copying():
    flat = torch.arange(40, dtype=torch.float32)
    view = flat[8:24].view(4, 4)
    alias = exact_view(view)
    assert alias.untyped_storage().nbytes() == 16 * 4  # what torch.save writes
    assert alias.data_ptr() == view.data_ptr() and torch.equal(alias, view)
    flat[8] = -1.0  # shares the memory
    assert alias[0, 0] == -1.0
    strided = flat[::2]
    assert exact_view(strided) is strided  # not contiguous: left to DCP
    assert exact_view(flat) is flat  # already a storage of its own


def test_file_backed_checkpoint_is_written_from_the_files_not_copies(tmp_path, monkeypatch):
    batch = make_batch(16)
    os.makedirs(tmp_path / "files")
    first = _sharded(str(tmp_path / "files"))
    train_steps(first, batch, 0, 2)
    copied: list[int] = []
    clone = torch.Tensor.clone

    def counting_clone(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        copied.append(self.numel())
        return clone(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "clone", counting_clone)
    path = save_checkpoint(str(tmp_path / "model"), 2, first.model, first.optimizer, {"s": 2})
    monkeypatch.undo()
    biggest = max(t.numel() for t in table_weights(first.model).values())
    assert not [n for n in copied if n >= biggest]  # no table was copied to be written
    os.makedirs(tmp_path / "files2")
    torch.manual_seed(5)
    second = _sharded(str(tmp_path / "files2"))
    load_checkpoint(path, second.model, second.optimizer)
    expected, restored = table_weights(first.model), table_weights(second.model)
    assert all(torch.equal(expected[t], restored[t]) for t in expected)
