"""torch.distributed set-up: a single process or a torchrun job, gloo on CPU, nccl on GPU."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

import torch
import torch.distributed as dist


def init_process_group() -> torch.device:
    """Initialises the default process group (once) and returns this rank's device.

    Under torchrun the environment names rank and world size; a plain process becomes a
    one-rank group, because torchrec's sharding needs a process group. Its rendezvous is an
    in-memory store, not a TCP port: concurrent runs on one machine cannot collide.
    """
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if dist.is_initialized():
        return device
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    if os.environ["WORLD_SIZE"] == "1" and "MASTER_PORT" not in os.environ:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend=backend)
    return device


def destroy_process_group() -> None:
    """Tears the default process group down if there is one.

    Ranks meet at a barrier first: a rank that leaves while another still talks to it makes
    gloo abort the other process at exit.
    """
    if dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def leave_job(exit_code: int = 0) -> None:
    """Ends a process of a multi-process job once its command has finished.

    Every rank meets the others at a barrier, runs the ``atexit`` handlers (the upload of a
    remote ``model_dir``'s working copy, logging's flush), flushes its output and exits,
    without tearing gloo down or finalizing the interpreter: gloo's C++ threads could
    otherwise abort a rank at exit now and then ("terminate called without an active
    exception") after all its work, outputs and checkpoints were done, failing the job.
    A single process tears its group down and returns normally.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        destroy_process_group()
        return
    dist.barrier()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(exit_code)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    """Waits for every rank (no-op for one rank)."""
    if world_size() > 1:
        dist.barrier()


def all_ranks_have(value: bool) -> bool:
    """True when every rank passes ``True``: keeps ranks stepping in lock-step.

    Sharded embeddings exchange data in every step, so all ranks must run the same number of
    steps even when their data shards differ in size by a batch.
    """
    if world_size() == 1:
        return value
    flag = torch.tensor([1 if value else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_reduce_sum(value: int) -> int:
    """Sum of an integer over all ranks."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(total)
    return int(total.item())


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, built by recforge itself), in rank order."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def step_consensus(has_batch: bool, stop_signal: int) -> tuple[bool, int]:
    """What all ranks do next, in one collective per step.

    Args:
        has_batch: this rank has a batch for the next step.
        stop_signal: the signal that asks this rank to stop (0: none).

    Returns:
        ``(every rank has a batch, the largest stop signal of any rank (0: none))``: a rank
        that received SIGTERM stops every rank at the same step.

    """
    if world_size() == 1:
        return has_batch, stop_signal
    flags = torch.tensor([1 if has_batch else 0, -stop_signal], dtype=torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return bool(flags[0].item()), -int(flags[1].item())
