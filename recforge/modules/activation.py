"""Activations named in configs: ``nn.ReLU``, ``nn.PReLU(num_parameters=8)``, ``Dice``, ..."""

from __future__ import annotations

import ast
import inspect

import torch
from torch import nn

#: every activation class torch.nn defines (ReLU, PReLU, GELU, Softplus, ...)
_TORCH_ACTIVATIONS: dict[str, type[nn.Module]] = {
    name: cls
    for name, cls in vars(nn.modules.activation).items()
    if inspect.isclass(cls)
    and issubclass(cls, nn.Module)
    and cls.__module__ == nn.modules.activation.__name__
    and name not in ("Module", "MultiheadAttention")
}
_TORCH_ACTIVATIONS["Identity"] = nn.Identity


class Dice(nn.Module):
    """Data-adaptive activation of DIN (Zhou et al. 2018).

    ``p = sigmoid(batch_norm(x))``, ``out = p * x + (1 - p) * alpha * x`` with a learnt
    ``alpha`` per channel (initialised to 0) and a batch norm without affine parameters.

    Args:
        hidden_size: number of channels ``D``.
        dim: rank of the input, 2 or 3 (fixed when built, so that the module traces).

    Shapes:
        ``[B, D] -> [B, D]`` (dim 2), or ``[B, T, D] -> [B, T, D]`` (dim 3, channels last).

    """

    def __init__(self, hidden_size: int, dim: int = 2) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"Dice works on inputs of rank 2 or 3, found dim={dim}")
        self._sequence = dim == 3
        self.bn = nn.BatchNorm1d(hidden_size, affine=False)
        self.alpha = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies Dice over the last dimension."""
        if self._sequence:
            p = torch.sigmoid(self.bn(x.transpose(1, 2))).transpose(1, 2)
        else:
            p = torch.sigmoid(self.bn(x))
        return p * x + (1.0 - p) * self.alpha * x


def _parse_arguments(text: str, name: str) -> dict[str, object]:
    """``"num_parameters=8, init=0.1"`` -> ``{"num_parameters": 8, "init": 0.1}`` (literals)."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError(
            f"activation '{name}': expected keyword arguments like 'nn.PReLU(num_parameters=8)',"
            f" found '({text})'"
        )
    kwargs: dict[str, object] = {}
    for keyword in call.keywords:
        if keyword.arg is None:  # **mapping
            raise ValueError(f"activation '{name}': expected keyword arguments, found '({text})'")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(
                f"activation '{name}': argument {keyword.arg} must be a literal (number, string,"
                f" bool), found '{ast.unparse(keyword.value)}'"
            ) from None
    return kwargs


def create_activation(name: str, hidden_size: int = 1) -> nn.Module:
    """Builds an activation from its config name.

    Accepted, as TorchEasyRec's MLP ``activation`` is: any ``torch.nn`` activation class
    (``nn.ReLU``, ``torch.nn.GELU``; the ``nn.`` prefix and the case are optional), with
    keyword arguments as literals (``nn.PReLU(num_parameters=8, init=0.1)``,
    ``nn.LeakyReLU(negative_slope=0.2)``), and ``Dice``. Empty: no activation.

    Args:
        name: the config's activation string.
        hidden_size: width of the layer the activation follows (Dice has one parameter per
            channel).

    Raises:
        ValueError: unknown activation, unparsable or wrong arguments.

    """
    name = name.strip()
    if not name:
        return nn.Identity()
    base, paren, rest = name.partition("(")
    base = base.strip()
    if paren and not rest.rstrip().endswith(")"):
        raise ValueError(f"activation '{name}': missing the closing ')'")
    kwargs = _parse_arguments(rest.rstrip()[:-1], name) if paren else {}
    short = base.removeprefix("torch.").removeprefix("nn.")
    if short.lower() == "dice":
        if kwargs:
            raise ValueError(f"activation '{name}': Dice takes no arguments")
        return Dice(hidden_size)
    lookup = {k.lower(): v for k, v in _TORCH_ACTIVATIONS.items()}
    cls = lookup.get(short.lower())
    if cls is None:
        known = ", ".join(f"nn.{k}" for k in sorted(_TORCH_ACTIVATIONS))
        raise ValueError(f"unknown activation '{name}' (known: Dice, {known})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"activation '{name}': {err}") from None
