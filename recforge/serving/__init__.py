"""``recforge serve``: an exported model behind an HTTP JSON endpoint (FastAPI + uvicorn).

* :mod:`~recforge.serving.rows`: JSON request bodies into checked pyarrow tables;
* :mod:`~recforge.serving.model`: the loaded export and its graceful reload;
* :mod:`~recforge.serving.batching`: concurrent requests merged into one model call;
* :mod:`~recforge.serving.app`: the FastAPI application (``/predict``, ``/health``,
  ``/metadata``, ``/reload``);
* :mod:`~recforge.serving.server`: settings, thread counts and the uvicorn process(es).

Only :mod:`~recforge.serving.app` and :mod:`~recforge.serving.server` import FastAPI and
uvicorn (the ``serve`` extra); the other modules need neither.
"""

from recforge.serving.errors import RequestError, ServeError

__all__ = ["RequestError", "ServeError"]
