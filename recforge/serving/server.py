"""Starting ``recforge serve``: checks its settings and runs uvicorn (one or more processes)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from typing import Any, Optional

from recforge.predictor import resolve_export_dir
from recforge.serving.errors import ServeError
from recforge.utils import storage

logger = logging.getLogger(__name__)

EXTRA_HINT = "serve: needs the serve extra: pip install recforge[serve]"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require_serve_extra() -> None:
    """Raises :class:`ServeError` unless FastAPI and uvicorn are installed."""
    if not (_installed("fastapi") and _installed("uvicorn")):
        raise ServeError(EXTRA_HINT)


def default_num_threads(workers: int) -> int:
    """Torch threads per worker: its share of the usable CPUs, less one for the event loop.

    The event loop thread (HTTP, JSON, building tables) runs beside every model call; leaving
    it a core keeps torch's OpenMP threads, which spin while they wait, from taking it.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, workers) - 1)


def _check(flag: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ServeError(f"serve: --{flag}: expected at least {minimum:g}, found {value:g}")


def serve(
    export_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 1024,
    max_wait_ms: float = 5.0,
    workers: int = 1,
    num_threads: Optional[int] = None,
) -> dict[str, Any]:
    """Serves an export directory over HTTP until SIGINT/SIGTERM (see :mod:`.app`).

    Args:
        export_dir: the directory ``recforge export`` wrote, or its URL (``s3://...``): served
            from a local copy (under ``$RECFORGE_STAGING_DIR``, else the temp dir), which
            each reload replaces with a fresh download.
        host: the address to listen on.
        port: the port to listen on.
        max_batch_size: the most rows per model call and per request.
        max_wait_ms: how long a request may wait for others to share its model call.
        workers: uvicorn worker processes, each with its own copy of the model; with more
            than one, SIGHUP to the main process replaces the workers one by one (uvicorn's
            restart), and ``POST /reload`` reloads only the worker that answers it.
        num_threads: torch threads per worker (default: :func:`default_num_threads`).

    Returns:
        A summary when the server stops without a signal. On SIGINT/SIGTERM uvicorn shuts
        down gracefully (in-flight requests are answered), logs the counters and then
        re-raises the signal, so the process exits as killed by it (status 128 + signal).

    Raises:
        ServeError: FastAPI/uvicorn missing or a flag out of range.
        ExportError: the export directory is missing or invalid.

    """
    storage.check_url(export_dir, "--export_dir")
    require_serve_extra()
    _check("max_batch_size", max_batch_size, 1)
    _check("max_wait_ms", max_wait_ms, 0)
    _check("workers", workers, 1)
    _check("port", port, 0)
    if num_threads is not None:
        _check("num_threads", num_threads, 1)
    threads = num_threads or default_num_threads(workers)
    from recforge.serving.model import fetch_export

    source = export_dir
    # a URL is served from a local copy; each reload downloads it anew (ServedModel.reload)
    export_dir = fetch_export(source) if storage.is_remote(source) else resolve_export_dir(source)

    import torch
    import uvicorn

    from recforge.serving.app import SETTINGS_ENV, create_app
    from recforge.serving.model import ServedModel

    torch.set_num_threads(threads)
    # bad exports fail here, before listening
    model = ServedModel(export_dir, max_batch_size, source=source)
    logger.info(
        "serve: %s (%s) on http://%s:%d, %d worker(s) x %d torch thread(s), max_batch_size %d,"
        " max_wait_ms %g",
        source,
        model.predictor.model_info.get("model_class"),
        host,
        port,
        workers,
        threads,
        max_batch_size,
        max_wait_ms,
    )
    if model.retriever is not None:
        logger.info(
            "serve: POST /topk over the %d items of %s (%s index)",
            model.retriever.num_items,
            model.retriever.info.get("item_table"),
            model.retriever.info["index_type"],
        )
    if workers == 1:
        app = create_app(model, max_batch_size, max_wait_ms)
        config = uvicorn.Config(app, host=host, port=port, access_log=False)
        uvicorn.Server(config).run()
        stats = app.state.batcher.stats
        return {"export_dir": source, "requests": stats.requests, "rows": stats.rows}
    del model  # each worker loads its own
    os.environ[SETTINGS_ENV] = json.dumps(
        {
            "export_dir": os.path.abspath(export_dir),
            "source": source,
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "num_threads": threads,
        }
    )
    uvicorn.run(
        "recforge.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        # on SIGHUP a new worker must load torch and the model before it replaces an old one
        timeout_worker_healthcheck=300,
    )
    return {"export_dir": source, "workers": workers}
