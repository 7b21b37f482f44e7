"""Profile recforge's training step and data path for one config.

``python -m benchmarks profile --config C [--steps N] [--edit_config_json J]``:

1. data path: reads every batch of ``train_input_path`` once in this process (reader only,
   then reader + ``DataParser``) and prints rows/s per worker (one process, one thread, as a
   DataLoader worker runs);
2. train step: builds the model exactly as ``recforge train`` does (features, DMP sharding,
   optimizers), preloads parsed batches and times ``--steps`` steps of forward, backward and
   optimizer step with nothing else around them, then prints the top operators of
   ``torch.profiler`` over those steps (self CPU time).

Nothing is written except what is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``profile`` subcommand's options."""
    parser.add_argument("--config", required=True, help="pipeline config")
    parser.add_argument("--steps", type=int, default=20, help="profiled train steps")
    parser.add_argument("--edit_config_json", default=None, help="config edits, as for train")
    parser.add_argument("--top", type=int, default=25, help="operators to print")
    parser.add_argument("--no_profiler", action="store_true", help="timings only")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads for the step (0: torch's default)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of --steps steps")


def parse_rate(config, features, reps: int = 2) -> tuple[float, float]:
    """Rows/s of the reader alone and of reader + parser over the train input (one thread)."""
    from recforge.utils.pipeline import build_dataset

    dataset = build_dataset(config, features, "train")
    best_read, best_parse = 0.0, 0.0
    for _ in range(reps):
        start, rows = time.perf_counter(), 0
        batches = list(dataset.reader.iter_batches(0, 1, 0))
        rows = sum(rb.num_rows for rb in batches)
        best_read = max(best_read, rows / (time.perf_counter() - start))
        start = time.perf_counter()
        for rb in dataset.reader.iter_batches(0, 1, 0):
            dataset.parser.parse_batch(rb)
        best_parse = max(best_parse, rows / (time.perf_counter() - start))
    return best_read, best_parse


def _train_steps(config, features, steps: int):
    """The model built as ``recforge train`` builds it; returns ``(step, timed batches)``."""
    import torch

    from recforge.models.factory import build_model
    from recforge.models.model import TrainWrapper
    from recforge.utils.pipeline import build_dataset
    from recforge.utils.sharding import shard_model

    torch.manual_seed(config.data_config.seed)
    model = build_model(config, features, embedding_device=torch.device("meta"))
    _, frozen = model.sparse_parameters()
    sharded = shard_model(TrainWrapper(model), torch.device("cpu"), config.train_config, frozen)
    dataset = build_dataset(config, features, "train")
    batches = [b for b, _ in zip(dataset, range(max(steps, 1) + 3))]
    dmp, optimizer = sharded.model, sharded.optimizer
    dmp.train()

    def step(batch) -> None:
        loss, _ = dmp(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:3]:  # warm-up
        step(batch)
    timed = (batches[3:] * ((steps // max(len(batches) - 3, 1)) + 1))[:steps]
    return step, timed


def train_step_rate(config, features, steps: int, rounds: int) -> tuple[float, float]:
    """Train samples/s on preloaded batches (best round) and CPU ms per step (best round).

    On a shared machine the best round is the least disturbed one; CPU seconds per step
    (process time, all threads) move less with others' load than wall time does.
    """
    step, timed = _train_steps(config, features, steps)
    rows = sum(b.batch_size for b in timed)
    walls, cpus = [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for batch in timed:
            step(batch)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return rows / min(walls), 1000 * min(cpus) / len(timed)


def main(args: argparse.Namespace) -> int:
    """Prints parse rates, step time and the profile."""
    import torch

    from recforge.utils.logging_util import setup_logging
    from recforge.utils.pipeline import build_features, prepare_config, setup_process

    setup_logging()
    edits = json.loads(args.edit_config_json) if args.edit_config_json else None
    edits = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (edits or {}).items()}
    config = prepare_config(args.config, edits, model_dir="/tmp/recforge-profile")
    setup_process()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a DataLoader worker runs
    features = build_features(config)
    read_rate, parse_rate_ = parse_rate(config, features)
    print(f"reader only: {read_rate:,.0f} rows/s; reader + parser: {parse_rate_:,.0f} rows/s")
    torch.set_num_threads(args.threads or threads)
    sps, cpu_ms = train_step_rate(config, features, args.steps, args.rounds)
    print(
        f"train step on preloaded batches: {sps:,.0f} samples/s (best of {args.rounds} rounds, "
        f"{cpu_ms:.1f} ms/step CPU, {torch.get_num_threads()} threads)"
    )
    if args.no_profiler:
        return 0
    from torch.profiler import ProfilerActivity, profile

    step, timed = _train_steps(config, features, args.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in timed:
            step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    return 0
