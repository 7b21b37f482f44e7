"""The serving pieces in process: request parsing, the dynamic batcher, the app on a fake model."""

import json
import logging
import socket
import threading
import time

import numpy as np
import pytest

from tests.helpers.serving import call

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from recforge.cli import main as cli_main  # noqa: E402
from recforge.serving import server as serving_server  # noqa: E402
from recforge.serving.errors import RequestError  # noqa: E402
from recforge.serving.rows import parse_request  # noqa: E402


def test_parse_request_names_the_first_bad_row():
    rows = [{"a": i} for i in range(50)] + [{"a": [1]}] + [{"a": i} for i in range(9)]
    with pytest.raises(RequestError, match=r"rows\[50\]\.a: .*\(int64\), found \[1\] \(list\)"):
        parse_request(json.dumps({"rows": rows}).encode(), ["a"], ["probs"], 100)


def test_serve_without_the_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(serving_server, "_installed", lambda module: module != "uvicorn")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["serve", "--export_dir", "anywhere"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "recforge: error: serve: needs the serve extra: pip install recforge[serve]\n"
    )


class FakePredictor:
    """Doubles column ``a``; raises ``failure`` when a value is negative."""

    def __init__(self, failure=None):
        self.failure = failure
        self.calls = []

    def predict(self, table, output_columns=None):
        values = np.asarray(table.column("a").to_pylist(), dtype=np.float32)
        self.calls.append(len(values))
        if self.failure is not None and (values < 0).any():
            raise self.failure
        return {"probs": values * 2}


class FakeModel:
    def __init__(self, predictor):
        self.predictor = predictor


def run_batcher(predictor, bodies, max_batch_size=100, max_wait_ms=200):
    """Submits every request at once to a DynamicBatcher; returns results (or exceptions)."""
    import asyncio

    from recforge.serving.batching import DynamicBatcher

    async def main():
        batcher = DynamicBatcher(FakeModel(predictor), max_batch_size, max_wait_ms)
        await batcher.start()
        try:
            requests = [
                parse_request(json.dumps(body).encode(), ["a"], ["probs"], max_batch_size)
                for body in bodies
            ]
            tasks = [batcher.predict(r) for r in requests]
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        finally:
            await batcher.stop()
        return results, batcher.stats

    return asyncio.run(main())


def test_batcher_merges_concurrent_requests_and_splits_them_back():
    bodies = [{"rows": [{"a": 10 * i + k} for k in range(i + 1)]} for i in range(5)]
    predictor = FakePredictor()
    results, stats = run_batcher(predictor, bodies, max_batch_size=12)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["probs"], [2.0 * (10 * i + k) for k in range(i + 1)])
    assert predictor.calls == [10, 5]  # 1+2+3+4 rows fit in 12, the 5 rows of the last do not
    assert stats.requests == 5 and stats.rows == 15 and stats.merged_calls == 1


@pytest.mark.parametrize("failure", [RequestError("rows[0].a: bad"), RuntimeError("a bug")])
def test_batcher_fails_only_the_bad_request_and_never_hangs(failure):
    bodies = [{"rows": [{"a": 1}]}, {"rows": [{"a": -1}]}, {"rows": [{"a": 3}]}]
    results, stats = run_batcher(FakePredictor(failure), bodies)
    assert results[1] is failure
    np.testing.assert_array_equal(results[0]["probs"], [2.0])
    np.testing.assert_array_equal(results[2]["probs"], [6.0])
    assert stats.model_calls == 4  # the merged call, then each request alone


def test_a_server_bug_is_a_json_500_with_a_log_line(caplog):
    """The app on a fake model whose predict raises: 500 with a log line, no hang."""
    import uvicorn

    from recforge.serving.app import create_app

    predictor = FakePredictor(RuntimeError("a bug"))
    predictor.input_columns, predictor.outputs = ["a"], ["probs"]
    model = FakeModel(predictor)
    model.needers = {}
    app = create_app(model, max_batch_size=8, max_wait_ms=1)
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
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with caplog.at_level(logging.ERROR, logger="recforge"):
            status, reply = call(url, "/predict", {"rows": [{"a": -1}]})
        assert (status, reply) == (500, {"error": "internal error: RuntimeError: a bug"})
        assert "serve: /predict failed" in caplog.text
        status, reply = call(url, "/predict", {"rows": [{"a": 2}]})  # still serving
        assert status == 200 and reply == {"predictions": [{"probs": 4.0}]}
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
