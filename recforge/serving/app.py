"""The FastAPI application of ``recforge serve``.

Routes:
    ``POST /predict``: ``{"rows": [{column: value}, ...], "outputs": [...]?}`` ->
    ``{"predictions": [{output: value}, ...]}`` in row order.
    ``GET /health``: ``{"status": "ok", ...}`` once the model is loaded.
    ``GET /metadata``: the export's inputs and outputs (``model_info.json``), the batching
    settings and counters.
    ``POST /reload``: loads the export directory again (also on SIGHUP); a failed reload keeps
    the current model and answers the error.
    ``POST /topk`` (only for an export with an item index, see ``recforge build-index``):
    ``{"rows": [{column: value}, ...], "k": 10}`` -> ``{"results": [{"item_ids": [...],
    "scores": [...]}, ...]}``, one result per user row.

Every error is ``{"error": "..."}``: 4xx for a bad request (naming the field or row), 500 with
a log line for a bug in the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recforge.errors import RecforgeError
from recforge.serving.batching import DynamicBatcher
from recforge.serving.errors import RequestError
from recforge.serving.model import ServedModel, fetch_export
from recforge.serving.rows import column_needers, decode_body, parse_request
from recforge.utils import storage

logger = logging.getLogger(__name__)

SETTINGS_ENV = "RECFORGE_SERVE_SETTINGS"
DEFAULT_TOPK = 10


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _predictions(outputs: dict[str, Any], names: list[str], num_rows: int) -> list[dict]:
    columns = {name: outputs[name].tolist() for name in names}
    return [{name: columns[name][i] for name in names} for i in range(num_rows)]


def create_app(model: ServedModel, max_batch_size: int, max_wait_ms: float) -> FastAPI:
    """The application serving ``model``.

    Args:
        model: the loaded export.
        max_batch_size: the most rows per model call (and per request).
        max_wait_ms: how long a request may wait for others to share its model call.

    Returns:
        The FastAPI app; its lifespan starts the batcher and, in a process's main thread,
        reloads the model on SIGHUP.

    """
    batcher = DynamicBatcher(model, max_batch_size, max_wait_ms)

    async def reload() -> JSONResponse:
        try:
            described = await model.reload()
        except RecforgeError as error:
            logger.error("serve: reload failed, keeping model version %d: %s", model.version, error)
            return _error(409, f"reload: {error}; kept {model.describe()}")
        except Exception as error:
            logger.exception("serve: reload failed, keeping model version %d", model.version)
            return _error(500, f"reload: {type(error).__name__}: {error}")
        return JSONResponse({"status": "reloaded", **described})

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        loop = asyncio.get_running_loop()
        on_hup = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP")
        reloads: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

        def on_sighup() -> None:
            task = asyncio.ensure_future(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        if on_hup:
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            yield
        finally:
            if on_hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await batcher.stop()
            stats = batcher.stats
            logger.info(
                "serve: stopped after %d requests (%d rows, %d model calls)",
                stats.requests,
                stats.rows,
                stats.model_calls,
            )

    app = FastAPI(title="recforge serve", lifespan=lifespan)
    app.state.model = model
    app.state.batcher = batcher

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        logger.error("serve: %s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, f"internal error: {type(error).__name__}: {error}")

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        predictor = model.predictor
        try:
            parsed = parse_request(
                await request.body(),
                predictor.input_columns,
                predictor.outputs,
                max_batch_size,
                model.needers,
            )
            outputs = await batcher.predict(parsed)
            return JSONResponse(
                {"predictions": _predictions(outputs, parsed.outputs, parsed.num_rows)}
            )
        except RequestError as error:
            return _error(error.status, str(error))
        except RecforgeError as error:  # the features cannot parse a value
            return _error(400, str(error))
        except Exception as error:
            logger.exception("serve: /predict failed")
            return _error(500, f"internal error: {type(error).__name__}: {error}")

    if getattr(model, "retriever", None) is not None:  # an export with an item index

        @app.post("/topk")
        async def topk(request: Request) -> JSONResponse:
            retriever = model.retriever
            if retriever is None:  # a reload found no index
                return _error(
                    404,
                    "the export no longer has an item index: run recforge build-index, then"
                    " POST /reload",
                )
            try:
                payload = decode_body(await request.body())
                parsed = parse_request(
                    payload,
                    retriever.input_columns,
                    [],
                    max_batch_size,
                    column_needers(retriever.user.model_info),
                )
                k = retriever.check_k(payload.get("k", DEFAULT_TOPK))
                found = await asyncio.to_thread(retriever.topk, parsed.table, k)
                return JSONResponse({"results": found.to_json()})
            except RequestError as error:
                return _error(error.status, str(error))
            except RecforgeError as error:  # a bad k, or the features cannot parse a value
                return _error(400, str(error))
            except Exception as error:
                logger.exception("serve: /topk failed")
                return _error(500, f"internal error: {type(error).__name__}: {error}")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", **model.describe()})

    @app.get("/metadata")
    async def metadata() -> JSONResponse:
        return JSONResponse(
            {
                **model.metadata(),
                "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms,
                "batching": asdict(batcher.stats),
            }
        )

    @app.post("/reload")
    async def reload_route() -> JSONResponse:
        return await reload()

    return app


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process, from the settings ``serve`` put in the env."""
    import torch

    from recforge.utils.logging_util import setup_cli_logging

    setup_cli_logging()
    settings = json.loads(os.environ[SETTINGS_ENV])
    torch.set_num_threads(settings["num_threads"])
    source = settings.get("source") or settings["export_dir"]
    export_dir = settings["export_dir"]
    if storage.is_remote(source):  # each worker its own copy: a reload replaces only its own
        export_dir = fetch_export(source)
    model = ServedModel(export_dir, settings["max_batch_size"], source=source)
    return create_app(model, settings["max_batch_size"], settings["max_wait_ms"])
