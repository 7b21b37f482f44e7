"""Scripting: a model (or one tower) behind a flat ``Dict[str, Tensor]``, compiled and checked.

The exported model takes exactly what :meth:`recforge.datasets.DataParser.parse` produces
(``"{feature}.values"`` / ``"{feature}.lengths"`` per sparse feature, plus
``"{feature}.weights"`` per weighted one, ``"{feature}.values"`` per dense feature),
rebuilds the :class:`~recforge.datasets.batch.Batch` inside ``forward`` and returns
``model.predict``'s outputs, so serving needs no recforge Python objects.

:func:`script_model` compiles it. ``Batch`` (a dataclass with a pyarrow field) and the
models' Python-level set-up are not TorchScript, so the wrapper is first traced with
torchrec's ``torch.fx`` tracer, which keeps only tensor operations (the Batch, feature-group
dict and key lists are resolved at trace time), and the traced graph is then
``torch.jit.script``-ed. Tracing runs the model in eval mode: dropout is off and batch norm
uses its running statistics. :func:`check_scripted` and :func:`script_tower` run the scripted
module beside the eager one on example inputs and refuse a difference.

No ``from __future__ import annotations`` here: TorchScript reads the type hints.
"""

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from recforge.datasets.data_parser import DataParser
from recforge.features import BaseFeature
from recforge.models.match_model import MatchModel
from recforge.models.model import BaseModel

# the largest difference allowed between the scripted and the eager outputs
TOLERANCE = 1e-5


class ScriptWrapper(nn.Module):
    """Runs ``model.predict`` on a flat tensor dict (the exported model's interface).

    Args:
        model: the model (its features define the inputs).
        output_cols: keep only these outputs (None: all of ``predict``'s outputs).

    Example:
        >>> wrapper = ScriptWrapper(model.eval())  # doctest: +SKIP
        >>> wrapper(DataParser(model.features).parse(record_batch))["probs"]  # doctest: +SKIP

    """

    def __init__(self, model: BaseModel, output_cols: Optional[list[str]] = None) -> None:
        super().__init__()
        self.model = model
        # predict mode: no labels, weights, extras or reserves enter the exported path
        self._parser = DataParser(model.features)
        self._output_cols = list(output_cols) if output_cols else None

    def input_names(self) -> list[str]:
        """Every key ``forward`` reads from its input dict."""
        names = []
        for key in self._parser.sparse_keys:
            names += [f"{key}.values", f"{key}.lengths"]
            if key in self._parser.weighted_keys:
                names.append(f"{key}.weights")
        names += [f"{key}.values" for key in self._parser.dense_keys]
        return names

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scores a batch given as the flat tensor dict of ``DataParser.parse``."""
        batch = self._parser.to_batch(data)
        predictions = self.model.predict(batch)
        if self._output_cols is None:
            return predictions
        return {name: predictions[name] for name in self._output_cols}


class TowerScriptWrapper(nn.Module):
    """One tower behind the flat ``Dict[str, Tensor]`` interface of an exported model.

    Args:
        tower: the tower with its own tables (:meth:`MatchModel.tower_module`).
        features: the tower's features (they define the inputs).
        output_name: name of the embedding output (``user_emb`` / ``item_emb``).

    """

    def __init__(self, tower: nn.Module, features: list, output_name: str) -> None:
        super().__init__()
        self.tower = tower
        self._parser = DataParser(list(features))
        self._output_name = output_name

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embeds a batch given as the flat tensor dict of ``DataParser.parse``."""
        batch = self._parser.to_batch(data)
        return {self._output_name: self.tower(batch)}


def example_inputs(model: BaseModel, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """A small valid input dict for ``model``'s features (id 0 / value 0.5 everywhere)."""
    data: dict[str, torch.Tensor] = {}
    for feature in model.features:
        if feature.stub_type:
            continue
        if feature.is_sparse:
            data[f"{feature.name}.values"] = torch.zeros(batch_size, dtype=torch.int64)
            data[f"{feature.name}.lengths"] = torch.ones(batch_size, dtype=torch.int32)
            if feature.is_weighted:
                data[f"{feature.name}.weights"] = torch.full((batch_size,), 0.5)
            elements = feature.element_lengths_key
            if elements is not None:  # one element of one id per row
                data[f"{elements}.values"] = torch.ones(batch_size, dtype=torch.int64)
                data[f"{elements}.lengths"] = torch.ones(batch_size, dtype=torch.int32)
        else:
            data[f"{feature.name}.values"] = torch.full((batch_size, feature.dense_width), 0.5)
            if feature.is_sequence:  # column 0 is the length: one element, like the ids
                data[f"{feature.name}.values"][:, 0] = 1.0
    return data


def script_model(
    model: BaseModel, output_cols: Optional[list[str]] = None
) -> torch.jit.ScriptModule:
    """Compiles ``ScriptWrapper(model)`` into a TorchScript module (model set to eval mode).

    Args:
        model: the model, on the CPU, with its weights restored.
        output_cols: keep only these outputs (None: all).

    Returns:
        The scripted module: ``forward(Dict[str, Tensor]) -> Dict[str, Tensor]``; save it with
        ``.save(path)``, load it with ``torch.jit.load`` after ``import torchrec`` (which
        registers the fbgemm operators it may call).

    Raises:
        RuntimeError: the model cannot be traced or scripted; the message names the model.

    """
    from torchrec.fx import symbolic_trace

    model.eval()
    wrapper = ScriptWrapper(model, output_cols).eval()
    name = type(model).__name__
    try:
        graph = symbolic_trace(wrapper)
    except Exception as e:
        raise RuntimeError(
            f"cannot export {name}: torch.fx cannot trace its predict() ({type(e).__name__}:"
            f" {e}); predict must not branch on tensor values"
        ) from e
    try:
        scripted = torch.jit.script(graph)
    except Exception as e:
        raise RuntimeError(f"cannot export {name}: torch.jit.script failed: {e}") from e
    return scripted.eval()


def check_scripted(
    scripted: torch.jit.ScriptModule, model: BaseModel, batch_size: int
) -> dict[str, torch.Tensor]:
    """Runs the scripted and the eager model on :func:`example_inputs`; they must agree.

    Returns:
        The scripted model's outputs (``[batch_size, ...]`` each).

    Raises:
        RuntimeError: the output names differ, or an output differs by more than
            :data:`TOLERANCE`.

    """
    data = example_inputs(model, batch_size)
    with torch.no_grad():
        eager = model.predict(DataParser(model.features).to_batch(data))
        script = scripted(data)
    if set(eager) != set(script):
        raise RuntimeError(f"scripted outputs {sorted(script)} != eager outputs {sorted(eager)}")
    for name, value in eager.items():
        diff = (value.float() - script[name].float()).abs().max().item() if value.numel() else 0
        if not diff <= TOLERANCE:
            raise RuntimeError(f"scripted output '{name}' differs from eager by {diff}")
    return script


def random_inputs(features: Sequence[BaseFeature], batch_size: int) -> dict[str, torch.Tensor]:
    """Seeded random inputs for ``features``: one id per sparse feature, uniform dense values."""
    generator = torch.Generator().manual_seed(0)
    data: dict[str, torch.Tensor] = {}
    for feature in features:
        if feature.is_sparse:
            n = max(int(feature.num_embeddings), 1)
            data[f"{feature.name}.values"] = torch.randint(0, n, (batch_size,), generator=generator)
            data[f"{feature.name}.lengths"] = torch.ones(batch_size, dtype=torch.int32)
            if feature.is_weighted:
                data[f"{feature.name}.weights"] = torch.rand(batch_size, generator=generator)
            elements = feature.element_lengths_key
            if elements is not None:  # one element of one id per row
                data[f"{elements}.values"] = torch.ones(batch_size, dtype=torch.int64)
                data[f"{elements}.lengths"] = torch.ones(batch_size, dtype=torch.int32)
        else:
            data[f"{feature.name}.values"] = torch.rand(
                batch_size, feature.dense_width, generator=generator
            )
            if feature.is_sequence:  # column 0 is the length: one element, like the ids
                data[f"{feature.name}.values"][:, 0] = 1.0
    return data


def script_tower(model: MatchModel, side: str) -> tuple[torch.jit.ScriptModule, nn.Module]:
    """Compiles one tower (``user`` or ``item``) of a CPU model to TorchScript.

    Returns:
        ``(scripted, eager wrapper)``; both take the flat tensor dict of the tower's features.

    Raises:
        RuntimeError: tracing / scripting fails, or the scripted tower differs from the eager
            one by more than :data:`TOLERANCE` on example inputs.

    """
    from torchrec.fx import symbolic_trace

    features = model.tower_features(side)
    wrapper = TowerScriptWrapper(model.tower_module(side), features, f"{side}_emb").eval()
    try:
        scripted = torch.jit.script(symbolic_trace(wrapper)).eval()
    except Exception as e:
        raise RuntimeError(f"cannot export the {side} tower of {type(model).__name__}: {e}") from e
    data = random_inputs(features, 5)
    with torch.no_grad():
        eager, script = wrapper(data), scripted(data)
    diff = (eager[f"{side}_emb"] - script[f"{side}_emb"]).abs().max().item()
    if not diff <= TOLERANCE:
        raise RuntimeError(f"the scripted {side} tower differs from eager by {diff}")
    return scripted, wrapper
