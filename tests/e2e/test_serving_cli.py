"""``recforge serve``: one real server (the CLI in a subprocess) on a tiny DeepFM export."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.helpers.export_util import make_table, model_config, train_and_export
from tests.helpers.serving import call

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import recforge  # noqa: E402
from recforge.export import export_model  # noqa: E402
from recforge.serving.batching import BatchStats, score_requests  # noqa: E402
from recforge.serving.rows import parse_request  # noqa: E402

MAX_BATCH = 64
COLUMNS = ["user", "item", "tags", "price"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A DeepFM trained 4 steps with checkpoints at steps 2 and 4; ``export/`` holds step 4."""
    root = tmp_path_factory.mktemp("serve")
    config = model_config("DeepFM")
    config.feature_configs[2].id_feature.separator = "|"  # tags as "3|7" strings
    train_and_export(str(root), config, extra="train_config { save_checkpoints_steps: 2 }")
    return str(root)


def rows_of(num_rows: int, seed: int) -> list:
    """JSON rows: the model's columns plus ``id`` and ``label`` (extra keys are ignored)."""
    return make_table(num_rows, seed=seed, tags_as_lists=False).to_pylist()


def reference(predictor, rows: list) -> dict:
    """``predictor.predict`` on the same rows, as a dict of lists."""
    return predictor.predict({c: [row[c] for row in rows] for c in COLUMNS})


@pytest.fixture(scope="module")
def predictor(workdir):
    """``load_predictor`` on the served export, as it was first written."""
    return recforge.load_predictor(os.path.join(workdir, "export"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(workdir):
    """``recforge serve`` on ``export/``: yields ``(url, process)``; SIGTERM stops it."""
    port = free_port()
    log = open(os.path.join(workdir, "serve.log"), "w+")
    command = [sys.executable, "-m", "recforge", "serve", "--export_dir", "export"]
    command += ["--port", str(port), "--max_batch_size", str(MAX_BATCH), "--max_wait_ms", "100"]
    command += ["--num_threads", "1"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, open(log.name).read()[-3000:]
        assert time.monotonic() < deadline, "server did not start"
        try:
            if call(url, "/health")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    yield url, process
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    log.seek(0)
    text = log.read()
    assert process.returncode == -signal.SIGTERM, text[-3000:]  # uvicorn re-raises it
    assert "serve: stopped after" in text and "Traceback" not in text


def assert_matches(predictions: list, expected: dict, outputs=("logits", "probs", "y")) -> None:
    assert all(list(p) == list(outputs) for p in predictions)
    for name in outputs:
        got = np.array([p[name] for p in predictions], dtype=np.float32)
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-6)


@pytest.mark.e2e
def test_predictions_equal_load_predictor(predictor, server):
    url, _ = server
    rows = rows_of(40, seed=1)
    status, reply = call(url, "/predict", {"rows": rows})
    assert status == 200, reply
    expected = reference(predictor, rows)
    assert len(reply["predictions"]) == 40
    assert_matches(reply["predictions"], expected)
    assert np.std(expected["probs"]) > 0  # rows differ, so the order is checked

    status, reply = call(url, "/predict", {"rows": rows[:3], "outputs": ["probs"]})
    assert status == 200, reply
    assert_matches(reply["predictions"], {"probs": expected["probs"][:3]}, ("probs",))


@pytest.mark.e2e
def test_concurrent_requests_get_their_own_rows_in_one_batch(predictor, server):
    url, _ = server
    before = call(url, "/metadata")[1]["batching"]
    clients = 12
    requests = [rows_of(1 + i % 4, seed=10 + i) for i in range(clients)]
    replies = [None] * clients
    start = threading.Barrier(clients)

    def client(i):
        start.wait()
        replies[i] = call(url, "/predict", {"rows": requests[i]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for rows, (status, reply) in zip(requests, replies):
        assert status == 200, reply
        assert_matches(reply["predictions"], reference(predictor, rows))
    after = call(url, "/metadata")[1]["batching"]
    assert after["requests"] - before["requests"] == clients
    assert after["rows"] - before["rows"] == sum(len(r) for r in requests)
    assert after["merged_calls"] > before["merged_calls"]
    assert after["model_calls"] - before["model_calls"] < clients  # merged, not one per request
    assert after["largest_call_requests"] > 1


BAD_REQUESTS = {
    "missing column": (
        {"rows": [{"user": 1, "item": "i1", "tags": "1", "price": 1.0}, {"user": 2}]},
        400,
        "rows[1]: missing column 'item' needed by feature 'item' (IdFeature)",
    ),
    "mixed types in a column": (
        {"rows": [{"user": 1, "item": "i1", "tags": "1", "price": p} for p in (1.0, 2, "x")]},
        400,
        "rows[2].price: expected a value of the column's type in the rows before it (double),"
        ' found "x" (str)',
    ),
    "text for a number": (
        {"rows": [{"user": 1, "item": "i1", "tags": "1", "price": "cheap"}]},
        400,
        "price",
    ),
    "empty rows": ({"rows": []}, 400, "rows: expected at least one row, found an empty list"),
    "no rows": ({"row": []}, 400, "rows: expected a list of row objects, found no 'rows' field"),
    "too many rows": (
        {"rows": [{"user": 1, "item": "i1", "tags": "1", "price": 1.0}] * (MAX_BATCH + 1)},
        413,
        f"rows: expected at most {MAX_BATCH} rows",
    ),
    "row not an object": ({"rows": [[1, "i1"]]}, 400, "rows[0]: expected an object"),
    "unknown output": (
        {"rows": [{"user": 1, "item": "i1", "tags": "1", "price": 1.0}], "outputs": ["p"]},
        400,
        "outputs: ['p'] are not outputs of the model",
    ),
    "invalid JSON": (b"{rows: ", 400, "body: expected a JSON object, found invalid JSON"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_naming_the_field(server, case):
    url, _ = server
    body, status, message = BAD_REQUESTS[case]
    got_status, reply = call(url, "/predict", body)
    assert got_status == status, reply
    assert list(reply) == ["error"] and message in reply["error"]


@pytest.mark.e2e
def test_unknown_route_is_a_json_error(server):
    assert call(server[0], "/nope") == (404, {"error": "Not Found"})


@pytest.mark.e2e
def test_a_bad_request_in_a_merged_call_fails_alone(predictor):
    """Merged requests with the same schema: an id out of range fails only its request."""
    good = rows_of(3, seed=5)
    bad = [dict(row) for row in rows_of(2, seed=6)]
    bad[1]["user"] = 10_000  # num_buckets is 50
    requests = [
        parse_request(json.dumps({"rows": r}).encode(), COLUMNS, predictor.outputs, 100)
        for r in (good, bad, good[:1])
    ]
    stats = BatchStats()
    results = score_requests(predictor, requests, stats)
    assert isinstance(results[1], recforge.errors.RecforgeError)
    assert "row 1" in str(results[1])  # counted within its own request
    expected = reference(predictor, good)
    np.testing.assert_allclose(results[0]["probs"], expected["probs"], atol=1e-6)
    np.testing.assert_allclose(results[2]["probs"], expected["probs"][:1], atol=1e-6)
    assert stats.model_calls == 4 and stats.merged_calls == 1  # the merge, then one by one


@pytest.mark.e2e
def test_metadata_and_health(predictor, server):
    url, _ = server
    status, meta = call(url, "/metadata")
    assert status == 200
    assert meta["input_columns"] == predictor.input_columns
    assert [o["name"] for o in meta["outputs"]] == predictor.outputs
    assert meta["inputs"] == predictor.model_info["inputs"]
    assert meta["model_class"] == "DeepFM" and meta["max_batch_size"] == MAX_BATCH
    status, health = call(url, "/health")
    assert status == 200 and health["status"] == "ok"


@pytest.mark.e2e
def test_reload_serves_a_new_export_without_dropping_requests(workdir, predictor, server):
    url, process = server
    export_dir = os.path.join(workdir, "export")
    rows = rows_of(20, seed=3)
    first = reference(predictor, rows)
    version = call(url, "/health")[1]["model_version"]

    # a failed reload keeps the model in service
    info_path = os.path.join(export_dir, "model_info.json")
    with open(info_path) as f:
        info_text = f.read()
    with open(info_path, "w") as f:
        f.write("{broken")
    status, reply = call(url, "/reload", method="POST")
    assert status == 409 and "model_info.json" in reply["error"], reply
    with open(info_path, "w") as f:
        f.write(info_text)
    status, reply = call(url, "/predict", {"rows": rows})
    assert status == 200
    assert_matches(reply["predictions"], first)

    # re-export an earlier checkpoint (written atomically) and reload while requests run
    config = os.path.join(workdir, "model", "pipeline.config")
    export_model(config, export_dir, checkpoint_path=os.path.join(workdir, "model", "model.ckpt-2"))
    second = reference(recforge.load_predictor(export_dir), rows)
    assert np.abs(second["probs"] - first["probs"]).max() > 1e-4
    statuses = []
    stop = threading.Event()

    def keep_asking():
        while not stop.is_set():
            statuses.append(call(url, "/predict", {"rows": rows[:2]})[0])

    asker = threading.Thread(target=keep_asking)
    asker.start()
    status, reply = call(url, "/reload", method="POST")
    stop.set()
    asker.join(60)
    assert status == 200 and reply["model_version"] == version + 1, reply
    assert statuses and set(statuses) == {200}
    assert_matches(call(url, "/predict", {"rows": rows})[1]["predictions"], second)

    # SIGHUP reloads too: back to the step-4 checkpoint
    export_model(config, export_dir, checkpoint_path=os.path.join(workdir, "model", "model.ckpt-4"))
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while call(url, "/health")[1]["model_version"] != version + 2:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.1)
    assert_matches(call(url, "/predict", {"rows": rows})[1]["predictions"], first)
