"""A model's size at a glance: parameters and memory per embedding table and per module.

Works on a model whose tables live on the ``meta`` device (before sharding): sizes come from
shapes and dtypes, nothing is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollectionInterface,
    EmbeddingCollectionInterface,
)


@dataclass(frozen=True)
class Part:
    """One embedding table or module of a model.

    Attributes:
        name: the table name, or the module's attribute name in the model.
        parameters: number of scalar parameters.
        bytes: memory of those parameters (not counting optimizer state).
        detail: ``rows x dim`` for a table, the module class for a module.

    """

    name: str
    parameters: int
    bytes: int
    detail: str


@dataclass(frozen=True)
class ModelSummary:
    """Sizes of a model.

    Attributes:
        tables: one entry per embedding table.
        modules: one entry per direct child module of the model.
        parameters: all parameters of the model.
        bytes: their memory.

    """

    tables: list[Part]
    modules: list[Part]
    parameters: int
    bytes: int

    def lines(self) -> list[str]:
        """The summary as log lines: totals, then tables, then modules."""
        out = [f"model: {self.parameters:,} parameters ({human_bytes(self.bytes)})"]
        for kind, parts in (("table", self.tables), ("module", self.modules)):
            for part in parts:
                out.append(
                    f"  {kind} {part.name} ({part.detail}): {part.parameters:,} parameters"
                    f" ({human_bytes(part.bytes)})"
                )
        return out

    def as_dict(self) -> dict:
        """The summary as JSON-ready data (for command output)."""
        return {
            "parameters": self.parameters,
            "bytes": self.bytes,
            "tables": {t.name: t.parameters for t in self.tables},
            "modules": {m.name: m.parameters for m in self.modules},
        }


def human_bytes(num: int) -> str:
    """``num`` bytes as ``"12.3 MiB"``."""
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _size(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return (
        sum(p.numel() for p in params),
        sum(p.numel() * p.element_size() for p in params),
    )


def summarize_model(model: nn.Module) -> ModelSummary:
    """Counts the parameters of ``model`` per embedding table and per direct child module.

    Args:
        model: a recforge model (its tables may be on the ``meta`` device).

    Returns:
        The summary; shared tables are counted once.

    """
    tables: list[Part] = []
    for module in model.modules():
        if not isinstance(module, (EmbeddingBagCollectionInterface, EmbeddingCollectionInterface)):
            continue
        for name, param in module.named_parameters():
            table = name.split(".")[-2] if "." in name else name
            rows, dim = (tuple(param.shape) + (1, 1))[:2]
            tables.append(
                Part(table, param.numel(), param.numel() * param.element_size(), f"{rows}x{dim}")
            )
    modules = [
        Part(name, *_size(child), type(child).__name__)
        for name, child in model.named_children()
        if any(True for _ in child.parameters())
    ]
    parameters, num_bytes = _size(model)
    return ModelSummary(tables, modules, parameters, num_bytes)
