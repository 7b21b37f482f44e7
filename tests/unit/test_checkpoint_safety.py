"""Checkpoints are read as data, never code, and every file is checked against its checksum."""

import ast
import hashlib
import io
import json
import logging
import os
import pathlib
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from recforge.export import restore_model
from recforge.utils import dist as dist_util
from recforge.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from recforge.utils.checkpoint_format import (
    MANIFEST_FILE,
    CheckpointFiles,
    file_digest,
    write_manifest,
)
from tests.helpers.models import make_batch, make_config
from tests.helpers.paths import REPO_ROOT
from tests.helpers.sharding import make_sharded, train_config, train_steps

MODEL = "MultiTower"
REPO = pathlib.Path(REPO_ROOT)


class Payload:
    """Unpickling it creates the directory ``marker``: what a crafted checkpoint would run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist_util.init_process_group()


def new_sharded(seed: int):
    torch.manual_seed(seed)
    sharded, _ = make_sharded(MODEL, 8, train_config("sgd", "adam"))
    return sharded


@pytest.fixture(scope="module")
def trained():
    sharded = new_sharded(0)
    train_steps(sharded, make_batch(), 0, 2)
    return sharded


@pytest.fixture
def checkpoint(tmp_path, trained) -> pathlib.Path:
    return pathlib.Path(
        save_checkpoint(
            str(tmp_path / "model"), 2, trained.model, trained.optimizer, {"global_step": 2}
        )
    )


@pytest.fixture
def marker(tmp_path) -> pathlib.Path:
    """Where the payload leaves its trace; the payload is checked to be live first."""
    path = tmp_path / "payload_ran"
    pickle.loads(pickle.dumps(Payload(path)))
    assert path.is_dir(), "the payload does not run: the tests below would prove nothing"
    path.rmdir()
    return path


def load_as(path: pathlib.Path, how: str) -> None:
    """Loads a checkpoint the way one of recforge's commands does."""
    if how == "resume":  # train --continue_train
        sharded = new_sharded(1)
        load_checkpoint(str(path), sharded.model, sharded.optimizer, restore_rng=True)
    elif how == "evaluate":  # also train --fine_tune_checkpoint
        load_checkpoint(str(path), new_sharded(1).model)
    else:  # export and retrieval restore a plain CPU model
        restore_model(make_config(MODEL), str(path))


def replace_file(checkpoint: pathlib.Path, name: str, data: bytes, manifest: str) -> None:
    """Writes ``name``; the manifest is rewritten to match it (checksums are no signature)."""
    (checkpoint / name).write_bytes(data)
    manifest_path = checkpoint / MANIFEST_FILE
    if manifest == "absent":
        manifest_path.unlink(missing_ok=True)
        return
    recorded = json.loads(manifest_path.read_text())
    recorded["files"][name] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(recorded))


def own_metadata(checkpoint: pathlib.Path):
    with open(checkpoint / ".metadata", "rb") as f:
        return pickle.load(f)  # the test's own, freshly written file


def torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------- crafted checkpoints


def craft(checkpoint: pathlib.Path, where: str, marker: pathlib.Path, manifest: str) -> str:
    """Plants the payload; returns the file the error must name."""
    if where == "metadata":
        replace_file(checkpoint, ".metadata", pickle.dumps(Payload(marker)), manifest)
        return ".metadata"
    metadata = own_metadata(checkpoint)
    if where == "metadata_field":  # a well-formed index carrying the payload in a field
        metadata.planner_data = {"x": Payload(marker)}
        replace_file(checkpoint, ".metadata", pickle.dumps(metadata), manifest)
        return ".metadata"
    # a model weight declared as a pickled Python object, which DCP would torch.load as code
    (key,) = [k for k in metadata.state_dict_metadata if k.endswith("towers.item.mlp.0.weight")]
    blob = torch_saved(Payload(marker))
    metadata.state_dict_metadata[key] = BytesStorageMetadata()
    metadata.storage_data[MetadataIndex(key)] = _StorageInfo("__0_evil.distcp", 0, len(blob))
    replace_file(checkpoint, "__0_evil.distcp", blob, manifest)
    replace_file(checkpoint, ".metadata", pickle.dumps(metadata), manifest)
    return "__0_evil.distcp"


@pytest.mark.parametrize("manifest", ["rewritten", "absent"])
@pytest.mark.parametrize("where", ["metadata", "metadata_field", "bytes_item"])
@pytest.mark.parametrize("how", ["resume", "evaluate", "export"])
def test_crafted_checkpoint_is_refused_without_running_its_payload(
    checkpoint, marker, where, manifest, how
):
    named = craft(checkpoint, where, marker, manifest)
    with pytest.raises(CheckpointError, match=f"{checkpoint / named}: "):
        load_as(checkpoint, how)
    assert not marker.exists()


@pytest.mark.parametrize("manifest", ["rewritten", "absent"])
def test_crafted_rng_file_is_refused_on_resume(checkpoint, marker, manifest):
    replace_file(checkpoint, "rng_rank0.pt", torch_saved(Payload(marker)), manifest)
    with pytest.raises(CheckpointError, match="rng_rank0.pt: refused to load: it references"):
        load_as(checkpoint, "resume")
    assert not marker.exists()


def test_non_tensor_items_are_read_as_plain_data_only(tmp_path, marker):
    dcp.save({"note": "hello", "count": 3, "w": torch.ones(2)}, checkpoint_id=str(tmp_path / "ok"))
    dcp.save({"note": Payload(marker)}, checkpoint_id=str(tmp_path / "bad"))
    for name in ("ok", "bad"):
        directory = tmp_path / name
        write_manifest(str(directory), {p.name: file_digest(str(p)) for p in directory.iterdir()})
    state = {"note": "", "count": 0, "w": torch.zeros(2)}
    CheckpointFiles(str(tmp_path / "ok")).load(state)
    assert (state["note"], state["count"]) == ("hello", 3)
    assert torch.equal(state["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"bad/__0_0.distcp: refused to load: .*mkdir"):
        CheckpointFiles(str(tmp_path / "bad")).load({"note": None})
    assert not marker.exists()


def test_storage_entries_must_name_files_inside_the_checkpoint(checkpoint):
    metadata = own_metadata(checkpoint)
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index].relative_path = "../../elsewhere.distcp"
    replace_file(checkpoint, ".metadata", pickle.dumps(metadata), "rewritten")
    with pytest.raises(CheckpointError, match=r"\.metadata: malformed.*inside the checkpoint"):
        load_as(checkpoint, "evaluate")


# ------------------------------------------------------------------------------- integrity


def flip_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["largest_shard", ".metadata", "train_state.json", "rng"])
def test_a_flipped_byte_is_an_error_naming_the_file(checkpoint, target):
    if target == "largest_shard":
        path = max(checkpoint.glob("*.distcp"), key=lambda p: p.stat().st_size)
    elif target == "rng":
        path = checkpoint / "rng_rank0.pt"
    else:
        path = checkpoint / target
    flip_byte(path)
    with pytest.raises(CheckpointError, match=f"^{path}: checksum mismatch"):
        load_as(checkpoint, "resume")


def test_missing_or_unlisted_files_are_errors(checkpoint):
    shard = next(checkpoint.glob("*.distcp"))
    data = shard.read_bytes()
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"^{shard}: missing"):
        load_as(checkpoint, "evaluate")
    shard.write_bytes(data)
    recorded = json.loads((checkpoint / MANIFEST_FILE).read_text())
    del recorded["files"][shard.name]
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(recorded))
    with pytest.raises(CheckpointError, match=f"^{shard}: not listed"):
        load_as(checkpoint, "evaluate")


def test_unreadable_manifest_is_an_error(checkpoint):
    (checkpoint / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"^{checkpoint / MANIFEST_FILE}: unreadable"):
        load_as(checkpoint, "evaluate")


# ------------------------------------------------------------------------------ round trip


def test_manifest_lists_every_file_with_its_sha256(checkpoint):
    recorded = json.loads((checkpoint / MANIFEST_FILE).read_text())
    assert recorded["algorithm"] == "sha256"
    files = {p.name for p in checkpoint.iterdir()} - {MANIFEST_FILE}
    assert set(recorded["files"]) == files
    assert {".metadata", "train_state.json", "rng_rank0.pt"} <= files
    for name in files:
        expected = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
        assert recorded["files"][name] == expected


def test_good_checkpoint_round_trips_exactly(checkpoint, trained):
    rng_saved = torch.get_rng_state()
    torch.rand(5)  # move the generator on: the load must restore it
    second = new_sharded(1)
    state = load_checkpoint(str(checkpoint), second.model, second.optimizer, restore_rng=True)
    assert state == {"global_step": 2}
    assert torch.equal(torch.get_rng_state(), rng_saved)
    for ours, theirs in (
        (trained.model.state_dict(), second.model.state_dict()),
        (trained.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]),
    ):
        assert ours.keys() == theirs.keys()
        for key in ours:
            a, b = ours[key], theirs[key]
            if isinstance(a, dict):
                assert all(torch.equal(_local(a[k]), _local(b[k])) for k in a), key
            else:
                assert torch.equal(_local(a), _local(b)), key


def _local(value):
    """A ShardedTensor's one local shard (one rank), else the tensor."""
    shards = getattr(value, "local_shards", None)
    return shards()[0].tensor if shards else value


def test_checkpoint_without_manifest_loads_with_a_warning(checkpoint, trained, caplog):
    (checkpoint / MANIFEST_FILE).unlink()
    second = new_sharded(1)
    with caplog.at_level(logging.WARNING, logger="recforge"):
        load_checkpoint(str(checkpoint), second.model)
    assert f"{checkpoint} has no {MANIFEST_FILE}" in caplog.text
    weights = {k: _local(v) for k, v in trained.model.state_dict().items()}
    assert all(torch.equal(weights[k], _local(v)) for k, v in second.model.state_dict().items())


# ------------------------------------------------------------------------------- the guard


def test_only_checkpoint_format_unpickles():
    """No module but checkpoint_format reads pickles: torch.load only with weights_only=True."""
    offenders = []
    for path in sorted((REPO / "recforge").rglob("*.py")):
        if path.name == "checkpoint_format.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = ast.unparse(node.func.value)
            call = f"{owner}.{node.func.attr}"
            safe = any(
                k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords
            )
            if call in ("pickle.load", "pickle.loads", "dcp.load", "dcp.FileSystemReader") or (
                call == "torch.load" and not safe
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {call}")
    assert not offenders


def test_a_full_disk_while_saving_is_one_error_and_keeps_earlier_checkpoints(
    tmp_path, trained, monkeypatch
):
    import errno

    from recforge.utils import checkpoint as checkpoint_module

    model_dir = str(tmp_path / "model")
    earlier = save_checkpoint(model_dir, 2, trained.model, trained.optimizer, {"global_step": 2})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.dcp, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"model\.ckpt-4\.tmp: no space left on device"):
        save_checkpoint(model_dir, 4, trained.model, trained.optimizer, {"global_step": 4})
    assert sorted(os.listdir(model_dir)) == [os.path.basename(earlier)]  # no .tmp left
