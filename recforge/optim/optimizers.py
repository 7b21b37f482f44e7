"""Optimizer construction from ``SparseOptimizer`` / ``DenseOptimizer`` messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.optim import RowWiseAdagrad

from recforge.protos import optimizer_pb2

# fbgemm's fused CPU kernels implement only these (Adam: "not supported in CPU mode").
_FUSED_CPU_OPTIMIZERS = {"sgd_optimizer", "adagrad_optimizer", "rowwise_adagrad_optimizer"}


@dataclass
class SparseOptimizerSpec:
    """A sparse optimizer as torchrec's ``apply_optimizer_in_backward`` wants it.

    Attributes:
        name: the config's oneof field name, e.g. ``adagrad_optimizer``.
        optimizer_class: the torch optimizer class (torchrec maps it to the fused kernel).
        kwargs: its arguments (``lr``, ...).

    """

    name: str
    optimizer_class: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]

    def create(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """A plain torch optimizer with these settings, for tables off the fused kernel."""
        kwargs = dict(self.kwargs)
        if self.optimizer_class is torch.optim.Adam:
            kwargs["fused"] = True
        return self.optimizer_class(list(params), **kwargs)


def _which(config: Any, kind: str) -> str:
    name = config.WhichOneof("optimizer")
    if name is None:
        choices = [f.name for f in config.DESCRIPTOR.oneofs_by_name["optimizer"].fields]
        raise ValueError(f"train_config.{kind} sets no optimizer (choices: {', '.join(choices)})")
    return name


def sparse_optimizer_spec(config: optimizer_pb2.SparseOptimizer) -> SparseOptimizerSpec:
    """Describes the embedding optimizer of ``train_config.sparse_optimizer``."""
    name = _which(config, "sparse_optimizer")
    cfg = getattr(config, name)
    builders = {
        "sgd_optimizer": lambda: (torch.optim.SGD, {"lr": cfg.lr}),
        "adagrad_optimizer": lambda: (torch.optim.Adagrad, {"lr": cfg.lr}),
        "adam_optimizer": lambda: (
            torch.optim.Adam,
            {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay},
        ),
        "rowwise_adagrad_optimizer": lambda: (
            RowWiseAdagrad,
            {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
        ),
    }
    optimizer_class, kwargs = builders[name]()
    return SparseOptimizerSpec(name, optimizer_class, kwargs)


def fused_kernel_supports(spec: SparseOptimizerSpec, embedding_dim: int, device_type: str) -> bool:
    """Whether fbgemm's fused embedding kernel can train a table with this optimizer and width.

    On CUDA every optimizer is fused. On the CPU fbgemm needs widths divisible by 4 and only
    implements SGD and (row-wise) Adagrad; other tables fall back to a dense kernel.
    """
    if device_type == "cuda":
        return True
    return spec.name in _FUSED_CPU_OPTIMIZERS and embedding_dim % 4 == 0


def _dense_kwargs(name: str, cfg: Any) -> dict[str, Any]:
    if name == "sgd_optimizer":
        return {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    if name == "adagrad_optimizer":
        return {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    return {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "weight_decay": cfg.weight_decay}


_DENSE_CLASSES = {
    "sgd_optimizer": torch.optim.SGD,
    "adagrad_optimizer": torch.optim.Adagrad,
    "adam_optimizer": torch.optim.Adam,
    "adamw_optimizer": torch.optim.AdamW,
}


def create_dense_optimizer(
    config: optimizer_pb2.DenseOptimizer, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """Builds a torch optimizer from a ``DenseOptimizer`` message.

    Adam/AdamW use the fused kernel (measured faster than the for-each one on CPU).
    """
    name = _which(config, "dense_optimizer")
    params = list(params)
    kwargs = _dense_kwargs(name, getattr(config, name))
    if name in ("adam_optimizer", "adamw_optimizer"):
        kwargs["fused"] = True
    return _DENSE_CLASSES[name](params, **kwargs)
