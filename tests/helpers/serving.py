"""HTTP calls to a recforge server in tests."""

import json
import urllib.error
import urllib.request


def call(url: str, path: str, body=None, method=None) -> tuple:
    """``(status, JSON reply)``; ``body`` a dict (sent as JSON) or raw bytes."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
