"""``recforge build-index``, ``recforge.load_retriever`` and ``/topk``, in process, on a tiny
(untrained) DSSM export: exact top K equal to evaluate-retrieval's, approximate recall, the
index metadata and its refusals, and the faiss extra."""

import contextlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from google.protobuf import text_format

import recforge
from recforge import cli
from recforge.datasets import DataError
from recforge.errors import ExportError, PredictError
from recforge.export import export_model, restore_model
from recforge.index.build import build_index
from recforge.index.errors import RetrievalIndexError
from recforge.index.faiss_backend import IndexParams
from recforge.models.factory import build_model
from recforge.models.model import TrainWrapper
from recforge.protos import pipeline_pb2
from recforge.retrieval import _top_k, embed_table, evaluate_retrieval
from recforge.utils.checkpoint import save_checkpoint
from recforge.utils.layout import (
    INDEX_DIR,
    INDEX_FILE,
    INDEX_IDS_FILE,
    INDEX_INFO_FILE,
    MODEL_INFO_FILE,
)
from recforge.utils.pipeline import build_features

faiss = pytest.importorskip("faiss")

NUM_ITEMS, NUM_USERS = 600, 40

CONFIG = """
train_input_path: "{work}/interactions.parquet"
eval_input_path: "{work}/interactions.parquet"
model_dir: "{work}/model"
data_config {{
  fg_mode: FG_DAG batch_size: 16 label_fields: "label"
  negative_sampler {{ input_path: "{work}/items.parquet" num_sample: 8 item_id_field: "item_id"
    attr_fields: ["item_id", "cate", "price"] }}
}}
feature_configs {{ id_feature {{ feature_name: "user_id" num_buckets: 50 embedding_dim: 8 }} }}
feature_configs {{ raw_feature {{ feature_name: "age" }} }}
feature_configs {{
  id_feature {{ feature_name: "item_id" hash_bucket_size: 1000 embedding_dim: 8 }}
}}
feature_configs {{ id_feature {{ feature_name: "cate" num_buckets: 7 embedding_dim: 4 }} }}
feature_configs {{ raw_feature {{ feature_name: "price" }} }}
model_config {{
  feature_groups {{ group_name: "user" feature_names: ["user_id", "age"] }}
  feature_groups {{ group_name: "item" feature_names: ["item_id", "cate", "price"] }}
  dssm {{
    user_tower {{ input: "user" mlp {{ hidden_units: [16] }} }}
    item_tower {{ input: "item" mlp {{ hidden_units: [16] }} }}
    output_dim: 8 temperature: 0.2 similarity: COSINE
  }}
}}
"""


def items(num_items: int = NUM_ITEMS) -> pa.Table:
    k = np.arange(num_items)
    return pa.table(
        {
            "item_id": [f"i{i}" for i in k],
            "cate": pa.array(k % 7, pa.int64()),
            "price": pa.array(k * 0.01 + 1.0),
        }
    )


def interactions() -> pa.Table:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(NUM_USERS), 3)
    picked = rng.integers(0, NUM_ITEMS, users.size)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "age": pa.array(users * 0.1),
            "item_id": [f"i{i}" for i in picked],
            "cate": pa.array(picked % 7, pa.int64()),
            "price": pa.array(picked * 0.01 + 1.0),
            "label": pa.array(np.ones(users.size, dtype=np.int64)),
        }
    )


def user_rows(num: int = NUM_USERS) -> dict:
    return {"user_id": list(range(num)), "age": [u * 0.1 for u in range(num)]}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An untrained DSSM's checkpoint and export (``export/``), with its flat index."""
    root = tmp_path_factory.mktemp("index")
    pq.write_table(items(), root / "items.parquet")
    pq.write_table(interactions(), root / "interactions.parquet")
    config = text_format.Parse(CONFIG.format(work=root), pipeline_pb2.EasyRecConfig())
    (root / "pipeline.config").write_text(text_format.MessageToString(config))
    torch.manual_seed(0)
    model = build_model(config, build_features(config), embedding_device=torch.device("cpu"))
    with torch.no_grad():  # untrained towers embed every user alike: spread them out
        for param in model.parameters():
            param.normal_()
    save_checkpoint(config.model_dir, 1, TrainWrapper(model), None, {"global_step": 1})
    export_model(str(root / "pipeline.config"), str(root / "export"))
    build_index(str(root / "export"), str(root / "items.parquet"))
    return root


@pytest.fixture(scope="module")
def retriever(work):
    return recforge.load_retriever(str(work / "export"))


def copy_export(work, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(work / "export", target)
    return target


# ---- exact search ------------------------------------------------------------------------------
def test_flat_topk_equals_the_exact_search_of_evaluate_retrieval(work, retriever):
    config = text_format.Parse(CONFIG.format(work=work), pipeline_pb2.EasyRecConfig())
    model, _ = restore_model(config, str(work / "model" / "model.ckpt-1"))
    features = {side: model.tower_features(side) for side in ("user", "item")}
    item_emb = embed_table(model.tower_module("item"), features["item"], items())
    users = pa.table(user_rows())
    user_emb = embed_table(model.tower_module("user"), features["user"], users)
    expected = _top_k(user_emb, item_emb, 10, [np.empty(0, np.int64)] * NUM_USERS, "torch")
    found = retriever.topk(users, k=10)
    assert len(found) == NUM_USERS
    ids = items().column("item_id").to_numpy(zero_copy_only=False)
    assert [list(row) for row in found.item_ids] == [list(ids[row]) for row in expected.numpy()]
    exact = (user_emb @ item_emb.t()).topk(10).values.numpy()
    np.testing.assert_allclose(np.stack(found.scores), exact, rtol=0, atol=1e-5)

    # and the same recall@10 as the command itself (its users: each one's first eval row)
    metrics = evaluate_retrieval(str(work / "pipeline.config"), top_k=[10])
    table = interactions()
    recall = []
    for user in range(NUM_USERS):
        relevant = set(table.filter(pc.equal(table["user_id"], user))["item_id"].to_pylist())
        recall.append(len(relevant & set(found.item_ids[user])) / len(relevant))
    assert metrics["recall@10"] == pytest.approx(np.mean(recall), abs=1e-9)


@pytest.mark.parametrize(
    "params",
    [IndexParams("ivf", nlist=15, nprobe=5), IndexParams("hnsw", m=16), IndexParams(metric="l2")],
    ids=["ivf", "hnsw", "flat-l2"],
)
def test_approximate_indexes_recall_the_flat_top_10(work, retriever, tmp_path, params):
    export = copy_export(work, tmp_path)
    summary = build_index(str(export), str(work / "items.parquet"), params=params)
    other = recforge.load_retriever(str(export))
    assert summary["index_type"] == params.index_type and summary["count"] == NUM_ITEMS
    truth = retriever.topk(user_rows(), 10).item_ids
    got = other.topk(user_rows(), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got.item_ids)])
    assert recall >= 0.9, recall
    if params.metric == "l2":  # squared distances, nearest first
        assert all(np.all(np.diff(s) >= 0) for s in got.scores)
    else:
        assert all(np.all(np.diff(s) <= 1e-6) for s in got.scores)


def test_ivf_settings_change_what_is_searched(work, tmp_path):
    export = copy_export(work, tmp_path)
    build_index(str(export), str(work / "items.parquet"), params=IndexParams("ivf", nlist=20))
    info = json.loads((export / INDEX_DIR / INDEX_INFO_FILE).read_text())
    assert (info["nlist"], info["nprobe"]) == (20, 5)  # nprobe: a quarter of nlist
    narrow = recforge.load_retriever(str(export), nprobe=1)
    wide = recforge.load_retriever(str(export), nprobe=20)  # every cell: exact
    exact = recforge.load_retriever(str(work / "export"))
    truth = exact.topk(user_rows(), 10).item_ids
    hits = [
        np.mean([len(set(a) & set(b)) for a, b in zip(truth, r.topk(user_rows(), 10).item_ids)])
        for r in (narrow, wide)
    ]
    assert hits[1] == 10 and hits[0] < hits[1]


# ---- files and metadata -----------------------------------------------------------------------
def test_index_files_metadata_and_id_mapping(work):
    directory = work / "export" / INDEX_DIR
    assert sorted(os.listdir(directory)) == sorted([INDEX_FILE, INDEX_IDS_FILE, INDEX_INFO_FILE])
    info = json.loads((directory / INDEX_INFO_FILE).read_text())
    assert {k: info[k] for k in ("index_type", "metric", "dim", "count", "id_type")} == {
        "index_type": "flat",
        "metric": "ip",
        "dim": 8,
        "count": NUM_ITEMS,
        "id_type": "string",
    }
    assert info["item_table"] == str(work / "items.parquet") and info["item_id_field"] == "item_id"
    assert info["export_checksum"].startswith("sha256:")
    # TorchEasyRec's id_mapping: the id of each index row, one a line
    lines = (directory / INDEX_IDS_FILE).read_text().splitlines()
    assert lines == [f"i{i}" for i in range(NUM_ITEMS)]
    # the export's own towers are still the only export directories in it
    from recforge.utils.layout import tower_export_dirs

    assert [os.path.basename(d) for d in tower_export_dirs(str(work / "export"))] == [
        "item",
        "user",
    ]


def test_rebuild_replaces_the_index_and_leaves_nothing_behind(work, tmp_path):
    export = copy_export(work, tmp_path)
    csv = tmp_path / "items.csv"
    table = items(50).set_column(0, "item_id", pa.array(np.arange(50) + 1000, pa.int64()))
    table.to_pandas().to_csv(csv, index=False)
    build_index(str(export), str(csv), batch_size=7)  # csv, streamed in batches of 7
    assert sorted(p for p in os.listdir(export)) == sorted(os.listdir(work / "export"))
    found = recforge.load_retriever(str(export)).topk(user_rows(3), k=50)
    assert found.item_ids[0].dtype == np.int64
    assert sorted(found.item_ids[0].tolist()) == list(range(1000, 1050))


def test_an_index_of_another_export_is_refused(work, tmp_path):
    export = copy_export(work, tmp_path)
    info = json.loads((export / MODEL_INFO_FILE).read_text())
    info["exported_at"] = "another export"
    (export / MODEL_INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(RetrievalIndexError, match="built for another export") as error:
        recforge.load_retriever(str(export))
    assert "\n" not in str(error.value) and "recforge build-index" in str(error.value)


def test_a_damaged_index_is_one_line(work, tmp_path):
    export = copy_export(work, tmp_path)
    ids = export / INDEX_DIR / INDEX_IDS_FILE
    ids.write_text("\n".join(ids.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(RetrievalIndexError, match=f"expected {NUM_ITEMS} ids"):
        recforge.load_retriever(str(export))
    shutil.rmtree(export / INDEX_DIR)
    with pytest.raises(RetrievalIndexError, match="found none; build it with"):
        recforge.load_retriever(str(export))


# ---- bad input --------------------------------------------------------------------------------
def test_bad_build_requests_are_one_line_errors(work, tmp_path):
    export = str(copy_export(work, tmp_path))
    path = str(work / "items.parquet")
    with pytest.raises(
        RetrievalIndexError,
        match=r"--nlist: expected at most the number of items \(600\), found 601",
    ):
        build_index(export, path, params=IndexParams("ivf", nlist=601))
    with pytest.raises(RetrievalIndexError, match="--index_type: expected one of flat, ivf, hnsw"):
        build_index(export, path, params=IndexParams("ivfpq"))
    with pytest.raises(DataError, match="expected the item id column 'sku'"):
        build_index(export, path, item_id_field="sku")
    pq.write_table(pa.concat_tables([items(5), items(5)]), tmp_path / "twice.parquet")
    with pytest.raises(DataError, match=r"found 5 repeated ids \(e.g. 'i0' 2 times\)"):
        build_index(export, str(tmp_path / "twice.parquet"))
    pq.write_table(items().drop_columns(["cate"]), tmp_path / "nocate.parquet")
    with pytest.raises(DataError, match="column 'cate' needed by"):
        build_index(export, str(tmp_path / "nocate.parquet"))
    shutil.rmtree(os.path.join(export, "user"))
    with pytest.raises(ExportError, match="expected the export of a match model"):
        build_index(export, path)


def test_bad_k_and_missing_user_column(retriever):
    for k in (0, NUM_ITEMS + 1, "10", 2.5):
        with pytest.raises(PredictError, match="k: expected an integer from 1 to 600"):
            retriever.topk(user_rows(2), k)
    with pytest.raises(DataError, match="column 'age' needed by"):
        retriever.topk({"user_id": [1]}, 3)


def test_cli_builds_and_without_faiss_says_which_extra(work, tmp_path, monkeypatch, capsys):
    export = copy_export(work, tmp_path)
    argv = ["build-index", "--export_dir", str(export), "--item_input_path"]
    argv += [str(work / "items.parquet"), "--index_type", "hnsw", "--hnsw_M", "8"]
    assert cli.main(argv) == 0
    info = json.loads((export / INDEX_DIR / INDEX_INFO_FILE).read_text())
    assert (info["index_type"], info["m"]) == ("hnsw", 8)
    capsys.readouterr()

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded items without faiss")

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    monkeypatch.setattr("recforge.index.build.Predictor", no_embedding)
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "recforge: error: build-index: needs the faiss extra: pip install recforge[faiss]\n"
    )


# ---- /topk --------------------------------------------------------------------------------------
def call(url: str, path: str, body=None) -> tuple:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@contextlib.contextmanager
def serving(export_dir: str):
    """``serve``'s app on ``export_dir``, on a real port in a thread: yields its URL."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from recforge.serving.app import create_app
    from recforge.serving.model import ServedModel

    app = create_app(ServedModel(export_dir, 64), max_batch_size=64, max_wait_ms=1)
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_topk_route_answers_what_load_retriever_finds(work, retriever):
    with serving(str(work / "export")) as url:
        rows = [{"user_id": u, "age": u * 0.1, "extra": "ignored"} for u in range(5)]
        status, reply = call(url, "/topk", {"rows": rows, "k": 7})
        assert status == 200, reply
        expected = retriever.topk(user_rows(5), 7)
        assert [r["item_ids"] for r in reply["results"]] == [list(i) for i in expected.item_ids]
        got = np.array([r["scores"] for r in reply["results"]], dtype=np.float32)
        np.testing.assert_allclose(got, np.stack(expected.scores), rtol=0, atol=1e-6)
        status, reply = call(url, "/topk", {"rows": rows[:1]})  # k defaults to 10
        assert status == 200 and len(reply["results"][0]["item_ids"]) == 10
        status, reply = call(url, "/topk", {"rows": rows, "k": 0})
        assert status == 400 and reply["error"].startswith("k: expected an integer from 1")
        status, reply = call(url, "/topk", {"rows": [{"user_id": 1}], "k": 3})
        assert status == 400 and "rows[0]: missing column 'age'" in reply["error"]
        status, reply = call(url, "/metadata")
        assert reply["index"]["count"] == NUM_ITEMS


def test_no_topk_route_without_an_index(work, tmp_path):
    export = copy_export(work, tmp_path)
    shutil.rmtree(export / INDEX_DIR)
    with serving(str(export)) as url:
        status, reply = call(url, "/topk", {"rows": [{"user_id": 1, "age": 0.1}]})
        assert status == 404
        assert call(url, "/metadata")[1]["index"] is None
