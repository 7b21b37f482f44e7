"""Every test here is marked ``e2e`` (``pytest -m "not e2e"`` deselects them)."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.s3 import BUCKET

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """An S3 endpoint on 127.0.0.1 (moto) and the environment variables that point clients at it."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for this process's own s3fs client (the assertions)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_env: dict[str, str]) -> Any:
    """An s3fs client of the test server with the test bucket (tests.helpers.s3.BUCKET)."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]})
    fs.mkdir(BUCKET)
    return fs
