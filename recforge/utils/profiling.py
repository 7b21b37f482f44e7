"""``train_config.is_profiling``: a torch.profiler trace of the training steps in ``model_dir``.

As in TorchEasyRec: the profiler skips one step, warms up on the next and records the ten
after it (shapes, memory, Python stacks), then writes a TensorBoard/Chrome trace
(``<worker>.<timestamp>.pt.trace.json``) to ``model_dir/train_eval_trace/``. A run shorter
than that records the steps it has.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from recforge.utils.layout import TRACE_DIR


def train_profiler(model_dir: str, enabled: bool) -> Optional[torch.profiler.profile]:
    """A started profiler writing to ``model_dir/train_eval_trace``, or None when disabled.

    Call ``step()`` on it after every training step and ``stop()`` at the end.
    """
    if not enabled:
        return None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=1, warmup=1, active=10, repeat=1),
        on_trace_ready=torch.profiler.tensorboard_trace_handler(os.path.join(model_dir, TRACE_DIR)),
        record_shapes=True,
        profile_memory=True,
        with_stack=True,
    )
    profiler.start()
    return profiler
