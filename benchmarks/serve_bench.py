"""Serving: ``recforge serve`` latency and throughput vs ``load_predictor`` in this process.

``python -m benchmarks serve [--export_dir D] [--clients 1,8,64] [--rows_per_request 1]``:

1. without ``--export_dir``: trains the Frappe DeepFM benchmark config for one epoch (the
   weights do not change the timing) and exports it, in a temporary directory;
2. starts ``recforge serve`` on it (a child process, ``--max_batch_size``/``--max_wait_ms``/
   ``--workers``/``--num_threads`` passed through) and, per number of concurrent clients,
   runs that many client threads for ``--seconds``, each sending ``/predict`` requests of
   ``--rows_per_request`` Frappe test rows over one keep-alive connection;
3. the same client threads calling ``load_predictor(...).predict`` on the same rows (a dict of
   lists, as a Python application would) in this process, with the server's torch threads.

Per case: p50/p99 latency of a request (ms), requests/s and rows/s. The clients run in this
process (one GIL): at many clients they can limit what the server is offered. The report goes
to stdout and ``benchmarks/results/serve.md``, with the CPUs and load average at the start
and end (the machine may be shared).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.csv as pacsv

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "frappe"
CONFIG = "benchmarks/configs/deepfm_frappe_bench.config"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "serve.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``serve`` subcommand's options."""
    parser.add_argument("--export_dir", default=None, help="an export (default: train Frappe)")
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per case")
    parser.add_argument("--rows_per_request", type=int, default=1, help="rows in a request")
    parser.add_argument("--max_batch_size", type=int, default=1024, help="recforge serve flag")
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="recforge serve flag")
    parser.add_argument("--workers", type=int, default=1, help="recforge serve flag")
    parser.add_argument(
        "--num_threads", type=int, default=None, help="torch threads (default: serve's)"
    )
    parser.add_argument("--out", default=str(RESULTS), help="report file")


def _run(cmd: list, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")


def train_and_export(work: Path) -> str:
    """Frappe DeepFM, one epoch, exported; returns the export directory."""
    model_dir, export_dir = work / "model", work / "export"
    edits = json.dumps({"train_config.num_epochs": 1})
    recforge = [sys.executable, "-m", "recforge"]
    _run([*recforge, "train", "--config", CONFIG, "--model_dir", model_dir, "--edit_config_json",
          edits], REPO_ROOT)  # fmt: skip
    _run([*recforge, "export", "--config", model_dir / "pipeline.config", "--export_dir",
          export_dir], REPO_ROOT)  # fmt: skip
    return str(export_dir)


def request_rows(columns: list, count: int, rows_per_request: int) -> list:
    """``count`` requests of consecutive Frappe test rows (dicts of the model's columns)."""
    table = pacsv.read_csv(DATA_DIR / "frappe_test.csv").select(columns)
    rows = table.to_pylist()
    return [
        [rows[(i * rows_per_request + k) % len(rows)] for k in range(rows_per_request)]
        for i in range(count)
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drive(clients: int, seconds: float, send: Callable[[int, int], None]) -> dict:
    """Runs ``clients`` threads calling ``send(client, i)`` for ``seconds`` (after a warm-up).

    Returns:
        p50/p99 latency (ms), requests/s and the number of requests.

    """
    latencies: list = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(c: int) -> None:
        for i in range(3):  # warm-up: connection, first calls
            send(c, i)
        start.wait()
        i = 0
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            send(c, i)
            latencies[c].append(time.perf_counter() - t0)
            i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) * 1000
    return {
        "p50_ms": float(np.percentile(flat, 50)),
        "p99_ms": float(np.percentile(flat, 99)),
        "req_s": len(flat) / elapsed,
        "requests": len(flat),
    }


def http_sender(port: int, bodies: list, clients: int) -> Callable[[int, int], None]:
    """``send(client, i)`` posting body ``i`` over the client's own keep-alive connection."""
    connections = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(clients)
    ]
    headers = {"Content-Type": "application/json"}

    def send(c: int, i: int) -> None:
        connection = connections[c]
        connection.request("POST", "/predict", bodies[(c * 7919 + i) % len(bodies)], headers)
        reply = connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"/predict answered {reply.status}: {data[:300]!r}")

    return send


def start_server(export_dir: str, port: int, args: argparse.Namespace, log: Path):
    """``recforge serve`` in a child process; returns it once ``/health`` answers."""
    cmd = [sys.executable, "-m", "recforge", "serve", "--export_dir", export_dir, "--port",
           str(port), "--max_batch_size", str(args.max_batch_size), "--max_wait_ms",
           str(args.max_wait_ms), "--workers", str(args.workers)]  # fmt: skip
    if args.num_threads:
        cmd += ["--num_threads", str(args.num_threads)]
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"recforge serve exited {process.returncode}: {log.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("recforge serve did not start within 180 s")


def _metadata(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metadata")
    return json.loads(connection.getresponse().read())


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def main(args: argparse.Namespace) -> int:
    """Runs the cases, prints the table and writes the report."""
    if not (DATA_DIR / "frappe_test.csv").is_file():
        raise SystemExit(f"serve benchmark not run: frappe_test.csv not found in {DATA_DIR}")
    import torch

    import recforge
    from recforge.serving.server import default_num_threads

    clients_list = [int(c) for c in args.clients.split(",") if c.strip()]
    threads = args.num_threads or default_num_threads(args.workers)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="recforge-serve-bench-") as tmp:
        export_dir = args.export_dir or train_and_export(Path(tmp))
        predictor = recforge.load_predictor(export_dir)
        requests = request_rows(predictor.input_columns, 2000, args.rows_per_request)
        bodies = [json.dumps({"rows": rows}).encode() for rows in requests]
        columns = [
            {name: [row[name] for row in rows] for name in predictor.input_columns}
            for rows in requests
        ]
        port = _free_port()
        process = start_server(export_dir, port, args, Path(tmp) / "serve.log")
        results = []
        try:
            for clients in clients_list:
                before = _metadata(port)["batching"]
                served = drive(clients, args.seconds, http_sender(port, bodies, clients))
                after = _metadata(port)["batching"]
                calls = after["model_calls"] - before["model_calls"]
                served["rows_per_call"] = (after["rows"] - before["rows"]) / max(calls, 1)
                results.append(("recforge serve (HTTP)", clients, served))
                print(clients, "clients, served:", served, flush=True)
        finally:
            process.terminate()
            process.wait(60)
        torch.set_num_threads(threads)

        def in_process(c: int, i: int) -> None:
            predictor.predict(columns[(c * 7919 + i) % len(columns)], ["probs"])

        for clients in clients_list:
            local = drive(clients, args.seconds, in_process)
            results.append(("load_predictor in-process", clients, local))
            print(clients, "clients, in-process:", local, flush=True)
    lines = [
        "| path | clients | p50 ms | p99 ms | requests/s | rows/s | rows per model call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path, clients, r in results:
        per_call = f"{r['rows_per_call']:.1f}" if "rows_per_call" in r else "-"
        lines.append(
            f"| {path} | {clients} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['req_s']:.0f} |"
            f" {r['req_s'] * args.rows_per_request:.0f} | {per_call} |"
        )
    header = [
        "# Serving benchmark (Frappe DeepFM export)",
        "",
        f"{args.rows_per_request} row(s) per request, {args.seconds:g} s per case;"
        f" recforge serve --max_batch_size {args.max_batch_size} --max_wait_ms"
        f" {args.max_wait_ms:g} --workers {args.workers}, {threads} torch thread(s) per worker"
        f" (in-process: the same). {os.cpu_count()} CPUs ({platform.processor() or 'cpu'});"
        f" load average before: {load_before}, after: {_load()}.",
        "",
    ]
    report = "\n".join([*header, *lines]) + "\n"
    print(report)
    out: Optional[Path] = Path(args.out) if args.out else None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
    return 0
