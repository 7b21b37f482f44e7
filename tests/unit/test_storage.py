"""recforge.utils.storage: URL checks, reading inputs and a remote model_dir's working copy.

The store here is fsspec's in-process ``memory://`` filesystem; the S3 path end to end is in
``tests/e2e/test_remote_storage.py``.
"""

import json
import os
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recforge.cli import main
from recforge.config import ConfigError
from recforge.datasets.errors import DataFileNotFoundError
from recforge.datasets.readers import expand_input_path
from recforge.utils import layout, storage
from recforge.utils.run_lock import RunLock
from tests.helpers.cli_util import example


@pytest.fixture
def store() -> str:
    """A fresh ``memory://`` directory."""
    root = f"memory://recforge-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(autouse=True)
def no_stages(monkeypatch, tmp_path):
    """Working copies made by a test are its own (and go under its tmp_path)."""
    monkeypatch.setattr(storage, "_STAGES", {})
    monkeypatch.setattr(storage, "_FETCHED", {})
    monkeypatch.setenv(storage.STAGE_ROOT_ENV, str(tmp_path / "staging"))


def _write(url: str, data: bytes = b"x") -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def test_an_unknown_scheme_is_one_line_naming_it():
    with pytest.raises(ConfigError) as raised:
        storage.check_url("s4://bucket/run", "--model_dir")
    message = str(raised.value)
    assert message.startswith("--model_dir: expected a local path or a URL of s3://")
    assert "found the unknown scheme 's4://' in 's4://bucket/run'" in message
    assert "\n" not in message


def test_a_scheme_without_its_package_names_the_extra(monkeypatch):
    def missing(name: str) -> None:
        raise ImportError(f"Install s3fs to access {name}")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(ConfigError, match=r"pip install recforge\[s3\]$"):
        storage.check_url("s3://bucket/run", "--model_dir")
    with pytest.raises(ConfigError, match=r"pip install recforge\[gcs\]$"):
        storage.check_url("gs://bucket/data/*.parquet", "train_input_path")


def test_the_cli_refuses_an_unknown_model_dir_scheme_before_creating_anything(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        main(["train", "--config", example("deepfm_demo.config"), "--model_dir", "s4://b/m"])
    assert raised.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("recforge: error: --model_dir: expected a local path or a URL")
    assert os.listdir(tmp_path) == []  # no folder named 's4:'


def test_local_paths_and_file_urls_are_plain_paths(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"1")
    assert not storage.is_remote(str(tmp_path)) and not storage.is_remote(f"file://{tmp_path}")
    assert storage.is_remote("s3://b/k") and storage.scheme("S3://b/k") == "s3"
    assert storage.glob(f"file://{tmp_path}/*.parquet") == [str(tmp_path / "a.parquet")]
    assert storage.files_in(str(tmp_path)) == [str(tmp_path / "a.parquet")]
    assert storage.join(str(tmp_path), "x") == os.path.join(str(tmp_path), "x")
    assert storage.join("s3://b/m", "x") == "s3://b/m/x"


def test_inputs_are_listed_and_read_from_the_store(store):
    for name in ("train_0.parquet", "train_1.parquet", "_SUCCESS"):
        with fsspec.open(f"{store}/data/{name}", "wb") as f:
            pq.write_table(pa.table({"a": [1, 2]}), f)
    files = expand_input_path(f"{store}/data/train_*.parquet")
    # memory:// roots its paths at '/': the URLs come back as memory:///...
    assert [f.replace(":///", "://") for f in files] == [
        f"{store}/data/train_0.parquet",
        f"{store}/data/train_1.parquet",
    ]
    assert expand_input_path(f"{store}/data") == files  # _SUCCESS is skipped
    assert pq.ParquetFile(storage.arrow_source(files[1])).read().column("a").to_pylist() == [1, 2]
    with pytest.raises(DataFileNotFoundError, match="matched no files"):
        expand_input_path(f"{store}/nope/*.parquet")


def test_publish_dir_replaces_the_destination_and_leaves_no_tmp(tmp_path, store):
    local = tmp_path / "export"
    (local / "assets").mkdir(parents=True)
    (local / "model_info.json").write_text("{}")
    (local / "assets" / "vocab.txt").write_text("a\n")
    _write(f"{store}/export/stale.txt")
    storage.publish_dir(str(local), f"{store}/export")
    fs = fsspec.filesystem("memory")
    found = sorted(p.rsplit("/export/", 1)[1] for p in fs.find(f"{store}/export"))
    assert found == ["assets/vocab.txt", "model_info.json"]
    assert [p for p in fs.ls(store, detail=False) if ".tmp-" in p] == []


def test_the_working_copy_holds_the_newest_checkpoint_and_uploads_changes(store):
    run = f"{store}/run"
    _write(f"{run}/pipeline.config", b"config")
    for step in (10, 20):
        _write(f"{run}/model.ckpt-{step}/train_state.json", json.dumps({"step": step}).encode())
        _write(f"{run}/model.ckpt-{step}/__0_0.distcp", b"shard")
    _write(f"{run}/model.ckpt-30/__0_0.distcp", b"partial")  # incomplete: no marker
    local = storage.stage_model_dir(run, layout.CHECKPOINT_PREFIX, layout.TRAIN_STATE_FILE)
    assert storage.stage_model_dir(run + "/", "model.ckpt-", "train_state.json") == local
    assert sorted(os.listdir(local)) == [
        ".recforge-working-copy",
        "model.ckpt-10",
        "model.ckpt-20",
        "pipeline.config",
    ]
    assert sorted(os.listdir(os.path.join(local, "model.ckpt-20"))) == [
        "__0_0.distcp",
        "train_state.json",
    ]
    assert os.listdir(os.path.join(local, "model.ckpt-10")) == ["train_state.json"]
    assert layout.latest_checkpoint(local) == os.path.join(local, "model.ckpt-20")
    storage.ensure_local(os.path.join(local, "model.ckpt-10"))  # before it is read
    assert len(os.listdir(os.path.join(local, "model.ckpt-10"))) == 2
    assert storage.remote_of(os.path.join(local, "model.ckpt-10")) == f"{run}/model.ckpt-10"
    assert storage.fetch(f"{run}/model.ckpt-10") == os.path.join(local, "model.ckpt-10")
    # what the CLI prints names the URL, not the working copy
    assert (
        storage.urls_in(f"'{local}/model.ckpt-10' is corrupt")
        == f"'{run}/model.ckpt-10' is corrupt"
    )

    os.makedirs(os.path.join(local, "model.ckpt-40"))
    with open(os.path.join(local, "model.ckpt-40", "train_state.json"), "w") as f:
        f.write("{}")
    with open(os.path.join(local, "eval_result.json"), "w") as f:
        f.write("{}")
    fs = fsspec.filesystem("memory")
    fs.rm(f"{run}/pipeline.config")  # unchanged locally: not uploaded again
    storage.sync_model_dir(local, (f"{local}/model.ckpt-10",))
    assert fs.isfile(f"{run}/model.ckpt-40/train_state.json")
    assert fs.isfile(f"{run}/eval_result.json")
    assert not fs.exists(f"{run}/pipeline.config")
    assert not fs.exists(f"{run}/model.ckpt-10")
    assert not fs.exists(f"{run}/.recforge-working-copy")


def test_the_run_lock_of_a_remote_model_dir_is_an_object_while_held(store):
    run = f"{store}/run"
    local = storage.stage_model_dir(run, layout.CHECKPOINT_PREFIX, layout.TRAIN_STATE_FILE)
    fs = fsspec.filesystem("memory")
    with RunLock(local):
        assert json.loads(fs.cat(f"{run}/{layout.LOCK_FILE}"))["pid"] == os.getpid()
    assert not fs.exists(f"{run}/{layout.LOCK_FILE}")


def test_sampler_tables_are_read_from_the_store(store):
    from recforge.datasets.sampler import read_table_files

    with fsspec.open(f"{store}/items/a.parquet", "wb") as f:
        pq.write_table(pa.table({"item_id": [1, 2]}), f)
    _write(f"{store}/items/b.csv", b"item_id\n3\n")
    files = expand_input_path(f"{store}/items")
    table, file_index, rows = read_table_files(files, ",", "item table")
    assert table.column("item_id").to_pylist() == [1, 2, 3]
    assert file_index.tolist() == [0, 0, 1] and rows.tolist() == [0, 1, 0]


def test_a_fetched_file_is_a_local_copy_named_by_its_url_in_messages(store):
    _write(f"{store}/runs/pipeline.config", b'model_dir: "x"')
    local = storage.fetch(f"{store}/runs/pipeline.config", "config")
    with open(local) as f:
        assert f.read() == 'model_dir: "x"'
    assert storage.urls_in(f"{local}:1: bad") == f"{store}/runs/pipeline.config:1: bad"
    assert storage.fetch(f"{store}/runs/missing.config") == f"{store}/runs/missing.config"
    assert storage.fetch("relative/local.config") == "relative/local.config"
