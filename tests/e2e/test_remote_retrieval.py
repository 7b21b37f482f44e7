"""A match model's retrieval commands on a store (``memory://``, in process): build-index of a
remote export and item table, evaluate-retrieval of a remote run, serve's remote export."""

import json
import os
import uuid

import fsspec
import pytest

from recforge import cli
from recforge.utils import layout, storage
from tests.helpers.retrieval import NUM_ITEMS, pipeline_config, sampler_text, write_tables
from tests.helpers.untrained_export import export_untrained

pytest.importorskip("faiss")


@pytest.fixture
def store(monkeypatch, tmp_path):
    monkeypatch.setattr(storage, "_STAGES", {})
    monkeypatch.setattr(storage, "_FETCHED", {})
    monkeypatch.setenv(storage.STAGE_ROOT_ENV, str(tmp_path / "staging"))
    root = f"memory://recforge-retrieval-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _run(argv: list[str], capsys) -> dict:
    cli.main(argv)
    return json.loads(capsys.readouterr().out)


def test_build_index_evaluate_retrieval_and_serve_on_a_store(tmp_path, store, capsys):
    work = write_tables(tmp_path)
    config = pipeline_config(work, sampler=sampler_text(work))
    config.eval_input_path = str(work / "train.parquet")
    export_untrained(config, work)
    # the same run on the store: its model_dir, export, tables and config
    for name in ("model", "export"):
        storage.upload_dir(str(work / name), f"{store}/{name}")
    fs = fsspec.filesystem("memory")
    for name in ("items.parquet", "train.parquet"):
        fs.put_file(str(work / name), f"{store}/{name}")
    text = (work / "pipeline.config").read_text().replace(str(work), store)
    with fsspec.open(f"{store}/pipeline.config", "w") as f:
        f.write(text)

    summary = _run(
        ["build-index", "--export_dir", f"{store}/export"]
        + ["--item_input_path", f"{store}/items.parquet"],
        capsys,
    )
    index = f"{store}/export/{layout.INDEX_DIR}"
    assert summary["index_dir"] == index and summary["count"] == NUM_ITEMS
    names = {p.rsplit("/", 1)[1] for p in fs.find(index)}
    assert {layout.INDEX_FILE, layout.INDEX_IDS_FILE, layout.INDEX_INFO_FILE} <= names
    assert not [p for p in fs.find(store) if ".tmp-" in p]
    info = json.loads(fs.cat(f"{index}/{layout.INDEX_INFO_FILE}"))
    assert info["item_table"] == f"{store}/items.parquet"

    retrieval = ["evaluate-retrieval", "--top_k", "5,10", "--config"]
    local = _run([*retrieval, str(work / "pipeline.config")], capsys)
    remote = _run([*retrieval, f"{store}/pipeline.config"], capsys)
    assert remote == local  # the same metrics from the store's checkpoint and tables
    result = json.loads(fs.cat(f"{store}/model/retrieval_result.json"))  # uploaded at once
    assert result["checkpoint"].replace(":///", "://") == f"{store}/model/model.ckpt-1"

    from recforge.serving.model import ServedModel, fetch_export

    copy = fetch_export(f"{store}/export")
    served = ServedModel(copy, 16, source=f"{store}/export")
    assert served.retriever is not None and served.retriever.num_items == NUM_ITEMS
    assert served.describe()["export_dir"] == f"{store}/export"
    assert os.path.isfile(os.path.join(copy, layout.INDEX_DIR, layout.INDEX_INFO_FILE))
